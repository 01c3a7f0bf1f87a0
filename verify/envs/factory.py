"""The one place that builds an environment by name (`--env`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from verify_ate.verify.envs.base import RolloutEnvironment, rollout_config
from verify_ate.verify.errors import InputError


def environment_names() -> tuple[str, ...]:
    """`--env` choices: the demo's world, then lerobot's environment types configs/rollout.yaml lists."""
    return ("demo", *rollout_config().get("lerobot", {}))


def make_environment(name: str, demo_profile: Any = None) -> Callable[[], RolloutEnvironment]:
    """A factory of copies of environment `name` (one per side); InputError naming the known ones.
    demo_profile: the demo dataset profile (verify/data/demo_dataset.py) whose world "demo" is."""
    if name == "demo":
        from verify_ate.verify.envs.demo_world import demo_world_factory

        if demo_profile is None:
            raise InputError("--env demo: the demo world is a demo dataset's; give --demo, or --robot with a demo")
        return demo_world_factory(demo_profile)
    if name in rollout_config().get("lerobot", {}):
        from verify_ate.verify.envs.lerobot_env import lerobot_env_factory

        return lerobot_env_factory(name)
    raise InputError(f"--env {name!r}: not an environment this tool drives (one of: {', '.join(environment_names())})")
