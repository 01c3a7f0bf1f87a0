"""What a rollout needs of an environment, and the one place that builds one by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from verify_ate.verify.configs import CONFIGS_DIR, read_yaml

ROLLOUT_CONFIG = CONFIGS_DIR / "rollout.yaml"


@dataclass(frozen=True)
class EnvStep:
    """One observation of an environment, as the rollout records it.

    frame: what the policy is given, shaped like a LeRobotDataset item (cameras float32 [3, H, W] in [0, 1],
        `observation.state`, `task`);
    state: what divergence is measured on: the joints in the robot's dataset units (an environment with a robot
        model) or the environment's own state vector;
    image: one camera's picture, uint8 [H, W, 3], for the report's frame strip;
    reward, done, success: as the environment reports them after the step (at reset: 0, False, False)."""

    frame: dict
    state: np.ndarray
    image: np.ndarray
    reward: float = 0.0
    done: bool = False
    success: bool = False


class RolloutEnvironment(Protocol):
    """One copy of an environment. A rollout makes one per side and resets both with the same seed."""

    name: str
    task: str
    robot: Any  # the RobotModel whose forward kinematics turn `state` into tool poses, or None
    state_unit: str  # of `state` when there is no robot model (divergence is then a distance in it)
    max_steps: int  # the episode's step limit
    timings: dict[str, float]  # seconds this copy spent, by part (physics, rendering, or the whole step)

    def reset(self, seed: int) -> EnvStep: ...

    def step(self, action: np.ndarray) -> EnvStep: ...

    def fingerprint(self) -> dict:
        """Everything about this environment that could move an outcome besides the policy: simulator and
        renderer versions, rendering backend, env id and kwargs, the video decoder."""
        ...

    def close(self) -> None: ...


def rollout_config() -> dict:
    return read_yaml(ROLLOUT_CONFIG, "rollout configuration")
