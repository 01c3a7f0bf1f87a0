"""Variants and faults: rewrites of lerobot 0.6.1's pi0 applied to one side's loaded model only, undoably.

A *variant* is one of the optimisations that took the Ascend port of pi0 from 670 ms to 80 ms,
written as device-agnostic PyTorch (and, on an Ascend host, as the torch_npu op it stands for): the
device under test should still move the robot as the reference does. A *fault* is a classic way to
get such a port wrong: the gate should catch it, and the trace should name the module it broke.
docs/selftest.md has one paragraph per name.

Each rewrite changes instances of one loaded policy (forwards, hooks, the runner's inputs), never
lerobot's classes, so the other side of a comparison in the same process keeps lerobot's code; every
change is recorded in an InstancePatches, so one loaded model can be rewritten and put back. The
copied upstream forwards they run are in the fence (verify_ate.verify.upstream.gemma). This module's
catalogue loads no torch: the command line checks names against it.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from verify_ate.verify.errors import DeviceUnavailableError, InputError

VARIANT = "variant"
FAULT = "fault"
PERTURBATION = "perturbation"  # a scaled change of one module's output (selftest --sensitivity)
VLM_LAYER_0 = "VLM layer 0"  # trace labels of the modules a fault shows in first (verify/upstream/pi0_modules.py)
ACT_BACKBONE = "ResNet backbone"  # ... and of ACT and Diffusion (verify/upstream/act_diffusion.py)
DIFFUSION_FIRST_ENCODER = "image encoder"  # "image encoder N" where one runs per camera
DIFFUSION_FIRST_UNET_BLOCK = "U-Net down 0.0"
SMOLVLA_LAYER_0_NORM = "VLM layer 0 input norm"  # (verify/upstream/smolvla.py)

# apply(runner, patches): what a rewrite does beyond attention, every change recorded in `patches`
Apply = Callable[[Any, Any], None]


@dataclass(frozen=True)
class Rewrite:
    """One named change to a loaded pi0.

    attention: AttentionRecipe fields this rewrite sets in every Gemma attention;
    apply: anything else it does to the runner (a verify_ate.verify.model.runner.Pi0Runner);
    first_module: for a fault, the trace label of the module its damage shows in first;
    devices: the device types it runs on (None: any);
    traceable: whether module hooks see its computation (a compiled model runs without them).
    """

    name: str
    kind: str
    summary: str
    attention: dict = field(default_factory=dict)
    apply: Apply | None = None
    first_module: str | None = None
    devices: tuple[str, ...] | None = None
    traceable: bool = True
    policies: tuple[str, ...] = ("pi0", "pi05")  # the policy types it applies to (lerobot's config type)
    first_module_by_policy: tuple[tuple[str, str], ...] = ()  # where it differs from `first_module`
    # The same change in another policy's own code: on that policy, this apply instead of `attention` and `apply`.
    apply_by_policy: tuple[tuple[str, Apply], ...] = ()

    def runs_on(self, device_type: str) -> bool:
        return self.devices is None or device_type in self.devices

    def applies_to(self, policy: str) -> bool:
        return policy in self.policies

    def applier(self, policy: str) -> tuple[dict, Apply | None]:
        """(attention fields, apply) of this rewrite on `policy`."""
        own = dict(self.apply_by_policy).get(policy)
        return ({}, own) if own is not None else (self.attention, self.apply)

    def expected_module(self, policy: str = "pi0") -> str | None:
        """The trace label its damage shows in first, on `policy`."""
        return dict(self.first_module_by_policy).get(policy, self.first_module)


# ---------------------------------------------------------------- rewrites beyond attention


def _gemma_models(runner) -> list:
    from verify_ate.verify.upstream.pi0_modules import gemma_models

    return gemma_models(runner.policy.model)


def hoist_rotary_tables(runner, patches) -> None:
    """cos/sin computed once per position for the whole prediction (prefix pass and every Euler step),
    then gathered by position, instead of each model forward computing them for its positions."""
    from verify_ate.verify.upstream.gemma import rotary_forward_from_table

    for model in _gemma_models(runner):
        rotary = model.rotary_emb
        forward = functools.partial(rotary_forward_from_table, tables={})
        patches.set(rotary, "forward", types.MethodType(forward, rotary))


def fuse_add_rmsnorm(runner, patches) -> None:
    """Each Gemma layer's first residual add and its post-attention RMSNorm as one op (torch_npu's
    npu_add_rms_norm on an NPU, whose multiplier must be Gemma's 1 + weight)."""
    from verify_ate.verify.upstream.gemma import decoder_layer_forward

    forward = functools.partial(decoder_layer_forward, add_rms_norm=add_rms_norm)
    for model in _gemma_models(runner):
        for layer in model.layers:
            if _adaptive(layer.post_attention_layernorm):
                continue  # pi0.5's expert: its adaptive norm and gate are not one add-rmsnorm op
            patches.set(layer, "forward", types.MethodType(forward, layer))


