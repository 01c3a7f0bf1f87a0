"""Run lerobot's pi0 (PI0Policy, lerobot 0.6.1) from a local checkpoint folder on one torch device.

Everything model-side is lerobot's own code: `PI0Policy.from_pretrained` with a config override
(precision `PI0Config.dtype` and `device` are set before the model is built, as lerobot's
make_policy does), lerobot's saved pre/post-processor pipelines, `predict_action_chunk(noise=...)`.
The harness adds: batching dataset frames, feeding the same fixed noise, checks that the weights
really loaded (lerobot's loader only prints a warning and keeps random weights when they do not),
and timing.
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import logging
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from noise import FixedNoise, NoiseFileError, load_noise
from verify.errors import DeviceUnavailableError, InputError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PREPROCESSOR_FILE = "policy_preprocessor.json"
POSTPROCESSOR_FILE = "policy_postprocessor.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")  # fast (tokenizers) or sentencepiece
DTYPES = ("float32", "bfloat16")
STATE_KEY = "observation.state"
# Files that define the model: weights, configs, processor statistics, tokenizer.
HASHED_SUFFIXES = (".safetensors", ".json", ".model")
# Pre-0.4 lerobot checkpoints kept normalisation statistics as buffers inside the weights.
LEGACY_NORMALIZATION_PREFIXES = ("normalize_inputs.", "normalize_targets.", "unnormalize_outputs.")


class Pi0Runner:
    """One pi0 policy on one device. Load, predict on dataset frames with fixed noise, time, release.

    checkpoint_dir: a lerobot pi0 checkpoint folder (config.json, model.safetensors, a tokenizer,
        usually policy_pre/postprocessor.json + their statistics).
    device: a torch device string ("cpu", "cuda", "cuda:1", "npu:0"); the caller checks availability.
    dtype: "float32" or "bfloat16", lerobot's PI0Config.dtype.
    dataset_stats: used only when the checkpoint has no saved processors (or legacy buffers).
    num_inference_steps: optional override of the config's Euler step count.
    """

    def __init__(
        self,
        checkpoint_dir: str | Path,
        device: str = "cpu",
        dtype: str = "float32",
        dataset_stats: dict | None = None,
        num_inference_steps: int | None = None,
    ):
        import torch

        self.checkpoint_dir = Path(checkpoint_dir)
        self.device = torch.device(device)
        self.dtype = dtype
        if dtype not in DTYPES:
            raise InputError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        folder = self.checkpoint_dir
        if not folder.is_dir():
            raise InputError(f"{folder}: checkpoint folder not found")
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (folder / name).is_file():
                raise InputError(f"{folder}: not a lerobot checkpoint folder (no {name})")
        self.tokenizer = load_checkpoint_tokenizer(folder)
        overrides = [f"--dtype={dtype}"]
        if num_inference_steps is not None:
            overrides.append(f"--num_inference_steps={int(num_inference_steps)}")
        config = load_pi0_config(folder, overrides)
        # lerobot's config validation only knows cuda/mps/xpu/cpu (it rejects "npu"), so the device
        # is set on the parsed config, still before the model is built.
        config.device = str(self.device)

        legacy_stats = _legacy_normalization_stats(folder / WEIGHTS_FILE)
        self.policy = _load_policy(folder, config, strict=not legacy_stats)
        self.config = self.policy.config
        self.preprocessor, self.postprocessor, self.processor_source = _checkpoint_processors(
            folder, self.config, self.tokenizer, self.device, legacy_stats or dataset_stats
        )

    # ------------------------------------------------------------ facts

    @property
    def expected_noise_shape(self) -> tuple[int, int, int]:
        return (1, int(self.config.chunk_size), int(self.config.max_action_dim))

    @property
    def action_dim(self) -> int:
        return int(self.config.output_features["action"].shape[0])

    @property
    def camera_keys(self) -> list[str]:
        return list(self.config.image_features)

    def load_noise(self, path: str | Path) -> FixedNoise:
        """A noise file checked against this policy ([1, chunk_size, max_action_dim]); names the file."""
        return load_noise(path, expected_shape=self.expected_noise_shape)

    # ------------------------------------------------------------ inference

    def predict(self, frames: list[dict], noise) -> np.ndarray:
        """Actions [N, chunk_size, action_dim] float32 in dataset units for N dataset frames.

        frames: LeRobotDataset items (camera images float [3, H, W] in [0, 1], observation.state,
            task). All N go through the preprocessor and the model as ONE batch.
        noise: a FixedNoise, an array/tensor, or a noise file path. Shape [1, T, D] is repeated to
            [N, T, D] (every frame receives the same values); [N, T, D] gives frame i its own row.
            Any other shape is refused (NoiseFileError), never reshaped or redrawn.
        """
        batch = self._preprocess(frames)
        actions = self._infer(batch, self.noise_tensor(noise, len(frames)))
        return self._postprocess(actions)

    def _preprocess(self, frames: list[dict]) -> dict:
        if not hasattr(self, "policy"):
            raise RuntimeError(f"{self.checkpoint_dir}: this runner was released; load the checkpoint again")
        return self.preprocessor(stack_frames(frames, self.camera_keys))

    def noise_tensor(self, noise, batch_size: int):
        import torch

        source = "noise"
        if isinstance(noise, (str, Path)):
            source = str(noise)
            noise = load_noise(noise)
        if isinstance(noise, FixedNoise):
            values = torch.from_numpy(noise.values.copy())
        elif isinstance(noise, torch.Tensor):
            values = noise.detach().to("cpu")
        else:
            values = torch.from_numpy(np.array(noise, copy=True))
        _, chunk, width = self.expected_noise_shape
        shape = tuple(values.shape)
        if len(shape) != 3 or shape[1:] != (chunk, width) or shape[0] not in (1, batch_size):
            raise NoiseFileError(
                f"{source}: noise shape {list(shape)} does not fit the policy, which needs "
                f"[1, {chunk}, {width}] (or [{batch_size}, {chunk}, {width}] for {batch_size} frames)"
            )
        if values.dtype != torch.float32:
            raise NoiseFileError(f"{source}: noise dtype is {values.dtype}, expected float32")
        values = values.to(self.device)
        # Same values for every frame: expand (a view), then materialise so kernels see plain memory.
        return values.expand(batch_size, chunk, width).contiguous()

    def _infer(self, batch: dict, noise):
        return self.policy.predict_action_chunk(batch, noise=noise)

    def _postprocess(self, actions) -> np.ndarray:
        actions = self.postprocessor(actions)
        return actions[..., : self.action_dim].detach().to("cpu", dtype=_float32()).numpy()

    # ------------------------------------------------------------ timing

    def measure_latency(self, frames: list[dict], noise, warmup: int = 1, iters: int = 5) -> dict:
        """Median and p90 (ms) of the full predict and of its parts, device synchronised around each.

        median_ms/p90_ms: the whole predict (stacking + preprocessor + model + postprocessor).
        model_*: `predict_action_chunk` alone (device events where the device has them);
        preprocess_*/postprocess_*: the harness and lerobot's processors around it.
        """
        if iters < 1 or warmup < 0:
            raise InputError(f"need iters >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")
        noise_tensor = self.noise_tensor(noise, len(frames))
        from verify.devices import DeviceTimer, synchronize

        timer = DeviceTimer(self.device)
        totals, models, pres, posts = [], [], [], []
        for index in range(warmup + iters):
            synchronize(self.device)
            start = time.perf_counter()
            batch = self._preprocess(frames)
            synchronize(self.device)
            after_pre = time.perf_counter()
            with timer.measure() as model_ms:
                actions = self._infer(batch, noise_tensor)
            after_model = time.perf_counter()
            self._postprocess(actions)
            synchronize(self.device)
            end = time.perf_counter()
            if index >= warmup:
                totals.append((end - start) * 1e3)
                models.append(model_ms())
                pres.append((after_pre - start) * 1e3)
                posts.append((end - after_model) * 1e3)
        result = {"iters": iters, "warmup": warmup, "batch_size": len(frames), "timer": timer.kind}
        for name, values in (("", totals), ("model_", models), ("preprocess_", pres), ("postprocess_", posts)):
            result[f"{name}median_ms"] = float(statistics.median(values))
            result[f"{name}p90_ms"] = float(np.percentile(values, 90))
        return result

    # ------------------------------------------------------------ lifetime

    def release(self) -> None:
        """Drop the model and processors and return device memory (so two runners never overlap)."""
        for name in ("policy", "preprocessor", "postprocessor"):
            if hasattr(self, name):
                delattr(self, name)
        gc.collect()
        from verify.devices import empty_cache

        empty_cache(self.device)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


# ---------------------------------------------------------------- loading


def load_checkpoint_tokenizer(folder: Path):
    """The checkpoint's own tokenizer (never the hub): AutoTokenizer on the folder, offline."""
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise InputError(
            f"{folder}: no tokenizer in the checkpoint folder (needs {' or '.join(TOKENIZER_FILES)} "
            "with tokenizer_config.json; save the PaliGemma tokenizer there with "
            "AutoTokenizer.from_pretrained(...).save_pretrained(folder)); the hub is never used"
        )
    from transformers import AutoTokenizer

    try:
        with _quiet():
            return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as error:  # transformers raises many types for broken tokenizer files
        raise InputError(f"{folder}: the tokenizer files cannot be loaded ({type(error).__name__}: {error})") from None


