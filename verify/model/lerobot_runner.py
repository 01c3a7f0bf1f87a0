"""Run any lerobot policy other than pi0 (ACT, Diffusion Policy) from a local checkpoint folder on one device.

The policy is lerobot's own class, built from the checkpoint's config.json (made buildable offline by its adapter)
and its weights read tensor by tensor from the safetensors file into it (every model tensor must come from the
file: lerobot's own loader keeps random values with only a warning when one is missing); the pre/post-processors
are lerobot's saved pipelines, or built by lerobot's factory from the dataset statistics. Precision: float32 as
saved, or bfloat16: the weights and the batch cast, and the call under torch.autocast (these policies have no
dtype setting of their own, and make some tensors float32 inside). The call
itself, with every random draw pinned, is the adapter's (verify/model/policies/).
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from pathlib import Path
from typing import Any

from verify_ate.verify.errors import InputError
from verify_ate.verify.model.checkpoint import (
    LoadReport,
    check_checkpoint_folder,
    load_policy_config,
    quiet,
)
from verify_ate.verify.model.devices import MemoryMonitor, check_fits
from verify_ate.verify.model.policies.base import PolicyAdapter
from verify_ate.verify.model.processors import saved_or_built, torch_stats
from verify_ate.verify.model.runner import RunnerBase, step_overrides
from verify_ate.verify.model.weights import CheckpointWeights, checkpoint_weights, read_all_into


class LerobotRunner(RunnerBase):
    """One lerobot policy (of `adapter`'s type) on one device: load, predict with pinned randomness, time, release.

    Same interface as `Pi0Runner` (verify/model/runner.py): checkpoint, device, dtype, dataset_stats (when the
    checkpoint has no saved processors), num_inference_steps, on_bytes."""

    def __init__(
        self,
        adapter: PolicyAdapter,
        checkpoint: Path,
        device: str = "cpu",
        dtype: str = "float32",
        dataset_stats: dict | None = None,
        num_inference_steps: int | None = None,
        on_bytes: Any = None,
    ):
        super().__init__(device, dtype)
        self.adapter = adapter
        folder = self.checkpoint_dir = Path(checkpoint)
        check_checkpoint_folder(folder, adapter)
        self.memory = MemoryMonitor(self.device)
        config = load_policy_config(
            folder, step_overrides(adapter, num_inference_steps), adapter.config_class(), adapter.name
        )
        adapter.prepare_config(config, folder)
        config.device = str(self.device)
        weights = checkpoint_weights(folder)
        if weights.note:
            print(f"note: {folder}: {weights.note}", file=sys.stderr)
        self.policy, self.load_report = load_streamed(adapter, config, weights, self.device, dtype, on_bytes)
        self.config = self.policy.config
        self.preprocessor, self.postprocessor, self.processor_source = policy_processors(
            folder, self.config, self.device, dataset_stats, adapter.processor_overrides(self.config)
        )

    def _infer(self, batch: dict, noise):
        import torch

        model_dtype = getattr(torch, self.dtype)
        for edit in self.noise_edits:
            noise = edit(noise)
        batch = self.adapter.model_batch(batch, self.config)
        if model_dtype != torch.float32:
            batch = {
                key: value.to(model_dtype) if isinstance(value, torch.Tensor) and value.is_floating_point() else value
                for key, value in batch.items()
            }
        # lerobot makes some tensors float32 whatever the weights are (ACT's zero latent): under bfloat16, autocast
        # runs each op in the precision a bfloat16 port would, the weights themselves already bfloat16.
        with torch.autocast(self.device.type, dtype=model_dtype, enabled=model_dtype != torch.float32):
            actions = self.adapter.predict(self.policy, batch, noise)
        return actions.float()


def load_streamed(
    adapter: PolicyAdapter, config: Any, weights: CheckpointWeights, device: Any, dtype: str, on_bytes: Any = None
) -> tuple[Any, LoadReport]:
    """lerobot's policy for `config`, every parameter and buffer the file holds read into it in `dtype` on `device`.

    Checks before any memory of the device is taken: every tensor of the model is in the file with its shape, and the
    file holds no tensor the model lacks (InputError naming the file); the model fits the device's free memory.
    The policy is built on the CPU in float32 (its random initialisation, under a forked RNG, is overwritten)."""
    import torch

    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]), quiet(), contextlib.redirect_stdout(io.StringIO()):
        policy = adapter.policy_class()(config)  # SmolVLA prints as it trims its backbone
    state = policy.state_dict()
    where = weights.files[0] if len(weights.files) == 1 else weights.folder
    missing = [key for key in state if key not in weights.tensors]
    unexpected = [key for key in weights.tensors if key not in state]
    if missing or unexpected:
        raise InputError(
            f"{where}: the weights do not fit lerobot's {adapter.label} built from config.json: "
            + "; ".join(
                f"{what} {len(keys)} tensor(s), first {keys[0]!r}"
                for what, keys in (("missing", missing), ("unexpected", unexpected))
                if keys
            )
        )
    for key, tensor in state.items():
        if tuple(weights.tensors[key].shape) != tuple(tensor.shape):
            raise InputError(
                f"{where}: tensor {key!r} has shape {list(weights.tensors[key].shape)}, the model's is "
                f"{list(tensor.shape)}"
            )
    torch_dtype = getattr(torch, dtype)
    parameter_bytes = sum(
        p.numel() * (torch_dtype.itemsize if p.is_floating_point() else p.element_size()) for p in policy.parameters()
    )
    buffer_bytes = sum(b.numel() * b.element_size() for b in policy.buffers())
    parameters = sum(p.numel() for p in policy.parameters())
    check_fits(device, parameter_bytes + buffer_bytes, f"{adapter.label} ({parameters:,} parameters in {dtype})")
    policy.to(device=device, dtype=torch_dtype)
    total = read_all_into(policy.state_dict(keep_vars=True), {key: key for key in state}, weights, on_bytes)
    config.device = str(device)
    report = LoadReport(
        seconds=time.perf_counter() - started,
        parameters=parameters,
        parameter_bytes=parameter_bytes,
        buffer_bytes=buffer_bytes,
        bytes_read=total,
        files=tuple(path.relative_to(weights.folder).as_posix() for path in weights.files),
        float32_modules=(),
        layout=None,
    )
    return policy.eval(), report


def policy_processors(
    folder: Path, config: Any, device: Any, dataset_stats: dict | None, overrides: dict | None = None
) -> tuple[Any, Any, str]:
    """lerobot's saved pipelines when the folder has them (`overrides`: of their steps, by registry name), else
    lerobot's factory from dataset statistics."""
    from lerobot.policies.factory import make_pre_post_processors

    return saved_or_built(
        folder,
        config,
        device,
        dataset_stats,
        lambda: make_pre_post_processors(
            config,
            pretrained_path=str(folder),
            preprocessor_overrides={"device_processor": {"device": str(device)}, **(overrides or {})},
        ),
        lambda stats: make_pre_post_processors(config, dataset_stats=torch_stats(stats)),
    )
