"""The parts of pi0's Gemma attention that a recipe chooses, for the attention forward of the fence.

The Ascend port rewrote pi0's attention in three places: Q/K/V as one fused matmul, RoPE through a
fused rotary op, and the attention itself through a fused flash-attention kernel with its own mask
convention. Each rewrite, and each classic way to get it wrong, is one field of `AttentionRecipe`;
`install(attention, recipe, patches)` makes one `GemmaAttention` instance (so the other side of a
comparison keeps lerobot's) run transformers' forward as copied in the fence
(verify_ate.verify.upstream.gemma.attention_forward) with the recipe's steps, which are transformers'
own wherever the recipe keeps the default.

Shapes: hidden states [B, L, width]; queries [B, Hq, L, d]; keys and values [B, Hkv, S, d] (S: the
cached prefix plus L); masks [B, 1, L, S], additive (0 where a query may attend a key, lerobot's
large negative where not).
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass
from typing import Any

from verify_ate.verify.model.patches import InstancePatches

QKV = ("separate", "fused", "fused-bf16")
ROPE = ("halves", "fused", "interleaved")
KERNELS = ("eager", "sdpa", "softmax-fp16")
MASKS = ("as-built", "padding-attendable")


@dataclass(frozen=True)
class AttentionRecipe:
    """How one attention computes; every default is what lerobot and transformers do.

    qkv: "separate" (three matmuls), "fused" (one matmul over the concatenated weight), "fused-bf16"
        (the fused weight cast to bfloat16, the input with it, the result back);
    kv_swapped: the fused weight's K and V blocks exchanged (a fault: a wrong split offset);
    rope: "halves" (transformers' apply_rotary_pos_emb), "fused" (one rotary-mul op, npu_rotary_mul on
        an NPU), "interleaved" (a fault: rotates pairs (0,1), (2,3)... of a halves-layout table);
    kernel: "eager" (transformers' eager attention), "sdpa" (one fused kernel with the boolean mask
        made additive; npu_prompt_flash_attention on an NPU), "softmax-fp16" (a fault: eager with the
        scores soft-maxed in float16, never upcast);
    mask: "as-built" or "padding-attendable" (a fault: keys masked for every query, the padding, are
        let through, as when a kernel's True-means-masked convention is half applied).
    """

    qkv: str = "separate"
    kv_swapped: bool = False
    rope: str = "halves"
    kernel: str = "eager"
    mask: str = "as-built"

    def __post_init__(self) -> None:
        for value, allowed in ((self.qkv, QKV), (self.rope, ROPE), (self.kernel, KERNELS), (self.mask, MASKS)):
            if value not in allowed:
                raise ValueError(f"attention recipe: {value!r} is not one of {', '.join(allowed)}")
        if self.kv_swapped and self.qkv == "separate":
            raise ValueError("attention recipe: kv_swapped needs a fused Q/K/V weight")


def install(attention: Any, recipe: AttentionRecipe, patches: InstancePatches) -> None:
    """Make one GemmaAttention instance compute with `recipe` (its forward hooks keep firing), undoably."""
    from verify_ate.verify.upstream.gemma import attention_forward

    fused = fused_qkv_weight(attention, recipe) if recipe.qkv != "separate" else None
    forward = functools.partial(
        attention_forward,
        project=functools.partial(project_qkv, recipe=recipe, fused=fused),
        rotate=functools.partial(rotate, recipe.rope),
        mask=padding_attendable if recipe.mask == "padding-attendable" else _as_built,
        attend=functools.partial(attend, recipe.kernel),
    )
    patches.set(attention, "forward", types.MethodType(forward, attention))


def _as_built(attention_mask):
    return attention_mask


def fused_qkv_weight(attention: Any, recipe: AttentionRecipe):
    """[(Hq + 2 Hkv) d, width] (and its bias or None): q, k, v stacked once, at install time."""
    import torch

    blocks = [attention.q_proj, attention.v_proj, attention.k_proj] if recipe.kv_swapped else None
    blocks = blocks or [attention.q_proj, attention.k_proj, attention.v_proj]
    weight = torch.cat([block.weight.detach() for block in blocks], dim=0)
    bias = None
    if attention.q_proj.bias is not None:
        bias = torch.cat([block.bias.detach() for block in blocks], dim=0)
    if recipe.qkv == "fused-bf16":
        weight = weight.to(torch.bfloat16)
        bias = bias.to(torch.bfloat16) if bias is not None else None
    return weight, bias


def project_qkv(self: Any, hidden_states, *, recipe: AttentionRecipe, fused):
    """q [B, L, Hq d], k and v [B, L, Hkv d]; `fused`: the stacked weight and bias of a fused recipe."""
    import torch.nn.functional as F

    if recipe.qkv == "separate":
        return self.q_proj(hidden_states), self.k_proj(hidden_states), self.v_proj(hidden_states)
    weight, bias = fused
    fused = F.linear(hidden_states.to(weight.dtype), weight, bias).to(hidden_states.dtype)
    q_width = self.q_proj.out_features
    kv_width = self.k_proj.out_features
    return fused.split([q_width, kv_width, kv_width], dim=-1)


def rotate(layout: str, query, key, cos, sin):
    """RoPE on queries and keys; cos/sin [B, L, d] in transformers' halves layout (cat(freqs, freqs))."""
    if layout == "halves":
        from verify_ate.verify.upstream.gemma import apply_rotary_pos_emb

        return apply_rotary_pos_emb(query, key, cos, sin)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    if layout == "fused":
        return rotary_mul(query, cos, sin), rotary_mul(key, cos, sin)
    return query * cos + rotate_pairs(query) * sin, key * cos + rotate_pairs(key) * sin


def rotary_mul(x, cos, sin):
    """x cos + rotate_half(x) sin as one op: torch_npu's npu_rotary_mul on an NPU, its PyTorch
    equivalent elsewhere (the same products and sums, in the same order as transformers')."""
    if x.device.type == "npu":  # pragma: no cover - Ascend hosts only
        import torch_npu

        return torch_npu.npu_rotary_mul(x, cos, sin)
    import torch

    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def rotate_pairs(x):
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): the interleaved (GPT-J) layout's rotation."""
    import torch

    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def padding_attendable(attention_mask):
    """The additive mask with every key that no query may attend (padding) opened to all queries."""
    masked_for_all = (attention_mask < 0).all(dim=-2, keepdim=True)
    return attention_mask.masked_fill(masked_for_all, 0.0)