def load_pi0_config(folder: Path, overrides: list[str] = ()):
    """config.json parsed by lerobot (PreTrainedConfig.from_pretrained); must be a pi0 config.

    `overrides`: lerobot's own command-line style overrides ("--dtype=bfloat16"). The device is
    pinned to cpu while parsing: a config saved with "npu" or "cuda" would otherwise be rejected
    or silently switched by lerobot's device check; callers set the real device afterwards.
    """
    from lerobot.configs import PreTrainedConfig
    from lerobot.policies.pi0 import PI0Config

    path = folder / CONFIG_FILE
    try:
        with _quiet():
            config = PreTrainedConfig.from_pretrained(
                str(folder), local_files_only=True, cli_overrides=[*overrides, "--device=cpu"]
            )
    except Exception as error:  # draccus reports unknown/invalid fields with its own error types
        raise InputError(
            f"{path}: lerobot {_version('lerobot')} cannot parse this config ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); a checkpoint from an older lerobot "
            "must first be converted with lerobot's migration script "
            "(python -m lerobot.processor.migrate_policy_normalization)"
        ) from None
    if not isinstance(config, PI0Config):
        raise InputError(f"{path}: policy type is {getattr(config, 'type', '?')!r}, not 'pi0'")
    return config


def _load_policy(folder: Path, config, strict: bool):
    """PI0Policy.from_pretrained with our config (dtype, device), then proof the weights are in."""
    from lerobot.policies.pi0 import PI0Policy

    from verify.tiny_pi0 import checkpoint_architecture

    printed = io.StringIO()
    try:
        with checkpoint_architecture(folder), contextlib.redirect_stdout(printed), _without_patch_embedding_notice():
            policy = PI0Policy.from_pretrained(str(folder), config=config, strict=strict, local_files_only=True)
    except (RuntimeError, AssertionError) as error:  # torch asserts "not compiled with CUDA enabled"
        if _device_error(error):
            raise DeviceUnavailableError(f"device {config.device}: {error}") from None
        raise
    verify_weights_loaded(policy, folder / WEIGHTS_FILE, printed.getvalue())
    return policy.eval()


