"""Seam: the Gemma code inside pi0 (transformers 5.5 models/gemma/modeling_gemma.py, lerobot 0.6.1
policies/pi_gemma.py), for the rewrites that replace one instance's forward (verify/model/rewrites.py).

Each forward below is a copy of the upstream one, labelled with its source, with one part made a
parameter (or, for a fault, changed on purpose); everything else is upstream's code as it stands.
Shapes: hidden states [B, L, width]; queries [B, Hq, L, d]; keys and values [B, Hkv, S, d].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def attention_class() -> type:
    """transformers' GemmaAttention, which every layer of both of pi0's Gemmas uses (lerobot pi_gemma.py)."""
    from transformers.models.gemma.modeling_gemma import GemmaAttention

    return GemmaAttention


def rmsnorm_class() -> type:
    """lerobot's PiGemmaRMSNorm, every norm of both of pi0's Gemmas."""
    from lerobot.policies.pi_gemma import PiGemmaRMSNorm

    return PiGemmaRMSNorm


def apply_rotary_pos_emb(query: Any, key: Any, cos: Any, sin: Any) -> tuple[Any, Any]:
    """transformers 5.5 modeling_gemma.apply_rotary_pos_emb (the halves layout: cat(freqs, freqs))."""
    from transformers.models.gemma.modeling_gemma import apply_rotary_pos_emb as upstream

    return upstream(query, key, cos, sin)


def eager_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any) -> Any:
    """transformers 5.5 modeling_gemma.eager_attention_forward at the module's scaling: [B, L, Hq, d]."""
    from transformers.models.gemma.modeling_gemma import eager_attention_forward

    output, _ = eager_attention_forward(module, query, key, value, attention_mask, scaling=module.scaling)
    return output


def repeat_kv(states: Any, groups: int) -> Any:
    """transformers 5.5 modeling_gemma.repeat_kv: [B, Hkv, S, d] -> [B, Hkv * groups, S, d]."""
    from transformers.models.gemma.modeling_gemma import repeat_kv as upstream

    return upstream(states, groups)


def attention_forward(
    self: Any,
    hidden_states: Any,
    position_embeddings: Any = None,
    attention_mask: Any = None,
    past_key_values: Any = None,
    *,
    project: Callable[[Any, Any], tuple[Any, Any, Any]],
    rotate: Callable[[Any, Any, Any, Any], tuple[Any, Any]],
    mask: Callable[[Any], Any],
    attend: Callable[[Any, Any, Any, Any, Any], Any],
    **kwargs: Any,
) -> tuple[Any, None]:
    """GemmaAttention.forward, copied from transformers 5.5.4 (models/gemma/modeling_gemma.py), with its
    steps given: `project(self, hidden)` -> q, k, v [B, L, H d]; `rotate(q, k, cos, sin)`; `mask(additive
    mask)`; `attend(self, q, k, v, mask)` -> [B, L, Hq, d] (transformers: the attention interface of
    config._attn_implementation, eager for pi0). Dropout is left out: pi0 runs in eval mode."""
    input_shape = hidden_states.shape[:-1]
    hidden_shape = (*input_shape, -1, self.head_dim)
    query, key, value = project(self, hidden_states)
    query = query.view(hidden_shape).transpose(1, 2)
    key = key.view(hidden_shape).transpose(1, 2)
    value = value.view(hidden_shape).transpose(1, 2)

    cos, sin = position_embeddings
    query, key = rotate(query, key, cos, sin)
    if past_key_values is not None:
        key, value = past_key_values.update(key, value, self.layer_idx)
    if attention_mask is not None:
        attention_mask = mask(attention_mask)
    output = attend(self, query, key, value, attention_mask)
    output = output.reshape(*input_shape, -1).contiguous()
    return self.o_proj(output), None


def decoder_layer_forward(
    self: Any,
    hidden_states: Any,
    attention_mask: Any = None,
    position_ids: Any = None,
    past_key_values: Any = None,
    use_cache: bool = False,
    cache_position: Any = None,
    position_embeddings: Any = None,
    adarms_cond: Any = None,
    *,
    add_rms_norm: Callable[[Any, Any, Any], tuple[Any, Any]],
    **kwargs: Any,
) -> Any:
    """PiGemmaDecoderLayer.forward, copied from lerobot 0.6.1 (policies/pi_gemma.py, `_PiGemmaDecoderLayerBase`)
    for pi0, which passes no adaptive-norm condition (so each `_gated_residual` is a plain add), with the
    first residual add and the post-attention norm given as one step: `add_rms_norm(residual, update,
    norm)` -> (normed, summed)."""
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


def rms_norm_parts(norm: Any) -> tuple[Any, float]:
    """(1 + weight in float32, eps) of a PiGemmaRMSNorm without adaptive condition: Gemma's multiplier."""
    return 1.0 + norm.weight.float(), norm.eps


def rmsnorm_forward_times_weight(self: Any, x: Any, cond: Any = None) -> tuple[Any, None]:
    """PiGemmaRMSNorm.forward of lerobot 0.6.1 (policies/pi_gemma.py) without adaptive condition, changed on
    purpose: the normalised input is multiplied by `weight` where Gemma's is `1 + weight` (a porting fault)."""
    normed = self._norm(x) * self.weight.float()
    return normed.type_as(x), None


def rotary_forward_from_table(self: Any, x: Any, position_ids: Any, *, tables: dict) -> tuple[Any, Any]:
    """GemmaRotaryEmbedding.forward of transformers 5.5.4 (models/gemma/modeling_gemma.py) served from a table
    of cos/sin [P, d] per (device, dtype) in `tables`, grown to the largest position seen: the same float32
    products inv_freq * position and the same attention scaling, then cast to x's dtype, gathered by position."""
    import torch

    needed = int(position_ids.max()) + 1
    key = (x.device, x.dtype)
    table = tables.get(key)
    if table is None or table[0].shape[0] < needed:
        positions = torch.arange(max(needed, 1024), device=x.device, dtype=torch.float32)
        freqs = positions[:, None] * self.inv_freq.float().to(x.device)[None, :]
        angles = torch.cat((freqs, freqs), dim=-1)
        table = (
            (angles.cos() * self.attention_scaling).to(x.dtype),
            (angles.sin() * self.attention_scaling).to(x.dtype),
        )
        tables[key] = table
    return table[0][position_ids], table[1][position_ids]


def adaptive_rmsnorm_forward_scale_shift_swapped(self: Any, x: Any, cond: Any = None) -> tuple[Any, Any]:
    """PiGemmaRMSNorm.forward of lerobot 0.6.1 (policies/pi_gemma.py), the adaptive (adaRMS) branch of pi0.5's
    action expert, changed on purpose: the modulation is split as (shift, scale, gate) where lerobot and openpi
    split it as (scale, shift, gate) (a porting fault)."""
    import torch

    dtype = x.dtype
    normed = self._norm(x)
    if cond is None or self.dense is None:
        normed = normed * (1.0 + self.weight.float())
        return normed.type_as(x), None
    modulation = self.dense(cond)
    if len(x.shape) == 3:
        modulation = modulation.unsqueeze(1)
    shift, scale, gate = torch.chunk(modulation, 3, dim=-1)
    normed = normed * (1 + scale.float()) + shift.float()
    return normed.to(dtype), gate.to(dtype)