def _adaptive(norm) -> bool:
    """A PiGemmaRMSNorm conditioned on the time embedding (pi0.5's action expert: adaRMS), which has no weight."""
    return getattr(norm, "dense", None) is not None


def add_rms_norm(residual, update, norm):
    """(RMSNorm(residual + update) * (1 + weight), residual + update), as PiGemmaRMSNorm computes it."""
    import torch

    from verify_ate.verify.upstream.gemma import rms_norm_parts

    coefficient, eps = rms_norm_parts(norm)
    if residual.device.type == "npu":  # pragma: no cover - Ascend hosts only
        import torch_npu

        normed, _, summed = torch_npu.npu_add_rms_norm(residual, update, coefficient.to(residual.dtype), eps)
        return normed, summed
    summed = residual + update
    variance = torch.mean(torch.square(summed.float()), dim=-1, keepdim=True)
    normed = summed * torch.rsqrt(variance + eps) * coefficient
    return normed.type_as(summed), summed


def compile_sampler(mode: str | None) -> Apply:
    """torch.compile over lerobot's sample_actions (the whole prediction): inductor on CPU and CUDA
    (mode "reduce-overhead" adds CUDA graphs), torchair's NPU backend on an Ascend host."""

    def apply(runner, patches) -> None:
        import os

        import torch

        from verify_ate.verify.cache import default_cache_dir
        from verify_ate.verify.upstream.pi0_modules import SAMPLER

        # inductor keeps the kernels it compiled (a minute of C++ builds on a small CPU, the first time) under
        # /tmp by default, which a reboot or a CI runner empties; verify-ate's cache persists.
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(default_cache_dir() / "torchinductor"))
        backend: Any = "inductor"
        if runner.device.type == "npu":  # pragma: no cover - Ascend hosts only
            import torchair

            backend = torchair.get_npu_backend()
        model = runner.policy.model
        compiled = torch.compile(getattr(model, SAMPLER), backend=backend, mode=mode, dynamic=False)
        patches.set(model, SAMPLER, compiled)

    return apply


def gemma_scale_without_one(runner, patches) -> None:
    """Every Gemma RMSNorm multiplies by `weight` where Gemma's is `1 + weight` (pi0.5's adaptive ones have none)."""
    from verify_ate.verify.upstream.gemma import rmsnorm_class, rmsnorm_forward_times_weight

    norm_class = rmsnorm_class()
    for model in _gemma_models(runner):
        for module in model.modules():
            if isinstance(module, norm_class) and not _adaptive(module):
                patches.set(module, "forward", types.MethodType(rmsnorm_forward_times_weight, module))


def swap_image_channels(runner, patches) -> None:
    """Every camera reaches the vision tower as BGR instead of RGB."""
    from verify_ate.verify.upstream.pi0_modules import VISION_TOWER

    def to_bgr(_module, args, kwargs):
        if args:
            return (args[0].flip(1), *args[1:]), kwargs
        return args, {**kwargs, "pixel_values": kwargs["pixel_values"].flip(1)}

    tower = runner.policy.model.get_submodule(VISION_TOWER)
    patches.hook(tower.register_forward_pre_hook(to_bgr, with_kwargs=True))


