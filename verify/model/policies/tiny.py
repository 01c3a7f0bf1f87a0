"""Tiny offline versions of every supported policy: lerobot's own classes at the sizes of
configs/profiles/tiny_<type>.yaml, seeded random weights, written as a lerobot checkpoint folder (config, weights,
the pre/post-processor pipelines lerobot's factory builds from dataset statistics). Nothing is fetched."""

from __future__ import annotations

from pathlib import Path

from verify_ate.verify.configs import CONFIGS_DIR, read_yaml
from verify_ate.verify.errors import InputError
from verify_ate.verify.model.policies import adapter_for


def tiny_profile_path(policy_type: str) -> Path:
    return CONFIGS_DIR / "profiles" / f"tiny_{policy_type}.yaml"


def load_policy_profile(policy_type: str) -> dict:
    """configs/profiles/tiny_<type>.yaml (pi0's validated against what its code can run)."""
    if policy_type in ("pi0", "pi05"):  # pi0.5 is pi0's architecture: the same sizes
        from verify_ate.verify.model.tiny import load_tiny_profile

        return load_tiny_profile()
    path = tiny_profile_path(policy_type)
    profile = read_yaml(path, f"tiny {policy_type} profile")
    if not isinstance(profile, dict) or not {"policy", "features"} <= set(profile):
        raise InputError(f"{path}: needs the sections policy and features")
    return profile


def build_tiny_policy(policy_type: str, profile: dict, seed: int = 0):
    """lerobot's policy of `policy_type` at the profile's sizes, weights from torch's init under `seed`."""
    import torch

    if policy_type in ("pi0", "pi05"):
        from verify_ate.verify.model.tiny import build_tiny_policy as build_tiny_pi0

        return build_tiny_pi0(profile, seed=seed, pi05=policy_type == "pi05")
    adapter = adapter_for(policy_type)
    config = adapter.tiny_config(profile)
    with torch.random.fork_rng(devices=[]):
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
    from lerobot.policies.factory import make_pre_post_processors

    from verify_ate.verify.model.processors import torch_stats
    from verify_ate.verify.model.tiny import write_checkpoint

    out_dir = Path(out_dir)
    if out_dir.exists():
        raise InputError(f"{out_dir}: already exists; refusing to overwrite a checkpoint folder")
    policy = build_tiny_policy(policy_type, profile if profile is not None else load_policy_profile(policy_type), seed)
    processors = make_pre_post_processors(policy.config, dataset_stats=torch_stats(dataset_stats))
    return write_checkpoint(out_dir, policy, processors, None, None)
