"""Robot models and batched forward kinematics (NumPy and torch)."""

from verify_ate.kinematics.chain import Chain, Poses
from verify_ate.kinematics.fk import arm_poses, dataset_forward_kinematics, end_effector_poses, forward_kinematics
from verify_ate.kinematics.robot import RobotConfigError, RobotModel, available_robots, load_robot

__all__ = [
    "Chain",
    "Poses",
    "RobotConfigError",
    "RobotModel",
    "arm_poses",
    "available_robots",
    "dataset_forward_kinematics",
    "end_effector_poses",
    "forward_kinematics",
    "load_robot",
]
