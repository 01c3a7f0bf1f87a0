"""lerobot's environments through lerobot's own environment layer (`lerobot.envs`, lerobot 0.6.1), so that what
`lerobot-eval` runs runs here: the env config class lerobot registers for the type (`EnvConfig`), its vector env
from `make_env` (one copy, gymnasium's SyncVectorEnv, autoreset on the same step), and observations turned into the
policy's keys by `preprocess_observation`, as lerobot_eval's `rollout` does.

Per environment type, configs/rollout.yaml `lerobot:` says what lerobot does not: the task string the policy is
prompted with (when the env does not say), the state divergence is measured on (`observation.state`: PushT's agent
position in pixels), its unit, and the robot model whose forward kinematics apply to it (none for PushT). Success is
what the environment reports (`is_success`, in `final_info` on the terminating step); the episode ends when it
terminates or its step limit is reached.

Headless rendering on the CPU: PushT draws with pygame and OpenCV (no GL). MuJoCo environments (ALOHA, LIBERO)
need `MUJOCO_GL=egl` (Mesa's llvmpipe on a CPU-only machine) or `osmesa`; the fingerprint records which.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import os
import platform
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from verify_ate.verify.envs.base import EnvStep, rollout_config
from verify_ate.verify.errors import InputError

# The packages whose versions can move an environment's outcome: simulators, renderers, their gym packages.
SIMULATION_PACKAGES = (
    "lerobot",
    "gymnasium",
    "gym-pusht",
    "pymunk",
    "pygame",
    "shapely",
    "opencv-python-headless",
    "opencv-python",
    "gym-aloha",
    "dm-control",
    "mujoco",
    "numpy",
)


def _versions() -> dict[str, str]:
    found = {}
    for name in SIMULATION_PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


class LerobotEnvironment:
    """One copy of a lerobot environment type (see the module's docstring)."""

    def __init__(self, env_type: str, settings: dict):
        from lerobot.envs.configs import EnvConfig

        try:
            config_class = EnvConfig.get_choice_class(env_type)
        except Exception:  # draccus says KeyError or ValueError depending on its version
            raise InputError(f"--env {env_type}: lerobot 0.6.1 has no environment of that type") from None
        self.name = env_type
        self.config = config_class()
        self._settings = settings
        self.state_unit = str(settings.get("state_unit", ""))
        self.robot = None
        if settings.get("robot"):
            from verify_ate.kinematics import load_robot

            self.robot = load_robot(str(settings["robot"]))
        self.max_steps = int(self.config.episode_length)
        self.task = str(settings.get("task", ""))
        self.timings = {"environment_s": 0.0}
        self._vector = self._make()

    def _make(self):
        if self._settings.get("mujoco_gl"):  # read when MuJoCo first makes a context: before the environment
            os.environ.setdefault("MUJOCO_GL", str(self._settings["mujoco_gl"]))
        from lerobot.envs.factory import make_env

        quiet = io.StringIO()  # lerobot prints "gym id ... not found, attempting to import" on first use
        try:
            with contextlib.redirect_stdout(quiet), warnings.catch_warnings():
                # pygame (PushT's renderer) imports setuptools' pkg_resources, which warns that it is deprecated
                warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
                envs = make_env(self.config, n_envs=1)
        except ModuleNotFoundError as error:
            package = self.config.package_name.replace("_", "-")
            raise InputError(
                f"--env {self.name}: lerobot needs the package {package!r} for it ({error}); install it "
                f"(docs/rollout.md, lerobot's environments)"
            ) from None
        return next(iter(next(iter(envs.values())).values()))

    def _observe(self, observation: dict, info: dict, reward: float, done: bool, success: bool) -> EnvStep:
        from lerobot.envs.utils import preprocess_observation

        converted = preprocess_observation(observation)
        frame: dict = {key: value[0].numpy() for key, value in converted.items()}
        frame["task"] = self._task()
        state = np.asarray(frame.get(self._settings.get("state_key", "observation.state")), dtype=np.float64)
        image_key = next((key for key in frame if key.startswith("observation.image")), None)
        if image_key is None:
            raise InputError(f"--env {self.name}: its observation holds no camera ({', '.join(frame)})")
        image = (np.asarray(frame[image_key]).transpose(1, 2, 0) * 255.0).round().astype(np.uint8)
        return EnvStep(frame, state, image, reward, done, success)

    def _task(self) -> str:
        with contextlib.suppress(Exception):
            for name in ("task_description", "task"):
                described = self._vector.call(name)
                if described and isinstance(described[0], str):
                    return described[0]
        return self.task

    def reset(self, seed: int) -> EnvStep:
        began = time.perf_counter()
        observation, info = self._vector.reset(seed=[int(seed)])
        self.timings["environment_s"] += time.perf_counter() - began
        return self._observe(observation, info, 0.0, False, False)

    def step(self, action: np.ndarray) -> EnvStep:
        began = time.perf_counter()
        observation, reward, terminated, truncated, info = self._vector.step(np.asarray(action, dtype=np.float32)[None])
        self.timings["environment_s"] += time.perf_counter() - began
        done = bool(terminated[0] or truncated[0])
        final = info.get("final_info")
        if done and isinstance(final, dict):
            # Autoreset on the same step: `observation` is the next episode's first; the last one is final_obs.
            observation = info.get("final_obs", observation)
            success = _flag(final.get("is_success"))
        else:
            success = _flag(info.get("is_success"))
        return self._observe(observation, info, float(np.asarray(reward).reshape(-1)[0]), done, success)

    def fingerprint(self) -> dict:
        return {
            "env": self.name,
            "env_type": self.name,
            "gym_id": self.config.gym_id,
            "env_kwargs": {key: str(value) for key, value in sorted(self.config.gym_kwargs.items())},
            "episode_length": self.max_steps,
            "packages": _versions(),
            "MUJOCO_GL": os.environ.get("MUJOCO_GL", ""),
            "PYOPENGL_PLATFORM": os.environ.get("PYOPENGL_PLATFORM", ""),
            "python": platform.python_version(),
            "success_rule": "the environment's is_success when the episode terminates",
        }

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._vector.close()


def _flag(value: Any) -> bool:
    if value is None:
        return False
    return bool(np.asarray(value).reshape(-1)[0])


def lerobot_env_factory(env_type: str) -> Callable[[], LerobotEnvironment]:
    settings = dict(rollout_config().get("lerobot", {}).get(env_type) or {})
    return lambda: LerobotEnvironment(env_type, settings)
