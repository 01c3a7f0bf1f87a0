"""lerobot policies/act and policies/diffusion (lerobot 0.6.1): building them offline, and pinning Diffusion's draws.

- `offline_backbone`: ACTPolicy and DiffusionPolicy build their ResNet through torchvision with
  `weights=config.pretrained_backbone_weights` (see lerobot v0.6.1 modeling_act.ACT.__init__ and
  modeling_diffusion.DiffusionRgbEncoder.__init__), which downloads ImageNet weights when the config names
  them. A checkpoint's file holds the trained backbone, so the download is never needed: the name is cleared
  before the policy is built (these machines cannot reach the hub, and nothing may be fetched silently).
- `pinned_scheduler_noise`: DiffusionModel.generate_actions calls `conditional_sample(batch_size,
  global_cond=..., noise=noise)` without a generator (see lerobot v0.6.1 modeling_diffusion
  DiffusionModel.generate_actions), so `noise=` fixes only the initial sample and every DDPM `scheduler.step`
  draws fresh variance noise from the device's own generator, through diffusers' `randn_tensor` in the model's
  dtype (see diffusers 0.39 schedulers/scheduling_ddpm.py DDPMScheduler.step; DDIM's with eta > 0 alike). For
  the block, in this thread, the name `randn_tensor` of both scheduler modules draws from one CPU generator in
  float32 and casts to the requested device and dtype: every device and precision sees the same values (a
  bfloat16 draw of torch is not the float32 draw rounded, so drawing in the model's dtype would not do).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from verify_ate.verify.upstream.patching import thread_scoped


def offline_backbone(config: Any) -> None:
    """Never download ImageNet backbone weights when the policy is built: the checkpoint brings its own."""
    config.pretrained_backbone_weights = None


@contextlib.contextmanager
def pinned_scheduler_noise(seeds: Sequence[int]) -> Iterator[None]:
    """Within the block (this thread), every draw of a DDPM or DDIM scheduler step (diffusers' `randn_tensor`, called
    with no generator by lerobot v0.6.1's conditional_sample) comes from float32 CPU generators, one per batch row
    seeded with `seeds[row]`, whatever the device, the dtype, the global RNG state and the other rows of the batch: a
    frame's draws are the same alone as in any batch."""
    import torch
    from diffusers.schedulers import scheduling_ddim, scheduling_ddpm

    pinned = [torch.Generator(device="cpu").manual_seed(int(seed)) for seed in seeds]

    def randn_tensor(shape: Any, generator: Any = None, device: Any = None, dtype: Any = None, **_: Any) -> Any:
        shape = tuple(shape)
        if shape[0] != len(pinned):
            raise RuntimeError(f"a scheduler drew noise of shape {list(shape)} for a batch of {len(pinned)}")
        rows = [torch.randn(shape[1:], generator=row, dtype=torch.float32) for row in pinned]
        return torch.stack(rows).to(device=device, dtype=dtype)

    with contextlib.ExitStack() as stack:
        for module in (scheduling_ddpm, scheduling_ddim):
            stack.enter_context(thread_scoped(module, "randn_tensor", randn_tensor))
        yield


# What `--trace` records of each, in the order the modules run: (path below the traced model, label). The
# traced model is ACTPolicy.model (ACT) and DiffusionPolicy.diffusion (DiffusionModel); lerobot 0.6.1's names.
ACT_TRACED_MODEL = "model"
ACT_TRACE = (
    ("backbone", "ResNet backbone"),
    ("encoder_img_feat_input_proj", "image feature projection"),
    ("encoder.layers.*", "encoder layer {0}"),
    ("encoder.norm", "encoder final norm"),
    ("decoder.layers.*", "decoder layer {0}"),
    ("decoder.norm", "decoder final norm"),
    ("action_head", "action head"),
)
DIFFUSION_TRACED_MODEL = "diffusion"
DIFFUSION_STEP_MODULE = "unet"  # called once per denoising step (DiffusionModel.conditional_sample)


def diffusion_trace(model: Any) -> tuple[tuple[str, str], ...]:
    """DiffusionModel's recorded modules: one image encoder per camera (use_separate_rgb_encoder_per_camera) or
    one shared, then the U-Net's blocks in every step."""
    import torch

    separate = isinstance(model.rgb_encoder, torch.nn.ModuleList)
    encoder = ("rgb_encoder.*", "image encoder {0}") if separate else ("rgb_encoder", "image encoder")
    return (
        encoder,
        ("unet.diffusion_step_encoder", "step encoder"),
        # down and up levels are ModuleLists of (residual block, residual block, resampling) that the U-Net's
        # forward walks itself: their parts are what runs
        ("unet.down_modules.*.*", "U-Net down {0}.{1}"),
        ("unet.mid_modules.*", "U-Net mid block {0}"),
        ("unet.up_modules.*.*", "U-Net up {0}.{1}"),
        ("unet.final_conv", "U-Net final conv (the step's output)"),
    )


def image_encoders(policy_type: str, policy: Any) -> list[Any]:
    """The ResNet image encoders of an ACT (its backbone) or a Diffusion Policy (one per camera, or one shared)."""
    import torch

    if policy_type == "act":
        return [policy.get_submodule(f"{ACT_TRACED_MODEL}.backbone")]
    if policy_type == "diffusion":
        encoder = policy.get_submodule(f"{DIFFUSION_TRACED_MODEL}.rgb_encoder")
        return list(encoder) if isinstance(encoder, torch.nn.ModuleList) else [encoder]
    raise ValueError(f"{policy_type}: no ResNet image encoder")
