"""ACT (lerobot's ACTPolicy): deterministic at inference, so it takes no noise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from verify_ate.verify.model.policies.base import PolicyAdapter
from verify_ate.verify.model.policies.features import profile_config


class ActAdapter(PolicyAdapter):
    name = "act"
    label = "ACT"
    randomness = (
        "none: in eval mode the VAE latent is zeros (see lerobot v0.6.1 modeling_act.ACT.forward) and dropout is "
        "off, so a prediction draws nothing; the noise file holds no values ([1, chunk_size, 0]) and a noise file "
        "with values is refused"
    )
    takes_noise = False
    denoises = False

    def config_class(self) -> Any:
        from lerobot.policies.act import ACTConfig

        return ACTConfig

    def policy_class(self) -> Any:
        from lerobot.policies.act import ACTPolicy

        return ACTPolicy

    def noise_shape(self, config: Any) -> tuple[int, int, int]:
        return (1, int(config.chunk_size), 0)

    def chunk_size(self, config: Any) -> int:
        return int(config.chunk_size)

    def prepare_config(self, config: Any, folder: Path | None = None) -> None:
        from verify_ate.verify.upstream.act_diffusion import offline_backbone

        offline_backbone(config)

    def predict(self, policy: Any, batch: dict, noise: Any) -> Any:
        return policy.predict_action_chunk(batch)

    def traced_model(self, policy: Any) -> Any:
        from verify_ate.verify.upstream.act_diffusion import ACT_TRACED_MODEL

        return policy.get_submodule(ACT_TRACED_MODEL)

    def trace_modules(self, model: Any) -> tuple[tuple[str, str], ...]:
        from verify_ate.verify.upstream.act_diffusion import ACT_TRACE

        return ACT_TRACE

    def tiny_config(self, profile: dict, dtype: str = "float32", device: str = "cpu") -> Any:
        return profile_config(
            self.config_class(), profile, pretrained_backbone_weights=None, device=device, push_to_hub=False
        )
