"""SmolVLA's seams (lerobot 0.6.1 `lerobot.policies.smolvla`, transformers 5.5 SmolVLM).

lerobot builds SmolVLA's backbone from `config.vlm_model_name` (SmolVLMWithExpertModel: `AutoConfig` and
`AutoProcessor.from_pretrained(vlm_model_name)`, and the pre-processor's `AutoTokenizer` from the same name), which
is a hub id (HuggingFaceTB/SmolVLM2-500M-Video-Instruct) these machines cannot fetch. A tiny SmolVLA therefore
carries its own backbone folder, made locally (`write_tiny_smolvlm`): a SmolVLMConfig at reduced sizes, SmolVLM's
processor classes, and a byte-level BPE tokenizer trained here on the demo's prompts, holding the special tokens of
SmolVLM2's tokenizer that SmolVLMProcessor and lerobot read (`<image>`, `<fake_token_around_image>`, `<global-img>`,
`<end_of_utterance>`, the row/column tokens, a pad token). The checkpoint names that folder relatively
(`vlm_model_name: "vlm"`); `resolve_vlm` points lerobot at it when the checkpoint is loaded. A real SmolVLA
checkpoint names the hub id, which transformers resolves from the local hub cache (offline).

The faults of SmolVLA's own code live here too, each a thread-scoped stand-in for one lerobot function, applied
to one loaded policy's instance: RoPE on interleaved pairs where lerobot's `apply_rope` rotates halves, images
stretched to the backbone's size where `resize_with_pad` keeps their aspect ratio, and Llama's RMSNorm scaled by
`1 + weight` (Gemma's convention) where Llama's multiplies by `weight`.
"""

from __future__ import annotations

import contextlib
import types
from pathlib import Path
from typing import Any

TINY_VLM_FOLDER = "vlm"  # inside a tiny SmolVLA checkpoint, named by its config.json vlm_model_name
TOKENIZER_STEP = "tokenizer_processor"  # lerobot's registry name of the pre-processor's tokenizer step
SMOLVLM2_SOURCE = "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"

# The special tokens SmolVLM2's tokenizer holds (names as transformers' SmolVLMProcessor reads them).
SPECIAL_TOKENS = {
    "fake_image_token": "<fake_token_around_image>",
    "image_token": "<image>",
    "global_image_token": "<global-img>",
    "end_of_utterance_token": "<end_of_utterance>",
}
BASE_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>", "<unk>"]
ROW_COLUMN_TOKENS = [f"<row_{row}_col_{column}>" for row in range(1, 7) for column in range(1, 7)]

# Module paths below the policy's `model` (VLAFlowMatching) that --trace records, and their labels.
BACKBONE = "vlm_with_expert.vlm.model"
VLM_LAYER_0 = "VLM layer 0"  # its attention's output projection: the first module RoPE's and attention's faults reach
VLM_LAYER_0_NORM = "VLM layer 0 input norm"
VISION_TOWER = "vision tower"
TRACE = (
    (f"{BACKBONE}.vision_model", VISION_TOWER),
    (f"{BACKBONE}.connector", "image connector"),
    ("state_proj", "state projection"),
    (f"{BACKBONE}.text_model.layers.0.input_layernorm", VLM_LAYER_0_NORM),
    (f"{BACKBONE}.text_model.layers.*.self_attn.o_proj", "VLM layer {0}"),
    ("action_in_proj", "action in projection"),
    ("vlm_with_expert.lm_expert.layers.*.self_attn.o_proj", "expert layer {0}"),
    ("action_out_proj", "action out projection"),
)
STEP_MODULE = "action_in_proj"  # called once at the start of every flow step (VLAFlowMatching.embed_suffix)


