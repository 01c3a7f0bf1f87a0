"""The reduced-size pi0 architecture: the only place that reaches into lerobot's modelling code.

lerobot maps pi0's variant names to fixed full-size widths, so a tiny checkpoint records its sizes
in `tiny_pi0_architecture.json` and every loader re-applies them (`checkpoint_architecture`)
around the model's construction. A full-size checkpoint has no such file and is built untouched.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from verify.errors import InputError

ARCHITECTURE_FILE = "tiny_pi0_architecture.json"
GEMMA_KEYS = ("width", "depth", "mlp_dim", "num_heads", "num_kv_heads", "head_dim")
VISION_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size")
# lerobot's variant names; config.json keeps the real ones and the overrides map each to a tiny size.
VLM_VARIANT = "gemma_2b"
EXPERT_VARIANT = "gemma_300m"
# Byte-level tokenizer: PaliGemma's special-token ids (pad 0, eos 1, bos 2, unk 3), then 256 bytes.
SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")
TOKENIZER_VOCAB = len(SPECIAL_TOKENS) + 256


def validate_profile(profile: dict) -> None:
    if not isinstance(profile, dict):
        raise ValueError("profile must be a mapping")
    for section, keys in (("vlm", GEMMA_KEYS), ("action_expert", GEMMA_KEYS), ("vision", VISION_KEYS)):
        missing = [key for key in keys if key not in profile[section]]
        if missing:
            raise ValueError(f"section {section!r} lacks {missing}")
        bad = [key for key in keys if not isinstance(profile[section][key], int) or profile[section][key] < 1]
        if bad:
            raise ValueError(f"section {section!r}: {bad} must be positive integers")
    vlm, expert = profile["vlm"], profile["action_expert"]
    if vlm["num_heads"] != 8 or expert["num_heads"] != 8:
        raise ValueError("num_heads must be 8 (lerobot's joint attention reshapes to 1 * 8 * head_dim)")
    for key in ("depth", "num_kv_heads", "head_dim"):
        if vlm[key] != expert[key]:
            raise ValueError(f"vlm and action_expert must share {key} (their layers attend jointly)")
    resolution = int(profile["policy"]["image_resolution"])
    if resolution % profile["vision"]["patch_size"]:
        raise ValueError(f"image_resolution {resolution} is not a multiple of patch_size")
    if int(profile["vocab_size"]) < TOKENIZER_VOCAB:
        raise ValueError(f"vocab_size must be >= {TOKENIZER_VOCAB} (the byte-level tokenizer's size)")
    for name, shape in profile["features"]["cameras"].items():
        if len(shape) != 3 or shape[0] != 3:
            raise ValueError(f"camera {name}: shape must be [3, H, W], got {shape}")


def architecture_of(profile: dict) -> dict:
    """The part of the profile a loader needs to rebuild the same module shapes."""
    return {
        "vlm": dict(profile["vlm"]),
        "action_expert": dict(profile["action_expert"]),
        "vision": dict(profile["vision"]),
        "vocab_size": int(profile["vocab_size"]),
    }


# ---------------------------------------------------------------- the lerobot workarounds (all here)


@contextlib.contextmanager
def architecture_overrides(architecture: dict):
    """Build lerobot's PI0Pytorch at reduced size. Every forward pass stays lerobot's own code.

    lerobot 0.6.1 (policies/pi0/modeling_pi0.py) fixes sizes in three places; while this context is
    open, each is replaced by a thin wrapper in that module's namespace (restored on exit):

    1. `get_gemma_config(variant)` maps "gemma_2b" / "gemma_300m" to fixed full-size widths and
       PI0Config only accepts those two names. Wrapper: "gemma_2b" -> architecture["vlm"],
       "gemma_300m" -> architecture["action_expert"] (lerobot's own GemmaConfig class).
    2. `PaliGemmaWithExpertModel.__init__` sets the text vocabulary to 257152, the SigLIP MLP to 4304
       and the image projector's output to 2048 (the gemma_2b width, which the projected image tokens
       must match), on top of the full SigLIP-so400m defaults. Wrapper around
       `PaliGemmaForConditionalGenerationWithPiGemma`: before the real class is constructed, set the
       SigLIP sizes from architecture["vision"], projection_dim to the tiny VLM width and the text
       vocabulary to architecture["vocab_size"].
    3. The action expert's Gemma also gets vocab 257152 (its embedding is dropped right after).
       Wrapper around `PiGemmaForCausalLM`: vocabulary architecture["vocab_size"].

    Not overridden, so the profile must respect them: 8 attention heads (`compute_layer_complete`
    reshapes to 1 * 8 * head_dim), equal depth/heads/head_dim in both Gemmas, a square image
    resolution (PI0Config.image_resolution, an ordinary config field).
    Patching module globals is process-wide: do not build two models in parallel threads.
    """
    from lerobot.policies.pi0 import modeling_pi0

    vlm, expert, vision = architecture["vlm"], architecture["action_expert"], architecture["vision"]
    vocab_size = int(architecture["vocab_size"])
    real_gemma_config = modeling_pi0.get_gemma_config
    real_paligemma = modeling_pi0.PaliGemmaForConditionalGenerationWithPiGemma
    real_expert = modeling_pi0.PiGemmaForCausalLM

    def tiny_gemma_config(variant: str):
        sizes = {VLM_VARIANT: vlm, EXPERT_VARIANT: expert}.get(variant)
        if sizes is None:
            raise ValueError(f"tiny pi0: no size for variant {variant!r}")
        return modeling_pi0.GemmaConfig(**{key: int(sizes[key]) for key in GEMMA_KEYS})

    def tiny_paligemma(config):
        for key in VISION_KEYS:
            setattr(config.vision_config, key, int(vision[key]))
        config.vision_config.projection_dim = int(vlm["width"])
        config.text_config.vocab_size = vocab_size
        config._vocab_size = vocab_size  # lerobot sets the same private field
        config.image_token_index = vocab_size - 1  # unused by pi0 (it embeds images itself)
        return real_paligemma(config=config)

    def tiny_expert(config):
        config.vocab_size = vocab_size
        return real_expert(config=config)

    modeling_pi0.get_gemma_config = tiny_gemma_config
    modeling_pi0.PaliGemmaForConditionalGenerationWithPiGemma = tiny_paligemma
    modeling_pi0.PiGemmaForCausalLM = tiny_expert
    try:
        yield
    finally:
        modeling_pi0.get_gemma_config = real_gemma_config
        modeling_pi0.PaliGemmaForConditionalGenerationWithPiGemma = real_paligemma
        modeling_pi0.PiGemmaForCausalLM = real_expert


def read_architecture(checkpoint_dir: str | Path) -> dict | None:
    """The tiny sizes recorded in a checkpoint folder, or None for a normal (full-size) checkpoint."""
    path = Path(checkpoint_dir) / ARCHITECTURE_FILE
    if not path.is_file():
        return None
    try:
        architecture = json.loads(path.read_text(encoding="utf-8"))
        validate_profile({**architecture, "policy": {"image_resolution": 0}, "features": {"cameras": {}}})
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"{path}: not a valid tiny pi0 architecture ({error})") from None
    return architecture


def checkpoint_architecture(checkpoint_dir: str | Path):
    """Context to open around PI0Policy construction/loading for this folder (no-op for real ones)."""
    architecture = read_architecture(checkpoint_dir)
    return architecture_overrides(architecture) if architecture is not None else contextlib.nullcontext()


@contextlib.contextmanager
def skeleton_construction(buffers: dict):
    """Build pi0 with every parameter on the meta device (no memory, no random initialisation),
    while each buffer is still computed for real; `buffers` receives them (PI0Pytorch-relative names).

    lerobot's PI0Policy moves its model to `config.device` at the end of its constructor; the
    caller sets that to "meta", and the buffers (rotary tables, position ids, embedding scales),
    which are not in a weights file, are taken here just before, exactly as lerobot computed
    them (after its float32/bfloat16 casts). Two thin patches, both restored on exit:
    `torch.nn.Module.register_parameter` moves each new parameter to meta, and lerobot's
    `PI0Pytorch` is wrapped to copy its buffers when its constructor returns.
    """
    import torch
    from lerobot.policies.pi0 import modeling_pi0

    real_register = torch.nn.Module.register_parameter
    real_model = modeling_pi0.PI0Pytorch

    def register_on_meta(module, name, param):
        real_register(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = type(param)(param.to("meta"), requires_grad=param.requires_grad)

    class BufferTakingPI0Pytorch(real_model):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            buffers.update({name: tensor.detach().clone() for name, tensor in self.named_buffers()})
            self.__class__ = real_model  # the built model is lerobot's own class

    torch.nn.Module.register_parameter = register_on_meta
    modeling_pi0.PI0Pytorch = BufferTakingPI0Pytorch
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = real_register
        modeling_pi0.PI0Pytorch = real_model
