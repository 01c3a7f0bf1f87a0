"""Diffusion Policy (lerobot's DiffusionPolicy): the initial sample from the noise file, every scheduler step's
noise from a CPU generator the noise file seeds, so two devices see the same draws."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from verify_ate.verify.model.policies.base import PolicyAdapter
from verify_ate.verify.model.policies.features import profile_config

OBS_IMAGES = "observation.images"


def step_noise_seed(noise: Any) -> int:
    """The seed of the per-step generator: the first 8 bytes of the sha256 of the initial sample's float32 values
    (the noise file's own values, so every side, device and precision derives the same seed)."""
    values = np.ascontiguousarray(noise.detach().float().cpu().numpy())
    return int.from_bytes(hashlib.sha256(values.tobytes()).digest()[:8], "little") & (2**63 - 1)


class DiffusionAdapter(PolicyAdapter):
    name = "diffusion"
    label = "Diffusion Policy"
    randomness = (
        "the initial sample [1, horizon, action_dim] from the noise file (predict_action_chunk(noise=...)); every "
        "DDPM scheduler step's variance noise from a CPU torch.Generator per frame seeded by the sha256 of that "
        "frame's noise values, bound to lerobot's conditional_sample, so no draw comes from a device's own generator "
        "or depends on the other frames of a batch"
    )

    def config_class(self) -> Any:
        from lerobot.policies.diffusion import DiffusionConfig

        return DiffusionConfig

    def policy_class(self) -> Any:
        from lerobot.policies.diffusion import DiffusionPolicy

        return DiffusionPolicy

    def noise_shape(self, config: Any) -> tuple[int, int, int]:
        return (1, int(config.horizon), int(config.action_feature.shape[0]))

    def chunk_size(self, config: Any) -> int:
        return int(config.n_action_steps)

    def training_horizon(self, config: Any) -> int:
        return int(config.horizon)

    def num_inference_steps(self, config: Any) -> int | None:
        return int(config.num_inference_steps or config.num_train_timesteps)

    def prepare_config(self, config: Any, folder: Path | None = None) -> None:
        from verify_ate.verify.upstream.act_diffusion import offline_backbone

        offline_backbone(config)

    def model_batch(self, batch: dict, config: Any) -> dict:
        """One frame as the n_obs_steps observations lerobot's select_action stacks at an episode's start (the
        first observation repeated): state [B, n_obs, S], each camera [B, n_obs, 3, H, W]."""
        steps = int(config.n_obs_steps)
        model = dict(batch)
        for key, value in batch.items():
            if key == "observation.state" or key.startswith(OBS_IMAGES + "."):
                model[key] = value.unsqueeze(1).expand(value.shape[0], steps, *value.shape[1:]).contiguous()
        return model

    def predict(self, policy: Any, batch: dict, noise: Any) -> Any:
        from verify_ate.verify.upstream.act_diffusion import pinned_scheduler_noise

        weights_dtype = next(policy.parameters()).dtype
        seeds = [step_noise_seed(row) for row in noise]  # each frame's from its own float32 values
        with pinned_scheduler_noise(seeds):
            return policy.predict_action_chunk(batch, noise=noise.to(weights_dtype))

    @property
    def step_module(self) -> str:  # type: ignore[override]
        from verify_ate.verify.upstream.act_diffusion import DIFFUSION_STEP_MODULE

        return DIFFUSION_STEP_MODULE

    def traced_model(self, policy: Any) -> Any:
        from verify_ate.verify.upstream.act_diffusion import DIFFUSION_TRACED_MODEL

        return policy.get_submodule(DIFFUSION_TRACED_MODEL)

    def trace_modules(self, model: Any) -> tuple[tuple[str, str], ...]:
        from verify_ate.verify.upstream.act_diffusion import diffusion_trace

        return diffusion_trace(model)

    def tiny_config(self, profile: dict, dtype: str = "float32", device: str = "cpu") -> Any:
        return profile_config(
            self.config_class(), profile, pretrained_backbone_weights=None, device=device, push_to_hub=False
        )