def skip_state_normalization(runner, patches) -> None:
    """The state reaches pi0 in dataset units (degrees), its mean/std normalisation skipped."""
    from verify_ate.verify.model.processors import STATE_KEY

    def raw_state(processed: dict, raw: dict) -> dict:
        state = raw[STATE_KEY].to(device=processed[STATE_KEY].device, dtype=processed[STATE_KEY].dtype)
        return {**processed, STATE_KEY: state}

    patches.append(runner.batch_edits, raw_state)


def swap_adarms_scale_and_shift(runner, patches) -> None:
    """pi0.5: every adaptive RMSNorm of the action expert splits its modulation as (shift, scale, gate)."""
    from verify_ate.verify.upstream.gemma import adaptive_rmsnorm_forward_scale_shift_swapped, rmsnorm_class

    norm_class = rmsnorm_class()
    forward = adaptive_rmsnorm_forward_scale_shift_swapped
    for model in _gemma_models(runner):
        for module in model.modules():
            if isinstance(module, norm_class) and _adaptive(module):
                patches.set(module, "forward", types.MethodType(forward, module))


def state_bins_off_by_one(runner, patches) -> None:
    """pi0.5: the pre-processor writes each state token one of the 256 bins too high."""
    from lerobot.policies.pi05.processor_pi05 import Pi05PrepareStateTokenizerProcessorStep

    from verify_ate.verify.upstream.pi05_processors import state_bins_off_by_one_step

    steps = list(runner.preprocessor.steps)
    found = [i for i, step in enumerate(steps) if isinstance(step, Pi05PrepareStateTokenizerProcessorStep)]
    if not found:
        raise InputError("this pre-processor has no pi0.5 state-tokenizer step to break")
    steps[found[0]] = state_bins_off_by_one_step(steps[found[0]])
    patches.set(runner.preprocessor, "steps", steps)


def draw_own_noise(runner, patches) -> None:
    """The device under test draws its own Gaussian noise (seed 1) instead of the shared noise file's."""
    import torch

    def own_noise(noise):
        generator = torch.Generator().manual_seed(1)
        return torch.randn(noise.shape, generator=generator, dtype=noise.dtype).to(noise.device)

    patches.append(runner.noise_edits, own_noise)


def channels_last_images(runner, patches) -> None:
    """Each image encoder's input turned into channels-last memory format (the values unchanged; the
    convolutions then run their NHWC kernels)."""
    import torch

    from verify_ate.verify.upstream.act_diffusion import image_encoders

    def to_channels_last(_module, args):
        return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])

    for encoder in image_encoders(runner.adapter.name, runner.policy):
        patches.hook(encoder.register_forward_pre_hook(to_channels_last))


def skip_image_normalization(runner, patches) -> None:
    """Every camera reaches the ResNet as the dataset's [0, 1] pixels, its mean/std (ImageNet-style)
    normalisation skipped."""

    def raw_images(processed: dict, raw: dict) -> dict:
        edited = dict(processed)
        for key in runner.camera_keys:
            edited[key] = raw[key].to(device=processed[key].device, dtype=processed[key].dtype)
        return edited

    patches.append(runner.batch_edits, raw_images)


