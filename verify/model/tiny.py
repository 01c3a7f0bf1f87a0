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

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from verify_ate.verify.configs import CONFIGS_DIR, read_yaml
from verify_ate.verify.errors import InputError
from verify_ate.verify.model.architecture import (
    ARCHITECTURE_FILE,
    SPECIAL_TOKENS,
    architecture_of,
    architecture_overrides,
    validate_profile,
)
from verify_ate.verify.model.processors import make_processors
from verify_ate.verify.upstream.pi0_build import EXPERT_VARIANT, VLM_VARIANT

PROFILE_FILE = CONFIGS_DIR / "profiles" / "tiny_pi0.yaml"
PI05_PROFILE_FILE = CONFIGS_DIR / "profiles" / "tiny_pi05.yaml"
FULL_PROFILE_FILE = CONFIGS_DIR / "profiles" / "full_pi0.yaml"


# ---------------------------------------------------------------- profile


def load_tiny_profile(profile_path: str | Path | None = None) -> dict:
    """The tiny model's sizes from YAML, validated against what lerobot's pi0 code can run."""
    path = Path(profile_path) if profile_path is not None else PROFILE_FILE
    profile = read_yaml(path, "tiny pi0 profile")
    try:
        validate_profile(profile)
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{path}: {error}") from None
    return profile


def pi05_profile(profile: dict) -> dict:
    """A pi0 profile as the tiny pi0.5's: the policy settings of configs/profiles/tiny_pi05.yaml over it (its prompt
    and image size), validated again. Idempotent: a pi0.5 profile comes back unchanged."""
    overrides = read_yaml(PI05_PROFILE_FILE, "tiny pi0.5 profile")
    if not isinstance(overrides, dict) or set(overrides) != {"policy"} or not isinstance(overrides["policy"], dict):
        raise InputError(f"{PI05_PROFILE_FILE}: needs exactly one section, policy")
    unknown = sorted(set(overrides["policy"]) - set(profile["policy"]))
    if unknown:
        raise InputError(f"{PI05_PROFILE_FILE}: {', '.join(unknown)} not a policy setting of the tiny pi0 profile")
    merged = {**profile, "policy": {**profile["policy"], **overrides["policy"]}}
    try:
        validate_profile(merged)
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{PI05_PROFILE_FILE}: {error}") from None
    return merged


def load_full_profile() -> dict:
    """The full-size pi0's policy settings and features (its sizes are lerobot's own variants)."""
    profile = read_yaml(FULL_PROFILE_FILE, "full pi0 profile")
    try:
        if not isinstance(profile, dict) or not {"policy", "features"} <= set(profile):
            raise ValueError("needs the sections policy and features")
        for key in ("chunk_size", "max_action_dim", "image_resolution"):
            int(profile["policy"][key])
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{FULL_PROFILE_FILE}: {error}") from None
    return profile


# ---------------------------------------------------------------- model, tokenizer, processors


def tiny_pi0_config(profile: dict, dtype: str = "float32", device: str = "cpu", config_class: Any = None):
    """A PI0Config (or `config_class`: PI05Config, whose fields are the same) for a profile's policy settings and
    features (variant names stay lerobot's; for a tiny profile, `architecture_overrides` shrinks them)."""
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
    return (config_class or PI0Config)(
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


def tiny_pi05_config(profile: dict, dtype: str = "float32", device: str = "cpu"):
    """A PI05Config at a profile's settings with tiny_pi05.yaml's over them (`pi05_profile`)."""
    from lerobot.policies.pi05 import PI05Config

    return tiny_pi0_config(pi05_profile(profile), dtype=dtype, device=device, config_class=PI05Config)


def build_tiny_policy(profile: dict, seed: int = 0, dtype: str = "float32", device: str = "cpu", pi05: bool = False):
    """lerobot's PI0Policy (PI05Policy with `pi05`) at the profile's sizes; weights from transformers'/torch's init
    under `seed`."""
    import torch
    from lerobot.policies.pi0 import PI0Policy
    from lerobot.policies.pi05 import PI05Policy

    config = tiny_pi05_config(profile, dtype, device) if pi05 else tiny_pi0_config(profile, dtype, device)
    # fork_rng: seed the initialisation without disturbing the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]), architecture_overrides(architecture_of(profile)):
        torch.manual_seed(seed)
        policy = (PI05Policy if pi05 else PI0Policy)(config)
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
    out_dir: str | Path,
    dataset_stats: dict,
    seed: int = 0,
    profile_path: str | Path | None = None,
    pi05: bool = False,
) -> Path:
    """Write a complete tiny pi0 checkpoint folder at `out_dir` (atomically: temp folder + rename).

    `dataset_stats`: {feature: {"mean": [...], "std": [...], ...}} as LeRobotDataset.meta.stats holds
    them; observation.state and action need mean and std (pi0 normalises both with MEAN_STD).
    Refuses to replace an existing folder.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise InputError(f"{out_dir}: already exists; refusing to overwrite a checkpoint folder")
    profile = load_tiny_profile(profile_path)
    policy = build_tiny_policy(profile, seed=seed, pi05=pi05)
    tokenizer = build_byte_tokenizer()
    processors = make_processors(policy.config, dataset_stats, tokenizer)
    return write_checkpoint(out_dir, policy, processors, tokenizer, architecture_of(profile))


def write_checkpoint(
    out_dir: Path, policy, processors: tuple, tokenizer, architecture: dict | None, finish=None
) -> Path:
    """A lerobot checkpoint folder at `out_dir`: config and weights (lerobot's save_pretrained), the
    pre/post-processor pipelines, the tokenizer, and the architecture file of a reduced size; `finish(staging)`
    adds what else the policy needs. Atomic: staged in a temporary folder beside it, then renamed; an existing
    `out_dir` is refused."""
    if out_dir.exists():
        raise InputError(f"{out_dir}: already exists; refusing to overwrite a checkpoint folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        policy.save_pretrained(staging)
        for processor in processors:
            processor.save_pretrained(staging)
        if tokenizer is not None:  # policies that take a prompt
            tokenizer.save_pretrained(staging)
        if architecture is not None:
            text = json.dumps(architecture, indent=2, sort_keys=True) + "\n"
            (staging / ARCHITECTURE_FILE).write_text(text, encoding="utf-8")
        if finish is not None:
            finish(staging)
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
