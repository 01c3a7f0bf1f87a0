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
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from verify_ate.noise import FixedNoise, NoiseFileError, check_noise_shape, load_noise
from verify_ate.verify.errors import InputError
from verify_ate.verify.model.checkpoint import (
    check_checkpoint_folder,
    legacy_normalization_stats,
    load_checkpoint_tokenizer,
    load_policy,
    load_policy_config,
)
from verify_ate.verify.model.devices import DeviceTimer, MemoryMonitor, empty_cache, synchronize
from verify_ate.verify.model.patches import InstancePatches
from verify_ate.verify.model.policies.base import PolicyAdapter
from verify_ate.verify.model.precision import DTYPES
from verify_ate.verify.model.processors import STATE_KEY, checkpoint_processors, make_processors
from verify_ate.verify.model.seeded import SeededCheckpoint, build_seeded_policy
from verify_ate.verify.model.tiny import build_byte_tokenizer
from verify_ate.verify.model.weights import checkpoint_weights


def policy_config_of(checkpoint: Path | SeededCheckpoint, num_inference_steps: int | None = None) -> Any:
    """The lerobot config a checkpoint's policy is built from, without building it (cheap)."""
    from verify_ate.verify.model.policies import checkpoint_adapter

    if isinstance(checkpoint, SeededCheckpoint):
        return checkpoint.config("float32", "cpu", num_inference_steps)
    adapter = checkpoint_adapter(checkpoint)
    return load_policy_config(
        Path(checkpoint), step_overrides(adapter, num_inference_steps), adapter.config_class(), adapter.name
    )


def step_overrides(adapter: PolicyAdapter, num_inference_steps: int | None) -> list[str]:
    """lerobot's override of the denoising step count; InputError for a policy that takes one forward pass."""
    if num_inference_steps is None:
        return []
    if not adapter.denoises:
        raise InputError(f"--num-inference-steps: {adapter.label} predicts in one forward pass; it has no steps")
    return [f"--{adapter.steps_field}={int(num_inference_steps)}"]


def noise_shape_of(checkpoint: Path | SeededCheckpoint, num_inference_steps: int | None = None) -> tuple[int, int, int]:
    """[1, T, D]: the noise a checkpoint's policy takes (D = 0 for a policy that takes none)."""
    from verify_ate.verify.model.policies import checkpoint_adapter

    return checkpoint_adapter(checkpoint).noise_shape(policy_config_of(checkpoint, num_inference_steps))


class RunnerBase:
    """What every policy's runner shares: rewrites of the loaded model, predicting on dataset frames with fixed
    noise (preprocessor, model, postprocessor), timing, release. A subclass loads the policy (setting `policy`,
    `config`, `preprocessor`, `postprocessor`, `processor_source`, `load_report`, `memory`, `checkpoint_dir`)
    and says how the model is called (`_infer`) and what noise it takes (`expected_noise_shape`)."""

    adapter: PolicyAdapter
    checkpoint_dir: Path | None
    config: Any
    policy: Any
    preprocessor: Any
    postprocessor: Any
    processor_source: str
    load_report: Any
    memory: MemoryMonitor

    def __init__(self, device: str, dtype: str):
        import torch

        self.device = torch.device(device)
        self.dtype = dtype
        self.variants: tuple[str, ...] = ()
        self.faults: tuple[str, ...] = ()
        self.batch_edits: list[Callable[[dict, dict], dict]] = []  # (processed, stacked) -> processed
        self.noise_edits: list[Callable[[Any], Any]] = []
        self.patches = InstancePatches()  # what `rewrite` changed, undone on release
        if dtype not in DTYPES:
            raise InputError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")

    def rewrite(self, variants: tuple[str, ...] = (), faults: tuple[str, ...] = ()) -> None:
        """Apply named variants and faults (verify/model/rewrites.py) to this runner's model only."""
        from verify_ate.verify.model.rewrites import apply_rewrites

        apply_rewrites(self, self.patches, variants, faults)
        self.variants, self.faults = (*self.variants, *variants), (*self.faults, *faults)

    @contextlib.contextmanager
    def rewritten(self, variants: tuple[str, ...] = (), faults: tuple[str, ...] = (), extra=None):
        """This runner's model with the named variants and faults (and `extra(runner, patches)`, a perturbation)
        applied for the block only; the model is as loaded again afterwards, so one load serves many cases."""
        from verify_ate.verify.model.rewrites import apply_rewrites

        patches = InstancePatches()
        before = self.variants, self.faults
        try:
            apply_rewrites(self, patches, variants, faults)
            if extra is not None:
                extra(self, patches)
            self.variants, self.faults = (*self.variants, *variants), (*self.faults, *faults)
            yield self
        finally:
            patches.undo()
            self.variants, self.faults = before

    @property
    def expected_noise_shape(self) -> tuple[int, int, int]:
        """[1, T, D] of the noise the policy takes (D = 0: none)."""
        return self.adapter.noise_shape(self.config)

    @property
    def chunk_size(self) -> int:
        """Actions in one predicted chunk."""
        return self.adapter.chunk_size(self.config)

    @property
    def num_inference_steps(self) -> int | None:
        return self.adapter.num_inference_steps(self.config)

    @property
    def action_dim(self) -> int:
        return int(self.config.output_features["action"].shape[0])

    @property
    def camera_keys(self) -> list[str]:
        return list(self.config.image_features)

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
        stacked = stack_frames(frames, self.camera_keys)
        batch = self.preprocessor(stacked)
        for edit in self.batch_edits:
            batch = edit(batch, stacked)
        return batch

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
        check_noise_shape(tuple(values.shape), self.expected_noise_shape, source, batch_size=batch_size)
        if values.dtype != torch.float32:
            raise NoiseFileError(f"{source}: noise dtype is {values.dtype}, expected float32")
        values = values.to(self.device)
        # Same values for every frame: expand (a view), then materialise so kernels see plain memory.
        return values.expand(batch_size, chunk, width).contiguous()

    def _infer(self, batch: dict, noise):
        raise NotImplementedError

    def _postprocess(self, actions) -> np.ndarray:
        actions = self.postprocessor(actions)
        return actions[..., : self.action_dim].detach().float().cpu().numpy()

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
        self.patches.undo()
        for name in ("policy", "preprocessor", "postprocessor"):
            if hasattr(self, name):
                delattr(self, name)
        gc.collect()
        empty_cache(self.device)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


