"""Tiny offline versions of every supported policy: lerobot's own classes at the sizes of
configs/profiles/tiny_<type>.yaml, seeded random weights, written as a lerobot checkpoint folder (config, weights,
the pre/post-processor pipelines lerobot's factory builds from dataset statistics). Nothing is fetched."""

from __future__ import annotations

import contextlib
import functools
import io
import shutil
import tempfile
from pathlib import Path

from verify_ate.verify.configs import CONFIGS_DIR, read_yaml
from verify_ate.verify.errors import InputError
from verify_ate.verify.model.policies import adapter_for


def tiny_profile_path(policy_type: str) -> Path:
    return CONFIGS_DIR / "profiles" / f"tiny_{policy_type}.yaml"


def load_policy_profile(policy_type: str) -> dict:
    """configs/profiles/tiny_<type>.yaml (pi0's validated against what its code can run)."""
    if policy_type in ("pi0", "pi05"):  # pi0.5 is pi0's architecture: the same sizes
        from verify_ate.verify.model.tiny import load_tiny_profile, pi05_profile

        profile = load_tiny_profile()
        return pi05_profile(profile) if policy_type == "pi05" else profile
    path = tiny_profile_path(policy_type)
    profile = read_yaml(path, f"tiny {policy_type} profile")
    if not isinstance(profile, dict) or not {"policy", "features"} <= set(profile):
        raise InputError(f"{path}: needs the sections policy and features")
    return profile


def build_tiny_policy(policy_type: str, profile: dict, seed: int = 0, backbone: Path | None = None):
    """lerobot's policy of `policy_type` at the profile's sizes, weights from torch's init under `seed`
    (`backbone`: SmolVLA's backbone folder)."""
    import torch

    if policy_type in ("pi0", "pi05"):
        from verify_ate.verify.model.tiny import build_tiny_policy as build_tiny_pi0

        return build_tiny_pi0(profile, seed=seed, pi05=policy_type == "pi05")
    adapter = adapter_for(policy_type)
    config = adapter.tiny_config(profile, vlm=backbone) if backbone is not None else adapter.tiny_config(profile)
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(io.StringIO()):
        torch.manual_seed(seed)
        policy = adapter.policy_class()(config)
    return policy.eval()


def build_tiny_policy_checkpoint(
    policy_type: str, out_dir: str | Path, dataset_stats: dict, seed: int = 0, profile: dict | None = None
) -> Path:
    """A complete tiny checkpoint folder of `policy_type` at `out_dir` (atomic; an existing folder is refused)."""
    if policy_type in ("pi0", "pi05"):
        from verify_ate.verify.model.tiny import build_tiny_checkpoint

        return build_tiny_checkpoint(out_dir, dataset_stats, seed=seed, pi05=policy_type == "pi05")
    from verify_ate.verify.model.tiny import write_checkpoint

    out_dir = Path(out_dir)
    if out_dir.exists():
        raise InputError(f"{out_dir}: already exists; refusing to overwrite a checkpoint folder")
    profile = profile if profile is not None else load_policy_profile(policy_type)
    with tempfile.TemporaryDirectory() as scratch:
        policy, processors, finish = tiny_policy_parts(policy_type, profile, seed, dataset_stats, Path(scratch))
        return write_checkpoint(out_dir, policy, processors, None, None, finish=finish)


def tiny_policy_parts(policy_type: str, profile: dict, seed: int, dataset_stats: dict, scratch: Path):
    """(policy, its processors from `dataset_stats`, what `write_checkpoint` must add or None) of a tiny policy other
    than pi0's. SmolVLA's backbone folder is made first in `scratch` (lerobot builds SmolVLA from it), which must
    live until the checkpoint is written."""
    from lerobot.policies.factory import make_pre_post_processors

    from verify_ate.verify.model.processors import torch_stats

    backbone = finish = None
    if policy_type == "smolvla":
        from verify_ate.verify.upstream.smolvla import TINY_VLM_FOLDER, write_tiny_smolvlm

        backbone = write_tiny_smolvlm(scratch / TINY_VLM_FOLDER, profile["vlm"], profile["prompts"])
    policy = build_tiny_policy(policy_type, profile, seed, backbone)
    processors = make_pre_post_processors(policy.config, dataset_stats=torch_stats(dataset_stats))
    if backbone is not None:
        name_backbone_relatively(policy, processors)
        finish = functools.partial(_carry, backbone)
    return policy, processors, finish


def name_backbone_relatively(policy, processors: tuple) -> None:
    """A tiny SmolVLA checkpoint names its backbone folder relatively (config.json vlm_model_name, the
    pre-processor's tokenizer), so the checkpoint folder can be moved (verify/upstream/smolvla.py resolves it). The
    model and the tokenizer are built already: only what is saved changes."""
    from verify_ate.verify.upstream.smolvla import TINY_VLM_FOLDER

    policy.config.vlm_model_name = TINY_VLM_FOLDER
    for step in processors[0].steps:
        if hasattr(step, "tokenizer_name"):
            step.tokenizer_name = TINY_VLM_FOLDER


def _carry(backbone: Path, staging: Path) -> None:
    """The backbone folder into the checkpoint being written."""
    shutil.copytree(backbone, staging / backbone.name)