def attend(kernel: str, self: Any, query, key, value, attention_mask):
    """Attention output [B, L, Hq, d]."""
    if kernel == "sdpa":
        return fused_attention(self, query, key, value, attention_mask)
    from verify_ate.verify.upstream.gemma import eager_attention, repeat_kv

    if kernel == "eager":
        return eager_attention(self, query, key, value, attention_mask)
    import torch

    key = repeat_kv(key, self.num_key_value_groups)
    value = repeat_kv(value, self.num_key_value_groups)
    scores = torch.matmul(query, key.transpose(2, 3)) * self.scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = torch.softmax(scores.to(torch.float16), dim=-1).to(query.dtype)
    return torch.matmul(weights, value).transpose(1, 2).contiguous()


def fused_attention(self: Any, query, key, value, attention_mask):
    """One fused kernel. lerobot's mask says where a query may attend (additive 0); the kernel is given
    the boolean "may attend" made additive with the dtype's lowest finite value, so a row of padding
    with nothing to attend gives finite values, as lerobot's eager path does."""
    import torch
    import torch.nn.functional as F

    mask = None
    if attention_mask is not None:
        may_attend = attention_mask == 0
        if query.device.type == "npu":  # pragma: no cover - Ascend hosts only
            return npu_flash_attention(self, query, key, value, may_attend)
        mask = torch.zeros(may_attend.shape, dtype=query.dtype, device=query.device)
        mask = mask.masked_fill(~may_attend, torch.finfo(query.dtype).min)
    output = F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, scale=self.scaling, enable_gqa=self.num_key_value_groups > 1
    )
    return output.transpose(1, 2).contiguous()


def npu_flash_attention(self: Any, query, key, value, may_attend):  # pragma: no cover - Ascend hosts only
    """torch_npu's prompt flash attention, whose boolean mask says where a query may NOT attend."""
    import torch_npu

    output = torch_npu.npu_prompt_flash_attention(
        query,
        key,
        value,
        atten_mask=~may_attend,
        num_heads=query.shape[1],
        num_key_value_heads=key.shape[1],
        scale_value=self.scaling,
        input_layout="BNSD",
    )
    return output.transpose(1, 2).contiguous()
