"""Variants and faults: rewrites of lerobot 0.6.1's pi0 applied to one side's loaded model only.

A *variant* is one of the optimisations that took the seed's Ascend pi0 from 670 ms to 80 ms,
written as device-agnostic PyTorch (and, on an Ascend host, as the torch_npu op it stands for): the
device under test should still move the robot as the reference does. A *fault* is a classic way to
get such a port wrong: the gate should catch it, and the trace should name the module it broke.
README.md ("Variants and faults") has one paragraph per name.

Each rewrite changes instances of one loaded policy (forwards, hooks, the runner's inputs), never
lerobot's classes, so the other side of a comparison in the same process keeps lerobot's code.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from verify.errors import DeviceUnavailableError, InputError
from verify.model.attention import AttentionRecipe, install

VARIANT = "variant"
FAULT = "fault"
VLM_LAYER_0 = "VLM layer 0"  # trace labels, as configs/trace.yaml names them


@dataclass(frozen=True)
class Rewrite:
    """One named change to a loaded pi0.

    attention: AttentionRecipe fields this rewrite sets in every Gemma attention;
    apply: anything else it does to the runner (a verify.model.runner.Pi0Runner);
    first_module: for a fault, the trace label of the module its damage shows in first.
    """

    name: str
    kind: str
    summary: str
    attention: dict = field(default_factory=dict)
    apply: Callable[[Any], None] | None = None
    first_module: str | None = None


# ---------------------------------------------------------------- rewrites beyond attention


def _gemma_models(policy) -> list:
    pair = policy.model.paligemma_with_expert
    return [pair.paligemma.model.language_model, pair.gemma_expert.model]


def hoist_rotary_tables(runner) -> None:
    """cos/sin computed once per position for the whole prediction (prefix pass and every Euler step),
    then gathered by position, instead of each model forward computing them for its positions."""
    for model in _gemma_models(runner.policy):
        rotary = model.rotary_emb
        rotary._verify_tables = {}
        rotary.forward = types.MethodType(_rotary_from_table, rotary)


def _rotary_from_table(self, x, position_ids):
    """GemmaRotaryEmbedding.forward from a table of cos/sin [P, d] grown to the largest position seen:
    the same float32 products inv_freq * position as transformers' forward, then cast to x's dtype."""
    import torch

    needed = int(position_ids.max()) + 1
    key = (x.device, x.dtype)
    table = self._verify_tables.get(key)
    if table is None or table[0].shape[0] < needed:
        positions = torch.arange(max(needed, 1024), device=x.device, dtype=torch.float32)
        freqs = positions[:, None] * self.inv_freq.float().to(x.device)[None, :]
        angles = torch.cat((freqs, freqs), dim=-1)
        table = (
            (angles.cos() * self.attention_scaling).to(x.dtype),
            (angles.sin() * self.attention_scaling).to(x.dtype),
        )
        self._verify_tables[key] = table
    return table[0][position_ids], table[1][position_ids]


def fuse_add_rmsnorm(runner) -> None:
    """Each Gemma layer's first residual add and its post-attention RMSNorm as one op (torch_npu's
    npu_add_rms_norm on an NPU, whose multiplier must be Gemma's 1 + weight)."""
    for model in _gemma_models(runner.policy):
        for layer in model.layers:
            layer.forward = types.MethodType(_layer_with_add_rmsnorm, layer)


def _layer_with_add_rmsnorm(
    self,
    hidden_states,
    attention_mask=None,
    position_ids=None,
    past_key_values=None,
    use_cache=False,
    cache_position=None,
    position_embeddings=None,
    adarms_cond=None,
    **kwargs,
):
    """lerobot's PiGemma decoder layer (no adaptive norm: pi0 passes none) with add + RMSNorm fused."""
    residual = hidden_states
    hidden_states, _ = self.input_layernorm(hidden_states)
    hidden_states, _ = self.self_attn(
        hidden_states,
        attention_mask=attention_mask,
        position_ids=position_ids,
        past_key_values=past_key_values,
        use_cache=use_cache,
        cache_position=cache_position,
        position_embeddings=position_embeddings,
        **kwargs,
    )
    normed, summed = add_rms_norm(residual, hidden_states, self.post_attention_layernorm)
    return summed + self.mlp(normed)


def add_rms_norm(residual, update, norm):
    """(RMSNorm(residual + update) * (1 + weight), residual + update), as PiGemmaRMSNorm computes it."""
    import torch

    coefficient = 1.0 + norm.weight.float()
    if residual.device.type == "npu":  # pragma: no cover - Ascend hosts only
        import torch_npu

        normed, _, summed = torch_npu.npu_add_rms_norm(residual, update, coefficient.to(residual.dtype), norm.eps)
        return normed, summed
    summed = residual + update
    variance = torch.mean(torch.square(summed.float()), dim=-1, keepdim=True)
    normed = summed * torch.rsqrt(variance + norm.eps) * coefficient
    return normed.type_as(summed), summed


