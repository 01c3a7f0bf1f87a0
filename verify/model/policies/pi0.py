"""pi0 (lerobot's PI0Policy): the policy verify-ate was built around; `Pi0Runner` runs it."""

from __future__ import annotations

from typing import Any

from verify_ate.verify.model.policies.base import PolicyAdapter


class Pi0Adapter(PolicyAdapter):
    name = "pi0"
    label = "pi0"
    randomness = (
        "flow-matching noise [1, chunk_size, max_action_dim] (the Euler integration's starting point), the "
        "policy's only random draw: fed from the noise file through predict_action_chunk(noise=...)"
    )
    needs_tokenizer = True
    runner_kind = "pi0"

    def config_class(self) -> Any:
        from lerobot.policies.pi0 import PI0Config

        return PI0Config

    def policy_class(self) -> Any:
        from lerobot.policies.pi0 import PI0Policy

        return PI0Policy

    def noise_shape(self, config: Any) -> tuple[int, int, int]:
        return (1, int(config.chunk_size), int(config.max_action_dim))

    def chunk_size(self, config: Any) -> int:
        return int(config.chunk_size)

    def num_inference_steps(self, config: Any) -> int | None:
        return int(config.num_inference_steps)

    records_x_t = True

    @property
    def step_module(self) -> str:  # type: ignore[override]
        from verify_ate.verify.upstream.pi0_modules import STATE_PROJECTION

        return STATE_PROJECTION

    def traced_model(self, policy: Any) -> Any:
        return policy.model

    def trace_modules(self, model: Any) -> tuple[tuple[str, str], ...]:
        """configs/trace.yaml's `modules` (roles of verify/upstream/pi0_modules.py) are pi0's: the recorder
        takes them from the trace configuration."""
        return ()

    def tiny_config(self, profile: dict, dtype: str = "float32", device: str = "cpu") -> Any:
        from verify_ate.verify.model.tiny import tiny_pi0_config

        return tiny_pi0_config(profile, dtype=dtype, device=device)