class _PatchEmbeddingNotice(logging.Filter):
    """lerobot 0.6.1 logs 'Vision embedding key might need handling' for every pi0 checkpoint (every one
    has a patch embedding); verify_weights_loaded checks those tensors for real, so the notice is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Vision embedding key might need handling")


@contextlib.contextmanager
def _without_patch_embedding_notice():
    notice = _PatchEmbeddingNotice()
    root = logging.getLogger()
    root.addFilter(notice)
    try:
        yield
    finally:
        root.removeFilter(notice)


def verify_weights_loaded(policy, weights_path: Path, lerobot_log: str = "") -> None:
    """Every model tensor must come from the file (lerobot's loader would keep random weights).

    Key check over all parameters and buffers, value check on an evenly spread sample of them
    (a whole-model comparison would read a full-size checkpoint twice).
    """
    import torch
    from safetensors import safe_open

    state = policy.state_dict()
    with safe_open(str(weights_path), framework="pt") as handle:
        file_keys = {_lerobot_key(key): key for key in handle.keys()}
        tied = "model.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
        lm_head = "model.paligemma_with_expert.paligemma.lm_head.weight"
        missing = [key for key in state if key not in file_keys and not (key == tied and lm_head in file_keys)]
        if missing:
            hint = _first_warning(lerobot_log)
            raise InputError(
                f"{weights_path}: weights do not fit the model built from config.json: {len(missing)} of "
                f"{len(state)} tensors missing (e.g. {missing[0]})" + (f"; lerobot said: {hint}" if hint else "")
            )
        wrong_shape = [
            key for key in state
            if key in file_keys and tuple(handle.get_slice(file_keys[key]).get_shape()) != tuple(state[key].shape)
        ]
        if wrong_shape:
            key = wrong_shape[0]
            raise InputError(
                f"{weights_path}: {len(wrong_shape)} tensors do not fit the model built from config.json "
                f"(e.g. {key}: file {list(handle.get_slice(file_keys[key]).get_shape())}, model {list(state[key].shape)})"
            )
        common = sorted(key for key in state if key in file_keys)
        for key in common[:: max(1, len(common) // 16)]:
            stored = handle.get_tensor(file_keys[key]).to(state[key].dtype)
            if not torch.equal(stored, state[key].detach().to("cpu")):
                raise InputError(f"{weights_path}: tensor {key} differs from the file after loading; weights not loaded")


def _lerobot_key(key: str) -> str:
    """The model key lerobot's PI0Policy.from_pretrained loads a file key into (its own remapping)."""
    for old, new in (("time_mlp_in.", "action_time_mlp_in."), ("time_mlp_out.", "action_time_mlp_out.")):
        if key.startswith(old):
            key = new + key[len(old):]
    return key if key.startswith("model.") else f"model.{key}"


def _legacy_normalization_stats(weights_path: Path) -> dict | None:
    """Statistics a pre-processor-era checkpoint keeps inside model.safetensors, via lerobot's migrator."""
    from safetensors import safe_open

    with safe_open(str(weights_path), framework="pt") as handle:
        keys = [key for key in handle.keys() if key.startswith(LEGACY_NORMALIZATION_PREFIXES)]
        if not keys:
            return None
        from lerobot.processor.migrate_policy_normalization import extract_normalization_stats

        return extract_normalization_stats({key: handle.get_tensor(key) for key in keys})


def _checkpoint_processors(folder: Path, config, tokenizer, device, dataset_stats: dict | None):
    """lerobot's saved pipelines when the folder has them, else built from statistics."""
    from lerobot.processor import PolicyProcessorPipeline
    from lerobot.processor.converters import (
        batch_to_transition,
        policy_action_to_transition,
        transition_to_batch,
        transition_to_policy_action,
    )

    if (folder / PREPROCESSOR_FILE).is_file() and (folder / POSTPROCESSOR_FILE).is_file():
        try:
            with _quiet():
                preprocessor = PolicyProcessorPipeline.from_pretrained(
                    str(folder),
                    config_filename=PREPROCESSOR_FILE,
                    overrides={"tokenizer_processor": {"tokenizer": tokenizer}, "device_processor": {"device": str(device)}},
                    to_transition=batch_to_transition,
                    to_output=transition_to_batch,
                    local_files_only=True,
                )
                postprocessor = PolicyProcessorPipeline.from_pretrained(
                    str(folder),
                    config_filename=POSTPROCESSOR_FILE,
                    to_transition=policy_action_to_transition,
                    to_output=transition_to_policy_action,
                    local_files_only=True,
                )
        except Exception as error:
            raise InputError(f"{folder}: the saved processor pipelines cannot be loaded ({type(error).__name__}: {error})") from None
        return preprocessor, postprocessor, "checkpoint"
    if dataset_stats is None:
        raise InputError(
            f"{folder}: no {PREPROCESSOR_FILE}/{POSTPROCESSOR_FILE} in the checkpoint and no dataset statistics "
            "given to build them (pass the dataset, whose meta/stats.json has them)"
        )
    config.device = str(device)
    preprocessor, postprocessor = make_processors(config, dataset_stats, tokenizer)
    return preprocessor, postprocessor, "dataset_stats"


def make_processors(config, dataset_stats: dict, tokenizer):
    """lerobot's own pi0 pipelines (make_pi0_pre_post_processors) with a local tokenizer object.

    lerobot's factory names the tokenizer "google/paligemma-3b-pt-224" and fetches it from the hub
    while building the step; for the duration of that call, AutoTokenizer as seen by lerobot's
    tokenizer step answers with `tokenizer` instead. The saved pipeline keeps lerobot's name, as in
    real checkpoints; loaders pass the folder's tokenizer as an override.
    """
    from lerobot.policies.pi0.processor_pi0 import make_pi0_pre_post_processors
    from lerobot.processor import tokenizer_processor

    class _LocalTokenizer:
        @staticmethod
        def from_pretrained(*_args, **_kwargs):
            return tokenizer

    stats = _torch_stats(dataset_stats)
    for key in (STATE_KEY, "action"):
        if key not in stats or not {"mean", "std"} <= set(stats[key]):
            raise InputError(f"dataset statistics lack mean/std for {key!r} (pi0 normalises it with MEAN_STD)")
    real = tokenizer_processor.AutoTokenizer
    tokenizer_processor.AutoTokenizer = _LocalTokenizer
    try:
        return make_pi0_pre_post_processors(config, dataset_stats=stats)
    finally:
        tokenizer_processor.AutoTokenizer = real


def _torch_stats(dataset_stats: dict) -> dict:
    import torch

    return {
        feature: {name: torch.as_tensor(np.asarray(value, dtype=np.float32)) for name, value in stats.items()}
        for feature, stats in dataset_stats.items()
        if isinstance(stats, dict)
    }


# ---------------------------------------------------------------- frames


def stack_frames(frames: list[dict], camera_keys: list[str]) -> dict:
    """N dataset items -> one batch dict: cameras [N, 3, H, W], state [N, S], task list of N strings."""
    import torch

    if not frames:
        raise InputError("no frames to run the policy on")
    batch = {}
    for key in [*camera_keys, STATE_KEY]:
        missing = [index for index, frame in enumerate(frames) if key not in frame]
        if missing:
            raise InputError(
                f"frame {missing[0]} has no {key!r} (the checkpoint expects it; frame has: {', '.join(sorted(frames[missing[0]]))})"
            )
        values = [torch.as_tensor(frame[key]).to(torch.float32) for frame in frames]
        shapes = {tuple(value.shape) for value in values}
        if len(shapes) != 1:
            raise InputError(f"{key!r} has different shapes across frames: {sorted(shapes)}")
        if key != STATE_KEY and (values[0].ndim != 3 or values[0].shape[0] != 3):
            raise InputError(f"{key!r} must be a [3, H, W] image, got {list(values[0].shape)}")
        batch[key] = torch.stack(values)
    tasks = [frame.get("task") for frame in frames]
    if not all(isinstance(task, str) for task in tasks):
        raise InputError("every frame needs a 'task' string (the language instruction pi0 is prompted with)")
    batch["task"] = tasks
    return batch


# ---------------------------------------------------------------- provenance


def checkpoint_sha256(checkpoint_dir: str | Path) -> str:
    """sha256 over the weight/config/tokenizer files: sorted relative paths, each path then its bytes."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        raise InputError(f"{folder}: checkpoint folder not found")
    digest = hashlib.sha256()
    files = sorted(
        path for path in folder.rglob("*")
        if path.is_file() and path.suffix in HASHED_SUFFIXES and not path.name.startswith(".")
    )
    for path in files:
        relative = path.relative_to(folder).as_posix().encode("utf-8")
        digest.update(len(relative).to_bytes(8, "little") + relative)
        digest.update(path.stat().st_size.to_bytes(8, "little"))
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def runtime_versions() -> dict:
    """python, torch, torch_npu (None when absent), lerobot, transformers, cuda / cann when present."""
    import torch

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_npu": None,
        "lerobot": _version("lerobot"),
        "transformers": _version("transformers"),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "cann": None,
    }
    if "torch_npu" in sys.modules or _version("torch-npu"):
        try:
            import torch_npu  # noqa: F401  (registers the npu device)

            versions["torch_npu"] = getattr(torch_npu, "__version__", _version("torch-npu"))
            from verify.devices import cann_version

            versions["cann"] = cann_version(torch_npu) or os.environ.get("ASCEND_TOOLKIT_VERSION")
        except Exception:  # an installed but broken torch_npu is reported as absent here
            pass
    return versions


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _float32():
    import torch

    return torch.float32


def _device_error(error: Exception) -> bool:
    text = str(error).lower()
    return any(word in text for word in ("cuda", "npu", "device", "driver", "out of memory"))


def _first_warning(log: str) -> str:
    for line in log.splitlines():
        if "could not" in line.lower() or "missing" in line.lower():
            return line.strip()
    return ""


@contextlib.contextmanager
def _quiet():
    """lerobot and transformers print banners to stdout; keep stdout for the tool's own output."""
    with contextlib.redirect_stdout(sys.stderr):
        yield