def norms_with_batch_statistics(runner, patches) -> None:
    """The image encoder's normalisation layers in the wrong mode: every (frozen) BatchNorm normalises with the
    batch's own statistics (train mode, as a port that rebuilt it as BatchNorm and never called eval()), and
    every GroupNorm per channel (a port that wrote it as InstanceNorm)."""
    import torch

    from verify_ate.verify.upstream.act_diffusion import image_encoders

    def batch_statistics(module, x):
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        variance = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        weight, bias = module.weight.reshape(1, -1, 1, 1), module.bias.reshape(1, -1, 1, 1)
        return (x - mean) * torch.rsqrt(variance + module.eps) * weight + bias

    def per_channel(module, x):
        return torch.nn.functional.group_norm(x, x.shape[1], module.weight, module.bias, module.eps)

    for encoder in image_encoders(runner.adapter.name, runner.policy):
        for module in encoder.modules():
            kind = type(module).__name__
            if kind in ("FrozenBatchNorm2d", "BatchNorm2d"):
                patches.set(module, "forward", types.MethodType(batch_statistics, module))
            elif kind == "GroupNorm":
                patches.set(module, "forward", types.MethodType(per_channel, module))


def ddim_scheduler(runner, patches) -> None:
    """The device under test denoises with diffusers' DDIM scheduler where the policy was trained and is run
    with DDPM (same betas and step count): a scheduler mismatch of a port."""
    from diffusers import DDIMScheduler

    model = runner.policy.diffusion
    patches.set(model, "noise_scheduler", DDIMScheduler.from_config(model.noise_scheduler.config))


def _smolvla(name: str) -> Apply:
    """One of SmolVLA's own faults (verify/upstream/smolvla.py), by function name, imported when applied."""

    def apply(runner, patches) -> None:
        from verify_ate.verify.upstream import smolvla

        getattr(smolvla, name)(runner.policy, patches)

    return apply


def perturb_output(path: str, scale: float, seed: int = 0) -> Apply:
    """A relative perturbation of one module's output: y (1 + scale z), z standard normal (seeded,
    drawn once per output shape, on the CPU so every device gets the same values)."""

    def apply(runner, patches) -> None:
        import torch

        module = dict(runner.policy.model.named_modules()).get(path)
        if module is None:
            raise InputError(f"no module {path!r} in this policy's model to perturb")
        draws: dict = {}

        def perturb(_module, _args, output):
            tensor = output if isinstance(output, torch.Tensor) else None
            if tensor is None:
                return None
            key = tuple(tensor.shape)
            if key not in draws:
                generator = torch.Generator().manual_seed(seed)
                draws[key] = torch.randn(key, generator=generator, dtype=torch.float32)
            z = draws[key].to(device=tensor.device, dtype=tensor.dtype)
            return tensor + scale * tensor * z

        patches.hook(module.register_forward_hook(perturb))

    return apply


# ---------------------------------------------------------------- the catalogue


