"""Forward kinematics of a robot model, batched over any leading shape, in NumPy or torch.

The walk itself is `chain.chain_poses`; this module picks the arm, maps dataset values onto its joint variables
(block by block, inside the walk, for NumPy), and reads the pose of an end-effector action space directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from verify_ate.kinematics.chain import Poses, chain_poses
from verify_ate.kinematics.robot import Arm, EndEffectorLayout, RobotModel
from verify_ate.kinematics.rotations import axis_angle_to_matrix, quaternion_to_matrix, rot6d_to_matrix

Array = Any


def forward_kinematics(robot: RobotModel, q_model: Array, frame: str = "tcp", arm: Arm | None = None) -> Poses:
    """Poses of `frame` ("tcp" or "flange") for model joint variables q_model [..., n_joints] of one arm."""
    return chain_poses(robot._chain(arm), q_model, frame=frame)


def dataset_forward_kinematics(
    robot: RobotModel,
    actions: Array,
    units: str | None = None,
    frame: str = "tcp",
    calibration: dict | None = None,
    arm: Arm | None = None,
) -> Poses:
    """Poses of one arm for vectors in dataset order and units, [..., n_dataset_values]."""
    arm = arm or robot.arm
    if arm.end_effector is not None:
        return end_effector_poses(arm.end_effector, actions)
    if type(actions).__module__.startswith("torch"):
        return forward_kinematics(robot, robot.dataset_to_model(actions, units, calibration, arm), frame, arm)
    rows = np.asarray(actions, dtype=np.float64)
    if rows.ndim == 0 or rows.shape[-1] != len(robot.dataset_joint_names):
        raise ValueError(
            f"expected {len(robot.dataset_joint_names)} dataset joint values in the last axis, got shape {rows.shape}"
        )
    to_model = lambda block: robot.dataset_to_model(block, units, calibration, arm)  # noqa: E731
    return chain_poses(robot._chain(arm), rows, frame=frame, to_model=to_model)


def arm_poses(
    robot: RobotModel, actions: Array, units: str | None = None, frame: str = "tcp", calibration: dict | None = None
) -> dict[str, Poses]:
    """Every arm's poses, by arm name, in the robot's arm order."""
    return {arm.name: dataset_forward_kinematics(robot, actions, units, frame, calibration, arm) for arm in robot.arms}


def end_effector_poses(layout: EndEffectorLayout, actions: Array) -> Poses:
    """The poses an end-effector action vector [..., D] holds: no kinematics, the actions are the poses."""
    values = np.asarray(actions, dtype=np.float64)
    position = values[..., list(layout.position)]
    rotation_values = values[..., list(layout.rotation_indices)]
    if layout.rotation == "axis_angle":
        rotation = axis_angle_to_matrix(rotation_values)
    elif layout.rotation == "rot6d":
        rotation = rot6d_to_matrix(rotation_values)
    else:
        rotation = quaternion_to_matrix(rotation_values)
    return Poses(position, rotation)
