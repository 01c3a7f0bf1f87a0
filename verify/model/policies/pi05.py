"""pi0.5 (lerobot's PI05Policy): pi0's PaliGemma-with-expert, the state discretised into the prompt, an action expert
with adaptive RMSNorm (scale, shift and gate from the time embedding), quantile normalisation. Built, loaded and run
as pi0 is (`Pi0Runner`)."""

from __future__ import annotations

from typing import Any

from verify_ate.verify.model.policies.pi0 import Pi0Adapter

# What --trace records of pi0.5 by default: pi0's roles without the state projection (pi0.5 has none: the state is
# in the prompt) and with its time MLP (verify/upstream/pi0_modules.py names the paths).
PI05_TRACE_ROLES = (
    "vision_tower",
    "image_projector",
    "vlm_layers",
    "vlm_norm",
    "action_in_projection",
    "pi05_time_mlp",
    "expert_layers",
    "expert_norm",
    "action_out_projection",
)


class Pi05Adapter(Pi0Adapter):
    name = "pi05"
    label = "pi0.5"
    # randomness: pi0's (the flow noise from the noise file, its only draw at inference)

    def config_class(self) -> Any:
        from lerobot.policies.pi05 import PI05Config

        return PI05Config

    def policy_class(self) -> Any:
        from lerobot.policies.pi05 import PI05Policy

        return PI05Policy

    @property
    def step_module(self) -> str:  # type: ignore[override]
        from verify_ate.verify.upstream.pi0_modules import ACTION_IN_PROJECTION

        return ACTION_IN_PROJECTION  # the first module of every denoising step (no state projection)

    def trace_modules(self, model: Any) -> tuple[tuple[str, str], ...]:
        from verify_ate.verify.upstream.pi0_modules import role

        return tuple(role(name) for name in PI05_TRACE_ROLES)

    def tiny_config(self, profile: dict, dtype: str = "float32", device: str = "cpu") -> Any:
        from verify_ate.verify.model.tiny import tiny_pi05_config

        return tiny_pi05_config(profile, dtype=dtype, device=device)