def compile_sampler(mode: str | None) -> Callable[[Any], None]:
    """torch.compile over lerobot's sample_actions (the whole prediction): inductor on CPU and CUDA
    (mode "reduce-overhead" adds CUDA graphs), torchair's NPU backend on an Ascend host."""

    def apply(runner) -> None:
        import torch

        device = runner.device.type
        if mode == "reduce-overhead" and device != "cuda":
            raise DeviceUnavailableError(f"variant compile-cudagraphs needs a CUDA device, this side runs on {device}")
        backend: Any = "inductor"
        if device == "npu":  # pragma: no cover - Ascend hosts only
            import torchair

            backend = torchair.get_npu_backend()
        model = runner.policy.model
        model.sample_actions = torch.compile(model.sample_actions, backend=backend, mode=mode, dynamic=False)

    return apply


def gemma_scale_without_one(runner) -> None:
    """Every Gemma RMSNorm multiplies by `weight` where Gemma's is `1 + weight`."""
    from lerobot.policies.pi_gemma import PiGemmaRMSNorm

    for model in _gemma_models(runner.policy):
        for module in model.modules():
            if isinstance(module, PiGemmaRMSNorm):
                module.forward = types.MethodType(_rmsnorm_times_weight, module)


def _rmsnorm_times_weight(self, x, cond=None):
    normed = self._norm(x) * self.weight.float()
    return normed.type_as(x), None


def swap_image_channels(runner) -> None:
    """Every camera reaches the vision tower as BGR instead of RGB."""

    def to_bgr(_module, args, kwargs):
        if args:
            return (args[0].flip(1), *args[1:]), kwargs
        return args, {**kwargs, "pixel_values": kwargs["pixel_values"].flip(1)}

    tower = runner.policy.model.paligemma_with_expert.paligemma.model.vision_tower
    runner.rewrite_handles.append(tower.register_forward_pre_hook(to_bgr, with_kwargs=True))


def skip_state_normalization(runner) -> None:
    """The state reaches pi0 in dataset units (degrees), its mean/std normalisation skipped."""
    from verify.model.processors import STATE_KEY

    def raw_state(processed: dict, raw: dict) -> dict:
        state = raw[STATE_KEY].to(device=processed[STATE_KEY].device, dtype=processed[STATE_KEY].dtype)
        return {**processed, STATE_KEY: state}

    runner.batch_edits.append(raw_state)


def draw_own_noise(runner) -> None:
    """The device under test draws its own Gaussian noise (seed 1) instead of the shared noise file's."""
    import torch

    def own_noise(noise):
        generator = torch.Generator().manual_seed(1)
        return torch.randn(noise.shape, generator=generator, dtype=noise.dtype).to(noise.device)

    runner.noise_edits.append(own_noise)


def perturb_output(path: str, scale: float, seed: int = 0) -> Callable[[Any], None]:
    """A relative perturbation of one module's output: y (1 + scale z), z standard normal (seeded,
    drawn once per output shape, on the CPU so every device gets the same values)."""

    def apply(runner) -> None:
        import torch

        module = dict(runner.policy.model.named_modules()).get(path)
        if module is None:
            raise InputError(f"no module {path!r} below PI0Policy.model to perturb")
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

        runner.rewrite_handles.append(module.register_forward_hook(perturb))

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
            "compile", VARIANT, "torch.compile of the whole prediction (torchair on NPU)", apply=compile_sampler(None)
        ),
        Rewrite(
            "compile-cudagraphs",
            VARIANT,
            "torch.compile with CUDA graphs (mode reduce-overhead; CUDA only)",
            apply=compile_sampler("reduce-overhead"),
        ),
        Rewrite(
            "rmsnorm-coef",
            FAULT,
            "Gemma RMSNorm scaled by weight instead of 1 + weight",
            apply=gemma_scale_without_one,
            first_module=VLM_LAYER_0,
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
        ),
        Rewrite(
            "state-unnormalized",
            FAULT,
            "the state fed in dataset units, its normalisation skipped",
            apply=skip_state_normalization,
            first_module="state projection",
        ),
        Rewrite(
            "noise-reseeded",
            FAULT,
            "the device draws its own noise instead of the shared file's (the negative control)",
            apply=draw_own_noise,
            first_module="action in projection",
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


def apply_rewrites(runner, variants: Iterable[str] = (), faults: Iterable[str] = ()) -> None:
    """Rewrite `runner`'s loaded policy: the variants, then the faults on top (a fault's attention
    choice wins over a variant's). Attention recipes are merged and installed once per layer."""
    chosen = [CATALOGUE[name] for name in (*variants, *faults)]
    fields: dict = {}
    for rewrite in chosen:
        fields.update(rewrite.attention)
    if fields.get("kv_swapped") and fields.get("qkv", "separate") == "separate":
        fields["qkv"] = "fused"  # a swap happens in a fused weight
    recipe = AttentionRecipe(**fields)
    if recipe != AttentionRecipe():
        from transformers.models.gemma.modeling_gemma import GemmaAttention

        for model in _gemma_models(runner.policy):
            for module in model.modules():
                if isinstance(module, GemmaAttention):
                    install(module, recipe)
    for rewrite in chosen:
        if rewrite.apply is not None:
            rewrite.apply(runner)
