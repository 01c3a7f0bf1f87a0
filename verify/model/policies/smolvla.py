"""SmolVLA (lerobot's SmolVLAPolicy): flow matching like pi0, its flow noise from the noise file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from verify_ate.verify.model.policies.base import PolicyAdapter
from verify_ate.verify.model.policies.features import policy_features


class SmolVlaAdapter(PolicyAdapter):
    name = "smolvla"
    label = "SmolVLA"
    randomness = (
        "the flow noise [1, chunk_size, max_action_dim] from the noise file (predict_action_chunk(noise=...), see "
        "lerobot v0.6.1 modeling_smolvla.VLAFlowMatching.sample_actions), as pi0's; nothing else is drawn"
    )
    steps_field = "num_steps"

    def config_class(self) -> Any:
        from lerobot.policies.smolvla import SmolVLAConfig

        return SmolVLAConfig

    def policy_class(self) -> Any:
        from lerobot.policies.smolvla import SmolVLAPolicy

        return SmolVLAPolicy

    def noise_shape(self, config: Any) -> tuple[int, int, int]:
        return (1, int(config.chunk_size), int(config.max_action_dim))

    def chunk_size(self, config: Any) -> int:
        return int(config.chunk_size)

    def num_inference_steps(self, config: Any) -> int | None:
        return int(config.num_steps)

    def prepare_config(self, config: Any, folder: Path | None = None) -> None:
        from verify_ate.verify.upstream.smolvla import resolve_vlm

        config.load_vlm_weights = False  # every weight comes from the checkpoint's own file
        resolve_vlm(config, folder)

    def processor_overrides(self, config: Any) -> dict:
        from verify_ate.verify.upstream.smolvla import processor_overrides

        return processor_overrides(config)

    def predict(self, policy: Any, batch: dict, noise: Any) -> Any:
        return policy.predict_action_chunk(batch, noise=noise)

    @property
    def step_module(self) -> str:  # type: ignore[override]
        from verify_ate.verify.upstream.smolvla import STEP_MODULE

        return STEP_MODULE

    def traced_model(self, policy: Any) -> Any:
        return policy.model

    def trace_modules(self, model: Any) -> tuple[tuple[str, str], ...]:
        from verify_ate.verify.upstream.smolvla import TRACE

        return TRACE

    def tiny_config(self, profile: dict, dtype: str = "float32", device: str = "cpu", vlm: Path | None = None) -> Any:
        """SmolVLA at the profile's sizes over the backbone folder `vlm` (verify/upstream/smolvla.py writes it)."""
        from lerobot.policies.smolvla import SmolVLAConfig

        sizes, backbone = profile["policy"], profile["vlm"]
        inputs, outputs = policy_features(profile["features"])
        side = int(backbone["image_size"])
        return SmolVLAConfig(
            vlm_model_name=str(vlm) if vlm is not None else "vlm",
            load_vlm_weights=False,
            input_features=inputs,
            output_features=outputs,
            chunk_size=int(sizes["chunk_size"]),
            n_action_steps=int(sizes["n_action_steps"]),
            max_state_dim=int(sizes["max_state_dim"]),
            max_action_dim=int(sizes["max_action_dim"]),
            num_steps=int(sizes["num_steps"]),
            resize_imgs_with_padding=(side, side),
            tokenizer_max_length=int(sizes["tokenizer_max_length"]),
            num_vlm_layers=int(backbone["depth"]),
            num_expert_layers=-1,  # lerobot 0.6.1 crashes for fewer expert layers than VLM layers with cross-attention
            self_attn_every_n_layers=int(sizes["self_attn_every_n_layers"]),
            expert_width_multiplier=float(sizes["expert_width_multiplier"]),
            device=device,
            push_to_hub=False,
        )
