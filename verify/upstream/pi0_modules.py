"""Seam: the inside of lerobot 0.6.1's PI0Pytorch (policies/pi0/modeling_pi0.py), as hooks and rewrites see it.

Module paths are below `PI0Policy.model`. The trace and the self-test name modules by role
(configs/trace.yaml, configs/selftest.yaml); the paths behind each role live here, so that another
lerobot names them in one place. `*` in a path matches one component (a layer index), and `{0}` in a
label is what it matched.
"""

from __future__ import annotations

from typing import Any

VLM = "paligemma_with_expert.paligemma.model.language_model"  # PaliGemma's Gemma (PiGemmaModel)
EXPERT = "paligemma_with_expert.gemma_expert.model"  # the action expert's Gemma (PiGemmaModel)
VISION_TOWER = "paligemma_with_expert.paligemma.model.vision_tower"  # SigLIP
STATE_PROJECTION = "state_proj"  # runs first in every denoise step (PI0Pytorch.embed_suffix)
ACTION_IN_PROJECTION = "action_in_proj"  # takes x_t in every denoise step
ACTION_OUT_PROJECTION = "action_out_proj"  # gives v_t in every denoise step
SAMPLER = "sample_actions"  # PI0Pytorch's whole prediction: prefix pass, then every Euler step

# role -> (path pattern, label)
ROLES: dict[str, tuple[str, str]] = {
    "vision_tower": (VISION_TOWER, "vision tower"),
    "image_projector": ("paligemma_with_expert.paligemma.model.multi_modal_projector", "image projector"),
    "vlm_layers": (f"{VLM}.layers.*", "VLM layer {0}"),
    "vlm_layer_0": (f"{VLM}.layers.0", "VLM layer 0"),
    "vlm_norm": (f"{VLM}.norm", "VLM final norm"),
    "state_projection": (STATE_PROJECTION, "state projection"),
    "action_in_projection": (ACTION_IN_PROJECTION, "action in projection"),
    "action_time_mlp": ("action_time_mlp_out", "action-time MLP"),
    "expert_layers": (f"{EXPERT}.layers.*", "expert layer {0}"),
    "expert_layer_0": (f"{EXPERT}.layers.0", "expert layer 0"),
    "expert_norm": (f"{EXPERT}.norm", "expert final norm"),
    "action_out_projection": (ACTION_OUT_PROJECTION, "action out projection (v_t)"),
    # pi0.5's PI05Pytorch (policies/pi05/modeling_pi05.py): the time embedding's MLP, whose output conditions
    # every adaptive RMSNorm of the action expert
    "pi05_time_mlp": ("time_mlp_out", "time MLP (adaRMS condition)"),
}


def role(name: str) -> tuple[str, str]:
    """(path pattern, label) of a role; KeyError names the known roles."""
    if name not in ROLES:
        raise KeyError(f"no pi0 module role {name!r}; known roles: {', '.join(ROLES)}")
    return ROLES[name]


def gemma_models(model: Any) -> list[Any]:
    """[PaliGemma's Gemma, the action expert's Gemma] of a PI0Pytorch."""
    return [model.get_submodule(VLM), model.get_submodule(EXPERT)]


def euler_step(x_t: Any, v_t: Any, num_steps: int) -> Any:
    """x_t after one step, as lerobot 0.6.1 computes it (policies/common/flow_matching.py `euler_integrate`,
    openpi's loop): x_t + dt * v_t with dt = -1 / num_steps, the same Python float."""
    return x_t + (-1.0 / num_steps) * v_t