CATALOGUE: dict[str, Rewrite] = {
    rewrite.name: rewrite
    for rewrite in (
        Rewrite("fused-qkv", VARIANT, "Q, K and V as one matmul over the concatenated weight", {"qkv": "fused"}),
        Rewrite(
            "fused-qkv-bf16",
            VARIANT,
            "Q, K and V as one matmul, the fused weight cast to bfloat16",
            {"qkv": "fused-bf16"},
        ),
        Rewrite(
            "rope-hoisted",
            VARIANT,
            "RoPE cos/sin computed once per prediction, applied by one rotary-mul op (npu_rotary_mul on NPU)",
            {"rope": "fused"},
            hoist_rotary_tables,
        ),
        Rewrite(
            "sdpa",
            VARIANT,
            "attention as one fused kernel, the boolean mask made additive (npu_prompt_flash_attention on NPU)",
            {"kernel": "sdpa"},
        ),
        Rewrite(
            "add-rmsnorm",
            VARIANT,
            "residual add and post-attention RMSNorm as one op (npu_add_rms_norm on NPU)",
            apply=fuse_add_rmsnorm,
        ),
        Rewrite(
            "compile",
            VARIANT,
            "torch.compile of the whole prediction (torchair on NPU)",
            apply=compile_sampler(None),
            traceable=False,
        ),
        Rewrite(
            "compile-cudagraphs",
            VARIANT,
            "torch.compile with CUDA graphs (mode reduce-overhead; CUDA only)",
            apply=compile_sampler("reduce-overhead"),
            devices=("cuda",),
            traceable=False,
        ),
        Rewrite(
            "rmsnorm-coef",
            FAULT,
            "RMSNorm with the other model's scale: Gemma's by weight instead of 1 + weight (SmolVLA's Llama norms by "
            "1 + weight instead of weight)",
            apply=gemma_scale_without_one,
            first_module=VLM_LAYER_0,
            policies=("pi0", "pi05", "smolvla"),
            apply_by_policy=(("smolvla", _smolvla("llama_norms_with_one_plus_weight")),),
            first_module_by_policy=(("smolvla", SMOLVLA_LAYER_0_NORM),),
        ),
        Rewrite(
            "mask-inverted",
            FAULT,
            "the attention mask's convention half flipped: padding becomes attendable",
            {"mask": "padding-attendable"},
            first_module=VLM_LAYER_0,
        ),
        Rewrite(
            "rope-interleaved",
            FAULT,
            "RoPE rotating interleaved pairs instead of halves",
            {"rope": "interleaved"},
            first_module=VLM_LAYER_0,
            policies=("pi0", "pi05", "smolvla"),
            apply_by_policy=(("smolvla", _smolvla("rope_on_interleaved_pairs")),),
        ),
        Rewrite(
            "qkv-swap",
            FAULT,
            "K and V exchanged in the fused Q/K/V weight",
            {"kv_swapped": True},
            first_module=VLM_LAYER_0,
        ),
        Rewrite(
            "softmax-lowp",
            FAULT,
            "attention scores soft-maxed in float16, never upcast",
            {"kernel": "softmax-fp16"},
            first_module=VLM_LAYER_0,
        ),
        Rewrite(
            "image-bgr",
            FAULT,
            "camera images fed as BGR instead of RGB",
            apply=swap_image_channels,
            first_module="vision tower",
            policies=("pi0", "pi05", "smolvla"),
            apply_by_policy=(("smolvla", _smolvla("images_as_bgr")),),
        ),
        Rewrite(
            "image-stretched",
            FAULT,
            "camera images stretched to the backbone's square size instead of resized with padding",
            apply=_smolvla("images_stretched"),
            first_module="vision tower",
            policies=("smolvla",),
        ),
        Rewrite(
            "state-unnormalized",
            FAULT,
            "the state fed in dataset units, its normalisation skipped",
            apply=skip_state_normalization,
            first_module="state projection",
            policies=("pi0", "smolvla"),  # pi0.5 reads the state from its prompt, tokenised before any batch edit
        ),
        Rewrite(
            "adarms-swapped",
            FAULT,
            "pi0.5's adaptive RMSNorm modulation split as (shift, scale) instead of (scale, shift)",
            apply=swap_adarms_scale_and_shift,
            first_module="expert layer 0",
            policies=("pi05",),
        ),
        Rewrite(
            "state-bins-shifted",
            FAULT,
            "pi0.5's state discretised one of its 256 bins too high in the prompt",
            apply=state_bins_off_by_one,
            first_module=VLM_LAYER_0,
            policies=("pi05",),
        ),
        Rewrite(
            "noise-reseeded",
            FAULT,
            "the device draws its own noise instead of the shared file's (the negative control)",
            apply=draw_own_noise,
            first_module="action in projection",
            policies=("pi0", "pi05", "smolvla", "diffusion"),
            first_module_by_policy=(("diffusion", DIFFUSION_FIRST_UNET_BLOCK),),
        ),
        Rewrite(
            "channels-last",
            VARIANT,
            "the ResNet's input in channels-last memory format (NHWC, as cuDNN and Ascend convolutions prefer)",
            apply=channels_last_images,
            policies=("act", "diffusion"),
        ),
        Rewrite(
            "image-norm-skipped",
            FAULT,
            "camera images fed to the ResNet as [0, 1] pixels, their mean/std normalisation skipped",
            apply=skip_image_normalization,
            policies=("act", "diffusion"),
            first_module_by_policy=(("act", ACT_BACKBONE), ("diffusion", DIFFUSION_FIRST_ENCODER)),
        ),
        Rewrite(
            "norm-batch-stats",
            FAULT,
            "the image encoder's BatchNorm in train mode (batch statistics), its GroupNorm per channel",
            apply=norms_with_batch_statistics,
            policies=("act", "diffusion"),
            first_module_by_policy=(("act", ACT_BACKBONE), ("diffusion", DIFFUSION_FIRST_ENCODER)),
        ),
        Rewrite(
            "scheduler-ddim",
            FAULT,
            "denoising with a DDIM scheduler where the policy runs DDPM",
            apply=ddim_scheduler,
            policies=("diffusion",),
            first_module_by_policy=(("diffusion", DIFFUSION_FIRST_UNET_BLOCK),),
        ),
    )
}

