"""A tiny pi0 checkpoint for tests and the demo: lerobot's own PI0Policy, shrunk, seeded random weights.

The folder it writes looks like a trained lerobot 0.6.1 pi0 checkpoint: `config.json` and
`model.safetensors` (PI0Policy.save_pretrained), the pre/post-processor pipelines lerobot's
`make_pi0_pre_post_processors` builds from dataset statistics (saved with their own save_pretrained),
and a tokenizer that transformers' AutoTokenizer loads from the folder. One extra file,
`tiny_pi0_architecture.json`, records the reduced sizes: lerobot maps the variant names in
config.json to fixed full-size widths, so a loader must re-apply the same size overrides
(`architecture_overrides`) to build a model the weights fit. Sizes live in
configs/profiles/tiny_pi0.yaml.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from verify.config_files import CONFIGS_DIR, read_yaml
from verify.errors import InputError

PROFILE_FILE = CONFIGS_DIR / "profiles" / "tiny_pi0.yaml"
ARCHITECTURE_FILE = "tiny_pi0_architecture.json"
GEMMA_KEYS = ("width", "depth", "mlp_dim", "num_heads", "num_kv_heads", "head_dim")
VISION_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size")
# lerobot's variant names; config.json keeps the real ones and the overrides map each to a tiny size.
VLM_VARIANT = "gemma_2b"
EXPERT_VARIANT = "gemma_300m"
# Byte-level tokenizer: PaliGemma's special-token ids (pad 0, eos 1, bos 2, unk 3), then 256 bytes.
SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")
TOKENIZER_VOCAB = len(SPECIAL_TOKENS) + 256


# ---------------------------------------------------------------- profile


def load_tiny_profile(profile_path: str | Path | None = None) -> dict:
    """The tiny model's sizes from YAML, validated against what lerobot's pi0 code can run."""
    path = Path(profile_path) if profile_path is not None else PROFILE_FILE
    profile = read_yaml(path, "tiny pi0 profile")
    try:
        _validate_profile(profile)
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{path}: {error}") from None
    return profile


def _validate_profile(profile: dict) -> None:
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
        config._vocab_size = vocab_size  # noqa: SLF001 (lerobot sets the same private field)
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
        _validate_profile({**architecture, "policy": {"image_resolution": 0}, "features": {"cameras": {}}})
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"{path}: not a valid tiny pi0 architecture ({error})") from None
    return architecture


def checkpoint_architecture(checkpoint_dir: str | Path):
    """Context to open around PI0Policy construction/loading for this folder (no-op for real ones)."""
    architecture = read_architecture(checkpoint_dir)
    return architecture_overrides(architecture) if architecture is not None else contextlib.nullcontext()


# ---------------------------------------------------------------- model, tokenizer, processors


def tiny_pi0_config(profile: dict, dtype: str = "float32", device: str = "cpu"):
    """A PI0Config for the tiny model (variant names stay lerobot's; the overrides shrink them)."""
    from lerobot.configs import FeatureType, PolicyFeature
    from lerobot.policies.pi0 import PI0Config

    policy = profile["policy"]
    features = profile["features"]
    resolution = int(policy["image_resolution"])
    inputs = {
        name: PolicyFeature(type=FeatureType.VISUAL, shape=tuple(int(s) for s in shape))
        for name, shape in features["cameras"].items()
    }
    inputs["observation.state"] = PolicyFeature(type=FeatureType.STATE, shape=(int(features["state_dim"]),))
    outputs = {"action": PolicyFeature(type=FeatureType.ACTION, shape=(int(features["action_dim"]),))}
    return PI0Config(
        paligemma_variant=VLM_VARIANT,
        action_expert_variant=EXPERT_VARIANT,
        dtype=dtype,
        device=device,
        chunk_size=int(policy["chunk_size"]),
        n_action_steps=int(policy["n_action_steps"]),
        max_state_dim=int(policy["max_state_dim"]),
        max_action_dim=int(policy["max_action_dim"]),
        num_inference_steps=int(policy["num_inference_steps"]),
        tokenizer_max_length=int(policy["tokenizer_max_length"]),
        image_resolution=(resolution, resolution),
        input_features=inputs,
        output_features=outputs,
        push_to_hub=False,
    )


def build_tiny_policy(profile: dict, seed: int = 0, dtype: str = "float32", device: str = "cpu"):
    """lerobot's PI0Policy at the profile's sizes; weights from transformers'/torch's init under `seed`."""
    import torch
    from lerobot.policies.pi0 import PI0Policy

    config = tiny_pi0_config(profile, dtype=dtype, device=device)
    # fork_rng: seed the initialisation without disturbing the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]), architecture_overrides(architecture_of(profile)):
        torch.manual_seed(seed)
        policy = PI0Policy(config)
    return policy.eval()


def build_byte_tokenizer():
    """A byte-level tokenizer built locally (no hub): every text maps to its UTF-8 bytes, after <bos>.

    Same special ids as PaliGemma's tokenizer; wrapped as a transformers fast tokenizer so it saves
    to tokenizer.json + tokenizer_config.json, which AutoTokenizer.from_pretrained(folder) reads.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    vocab.update({char: len(SPECIAL_TOKENS) + index for index, char in enumerate(alphabet)})
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
    )


def build_tiny_checkpoint(
    out_dir: str | Path, dataset_stats: dict, seed: int = 0, profile_path: str | Path | None = None
) -> Path:
    """Write a complete tiny pi0 checkpoint folder at `out_dir` (atomically: temp folder + rename).

    `dataset_stats`: {feature: {"mean": [...], "std": [...], ...}} as LeRobotDataset.meta.stats holds
    them; observation.state and action need mean and std (pi0 normalises both with MEAN_STD).
    Refuses to replace an existing folder.
    """
    from verify.pi0_runner import make_processors

    out_dir = Path(out_dir)
    if out_dir.exists():
        raise InputError(f"{out_dir}: already exists; refusing to overwrite a checkpoint folder")
    profile = load_tiny_profile(profile_path)
    policy = build_tiny_policy(profile, seed=seed)
    tokenizer = build_byte_tokenizer()
    preprocessor, postprocessor = make_processors(policy.config, dataset_stats, tokenizer)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        policy.save_pretrained(staging)
        preprocessor.save_pretrained(staging)
        postprocessor.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / ARCHITECTURE_FILE).write_text(
            json.dumps(architecture_of(profile), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; a checkpoint is an ordinary folder
        os.rename(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def ensure_tiny_checkpoint(
    cache_dir: str | Path, dataset_stats: dict, seed: int = 0, profile_path: str | Path | None = None
) -> Path:
    """The tiny checkpoint for these inputs under `cache_dir`, built once and reused afterwards.

    Keyed by a hash of the profile, the statistics, the seed and the library versions, so a changed
    input gives a new folder instead of a stale one. Concurrent builders: the first rename wins.
    """
    profile = load_tiny_profile(profile_path)
    key = cache_key(profile, dataset_stats, seed)
    target = Path(cache_dir) / f"tiny_pi0-seed{seed}-{key[:16]}"
    if target.is_dir():
        return target
    try:
        return build_tiny_checkpoint(target, dataset_stats, seed=seed, profile_path=profile_path)
    except (InputError, OSError):
        if target.is_dir():  # another process finished the same build first
            return target
        raise


def cache_key(profile: dict, dataset_stats: dict, seed: int) -> str:
    import lerobot
    import tokenizers
    import torch
    import transformers

    document = {
        "profile": profile,
        "stats": _plain(dataset_stats),
        "seed": int(seed),
        "versions": {
            "lerobot": lerobot.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "torch": torch.__version__,
        },
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode("utf-8")).hexdigest()


def _plain(value):
    """Statistics (tensors, arrays, lists, nested dicts) as JSON-able lists of floats."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64).tolist()
