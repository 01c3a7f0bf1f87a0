"""Robot models: one YAML file in configs/robots/ per robot, loaded into a frozen dataclass.

A robot is one or more arms. Each arm is a `Chain` (from DH rows, an MJCF or a URDF in kinematics/models/) to
its tool centre point, the dataset values that drive its joints (with the sign and zero offset that carry the
dataset's convention onto the model's), and its gripper. A robot whose actions are end-effector poses has
no chain: its arms read the pose from the action vector (`EndEffectorLayout`). docs/robots.md is the manual.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import ArrayLike

from verify_ate import CONFIGS_DIR
from verify_ate.kinematics.chain import REVOLUTE, Chain, ChainBuilder, rotation_about, translation
from verify_ate.kinematics.model_files import ModelFileError, read_chain
from verify_ate.kinematics.rotations import quaternion_to_matrix

CONFIG_DIR = CONFIGS_DIR / "robots"
MODELS_DIR = Path(__file__).resolve().parent / "models"
UNITS = ("deg", "rad", "normalized")
POSE_UNITS = "pose"  # end-effector actions: metres and radians as the layout says, never converted
# lerobot's normalised range: arm joints -100..100 (MotorNormMode.RANGE_M100_100), the gripper 0..100.
NORMALIZED_ARM_MODE, NORMALIZED_GRIPPER_MODE = "range_m100_100", "range_0_100"


class RobotConfigError(ValueError):
    """A robot name or robot YAML file that cannot be used."""


@dataclass(frozen=True)
class Gripper:
    """Where an arm's gripper value sits and when it reads open: above `threshold` (in the robot's dataset units)
    unless `open_above` is False. Steps where the reference lies within `margin` of the threshold are ambiguous."""

    joint: str  # the dataset name, e.g. "gripper" or "left_gripper"
    threshold: float
    margin: float
    open_above: bool = True
    units: str = "deg"  # what threshold and margin are in: the robot's dataset units
    other_units: tuple[tuple[str, float, float], ...] = ()  # (units, threshold, margin) for recordings in others

    def in_units(self, units: str) -> Gripper | None:
        """This gripper's threshold and margin for values recorded in `units` (degrees and radians convert; other
        units need their own entry); None when there is none."""
        if units == self.units:
            return self
        for other, threshold, margin in self.other_units:
            if other == units:
                return replace(self, threshold=threshold, margin=margin, units=units)
        if {units, self.units} == {"deg", "rad"}:
            turn = math.radians if units == "rad" else math.degrees
            return replace(self, threshold=turn(self.threshold), margin=turn(self.margin), units=units)
        return None


@dataclass(frozen=True)
class EndEffectorLayout:
    """Where an end-effector action vector holds the pose: position indices and a rotation encoding."""

    position: tuple[int, int, int]
    rotation: str  # "axis_angle" (3), "rot6d" (6: the first two columns), "quaternion" (4, w x y z)
    rotation_indices: tuple[int, ...]


ROTATION_WIDTHS = {"axis_angle": 3, "rot6d": 6, "quaternion": 4}


@dataclass(frozen=True)
class Arm:
    name: str
    dataset_joints: tuple[str, ...]  # dataset names of the chain's joints, chain order (empty for end-effector arms)
    sign: np.ndarray  # [n] q_model = sign * radians(q_dataset) + offset_rad
    offset_rad: np.ndarray
    chain: Chain | None
    gripper: Gripper | None
    end_effector: EndEffectorLayout | None = None

    @property
    def n_joints(self) -> int:
        return len(self.dataset_joints)


@dataclass(frozen=True)
class RobotModel:
    name: str
    description: str
    arms: tuple[Arm, ...]
    dataset_joint_names: tuple[str, ...]  # every value of a dataset vector, in order
    dataset_units: str  # "deg", "rad" or "normalized" (lerobot's -100..100 range, turned into angles by calibration)
    robot_types: tuple[str, ...]  # the info.json robot_type values recorded for this robot
    zero_convention: str  # which calibration's zero the model's zero is (recorded in every artifact)
    motors: str  # the servo family whose resolution turns lerobot's normalised range into angles
    model_file: str  # the model file the chains come from (or "DH rows")
    source: Path
    dh: dict | None = None  # the DH rows, base and tool of a DH robot, as loaded
    units_by_robot_type: tuple[tuple[str, str], ...] = ()  # a recording's robot_type -> its joints' units
    calibration: dict | None = None  # lerobot's motor calibration of the recorded arm (--robot-calibration)

    def units_for(self, robot_type: str | None) -> str:
        """The units a recording of this robot holds: what its robot_type implies (lerobot >= 0.4's koch_follower
        records the normalised range), else the robot's own."""
        return dict(self.units_by_robot_type).get(robot_type or "", self.dataset_units)

    # One-arm shorthands, for the arm robots most code talks about.

    @property
    def arm(self) -> Arm:
        if len(self.arms) != 1:
            raise RobotConfigError(f"robot {self.name} has {len(self.arms)} arms: name the arm")
        return self.arms[0]

    @property
    def two_armed(self) -> bool:
        return len(self.arms) > 1

    @property
    def end_effector(self) -> bool:
        """Whether the actions are end-effector poses (no forward kinematics)."""
        return all(arm.end_effector is not None for arm in self.arms)

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.arm.dataset_joints

    @property
    def n_joints(self) -> int:
        return self.arm.n_joints

    @property
    def lower_limits(self) -> np.ndarray:
        return self._chain().lower

    @property
    def upper_limits(self) -> np.ndarray:
        return self._chain().upper

    def _chain(self, arm: Arm | None = None) -> Chain:
        chain = (arm or self.arm).chain
        if chain is None:
            raise RobotConfigError(f"robot {self.name}: its actions are end-effector poses, it has no joint chain")
        return chain

    @property
    def grippers(self) -> tuple[Gripper, ...]:
        return tuple(arm.gripper for arm in self.arms if arm.gripper is not None)

    @property
    def kinematic_indices(self) -> np.ndarray:
        """Where each kinematic joint of the one arm sits in a dataset vector."""
        return self.indices(self.arm)

    def indices(self, arm: Arm) -> np.ndarray:
        return np.array([self.dataset_joint_names.index(name) for name in arm.dataset_joints], dtype=np.int64)

    def dataset_name_prefix(self, names: Sequence[str]) -> str | None:
        """The prefix under which `names` are this robot's dataset values, in order: '' for the robot's own names,
        e.g. 'main_' for v2-era Koch recordings or 'follower_'; lerobot >= 0.4's '.pos' suffixes are accepted too.
        None when they are not (a different robot, another order, another count)."""
        names = [strip_position_suffix(str(name)) for name in names]
        if len(names) != len(self.dataset_joint_names):
            return None
        first, own = names[0], self.dataset_joint_names[0]
        if not first.endswith(own):
            return None
        prefix = first[: len(first) - len(own)]
        if prefix and not prefix.endswith(("_", ".", "/", "-")):
            return None  # "xgripper" is not an arm prefix
        return prefix if names == [prefix + name for name in self.dataset_joint_names] else None

    def dataset_to_model(
        self, q_dataset: Any, units: str | None = None, calibration: dict | None = None, arm: Arm | None = None
    ) -> Any:
        """[..., n_dataset] in dataset units -> [..., n_kinematic] model joint variables of one arm."""
        arm = arm or self.arm
        units = units or self.dataset_units
        calibration = calibration or self.calibration
        indices = self.indices(arm)
        if type(q_dataset).__module__.startswith("torch"):
            import torch

            as_tensor = lambda v: torch.as_tensor(v, dtype=q_dataset.dtype, device=q_dataset.device)  # noqa: E731
            q = q_dataset[..., torch.as_tensor(indices, device=q_dataset.device)]
            if units == "normalized":
                q = as_tensor(self._normalized_to_degrees(q.detach().cpu().numpy(), arm, calibration))
            q_rad = q * (math.pi / 180.0) if units in ("deg", "normalized") else q
            return as_tensor(arm.sign) * q_rad + as_tensor(arm.offset_rad)
        q = np.asarray(q_dataset, dtype=np.float64)[..., indices]
        if units == "normalized":
            q = self._normalized_to_degrees(q, arm, calibration)
        q_rad = np.radians(q) if units in ("deg", "normalized") else q
        return arm.sign * q_rad + arm.offset_rad

    def _normalized_to_degrees(self, values: np.ndarray, arm: Arm, calibration: dict | None) -> np.ndarray:
        from verify_ate.kinematics.units import motor_ranges, normalized_to_degrees

        if not calibration:
            raise RobotConfigError(
                f"robot {self.name}: joints in lerobot's normalised range (-100..100) need the arm's calibration "
                "file to become angles (--robot-calibration FILE)"
            )
        ranges = motor_ranges(calibration, arm.dataset_joints)
        return normalized_to_degrees(
            values, [NORMALIZED_ARM_MODE] * arm.n_joints, ranges, apply_drive_mode=self.applies_drive_mode
        )

    @property
    def applies_drive_mode(self) -> bool:
        """Whether lerobot's bus for this robot's servos flips a reversed motor in software (Feetech) or the motor
        does it itself (Dynamixel)."""
        from verify_ate.kinematics.units import APPLY_DRIVE_MODE

        return APPLY_DRIVE_MODE.get(self.motors, True)

    def dataset_to_degrees(self, values: ArrayLike, units: str, calibration: dict | None = None) -> np.ndarray:
        """Every value of [..., n_dataset] in degrees: radians turned, lerobot's normalised range turned through the
        calibration (the gripper's 0..100 too); normalised values without a calibration stay as they are."""
        values = np.asarray(values, dtype=np.float64)
        calibration = calibration or self.calibration
        if units == "rad":
            return np.degrees(values)
        if units != "normalized" or not calibration:
            return values
        from verify_ate.kinematics.units import motor_ranges, normalized_to_degrees

        grippers = {gripper.joint for gripper in self.grippers}
        modes = [
            NORMALIZED_GRIPPER_MODE if name in grippers else NORMALIZED_ARM_MODE for name in self.dataset_joint_names
        ]
        ranges = motor_ranges(calibration, self.dataset_joint_names)
        return normalized_to_degrees(values, modes, ranges, apply_drive_mode=self.applies_drive_mode)

    def model_to_dataset(self, q_model: np.ndarray, arm: Arm | None = None) -> np.ndarray:
        """Inverse of dataset_to_model for one arm's kinematic joints, in degrees or radians (the robot's units;
        degrees for a normalised robot)."""
        arm = arm or self.arm
        q_rad = (np.asarray(q_model, dtype=np.float64) - arm.offset_rad) * arm.sign
        return q_rad if self.dataset_units == "rad" else np.degrees(q_rad)

    def describe(self) -> dict:
        """What an artifact records of the robot model it was made for."""
        return {
            "name": self.name,
            "model_file": self.model_file,
            "zero_convention": self.zero_convention,
            "arms": [arm.name for arm in self.arms],
            "units": self.dataset_units,
        }