VARIANTS = tuple(name for name, rewrite in CATALOGUE.items() if rewrite.kind == VARIANT)
FAULTS = tuple(name for name, rewrite in CATALOGUE.items() if rewrite.kind == FAULT)


def parse_names(text: str | Iterable[str], kind: str) -> tuple[str, ...]:
    """'a,b' (or a list) -> ('a', 'b'), each a known name of `kind`; an unknown one is an InputError
    listing the known ones."""
    names = [part.strip() for part in (text.split(",") if isinstance(text, str) else text)]
    names = [name for name in names if name]
    known = VARIANTS if kind == VARIANT else FAULTS
    for name in names:
        if name not in known:
            raise InputError(f"unknown {kind} {name!r}; known {kind}s: {', '.join(known)}")
    return tuple(dict.fromkeys(names))


def applicable(names: Iterable[str], device_type: str, policy: str = "pi0") -> tuple[str, ...]:
    """The names among `names` whose rewrite runs on `device_type` and applies to `policy`."""
    return tuple(name for name in names if CATALOGUE[name].runs_on(device_type) and CATALOGUE[name].applies_to(policy))


def apply_rewrites(runner, patches, variants: Iterable[str] = (), faults: Iterable[str] = ()) -> None:
    """Rewrite `runner`'s loaded policy, recording every change in `patches` (verify/model/patches.py): the
    variants, then the faults on top (a fault's attention choice wins over a variant's). Attention recipes
    are merged and installed once per layer. A rewrite that does not run on this device is
    DeviceUnavailableError (exit 3)."""
    chosen = [CATALOGUE[name] for name in (*variants, *faults)]
    policy = runner.adapter.name
    for rewrite in chosen:
        if not rewrite.applies_to(policy):
            fitting = [
                name for name, other in CATALOGUE.items() if other.kind == rewrite.kind and other.applies_to(policy)
            ]
            raise InputError(
                f"{rewrite.kind} {rewrite.name} is a rewrite of {', '.join(rewrite.policies)}, not of {policy} "
                f"({policy}'s {rewrite.kind}s: {', '.join(fitting) or 'none'})"
            )
        if not rewrite.runs_on(runner.device.type):
            raise DeviceUnavailableError(
                f"{rewrite.kind} {rewrite.name} needs a {' or '.join(rewrite.devices or ())} device, this side "
                f"runs on {runner.device.type}"
            )
    fields: dict = {}
    for rewrite in chosen:
        fields.update(rewrite.applier(policy)[0])
    if fields.get("kv_swapped") and fields.get("qkv", "separate") == "separate":
        fields["qkv"] = "fused"  # a swap happens in a fused weight
    from verify_ate.verify.model.attention import AttentionRecipe, install

    recipe = AttentionRecipe(**fields)
    if recipe != AttentionRecipe():
        from verify_ate.verify.upstream.gemma import attention_class

        attention = attention_class()
        for model in _gemma_models(runner):
            for module in model.modules():
                if isinstance(module, attention):
                    install(module, recipe, patches)
    for rewrite in chosen:
        apply = rewrite.applier(policy)[1]
        if apply is not None:
            apply(runner, patches)
