"""Robot models: one YAML file in configs/robots/ per arm, loaded into a frozen dataclass."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from verify_ate import CONFIGS_DIR
from verify_ate.kinematics.rotations import quaternion_to_matrix

CONFIG_DIR = CONFIGS_DIR / "robots"


class RobotConfigError(ValueError):
    """A robot name or robot YAML file that cannot be used."""


@dataclass(frozen=True)
class DatasetJointMap:
    """q_model = sign * radians(q_dataset) + radians(offset_deg), per kinematic joint."""

    sign: np.ndarray  # [n_kinematic]
    offset_rad: np.ndarray  # [n_kinematic]


@dataclass(frozen=True)
class RobotModel:
    name: str
    joint_names: tuple[str, ...]  # kinematic joints, chain order
    dataset_joint_names: tuple[str, ...]  # every value of a dataset vector, in order
    dataset_units: str  # "deg" or "rad"
    dh_a: np.ndarray  # [n] a_{i-1}
    dh_alpha: np.ndarray  # [n] alpha_{i-1}
    dh_d: np.ndarray  # [n]
    dh_theta_offset: np.ndarray  # [n]
    lower_limits: np.ndarray  # [n] model radians
    upper_limits: np.ndarray
    base: np.ndarray  # [4, 4] world <- DH frame 0
    tool: np.ndarray  # [4, 4] last DH frame <- flange
    tcp_offset: np.ndarray  # [3] in the flange frame
    joint_map: DatasetJointMap
    source: Path

    @property
    def n_joints(self) -> int:
        return len(self.joint_names)

    @property
    def kinematic_indices(self) -> np.ndarray:
        """Where each kinematic joint sits in a dataset vector."""
        return np.array([self.dataset_joint_names.index(name) for name in self.joint_names])

    def dataset_name_prefix(self, names: Sequence[str]) -> str | None:
        """The arm prefix under which `names` are this robot's dataset joints, in order: '' for the robot's
        own names, e.g. 'main_' for v2-era Koch recordings (main_shoulder_pan, ...) or 'follower_'; None
        when they are not (a different robot, another order, another count)."""
        names = [str(name) for name in names]
        if len(names) != len(self.dataset_joint_names):
            return None
        first, own = names[0], self.dataset_joint_names[0]
        if not first.endswith(own):
            return None
        prefix = first[: len(first) - len(own)]
        if prefix and not prefix.endswith(("_", ".", "/", "-")):
            return None  # "xgripper" is not an arm prefix
        return prefix if names == [prefix + name for name in self.dataset_joint_names] else None

    def dataset_to_model(self, q_dataset: np.ndarray, units: str | None = None) -> np.ndarray:
        """[..., n_dataset] in dataset units -> [..., n_kinematic] model radians."""
        units = units or self.dataset_units
        if type(q_dataset).__module__.startswith("torch"):
            import torch

            as_tensor = lambda v: torch.as_tensor(v, dtype=q_dataset.dtype, device=q_dataset.device)  # noqa: E731
            q = q_dataset[..., torch.as_tensor(self.kinematic_indices, device=q_dataset.device)]
            q_rad = q * (math.pi / 180.0) if units == "deg" else q
            return as_tensor(self.joint_map.sign) * q_rad + as_tensor(self.joint_map.offset_rad)
        q = np.asarray(q_dataset, dtype=np.float64)[..., self.kinematic_indices]
        q_rad = np.radians(q) if units == "deg" else q
        return self.joint_map.sign * q_rad + self.joint_map.offset_rad

    def model_to_dataset(self, q_model: np.ndarray) -> np.ndarray:
        """Inverse of dataset_to_model for the kinematic joints, in dataset units."""
        q_rad = (np.asarray(q_model, dtype=np.float64) - self.joint_map.offset_rad) * self.joint_map.sign
        return np.degrees(q_rad) if self.dataset_units == "deg" else q_rad


def available_robots() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_robot(name_or_path: str | Path) -> RobotModel:
    """A robot by config name (`koch_v1_1`) or by path to a YAML file of the same schema."""
    candidate = Path(name_or_path)
    path = candidate if candidate.suffix in (".yaml", ".yml") else CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise RobotConfigError(
            f"{path}: unknown robot {str(name_or_path)!r} (known: {', '.join(available_robots()) or 'none'})"
        )
    try:
        document = yaml.safe_load(path.read_text())
        if not isinstance(document, dict):
            raise ValueError(f"the file must hold a mapping, not {type(document).__name__}")
        return _parse(document, path)
    except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise RobotConfigError(f"{path}: invalid robot config: {first}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RobotConfigError(f"{path}: cannot read the robot config ({error})") from None


def _transform(entry: dict) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = quaternion_to_matrix(np.asarray(entry["rotation_wxyz"], dtype=np.float64))
    pose[:3, 3] = np.asarray(entry["translation"], dtype=np.float64)
    return pose


def _parse(document: dict, path: Path) -> RobotModel:
    if document.get("dh_convention") != "modified":
        raise ValueError("dh_convention must be 'modified' (the only one the FK implements)")
    joints = document["joints"]
    names = tuple(str(j["name"]) for j in joints)
    dataset_names = tuple(str(n) for n in document["dataset_joint_names"])
    missing = [n for n in names if n not in dataset_names]
    if missing:
        raise ValueError(f"kinematic joints {missing} are not in dataset_joint_names")
    units = document.get("dataset_units", "deg")
    if units not in ("deg", "rad"):
        raise ValueError(f"dataset_units must be deg or rad, not {units!r}")

    def column(key):
        return np.array([float(j[key]) for j in joints])

    limits = np.array([[float(v) for v in j["limits"]] for j in joints])
    tcp_offset = np.asarray(document.get("tcp_offset", [0.0, 0.0, 0.0]), dtype=np.float64)
    if tcp_offset.shape != (3,):
        raise ValueError("tcp_offset must hold 3 numbers")
    return RobotModel(
        name=str(document["name"]),
        joint_names=names,
        dataset_joint_names=dataset_names,
        dataset_units=units,
        dh_a=column("a"),
        dh_alpha=column("alpha"),
        dh_d=column("d"),
        dh_theta_offset=column("theta_offset"),
        lower_limits=limits[:, 0],
        upper_limits=limits[:, 1],
        base=_transform(document["base"]),
        tool=_transform(document["tool"]),
        tcp_offset=tcp_offset,
        joint_map=DatasetJointMap(
            sign=np.array([float(j["dataset"]["sign"]) for j in joints]),
            offset_rad=np.array([math.radians(float(j["dataset"]["offset_deg"])) for j in joints]),
        ),
        source=path,
    )
