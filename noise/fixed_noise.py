"""The fixed-noise file: one Gaussian draw that every device of a comparison receives as is.

File format: safetensors with one float32 tensor `noise` [B, chunk_size, max_action_dim]
and string metadata `seed`, `generator`, `sha256` (of the tensor's little-endian bytes), `created_by`.

Generator `pcg64-box-muller-v1`: NumPy's PCG64 bit generator (its raw 64-bit stream is fixed by
NumPy's stability policy, unlike the Generator's distribution methods) gives 53-bit uniforms,
Box-Muller turns pairs into normals in float64, and the result is rounded to float32. Only IEEE
arithmetic and libm's log/sqrt/cos/sin are involved, so every platform gives the same bytes
(a test pins the sha256 of seed 0).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from verify_ate.reports.atomic import atomic_path

GENERATOR = "pcg64-box-muller-v1"
TENSOR_NAME = "noise"


class NoiseFileError(ValueError):
    """A noise file that is missing, unreadable or does not hold what it claims."""


@dataclass(frozen=True)
class FixedNoise:
    values: np.ndarray  # float32, C-contiguous
    seed: int | None
    generator: str
    created_by: str

    @property
    def sha256(self) -> str:
        return tensor_sha256(self.values)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)

    def summary(self) -> dict:
        v = self.values.astype(np.float64)
        finite = bool(np.all(np.isfinite(v)))
        return {
            "shape": list(self.shape),
            "dtype": str(self.values.dtype),
            "seed": self.seed,
            "generator": self.generator,
            "created_by": self.created_by,
            "sha256": self.sha256,
            "finite": finite,
            "mean": float(np.mean(v)) if finite else None,
            "std": float(np.std(v)) if finite else None,
        }

    def as_tensor(self, device="cpu"):
        """A torch float32 tensor with exactly these values, on `device`."""
        import torch

        return torch.from_numpy(self.values.copy()).to(device)


def tensor_sha256(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values, dtype="<f4").tobytes()).hexdigest()


def gaussian(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal float32 values of `shape`, reproducible bit for bit from `seed`."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    count = math.prod(shape)
    pairs = (count + 1) // 2
    raw = np.random.PCG64(seed).random_raw(2 * pairs)
    uniform = ((raw >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53  # (0, 1), never 0
    u1, u2 = uniform[0::2], uniform[1::2]
    radius = np.sqrt(-2.0 * np.log(u1))
    angle = 2.0 * np.pi * u2
    normals = np.empty(2 * pairs, dtype=np.float64)
    normals[0::2] = radius * np.cos(angle)
    normals[1::2] = radius * np.sin(angle)
    return normals[:count].astype(np.float32).reshape(shape)


def make_noise(seed: int, shape: tuple[int, ...], created_by: str = "verify-ate noise make") -> FixedNoise:
    return FixedNoise(gaussian(seed, shape), seed, GENERATOR, created_by)


def derived_noise(noise: FixedNoise, *keys: int) -> FixedNoise:
    """Noise of the same shape, determined by `noise`'s values and integer `keys` alone (e.g. an episode's seed and
    a chunk's index): seed = the first 8 bytes (little-endian, top bit cleared) of sha256("<noise sha256>/<key>/...").
    Two devices given the same file derive the same values, never a fresh random draw."""
    text = "/".join([noise.sha256, *(str(int(key)) for key in keys)])
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)
    return FixedNoise(
        gaussian(seed, noise.shape), seed, noise.generator, f"derived from noise {noise.sha256[:12]} {keys}"
    )


def save_noise(noise: FixedNoise, path: str | Path) -> Path:
    from safetensors.numpy import save_file

    metadata = {
        "seed": "" if noise.seed is None else str(noise.seed),
        "generator": noise.generator,
        "sha256": noise.sha256,
        "created_by": noise.created_by,
    }
    with atomic_path(path) as temporary:
        save_file({TENSOR_NAME: np.ascontiguousarray(noise.values)}, str(temporary), metadata=metadata)
    return Path(path)


def load_noise(path: str | Path, expected_shape: tuple[int, ...] | None = None) -> FixedNoise:
    """Read and validate a noise file: tensor name, dtype, shape, finiteness and recorded sha256."""
    path = Path(path)
    if not path.is_file():
        raise NoiseFileError(f"{path}: noise file not found")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
            if TENSOR_NAME not in handle.keys():
                raise NoiseFileError(
                    f"{path}: no tensor named {TENSOR_NAME!r} (has: {', '.join(handle.keys()) or 'none'})"
                )
            values = handle.get_tensor(TENSOR_NAME)
    except NoiseFileError:
        raise
    except Exception as error:  # safetensors raises its own error types for malformed headers
        raise NoiseFileError(f"{path}: not a readable safetensors file ({error})") from None
    noise = _validated(values, path, metadata)
    if expected_shape is not None:
        check_noise_shape(noise.shape, expected_shape, str(path))
    return noise


def check_noise_shape(
    shape: tuple[int, ...], expected: tuple[int, ...], source: str | None, batch_size: int = 1
) -> None:
    """The one rule for noise that a policy can take: exactly `expected` [1, T, D], or [batch_size, T, D]
    (one row per frame of a batch). Anything else is refused, never reshaped or redrawn."""
    shape, expected = tuple(shape), tuple(expected)
    fits = shape == expected or (len(shape) == len(expected) and shape[1:] == expected[1:] and shape[0] == batch_size)
    if fits:
        return
    per_frame = f" (or {[batch_size, *expected[1:]]} for {batch_size} frames)" if batch_size > 1 else ""
    raise NoiseFileError(
        f"{source or 'noise'}: noise shape {list(shape)} does not fit the policy, which needs "
        f"{list(expected)}{per_frame} "
        f"(make one with: verify-ate noise make --seed 0 --shape {','.join(map(str, expected))} --out FILE)"
    )


def _validated(values: np.ndarray, path: Path, metadata: dict) -> FixedNoise:
    if values.dtype != np.float32:
        raise NoiseFileError(f"{path}: noise dtype is {values.dtype}, expected float32")
    if values.ndim != 3:
        raise NoiseFileError(f"{path}: noise must be [batch, chunk_size, action_dim], got shape {list(values.shape)}")
    if not np.all(np.isfinite(values)):
        raise NoiseFileError(f"{path}: noise holds {int(np.sum(~np.isfinite(values)))} non-finite values")
    values = np.ascontiguousarray(values)
    recorded = metadata.get("sha256")
    actual = tensor_sha256(values)
    if recorded and recorded != actual:
        raise NoiseFileError(
            f"{path}: tensor sha256 {actual[:12]}... does not match the recorded {recorded[:12]}... (file altered?)"
        )
    seed = metadata.get("seed")
    if seed not in (None, "") and not str(seed).lstrip("-").isdigit():
        raise NoiseFileError(f"{path}: metadata seed {seed!r} is not an integer")
    return FixedNoise(
        values=values,
        seed=int(seed) if seed not in (None, "") else None,
        generator=metadata.get("generator", "unknown"),
        created_by=metadata.get("created_by", "unknown"),
    )


def import_noise(source: str | Path, created_by: str | None = None) -> FixedNoise:
    """Noise from a bare .npy (never unpickled) or .pt (weights_only) array of [B, T, D] values."""
    source = Path(source)
    if not source.is_file():
        raise NoiseFileError(f"{source}: file not found")
    suffix = source.suffix.lower()
    try:
        if suffix == ".npy":
            values = np.load(source, allow_pickle=False)
        elif suffix in (".pt", ".pth"):
            import torch

            loaded = torch.load(source, map_location="cpu", weights_only=True)
            if isinstance(loaded, dict):
                if len(loaded) != 1:
                    raise NoiseFileError(f"{source}: expected one tensor, found keys {sorted(loaded)}")
                loaded = next(iter(loaded.values()))
            if not isinstance(loaded, torch.Tensor):
                raise NoiseFileError(f"{source}: holds a {type(loaded).__name__}, not a tensor")
            values = loaded.detach().to(torch.float32).numpy()
        else:
            raise NoiseFileError(
                f"{source}: cannot import noise from a {suffix or 'suffix-less'} file (use .npy or .pt)"
            )
    except NoiseFileError:
        raise
    except Exception as error:
        raise NoiseFileError(f"{source}: not a readable array ({error})") from None
    if values.dtype.kind != "f":
        raise NoiseFileError(f"{source}: holds {values.dtype} values, expected floating point")
    if values.ndim == 2:
        values = values[None]
    values = values.astype(np.float32)
    noise = _validated(values, source, {})
    return FixedNoise(noise.values, None, f"imported:{source.name}", created_by or "verify-ate noise import")