# How far past a joint's limits recorded values may lie before they cannot be angles in the declared unit.
RANGE_MARGIN_RAD = math.radians(15.0)


def check_recorded_range(robot: RobotModel, low: ArrayLike, high: ArrayLike, units: str, where: str) -> None:
    """Refuse recorded joint values [n_dataset] (the smallest and largest seen) that cannot be angles in `units`:
    a kinematic joint whose range maps outside its model limits by more than RANGE_MARGIN_RAD. The message names
    the joint, the range seen and the units in which the values would fit."""
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    if units == "normalized" and not robot.calibration:
        return  # nothing to turn them into angles with: dataset_to_model says so when it is asked to
    outside = _outside_limits(robot, low, high, units)
    if outside is None:
        return
    arm, j = outside
    index = robot.dataset_joint_names.index(arm.dataset_joints[j])
    chain = robot._chain(arm)
    fitting = [other for other in ("deg", "rad") if other != units and _outside_limits(robot, low, high, other) is None]
    kinematic = robot.indices(arm)
    if units != "normalized" and np.all(np.abs(np.concatenate([low[kinematic], high[kinematic]])) <= 100.0):
        fitting.append("normalized")
    hint = {
        "deg": "degrees (--robot-units deg)",
        "rad": "radians (--robot-units rad)",
        "normalized": "lerobot's normalised range -100..100 (--robot-units normalized --robot-calibration FILE)",
    }
    likely = (
        f"they would fit as {' or as '.join(hint[u] for u in fitting)}"
        if fitting
        else "check --robot (another arm, or another calibration's zero) and --robot-units"
    )
    raise RobotConfigError(
        f"{where}: joint {arm.dataset_joints[j]} ranges {low[index]:.4g}..{high[index]:.4g}, which as {units} lies "
        f"outside robot {robot.name}'s limits ({np.degrees(chain.lower[j]):.0f}..{np.degrees(chain.upper[j]):.0f} "
        f"deg) by more than {math.degrees(RANGE_MARGIN_RAD):.0f} deg; {likely}"
    )


