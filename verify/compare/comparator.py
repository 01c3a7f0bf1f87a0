"""The comparator: two trajectory artifacts in, ATE and a gate verdict out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kinematics import Poses, RobotModel, dataset_forward_kinematics
from verify.compare.artifact import TrajectoryArtifact
from verify.compare.gate import GateConfig, GateResult, judge
from verify.compare.metrics import AbsoluteTrajectoryError, ActionSpaceFigures, NonFinite, joint_max_abs_errors
from verify.errors import InputError

# Steps where the two orientation errors differ by more than this share of the larger are noted (near
# +-pi and near gimbal lock the RPY 2-norm is not the rotation angle).
DISAGREEMENT = 0.10
DISAGREEMENT_FLOOR_RAD = 1e-6  # below this both are rounding noise
DISAGREEMENT_EXAMPLES = 5


@dataclass(frozen=True)
class ComparisonResult:
    reference: TrajectoryArtifact
    under_test: TrajectoryArtifact
    robot: RobotModel
    reference_poses: Poses
    under_test_poses: Poses
    position: AbsoluteTrajectoryError
    orientation: AbsoluteTrajectoryError  # geodesic angle
    orientation_rpy: AbsoluteTrajectoryError  # 2-norm of the wrapped roll-pitch-yaw difference
    action_space: ActionSpaceFigures
    joint_errors: dict[str, float]  # per joint, the dataset's own names, the reference's units
    gate: GateResult
    config: GateConfig
    forced: bool

    @property
    def passed(self) -> bool:
        return self.gate.passed

    @property
    def n_steps(self) -> int:
        return int(self.position.errors.size)

    @property
    def gated_orientation(self) -> AbsoluteTrajectoryError:
        """The orientation series the gate compares (`--rot-metric`)."""
        return self.orientation_rpy if self.config.rotation_metric == "rpy" else self.orientation

    def summary(self) -> dict:
        """The JSON summary of the file contract (README.md "Files"): metres and radians, joints in the
        artifacts' units. `orientation` is always the geodesic angle; `orientation_rpy` stands beside it,
        and `rot_metric` says which of the two the gate compares."""

        def series(ate: AbsoluteTrajectoryError, threshold: float) -> dict:
            gated = ate.name in {check.name for check in self.gate.checks}
            value = ate.statistics.get(self.config.statistic)
            return {
                **ate.statistics.as_dict(),
                "threshold": threshold,
                "stat": self.config.statistic,
                "pass": self.gate.check(ate.name).passed if gated else bool(value <= threshold),
                "unit": ate.unit,
                "gated": gated,
            }

        return {
            "pass": self.passed,
            "position": series(self.position, self.config.position_tolerance_m),
            "orientation": series(self.orientation, self.config.orientation_tolerance_rad),
            "orientation_rpy": series(self.orientation_rpy, self.config.orientation_tolerance_rad),
            "rot_metric": self.config.rotation_metric,
            "orientation_disagreement": self.orientation_disagreement(),
            "action_space": {**self.action_space.as_dict(), "units": self.reference.meta["units"]},
            "joints": self.joint_errors,
            "joint_units": self.reference.meta["units"],
            "finite": self.gate.check("finite").passed,
            "n_steps": self.n_steps,
            "shape": list(self.reference.actions.shape),
            "robot": self.robot.name,
            "forced": self.forced,
            "checks": [
                {
                    "name": c.name,
                    "pass": c.passed,
                    "value": c.value,
                    "threshold": c.threshold,
                    "unit": c.unit,
                    "stat": c.statistic,
                    "message": c.message,
                }
                for c in self.gate.checks
            ],
            "ref": self.reference.meta,
            "dut": self.under_test.meta,
        }

    def orientation_disagreement(self) -> dict:
        """Steps where the geodesic angle and the RPY 2-norm differ by more than DISAGREEMENT of the larger."""
        geodesic = np.asarray(self.orientation.errors, dtype=np.float64).reshape(-1, self.reference.actions.shape[1])
        rpy = np.asarray(self.orientation_rpy.errors, dtype=np.float64).reshape(geodesic.shape)
        larger = np.maximum(geodesic, rpy)
        with np.errstate(invalid="ignore"):
            apart = (np.abs(geodesic - rpy) > DISAGREEMENT * larger) & (larger > DISAGREEMENT_FLOOR_RAD)
        steps = np.argwhere(apart)
        return {
            "count": int(len(steps)),
            "relative": DISAGREEMENT,
            "first": [
                {"chunk": int(c), "step": int(s), "geodesic": float(geodesic[c, s]), "rpy": float(rpy[c, s])}
                for c, s in steps[:DISAGREEMENT_EXAMPLES]
            ],
        }


def check_comparable(
    reference: TrajectoryArtifact, under_test: TrajectoryArtifact, robot: RobotModel, force: bool
) -> None:
    """Refuse (InputError) pairs whose comparison would mean nothing."""
    for artifact in (reference, under_test):
        names = artifact.meta.get("joint_names") or list(robot.dataset_joint_names)
        if robot.dataset_name_prefix(names) is None:
            raise InputError(
                f"{artifact.label}: joints {list(names)} are not robot {robot.name}'s "
                f"{list(robot.dataset_joint_names)} (an arm prefix such as main_ is fine; pass --robot for another arm)"
            )
        if artifact.actions.shape[-1] != len(robot.dataset_joint_names):
            raise InputError(
                f"{artifact.label}: actions have {artifact.actions.shape[-1]} joints, robot {robot.name} has "
                f"{len(robot.dataset_joint_names)}"
            )
        declared = artifact.meta.get("robot")
        if declared and declared != robot.name:
            raise InputError(
                f"{artifact.label}: made for robot {declared!r}, compared as {robot.name!r} (pass --robot {declared})"
            )
    if reference.actions.shape != under_test.actions.shape:
        ref_n, ref_t = reference.actions.shape[:2]
        dut_n, dut_t = under_test.actions.shape[:2]
        what = "chunk count N" if ref_n != dut_n else "horizon T"
        raise InputError(
            f"{under_test.label}: {what} differs from {reference.label}: shape "
            f"{list(under_test.actions.shape)} vs {list(reference.actions.shape)}"
        )
    if force:
        return
    for key, what in (("noise_sha256", "noise"), ("observation_sha256", "observation")):
        ref_hash, dut_hash = reference.meta.get(key), under_test.meta.get(key)
        if ref_hash and dut_hash and ref_hash != dut_hash:
            raise InputError(
                f"{under_test.label}: {what} sha256 {dut_hash[:12]}... differs from {reference.label}'s "
                f"{ref_hash[:12]}...: "
                "the two runs did not see the same input (use --force to compare anyway)"
            )


def compare(
    reference: TrajectoryArtifact,
    under_test: TrajectoryArtifact,
    robot: RobotModel,
    config: GateConfig,
    force: bool = False,
) -> ComparisonResult:
    check_comparable(reference, under_test, robot, force)
    reference_poses = dataset_forward_kinematics(robot, reference.actions, reference.meta["units"])
    under_test_poses = dataset_forward_kinematics(robot, under_test.actions, under_test.meta["units"])
    position = AbsoluteTrajectoryError.position(reference_poses, under_test_poses)
    orientation = AbsoluteTrajectoryError.orientation(reference_poses, under_test_poses)
    orientation_rpy = AbsoluteTrajectoryError.orientation_rpy(reference_poses, under_test_poses)
    ref_units = _to_units(reference.actions, reference.meta["units"], reference.meta["units"])
    dut_units = _to_units(under_test.actions, under_test.meta["units"], reference.meta["units"])
    names = reference.meta.get("joint_names") or list(robot.dataset_joint_names)
    joint_errors = joint_max_abs_errors(ref_units, dut_units, names)
    joint_errors_deg = joint_max_abs_errors(
        _to_units(ref_units, reference.meta["units"], "deg"),
        _to_units(dut_units, reference.meta["units"], "deg"),
        names,
    )
    action_space = ActionSpaceFigures.of(ref_units, dut_units)
    nonfinite = (NonFinite.of(reference.actions), NonFinite.of(under_test.actions))
    gated = orientation_rpy if config.rotation_metric == "rpy" else orientation
    gate = judge(position, gated, *nonfinite, names, config, action_space, joint_errors_deg)
    return ComparisonResult(
        reference,
        under_test,
        robot,
        reference_poses,
        under_test_poses,
        position,
        orientation,
        orientation_rpy,
        action_space,
        joint_errors,
        gate,
        config,
        force,
    )


def _to_units(actions: np.ndarray, units: str, target: str) -> np.ndarray:
    actions = np.asarray(actions, dtype=np.float64)
    if units == target:
        return actions
    return np.degrees(actions) if target == "deg" else np.radians(actions)
