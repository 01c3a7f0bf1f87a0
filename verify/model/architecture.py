"""The reduced-size pi0 architecture: its profile, and the file a tiny checkpoint records it in.

lerobot maps pi0's variant names to fixed full-size widths, so a tiny checkpoint records its sizes
in `tiny_pi0_architecture.json` and every loader re-applies them (`checkpoint_architecture`, through
the fence's `reduced_sizes`) around the model's construction. A full-size checkpoint has no such
file and is built untouched.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from verify_ate.verify.errors import InputError
from verify_ate.verify.upstream.pi0_build import GEMMA_KEYS, VISION_KEYS, reduced_sizes

ARCHITECTURE_FILE = "tiny_pi0_architecture.json"
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


def architecture_overrides(architecture: dict | None) -> contextlib.AbstractContextManager:
    """Context to open around PI0Policy's construction: the reduced sizes, or nothing for a full-size model."""
    return contextlib.nullcontext() if architecture is None else reduced_sizes(architecture)


def checkpoint_architecture(checkpoint_dir: str | Path) -> contextlib.AbstractContextManager:
    """Context to open around PI0Policy construction/loading for this folder (no-op for real ones)."""
    return architecture_overrides(read_architecture(checkpoint_dir))