def _outside_limits(robot: RobotModel, low: np.ndarray, high: np.ndarray, units: str) -> tuple[Arm, int] | None:
    """The first arm and joint whose recorded range, read in `units`, leaves its limits by more than the margin."""
    for arm in robot.arms:
        if arm.chain is None:
            continue
        ends = robot.dataset_to_model(np.stack([low, high]), units, arm=arm)
        seen_low, seen_high = np.minimum(ends[0], ends[1]), np.maximum(ends[0], ends[1])
        outside = (seen_low < arm.chain.lower - RANGE_MARGIN_RAD) | (seen_high > arm.chain.upper + RANGE_MARGIN_RAD)
        if np.any(outside):
            return arm, int(np.argmax(outside))
    return None


def strip_position_suffix(name: str) -> str:
    """lerobot >= 0.4 names a joint's position feature '<joint>.pos'."""
    return name[: -len(".pos")] if name.endswith(".pos") else name


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
    except ModelFileError as error:
        raise RobotConfigError(f"{path}: {error}") from None
    except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise RobotConfigError(f"{path}: invalid robot config: {first}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RobotConfigError(f"{path}: cannot read the robot config ({error})") from None


def robot_for_dataset(robot_type: str | None, names: Sequence[str], where: str) -> RobotModel:
    """The robot a dataset was recorded with, from its info.json `robot_type` and its action names: the robot whose
    `robot_types` list it and whose joints the names are (prefixes such as main_ and '.pos' suffixes allowed); by
    the names alone when the type is missing or unknown and exactly one robot fits."""
    robots = [load_robot(name) for name in available_robots()]
    fitting = [robot for robot in robots if robot.dataset_name_prefix(names) is not None]
    typed = [robot for robot in fitting if robot_type and robot_type in robot.robot_types]
    if typed:
        return typed[0]
    if len(fitting) == 1:
        return fitting[0]
    if not fitting:
        pose = _pose_robot_by_width(robots, names)
        if pose is not None:
            return pose
        typed_only = [robot for robot in robots if robot_type and robot_type in robot.robot_types]
        if typed_only:  # the type says which robot, the names are not its joints: name both lists
            robot = typed_only[0]
            raise RobotConfigError(
                f"{where}: robot_type {robot_type!r} is robot {robot.name}, whose actions are "
                f"{list(robot.dataset_joint_names)} in that order (a common prefix and '.pos' allowed); the dataset's "
                f"are {list(names)}: pass --robot NAME or a YAML if it is another robot"
            )
    known = ", ".join(f"{robot.name} ({'/'.join(robot.robot_types)})" for robot in robots)
    what = f"{f'robot_type {robot_type!r}' if robot_type else 'no robot_type'} and actions {list(names)}"
    if len(fitting) > 1:
        raise RobotConfigError(
            f"{where}: {what} fit several robots ({', '.join(r.name for r in fitting)}): choose one with --robot"
        )
    raise RobotConfigError(f"{where}: {what} match no known robot (known: {known}): pass --robot NAME or a YAML")


def _pose_robot_by_width(robots: list[RobotModel], names: Sequence[str]) -> RobotModel | None:
    """The end-effector robot whose action width `names` has, when they name a position (x, y and z, or an
    'eef'/'ee_'/'pos' feature): how LIBERO- and XVLA-style recordings are recognised under their own names."""
    lowered = [strip_position_suffix(str(name)).lower() for name in names]
    looks_like_pose = {"x", "y", "z"} <= set(lowered) or any(
        token in name for name in lowered for token in ("eef", "ee_", "pos", "xyz")
    )
    if not looks_like_pose:
        return None
    by_width = [robot for robot in robots if robot.end_effector and len(robot.dataset_joint_names) == len(names)]
    return by_width[0] if len(by_width) == 1 else None


def _model_path(model_file: str, config: Path) -> Path:
    """A robot config's model file: an absolute path, or one beside the YAML (a user's own robot), else one of the
    committed models in MODELS_DIR."""
    given = Path(model_file).expanduser()
    if given.is_absolute():
        return given
    beside = config.parent / given
    return beside if beside.is_file() else MODELS_DIR / given


def _transform(entry: dict) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = quaternion_to_matrix(np.asarray(entry["rotation_wxyz"], dtype=np.float64))
    pose[:3, 3] = np.asarray(entry["translation"], dtype=np.float64)
    return pose


def _gripper(entry: dict | None, dataset_names: tuple[str, ...], units: str) -> Gripper | None:
    if entry is None:
        return None
    others = []
    for other in UNITS:
        if other in entry:
            others.append((other, float(entry[other]["threshold"]), float(entry[other].get("margin", 0.0))))
    gripper = Gripper(
        joint=str(entry["joint"]),
        threshold=float(entry["threshold"]),
        margin=float(entry.get("margin", 0.0)),
        open_above=bool(entry.get("open_above", True)),
        units=units,
        other_units=tuple(others),
    )
    if gripper.joint not in dataset_names:
        raise ValueError(f"gripper joint {gripper.joint!r} is not in dataset_joint_names")
    if gripper.margin < 0:
        raise ValueError(f"gripper margin must be >= 0, not {gripper.margin}")
    return gripper


def _joint_map(joints: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    sign = np.array([float(j.get("sign", 1.0)) for j in joints])
    if not np.all(np.abs(sign) == 1.0):
        raise ValueError("every joint's sign must be 1 or -1")
    return sign, np.array([math.radians(float(j.get("offset_deg", 0.0))) for j in joints])


def _dh_chain(document: dict) -> Chain:
    """Modified (Craig) DH rows as a chain: T_i = Rx(alpha) Tx(a) Rz(q + theta_offset) Tz(d), and Tz(d) turns
    with Rz, so each row is one constant Rx(alpha) Tx(a) Tz(d) and a turn offset by theta_offset."""
    if document.get("dh_convention") != "modified":
        raise ValueError("dh_convention must be 'modified' (the only one the FK implements)")
    builder = ChainBuilder()
    for joint in document["joints"]:
        builder.fixed(rotation_about("x", float(joint["alpha"])) @ translation([float(joint["a"]), 0.0, 0.0]))
        builder.fixed(translation([0.0, 0.0, float(joint["d"])]))
        builder.joint(
            str(joint["name"]),
            REVOLUTE,
            [0.0, 0.0, 1.0],
            offset=float(joint["theta_offset"]),
            limits=[float(v) for v in joint["limits"]],
        )
    chain = builder.build(base=_transform(document["base"]))
    tcp_offset = np.asarray(document.get("tcp_offset", [0.0, 0.0, 0.0]), dtype=np.float64)
    if tcp_offset.shape != (3,):
        raise ValueError("tcp_offset must hold 3 numbers")
    return Chain(
        chain.joint_names,
        chain.joint_types,
        chain.fixed,
        chain.offsets,
        chain.lower,
        chain.upper,
        base=chain.base,
        tool=chain.tool @ _transform(document["tool"]),
        tcp_offset=tcp_offset,
    )


def _end_effector(entry: dict, width: int) -> EndEffectorLayout:
    rotation = str(entry["rotation"])
    if rotation not in ROTATION_WIDTHS:
        raise ValueError(f"end_effector rotation must be one of {list(ROTATION_WIDTHS)}, not {rotation!r}")
    position = [int(i) for i in entry["position"]]
    indices = tuple(int(i) for i in entry["rotation_indices"])
    if len(position) != 3 or len(indices) != ROTATION_WIDTHS[rotation]:
        raise ValueError(f"end_effector needs 3 position and {ROTATION_WIDTHS[rotation]} {rotation} indices")
    if any(not 0 <= i < width for i in (*position, *indices)):
        raise ValueError(f"end_effector indices must lie in 0..{width - 1}")
    return EndEffectorLayout((position[0], position[1], position[2]), rotation, indices)


def _parse(document: dict, path: Path) -> RobotModel:
    dataset_names = tuple(str(n) for n in document["dataset_joint_names"])
    units = document.get("dataset_units", "deg")
    if units not in (*UNITS, POSE_UNITS):
        raise ValueError(f"dataset_units must be one of {', '.join(UNITS)}, not {units!r}")
    arms = []
    if "dh_convention" in document:  # one arm from DH rows (Koch v1.1)
        chain = _dh_chain(document)
        joints = document["joints"]
        names = tuple(str(j["name"]) for j in joints)
        sign, offset = _joint_map([j["dataset"] for j in joints])
        arms.append(Arm("arm", names, sign, offset, chain, _gripper(document.get("gripper"), dataset_names, units)))
        model_file = "DH rows"
    else:
        model_file = str(document.get("model_file", ""))
        for entry in document["arms"]:
            gripper = _gripper(entry.get("gripper"), dataset_names, units)
            if "end_effector" in entry:
                layout = _end_effector(entry["end_effector"], len(dataset_names))
                arms.append(Arm(str(entry["name"]), (), np.zeros(0), np.zeros(0), None, gripper, layout))
                continue
            arm_file = str(entry.get("model_file", model_file))
            chain = read_chain(_model_path(arm_file, path), str(entry["tcp"]), entry.get("tcp_offset", (0.0, 0.0, 0.0)))
            if "base" in entry:  # where this arm's own model stands in the robot's frame
                chain = replace(chain, base=_transform(entry["base"]) @ chain.base)
            joints = entry["joints"]
            names = tuple(str(j["name"]) for j in joints)
            model_joints = [str(j["model_joint"]) for j in joints]
            if model_joints != list(chain.joint_names):
                raise ValueError(
                    f"arm {entry['name']}: joints {model_joints} are not the chain to {entry['tcp']} "
                    f"{list(chain.joint_names)} in {model_file}"
                )
            sign, offset = _joint_map(joints)
            arms.append(Arm(str(entry["name"]), names, sign, offset, chain, gripper))
    for arm in arms:
        missing = [n for n in arm.dataset_joints if n not in dataset_names]
        if missing:
            raise ValueError(f"kinematic joints {missing} are not in dataset_joint_names")
    if len({arm.name for arm in arms}) != len(arms):
        raise ValueError("arm names must differ")
    return RobotModel(
        name=str(document["name"]),
        description=str(document.get("description", "")),
        arms=tuple(arms),
        dataset_joint_names=dataset_names,
        dataset_units=units,
        robot_types=tuple(str(t) for t in document.get("robot_types", ())),
        zero_convention=str(document.get("zero_convention", "")),
        motors=str(document.get("motors", "")),
        model_file=model_file,
        source=path,
        dh=document if "dh_convention" in document else None,
        units_by_robot_type=tuple(_units_by_robot_type(document.get("units_by_robot_type") or {})),
    )


def _units_by_robot_type(entries: dict) -> list[tuple[str, str]]:
    bad = {key: value for key, value in entries.items() if value not in UNITS}
    if bad:
        raise ValueError(f"units_by_robot_type values must be one of {', '.join(UNITS)}: {bad}")
    return [(str(key), str(value)) for key, value in entries.items()]
