"""Robot models and batched forward kinematics (NumPy and torch)."""

from verify_ate.kinematics.fk import Poses, dataset_forward_kinematics, forward_kinematics
from verify_ate.kinematics.robot import RobotConfigError, RobotModel, available_robots, load_robot

__all__ = [
    "Poses",
    "RobotConfigError",
    "RobotModel",
    "available_robots",
    "dataset_forward_kinematics",
    "forward_kinematics",
    "load_robot",
]
