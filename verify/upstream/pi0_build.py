"""Seam: how lerobot 0.6.1 builds pi0 (policies/pi0/modeling_pi0.py) and pi0.5 (policies/pi05/modeling_pi05.py, the
same PaliGemma-with-expert construction). Two things their constructors do not offer:

- reduced sizes (`reduced_sizes`): lerobot maps pi0's variant names to fixed full-size widths, so a tiny
  model is built by answering those lookups with the tiny sizes for the duration of the build;
- no memory and no random initialisation (`parameters_on_meta`): every parameter is created on the meta
  device while each buffer is still computed for real, to be filled from a weights file afterwards.

Every forward pass stays lerobot's own code. Each patch is thread-scoped and restored when its block ends
(verify_ate.verify.upstream.patching).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from verify_ate.verify.upstream.patching import PATCH_LOCK, thread_scoped

# The sizes a reduced build sets: lerobot's GemmaConfig fields, and transformers' SiglipVisionConfig fields.
GEMMA_KEYS = ("width", "depth", "mlp_dim", "num_heads", "num_kv_heads", "head_dim")
VISION_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size")
# lerobot's variant names; config.json keeps the real ones and the tiny sizes stand in for each.
VLM_VARIANT = "gemma_2b"
EXPERT_VARIANT = "gemma_300m"


@contextlib.contextmanager
def reduced_sizes(architecture: Mapping[str, Any]) -> Iterator[None]:
    """Build lerobot's PI0Pytorch at `architecture`'s sizes (keys vlm, action_expert, vision, vocab_size).

    lerobot 0.6.1 fixes sizes in three places (see modeling_pi0.py `get_gemma_config` and
    `PaliGemmaWithExpertModel.__init__`); inside this block, for this thread:

    1. `get_gemma_config(variant)` answers "gemma_2b" with architecture["vlm"] and "gemma_300m" with
       architecture["action_expert"] (lerobot's own GemmaConfig class);
    2. `PaliGemmaForConditionalGenerationWithPiGemma.__init__` (lerobot pi_gemma.py) first sets the SigLIP
       sizes from architecture["vision"], the image projector's output to the tiny VLM width (which the
       projected image tokens must match) and the text vocabulary to architecture["vocab_size"]
       (lerobot sets 257152, 4304 and 2048 on top of the full SigLIP-so400m defaults);
    3. `PiGemmaForCausalLM.__init__` (the action expert, whose embedding lerobot drops right after) first
       sets the vocabulary to architecture["vocab_size"].

    Not overridden, so a profile must respect them: 8 attention heads (`compute_layer_complete` reshapes to
    1 * 8 * head_dim), equal depth/heads/head_dim in both Gemmas, a square image resolution.
    """
    from lerobot.policies.pi0 import modeling_pi0
    from lerobot.policies.pi05 import modeling_pi05

    vlm, expert, vision = architecture["vlm"], architecture["action_expert"], architecture["vision"]
    vocab_size = int(architecture["vocab_size"])

    def gemma_config(variant: str) -> Any:
        sizes = {VLM_VARIANT: vlm, EXPERT_VARIANT: expert}.get(variant)
        if sizes is None:
            raise ValueError(f"reduced pi0: no size for variant {variant!r}")
        return modeling_pi0.GemmaConfig(**{key: int(sizes[key]) for key in GEMMA_KEYS})

    def paligemma_init(self: Any, config: Any) -> None:
        for key in VISION_KEYS:
            setattr(config.vision_config, key, int(vision[key]))
        config.vision_config.projection_dim = int(vlm["width"])
        config.text_config.vocab_size = vocab_size
        config._vocab_size = vocab_size  # lerobot sets the same private field
        config.image_token_index = vocab_size - 1  # unused by pi0 (it embeds images itself)
        real_paligemma_init(self, config)

    def expert_init(self: Any, config: Any, **kwargs: Any) -> None:
        config.vocab_size = vocab_size
        real_expert_init(self, config, **kwargs)

    paligemma_class = modeling_pi0.PaliGemmaForConditionalGenerationWithPiGemma
    expert_class = modeling_pi0.PiGemmaForCausalLM
    with PATCH_LOCK, contextlib.ExitStack() as stack:
        # pi0.5 (policies/pi05/modeling_pi05.py) has its own copy of get_gemma_config and the same PaliGemma classes
        for modeling in (modeling_pi0, modeling_pi05):
            stack.enter_context(thread_scoped(modeling, "get_gemma_config", gemma_config))
        real_paligemma_init = stack.enter_context(thread_scoped(paligemma_class, "__init__", paligemma_init))
        real_expert_init = stack.enter_context(thread_scoped(expert_class, "__init__", expert_init))
        yield


@contextlib.contextmanager
def parameters_on_meta(buffers: dict[str, Any]) -> Iterator[None]:
    """Build pi0 with every parameter on the meta device (no memory, no random initialisation), while each
    buffer is still computed for real; `buffers` receives them ({PI0Pytorch-relative name: CPU tensor}).

    lerobot's PI0Policy moves its model to `config.device` at the end of its constructor; the caller sets
    that to "meta", and the buffers (rotary tables, position ids, embedding scales), which are in no weights
    file, are taken just before, exactly as lerobot computed them (after its float32/bfloat16 casts). For
    this thread: `torch.nn.Module.register_parameter` puts each new parameter on meta, and
    `PI0Pytorch.__init__` (modeling_pi0.py; pi0.5's `PI05Pytorch.__init__` alike) copies the buffers when it
    returns.
    """
    import torch
    from lerobot.policies.pi0 import modeling_pi0
    from lerobot.policies.pi05 import modeling_pi05

    def register_on_meta(module: Any, name: str, param: Any) -> None:
        real_register(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = type(param)(param.to("meta"), requires_grad=param.requires_grad)

    def keeping_buffers(real_init: Any) -> Any:
        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            real_init(self, *args, **kwargs)
            buffers.update({name: tensor.detach().clone() for name, tensor in self.named_buffers()})

        return init

    with PATCH_LOCK, contextlib.ExitStack() as stack:
        real_register = stack.enter_context(thread_scoped(torch.nn.Module, "register_parameter", register_on_meta))
        # PI0Pytorch, and pi0.5's PI05Pytorch (policies/pi05/modeling_pi05.py), built the same way
        for model_class in (modeling_pi0.PI0Pytorch, modeling_pi05.PI05Pytorch):
            init = keeping_buffers(vars(model_class)["__init__"])
            stack.enter_context(thread_scoped(model_class, "__init__", init))
        yield