def write_tiny_smolvlm(folder: Path, sizes: dict, prompts: list[str]) -> Path:
    """The backbone folder of a tiny SmolVLA at `folder` (config, processor, tokenizer; no weights: SmolVLA builds
    the backbone from its config and its checkpoint holds the weights). `sizes`: configs/profiles/tiny_smolvla.yaml's
    `vlm`; `prompts`: the text the tokenizer is trained on (any character still encodes: byte-level)."""
    import importlib

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    # transformers' configs take their sizes as keyword arguments its stubs do not declare: looked up untyped.
    library: Any = importlib.import_module("transformers")
    vision_config: Any = importlib.import_module("transformers.models.smolvlm.configuration_smolvlm")

    bpe = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=int(sizes["vocab_size"]),
        special_tokens=[*BASE_TOKENS, *SPECIAL_TOKENS.values(), *ROW_COLUMN_TOKENS, "<video>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(list(prompts) * 4, trainer=trainer)
    tokenizer = library.PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens=dict(SPECIAL_TOKENS),
        model_max_length=2048,
        padding_side="right",
    )
    image_size, patch_size, scale = int(sizes["image_size"]), int(sizes["patch_size"]), int(sizes["scale_factor"])
    text = library.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=int(sizes["width"]),
        intermediate_size=int(sizes["mlp_dim"]),
        num_hidden_layers=int(sizes["depth"]),
        num_attention_heads=int(sizes["num_heads"]),
        num_key_value_heads=int(sizes["num_kv_heads"]),
        head_dim=int(sizes["head_dim"]),
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    vision = vision_config.SmolVLMVisionConfig(
        hidden_size=int(sizes["vision_width"]),
        intermediate_size=int(sizes["vision_mlp_dim"]),
        num_hidden_layers=int(sizes["vision_depth"]),
        num_attention_heads=int(sizes["vision_heads"]),
        image_size=image_size,
        patch_size=patch_size,
    )
    config = library.SmolVLMConfig(
        text_config=text,
        vision_config=vision,
        scale_factor=scale,
        image_token_id=tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS["image_token"]),
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    size = {"longest_edge": image_size}
    processor = library.SmolVLMProcessor(
        image_processor=library.SmolVLMImageProcessor(
            do_resize=True, size=size, do_image_splitting=False, max_image_size=size
        ),
        tokenizer=tokenizer,
        video_processor=library.SmolVLMVideoProcessor(size=size, max_image_size=size),
        image_seq_len=(image_size // patch_size) ** 2 // scale**2,
    )
    processor.save_pretrained(folder)
    return folder


def resolve_vlm(config: Any, folder: Path | None) -> None:
    """Point a parsed SmolVLA config at the backbone folder its checkpoint carries (a relative vlm_model_name)."""
    if folder is None:
        return
    own = Path(folder) / str(config.vlm_model_name)
    if not Path(str(config.vlm_model_name)).is_absolute() and own.is_dir():
        config.vlm_model_name = str(own.resolve())


def processor_overrides(config: Any) -> dict:
    """The pre-processor's tokenizer loaded from the backbone the config names (the saved pipeline names the
    folder it was built with)."""
    return {TOKENIZER_STEP: {"tokenizer_name": str(config.vlm_model_name)}}


# ---------------------------------------------------------------- faults of SmolVLA's own code


def interleaved_rope(x: Any, positions: Any, max_wavelength: int = 10_000) -> Any:
    """RoPE rotating interleaved pairs (x[2i], x[2i+1]) where lerobot's `apply_rope` (lerobot v0.6.1
    smolvlm_with_expert.py) rotates the halves (x[i], x[i + D/2]): the layout mix-up of a port that took its rotary
    kernel from another model. Same frequencies, same float32 arithmetic as lerobot's."""
    import torch

    d_half = x.shape[-1] // 2
    dtype = x.dtype
    x = x.to(torch.float32)
    exponents = (2.0 / x.shape[-1]) * torch.arange(d_half, dtype=torch.float32, device=x.device)
    radians = positions[..., None].to(torch.float32) / (max_wavelength**exponents)[None, None, :]
    radians = radians[..., None, :]
    sin, cos = torch.sin(radians), torch.cos(radians)
    even, odd = x[..., 0::2], x[..., 1::2]
    result = torch.empty_like(x)
    result[..., 0::2] = even * cos - odd * sin
    result[..., 1::2] = odd * cos + even * sin
    return result.to(dtype)


def stretched(image: Any, height: int, width: int, pad_value: float = 0) -> Any:
    """The image resized to the backbone's size, its aspect ratio lost, where lerobot's `resize_with_pad` (lerobot
    v0.6.1 policies/common/vla_utils.py) keeps it and pads."""
    import torch.nn.functional as functional

    return functional.interpolate(image, size=(height, width), mode="bilinear", align_corners=False)


def _within(instance: Any, method: str, owner_module: str, name: str, replacement: Any, patches: Any) -> None:
    """`instance.method` runs with `owner_module.name` answering `replacement` (in this thread only)."""
    import importlib

    from verify_ate.verify.upstream.patching import thread_scoped

    owner = importlib.import_module(owner_module)
    original = getattr(instance, method)

    def patched(*args: Any, **kwargs: Any) -> Any:
        with thread_scoped(owner, name, replacement):
            return original(*args, **kwargs)

    patches.set(instance, method, patched)


def rope_on_interleaved_pairs(policy: Any, patches: Any) -> None:
    """Every attention layer of SmolVLA's backbone and expert applies RoPE to interleaved pairs."""
    model = policy.model.vlm_with_expert
    module = "lerobot.policies.smolvla.smolvlm_with_expert"
    for method in ("forward_attn_layer", "forward_cross_attn_layer"):
        _within(model, method, module, "apply_rope", interleaved_rope, patches)


def images_stretched(policy: Any, patches: Any) -> None:
    """Every camera stretched to the backbone's image size, no padding."""
    _within(
        policy, "prepare_images", "lerobot.policies.smolvla.modeling_smolvla", "resize_with_pad", stretched, patches
    )


def rmsnorm_times_one_plus_weight(self: Any, hidden_states: Any) -> Any:
    """Llama's RMSNorm (transformers 5.5 LlamaRMSNorm.forward) scaled by `1 + weight`, Gemma's convention."""
    import torch

    dtype = hidden_states.dtype
    values = hidden_states.to(torch.float32)
    variance = values.pow(2).mean(-1, keepdim=True)
    values = values * torch.rsqrt(variance + self.variance_epsilon)
    return (1.0 + self.weight) * values.to(dtype)


def llama_norms_with_one_plus_weight(policy: Any, patches: Any) -> None:
    """Every RMSNorm of SmolVLA's text backbone and action expert scaled by `1 + weight`."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    for module in policy.model.vlm_with_expert.modules():
        if isinstance(module, LlamaRMSNorm):
            patches.set(module, "forward", types.MethodType(rmsnorm_times_one_plus_weight, module))


def images_as_bgr(policy: Any, patches: Any) -> None:
    """Every camera reaches SmolVLA's vision tower as BGR instead of RGB."""

    def to_bgr(_module: Any, args: tuple, kwargs: dict) -> tuple:
        if args:
            return (args[0].flip(1), *args[1:]), kwargs
        return args, {**kwargs, "pixel_values": kwargs["pixel_values"].flip(1)}

    tower = policy.model.get_submodule(f"{BACKBONE}.vision_model")
    patches.hook(tower.register_forward_pre_hook(to_bgr, with_kwargs=True))


@contextlib.contextmanager
def quiet_build() -> Any:
    """lerobot prints "Reducing the number of VLM layers" when it builds SmolVLA; the build says nothing here."""
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        yield
