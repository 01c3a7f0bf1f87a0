"""Joint-log CSV in, pose CSV out (docs/files.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from verify_ate.kinematics import Poses, RobotModel
from verify_ate.kinematics.robot import strip_position_suffix
from verify_ate.kinematics.rotations import matrix_to_quaternion
from verify_ate.reports.atomic import atomic_path
from verify_ate.verify.errors import InputError

POSE_COLUMNS = ["x", "y", "z", "qw", "qx", "qy", "qz"]


def read_joint_csv(path: Path, robot: RobotModel) -> np.ndarray:
    """[rows, n_dataset_joints] in dataset order; a missing gripper column is filled with 0 (it never moves the TCP)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not a readable CSV ({str(error).splitlines()[0]})") from None
    frame.columns = [strip_position_suffix(str(column)) for column in frame.columns]
    prefix = _arm_prefix([str(column) for column in frame.columns], robot)
    missing = [prefix + name for name in _moving(robot) if prefix + name not in frame.columns]
    if missing:
        raise InputError(f"{path}: missing joint columns {missing} (needs {list(robot.dataset_joint_names)})")
    if len(frame) == 0:
        raise InputError(f"{path}: no rows")
    columns = []
    for name in (prefix + joint for joint in robot.dataset_joint_names):
        if name not in frame.columns:
            columns.append(np.zeros(len(frame)))
            continue
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            raise InputError(f"{path}: column {name!r} row {int(np.argmax(bad)) + 2} is not a finite number")
        columns.append(values)
    return np.stack(columns, axis=-1)


def _moving(robot: RobotModel) -> list[str]:
    """The values that move a tool centre point: every arm's chain joints (every value for end-effector poses)."""
    if robot.end_effector:
        return list(robot.dataset_joint_names)
    return [name for arm in robot.arms for name in arm.dataset_joints]


def write_pose_csv(poses: Poses | dict[str, Poses], path: Path) -> Path:
    """x, y, z and qw, qx, qy, qz per row; with several arms, each arm's columns behind its name (left_x, ...)."""
    by_arm = poses if isinstance(poses, dict) else {"": poses}
    blocks, columns = [], []
    for arm, arm_poses in by_arm.items():
        position = np.asarray(arm_poses.position, dtype=np.float64).reshape(-1, 3)
        blocks += [position, matrix_to_quaternion(arm_poses.rotation).reshape(-1, 4)]
        columns += [f"{arm}_{column}" if len(by_arm) > 1 else column for column in POSE_COLUMNS]
    table = pd.DataFrame(np.concatenate(blocks, axis=1), columns=columns)
    with atomic_path(path) as temporary:
        table.to_csv(temporary, index=False, float_format="%.9f")
    return Path(path)


def _arm_prefix(columns: list[str], robot: RobotModel) -> str:
    """'' when the columns name the robot's joints, else the arm prefix (main_, follower_...) under which
    every kinematic joint has a column; '' again when there is none (the error then lists what is missing)."""
    moving = _moving(robot)
    if all(name in columns for name in moving):
        return ""
    first = moving[0]
    for column in columns:
        prefix = column[: len(column) - len(first)] if column.endswith(first) else None
        if prefix and all(prefix + name in columns for name in moving):
            return prefix
    return ""
