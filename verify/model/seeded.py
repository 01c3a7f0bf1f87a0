"""A pi0 that exists only as a recipe: lerobot's PI0Policy at a profile's size, weights made from a seed.

`--demo --size full` needs the real-size model on two devices without a 16 GB checkpoint on disk.
Each side builds the module structure on the meta device (as a checkpoint load does) and fills
every tensor on its own device from the generator below, so the two sides hold the same values:

    splitmix64-uniform-v1: for tensor `name` and element i, z = splitmix64(key(seed, name) + i * golden),
    u = (top 24 bits of z) * 2^-24, value = (u - 1/2) * sqrt(12) * std, rounded to the parameter's dtype.

Only int64 arithmetic (exact on every device) and one float32 subtraction and multiplication
(correctly rounded, no fused operations) are involved, so a CPU and a GPU compute the same bytes.
`std` follows the usual initialisation: 1/sqrt(fan_in) for matrices and convolutions, LayerNorm
weights 1, biases and Gemma's RMSNorm weights (applied as 1 + w) 0.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verify_ate.verify.model.architecture import architecture_of, architecture_overrides
from verify_ate.verify.model.checkpoint import LoadReport, build_skeleton_with, float32_modules, materialise
from verify_ate.verify.model.devices import check_fits

GENERATOR = "splitmix64-uniform-v1"
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_CHUNK = 1 << 22  # elements generated at a time (32 MiB of int64 temporaries)


def _signed(value: int) -> int:
    """A 64-bit constant as the int64 torch computes with (two's complement)."""
    return value - (1 << 64) if value >= 1 << 63 else value


@dataclass(frozen=True)
class SeededCheckpoint:
    """What a seeded pi0 is made of: a profile (configs/profiles/: reduced sizes in its vlm, action_expert
    and vision sections, or none of them for lerobot's full sizes), a seed, the dataset statistics its
    processors normalise with."""

    profile: dict
    seed: int = 0
    dataset_stats: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def architecture(self) -> dict | None:
        """The reduced sizes, or None for lerobot's full-size variants."""
        return architecture_of(self.profile) if "vlm" in self.profile else None

    @property
    def sha256(self) -> str:
        """Stands in for a checkpoint hash: the same recipe gives the same model everywhere."""
        from verify_ate.verify.model.tiny import _plain

        document = {
            "profile": self.profile,
            "seed": self.seed,
            "generator": GENERATOR,
            "stats": _plain(self.dataset_stats),
        }
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode("utf-8")).hexdigest()

    def __str__(self) -> str:
        size = "reduced-size" if self.architecture else "full-size"
        return f"seeded {size} pi0 (seed {self.seed}, {GENERATOR}, nothing on disk)"

    def config(self, dtype: str, device: str, num_inference_steps: int | None = None) -> Any:
        from verify_ate.verify.model.tiny import tiny_pi0_config

        config = tiny_pi0_config(self.profile, dtype=dtype, device="cpu")
        if num_inference_steps is not None:
            config.num_inference_steps = int(num_inference_steps)
        config.device = device
        return config


def build_seeded_policy(
    recipe: SeededCheckpoint, config: Any, device: Any, on_bytes: Callable[[int, int], None] | None = None
) -> tuple[Any, LoadReport]:
    """lerobot's PI0Policy for `config` on `device`, every parameter made by the generator."""

    import torch

    started = time.perf_counter()
    policy, buffers = build_skeleton_with(config, architecture_overrides(recipe.architecture))
    parameters = list({id(p): (name, p) for name, p in policy.named_parameters()}.values())
    parameter_bytes = sum(p.numel() * p.element_size() for _, p in parameters)
    buffer_bytes = sum(b.numel() * b.element_size() for b in policy.buffers())
    count = sum(p.numel() for _, p in parameters)
    check_fits(device, parameter_bytes + buffer_bytes, f"{recipe} ({count:,} parameters in {config.dtype})")
    materialise(policy, buffers, device)
    layer_norms = {
        f"{name}.{kind}" if name else kind
        for name, module in policy.named_modules()
        if isinstance(module, torch.nn.LayerNorm)
        for kind in ("weight", "bias")
    }
    made, total = 0, parameter_bytes
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            fill_parameter(parameter, name, recipe.seed, layer_norms)
            made += parameter.numel() * parameter.element_size()
            if on_bytes is not None:
                on_bytes(made, total)
    report = LoadReport(
        seconds=time.perf_counter() - started,
        parameters=count,
        parameter_bytes=parameter_bytes,
        buffer_bytes=buffer_bytes,
        bytes_read=0,
        files=(),
        float32_modules=float32_modules(policy) if config.dtype == "bfloat16" else (),
    )
    return policy.eval(), report


def fill_parameter(parameter: Any, name: str, seed: int, layer_norms: set[str]) -> None:
    """One parameter's seeded values, in place (see the module docstring for the rule)."""
    if name in layer_norms:
        parameter.fill_(1.0 if name.endswith("weight") else 0.0)
    elif parameter.ndim < 2:
        parameter.zero_()  # biases, and Gemma's RMSNorm weights (which scale by 1 + w)
    else:
        fan_in = math.prod(parameter.shape[1:])
        seeded_uniform_(parameter, key_of(seed, name), 1.0 / math.sqrt(fan_in))


def key_of(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{GENERATOR}:{seed}:{name}".encode()).digest()[:8], "little")


def seeded_uniform_(tensor: Any, key: int, std: float) -> None:
    """Fill `tensor` (any dtype and device) with the generator's uniform values of standard deviation `std`."""
    import torch

    flat = tensor.view(-1)
    scale = torch.tensor(std * math.sqrt(12.0), dtype=torch.float32, device=tensor.device)
    key_tensor = torch.tensor(_signed(key), dtype=torch.int64, device=tensor.device)
    for start in range(0, flat.numel(), _CHUNK):
        stop = min(start + _CHUNK, flat.numel())
        z = torch.arange(start, stop, dtype=torch.int64, device=tensor.device) * _signed(_GOLDEN) + key_tensor
        z = (z ^ _logical_shift(z, 30)) * _signed(_MIX1)
        z = (z ^ _logical_shift(z, 27)) * _signed(_MIX2)
        z = z ^ _logical_shift(z, 31)
        uniform = _logical_shift(z, 40).to(torch.float32) * (2.0**-24)
        flat[start:stop].copy_((uniform - 0.5) * scale)


def _logical_shift(z: Any, bits: int) -> Any:
    """z >>> bits on int64 (torch shifts signed integers arithmetically)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def save_seeded_checkpoint(recipe: SeededCheckpoint, out_dir: Path, device: Any, progress: Any = None) -> Path:
    """Write the recipe's model (float32, made on `device`) as a lerobot checkpoint folder at `out_dir`."""
    from verify_ate.verify.errors import InputError
    from verify_ate.verify.model.processors import make_processors
    from verify_ate.verify.model.tiny import build_byte_tokenizer, write_checkpoint

    if out_dir.exists():
        raise InputError(f"{out_dir}: already exists; refusing to overwrite a checkpoint folder")
    config = recipe.config("float32", str(device))
    policy, _ = build_seeded_policy(recipe, config, device, progress.bytes_done if progress is not None else None)
    tokenizer = build_byte_tokenizer()
    processors = make_processors(policy.config, recipe.dataset_stats, tokenizer)
    return write_checkpoint(out_dir, policy, processors, tokenizer, recipe.architecture)