class Pi0Runner(RunnerBase):
    """One pi0 (or pi0.5) policy on one device. Load, predict on dataset frames with fixed noise, time, release.

    checkpoint: a lerobot pi0 checkpoint folder (config.json, model.safetensors or an index and its
        shards, a tokenizer, usually policy_pre/postprocessor.json + their statistics), or a
        SeededCheckpoint (a model made from a seed, nothing on disk).
    device: a torch device string ("cpu", "cuda", "cuda:1", "npu:0"); the caller checks availability.
    dtype: "float32" or "bfloat16", lerobot's PI0Config.dtype.
    dataset_stats: used only when the checkpoint has no saved processors (or legacy buffers).
    num_inference_steps: optional override of the config's Euler step count.
    on_bytes: called with (bytes done, total) while the weights load.
    """

    def __init__(
        self,
        checkpoint: str | Path | SeededCheckpoint,
        device: str = "cpu",
        dtype: str = "float32",
        dataset_stats: dict | None = None,
        num_inference_steps: int | None = None,
        on_bytes: Callable[[int, int], None] | None = None,
    ):
        from verify_ate.verify.model.policies import checkpoint_adapter

        super().__init__(device, dtype)
        self.adapter = checkpoint_adapter(checkpoint)  # pi0, or pi0.5 (built and loaded the same way)
        if isinstance(checkpoint, SeededCheckpoint):
            self.checkpoint_dir = None
            self.memory = MemoryMonitor(self.device)  # peaks from here on: building, then every prediction
            self.tokenizer = build_byte_tokenizer()
            config = checkpoint.config(dtype, str(self.device), num_inference_steps)
            self.policy, self.load_report = build_seeded_policy(checkpoint, config, self.device, on_bytes)
            self.config = self.policy.config
            self.preprocessor, self.postprocessor = make_processors(
                self.config, checkpoint.dataset_stats, self.tokenizer
            )
            self.processor_source = "dataset_stats"
            return
        folder = self.checkpoint_dir = Path(checkpoint)
        check_checkpoint_folder(folder, self.adapter)
        self.memory = MemoryMonitor(self.device)  # peaks from here on: loading, then every prediction
        self.tokenizer = load_checkpoint_tokenizer(folder)
        overrides = [f"--dtype={dtype}"]
        if num_inference_steps is not None:
            overrides.append(f"--num_inference_steps={int(num_inference_steps)}")
        config = load_policy_config(folder, overrides, self.adapter.config_class(), self.adapter.name)
        # lerobot's config validation only knows cuda/mps/xpu/cpu (it rejects "npu"), so the device
        # is set on the parsed config, still before the model is built.
        config.device = str(self.device)

        weights = checkpoint_weights(folder)
        if weights.note:
            print(f"note: {folder}: {weights.note}", file=sys.stderr)
        legacy_stats = legacy_normalization_stats(weights)
        self.policy, self.load_report = load_policy(
            folder, config, weights, self.device, strict=not legacy_stats, on_bytes=on_bytes
        )
        self.config = self.policy.config
        self.preprocessor, self.postprocessor, self.processor_source = checkpoint_processors(
            folder, self.config, self.tokenizer, self.device, legacy_stats or dataset_stats
        )

    # ------------------------------------------------------------ inference

    def _infer(self, batch: dict, noise):
        for edit in self.noise_edits:
            noise = edit(noise)
        return self.policy.predict_action_chunk(batch, noise=noise)


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
                f"frame {missing[0]} has no {key!r} (the checkpoint expects it; frame has: "
                f"{', '.join(sorted(frames[missing[0]]))})"
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
