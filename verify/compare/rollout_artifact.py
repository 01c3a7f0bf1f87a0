"""Rollout artifacts: what one side's closed-loop episodes did, step by step, with where they came from.

`.npz` (readable with allow_pickle=False, compressed): `states` [E, S + 1, K] (the state at reset and after each
step: joints in dataset units, or the environment's own state), `actions` [E, S, A] (the actions executed),
`rewards` [E, S], `done` [E, S], `success` [E], `steps` [E] (steps taken before the episode ended; later rows hold
the last state), `images` [E, S + 1, H, W, 3] uint8 (one camera), `tool_poses` [E, S + 1, arms, 4, 4] (every
arm's tool centre point through the robot model's forward kinematics; no arms without a robot model), and `meta`,
a 0-d string array of JSON (docs/files.md: schema, policy, device, dtype, the environment's fingerprint, seeds,
noise and checkpoint hashes).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from verify_ate.verify.compare.artifact import read_npz, write_npz
from verify_ate.verify.errors import InputError

ROLLOUT_SCHEMA = "verify-ate/rollout/v1"
ARRAYS = ("states", "actions", "rewards", "done", "success", "steps", "images", "tool_poses")
REQUIRED_META = ("schema", "policy", "device", "dtype", "environment", "seeds", "noise_sha256", "checkpoint_sha256")


@dataclass
class RolloutArtifact:
    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    done: np.ndarray
    success: np.ndarray
    steps: np.ndarray
    images: np.ndarray
    tool_poses: np.ndarray  # [E, S + 1, arms, 4, 4]; arms = 0 where the environment has no robot model
    meta: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def episodes(self) -> int:
        return int(self.states.shape[0])

    @property
    def label(self) -> str:
        return str(self.path) if self.path else str(self.meta.get("device", "rollout"))


def save_rollout(artifact: RolloutArtifact, path: str | Path) -> Path:
    missing = [key for key in REQUIRED_META if key not in artifact.meta]
    if missing:
        raise ValueError(f"rollout meta lacks {missing}")
    path = Path(path)
    if path.suffix != ".npz":
        raise InputError(f"{path}: rollout artifacts are .npz files")
    arrays = {name: np.asarray(getattr(artifact, name)) for name in ARRAYS}
    return write_npz(path, arrays, json.dumps(artifact.meta, sort_keys=True, default=str), compressed=True)


def load_rollout(path: str | Path) -> RolloutArtifact:
    """A rollout artifact, or InputError naming the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such rollout artifact")
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not an .npz rollout artifact (not a zip archive)")
    arrays, meta = read_npz(path, ARRAYS, "a rollout artifact")
    schema = meta.get("schema")
    if schema != ROLLOUT_SCHEMA:
        raise InputError(f"{path}: schema {schema!r}, expected a rollout artifact ({ROLLOUT_SCHEMA})")
    episodes, steps = arrays["actions"].shape[:2]
    expected = {
        "states": (episodes, steps + 1),
        "rewards": (episodes, steps),
        "done": (episodes, steps),
        "success": (episodes,),
        "steps": (episodes,),
        "images": (episodes, steps + 1),
        "tool_poses": (episodes, steps + 1),
    }
    for name, leading in expected.items():
        if arrays[name].shape[: len(leading)] != leading:
            raise InputError(f"{path}: {name} has shape {list(arrays[name].shape)}, expected {list(leading)}...")
    return RolloutArtifact(**arrays, meta=meta, path=path)
