"""The demo's own world, always offline: the demo robot's kinematics, cameras drawn from its state exactly as the
demo dataset draws them, and a goal taken from a recorded episode.

Dynamics: position control that reaches its target within one step. The executed action (joint targets in the
robot's dataset units) becomes the next state, each arm's kinematic joints clipped to its model's limits (the
gripper as commanded). Reset(seed): the recorded episode `seed mod episodes` of the demo profile gives the first
state, plus Gaussian noise of `initial_spread` times each joint's motion amplitude (configs/rollout.yaml), drawn
from NumPy's PCG64 seeded by the seed. The goal: the recorded episode's waypoint, where its tool centre point went
farthest from where it started (each arm's own; 15 and 17 cm away in the Koch demo's two episodes). Success: every
arm's tool centre point has come within `goal_tolerance_m` of its waypoint, each at some step of its own (an arm
standing still never gets there). Reward: minus the worst arm's distance to its waypoint (m), every step. An
episode lasts the recorded episode's length less one step; success does not end it, so both sides of a pair take
the same steps.

The images are the dataset's drawings before video encoding: the dataset the demo policy was trained on holds
them after a lossy AV1 round trip, so the policy sees this world a little sharper than its training frames.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from verify_ate.kinematics import arm_poses, load_robot
from verify_ate.verify.data.demo_dataset import (
    GENERATOR_VERSION,
    DemoProfile,
    camera_images,
    episode_joint_motion,
    gripper_index,
    profile_cache_key,
)
from verify_ate.verify.envs.base import EnvStep, rollout_config
from verify_ate.verify.errors import InputError


@dataclass(frozen=True)
class DemoWorldConfig:
    initial_spread: float  # of each joint's motion amplitude
    goal_tolerance_m: float

    @classmethod
    def from_file(cls) -> DemoWorldConfig:
        document = rollout_config().get("demo_world", {})
        config = cls(float(document["initial_spread"]), float(document["goal_tolerance_m"]))
        if config.initial_spread < 0 or config.goal_tolerance_m <= 0:
            raise InputError(
                f"configs/rollout.yaml demo_world: need initial_spread >= 0, goal_tolerance_m > 0: {config}"
            )
        return config


class DemoWorld:
    """One copy of the demo world of a demo dataset profile (see the module's docstring)."""

    name = "demo"
    state_unit = "m"

    def __init__(self, profile: DemoProfile, config: DemoWorldConfig):
        self.profile = profile
        self.config = config
        self.robot = load_robot(profile.robot)
        self.task = profile.task
        self.max_steps = profile.frames_per_episode - 1
        self._grippers = [gripper_index(self.robot, arm) for arm in self.robot.arms]
        self._amplitude = np.array([motion.amplitude for motion in profile.joints.values()])
        self._first_camera = next(iter(profile.cameras))
        self._state: np.ndarray | None = None
        self._goal: np.ndarray | None = None  # [arms, 3]
        self._step = 0
        self._reached = np.zeros(len(self.robot.arms), dtype=bool)
        self.timings = {"physics_s": 0.0, "render_s": 0.0}  # summed over this copy's steps

    def reset(self, seed: int) -> EnvStep:
        if seed < 0:
            raise InputError(f"environment seed {seed}: must be >= 0")
        recorded, _ = episode_joint_motion(self.profile, seed % self.profile.episodes)
        spread = np.random.default_rng(seed).normal(0.0, 1.0, size=recorded.shape[1]) * self._amplitude
        self._state = self._clipped(recorded[0].astype(np.float64) + self.config.initial_spread * spread)
        self._goal = self._waypoints(recorded.astype(np.float64))
        self._step = 0
        self._reached = np.zeros(len(self.robot.arms), dtype=bool)
        return self._observe(0.0, False)

    def step(self, action: np.ndarray) -> EnvStep:
        if self._state is None:
            raise RuntimeError("reset the demo world before stepping it")
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self._state.shape:
            raise InputError(f"the demo world takes actions of {self._state.shape[0]} values, got {list(action.shape)}")
        began = time.perf_counter()
        self._state = self._clipped(action)
        self._step += 1
        judged = self._judge()
        self.timings["physics_s"] += time.perf_counter() - began
        return self._observe(*judged)

    def _waypoints(self, recorded: np.ndarray) -> np.ndarray:
        """[arms, 3]: each arm's tool centre point where the recorded episode took it farthest from its start."""
        poses = arm_poses(self.robot, recorded, units=self.profile.units)
        points = []
        for pose in poses.values():
            path = np.asarray(pose.position)
            points.append(path[np.argmax(np.linalg.norm(path - path[0], axis=-1))])
        return np.stack(points)

    def _judge(self) -> tuple[float, bool]:
        assert self._state is not None and self._goal is not None
        distances = np.linalg.norm(self._tool_positions(self._state) - self._goal, axis=-1)
        self._reached |= distances <= self.config.goal_tolerance_m
        return -float(distances.max()), self._step >= self.max_steps

    def _observe(self, reward: float, done: bool) -> EnvStep:
        assert self._state is not None
        began = time.perf_counter()
        state = self._state.astype(np.float32)
        images = camera_images(self.profile, self._tool_positions(self._state), state, self._grippers)
        frame: dict = {
            key: np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / 255.0
            for key, image in images.items()
        }
        frame["observation.state"] = state
        frame["task"] = self.task
        success = bool(self._reached.all())
        self.timings["render_s"] += time.perf_counter() - began
        return EnvStep(frame, state, images[self._first_camera], reward, done, success)

    def _tool_positions(self, state: np.ndarray) -> np.ndarray:
        """[arms, 3] tool centre points of one dataset state vector."""
        poses = arm_poses(self.robot, state[None], units=self.profile.units)
        return np.stack([np.asarray(pose.position)[0] for pose in poses.values()])

    def _clipped(self, state: np.ndarray) -> np.ndarray:
        """Each arm's kinematic joints inside its model's limits; other values (grippers) as they are."""
        state = state.copy()
        for arm in self.robot.arms:
            chain = arm.chain
            assert chain is not None  # the demo profile refuses chainless robots
            model = self.robot.dataset_to_model(state, units=self.profile.units, arm=arm)
            state[self.robot.indices(arm)] = self.robot.model_to_dataset(np.clip(model, chain.lower, chain.upper), arm)
        return state

    def fingerprint(self) -> dict:
        import numpy

        return {
            "env": "demo",
            "robot": self.robot.name,
            "profile": self.profile.source.rsplit("/", 1)[-1],
            "profile_key": profile_cache_key(self.profile),
            "generator_version": GENERATOR_VERSION,
            "cameras": dict(self.profile.cameras),
            "image": [self.profile.height, self.profile.width],
            "initial_spread": self.config.initial_spread,
            "goal_tolerance_m": self.config.goal_tolerance_m,
            "success_rule": (
                f"every arm's tool centre point within {self.config.goal_tolerance_m:g} m of its waypoint in the "
                f"recorded episode (its farthest point from the start), each at some step of {self.max_steps}"
            ),
            "renderer": "verify-ate numpy drawing (no GL)",
            "numpy": numpy.__version__,
            "python": platform.python_version(),
        }

    def close(self) -> None:
        self._state = None


def demo_world_factory(profile: DemoProfile) -> Callable[[], DemoWorld]:
    config = DemoWorldConfig.from_file()
    return lambda: DemoWorld(profile, config)
