"""The comparator: two trajectory artifacts in, ATE and a gate verdict out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from verify_ate.kinematics import Poses, RobotModel, arm_poses
from verify_ate.verify.compare.artifact import INPUT_HASHES, TrajectoryArtifact
from verify_ate.verify.compare.gate import GateCheck, GateConfig, GateResult, judge, recipe_checks
from verify_ate.verify.compare.gripper import GripperAgreement, GripperSpec, gripper_check
from verify_ate.verify.compare.metrics import (
    SERIES_UNITS,
    AbsoluteTrajectoryError,
    ActionSpaceFigures,
    ErrorStatistics,
    NonFinite,
    allclose_violations,
    joint_max_abs_errors,
)
from verify_ate.verify.errors import InputError

# Steps where the two orientation errors differ by more than this share of the larger are noted (near
# +-pi and near gimbal lock the RPY 2-norm is not the rotation angle).
DISAGREEMENT = 0.10
DISAGREEMENT_FLOOR_RAD = 1e-6  # below this both are rounding noise
DISAGREEMENT_EXAMPLES = 5


@dataclass(frozen=True)
class ArmComparison:
    """One arm's tool centre point on both sides, and its error series."""

    name: str
    reference_poses: Poses
    under_test_poses: Poses
    position: AbsoluteTrajectoryError
    orientation: AbsoluteTrajectoryError
    orientation_rpy: AbsoluteTrajectoryError

    @classmethod
    def of(cls, name: str, reference: Poses, under_test: Poses) -> ArmComparison:
        return cls(
            name,
            reference,
            under_test,
            AbsoluteTrajectoryError.position(reference, under_test),
            AbsoluteTrajectoryError.orientation(reference, under_test),
            AbsoluteTrajectoryError.orientation_rpy(reference, under_test),
        )

    def series(self, key: str) -> AbsoluteTrajectoryError:
        return {"position": self.position, "orientation": self.orientation, "orientation_rpy": self.orientation_rpy}[
            key
        ]


def worst_arm(arms: Sequence[ArmComparison], key: str, statistic: str) -> ArmComparison:
    """The arm whose `key` series has the largest `statistic` (a non-finite one first): the gate judges it."""

    def badness(arm: ArmComparison) -> float:
        value = arm.series(key).statistics.get(statistic)
        return math.inf if not np.isfinite(value) else value

    return max(arms, key=badness)


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
    accepted_differences: tuple[dict, ...] = ()  # inputs that differ, compared anyway because the user said so
    calibrated_gate: GateResult | None = None  # the same checks at the calibration's bounds
    arms: tuple[ArmComparison, ...] = ()  # every arm; the series above are the worst arm's (one arm: its own)
    grippers: tuple[GripperAgreement, ...] = ()
    robot_calibration: dict | None = None  # lerobot's motor calibration, for joints in the normalised range

    @property
    def forced(self) -> bool:
        """The two sides did not see the same inputs (checkpoint, noise or observation), as the user allowed."""
        return bool(self.accepted_differences)

    @property
    def passed(self) -> bool:
        """The deciding gate's verdict (the fixed gate's unless the calibrated one was asked to decide)."""
        if self.config.decides == "calibrated":
            assert self.calibrated_gate is not None
            return self.calibrated_gate.passed
        return self.gate.passed

    def recorded_distance(self, recorded_actions: np.ndarray, valid_steps: int) -> dict:
        """How far each side's tool centre point is from the recorded one, over the recorded steps.

        recorded_actions: [T, J] in the reference's units (what the dataset recorded from the frame on);
        valid_steps: the first steps that lie inside the episode. Every chunk is measured against it."""
        recorded = self.recorded_arm_positions(recorded_actions, valid_steps)
        figures: dict = {"valid_steps": int(valid_steps), "unit": "m"}
        for name in ("reference", "under_test"):
            distances = [
                np.linalg.norm(
                    np.asarray(getattr(arm, f"{name}_poses").position)[..., :valid_steps, :] - recorded[arm.name],
                    axis=-1,
                )
                for arm in self.arms
            ]
            distance = np.concatenate([d.ravel() for d in distances])
            figures[name] = {"mean": float(np.mean(distance)), "max": float(np.max(distance))}
        return figures

    def recorded_arm_positions(self, recorded_actions: np.ndarray, valid_steps: int) -> dict[str, np.ndarray]:
        """Arm -> [valid_steps, 3] m: the tool centre point of recorded actions [T, J] (the reference's units)."""
        poses = arm_poses(
            self.robot, recorded_actions, self.reference.meta["units"], calibration=self.robot_calibration
        )
        return {name: np.asarray(p.position, dtype=np.float64)[:valid_steps] for name, p in poses.items()}

    def recorded_positions(self, recorded_actions: np.ndarray, valid_steps: int) -> np.ndarray:
        """[valid_steps, 3] m: the recorded tool centre point of the arm the gate judges."""
        return self.recorded_arm_positions(recorded_actions, valid_steps)[self.gated_arm]

    @property
    def gated_arm(self) -> str:
        """The arm whose position series the gate judged."""
        return next((arm.name for arm in self.arms if arm.position is self.position), self.arms[0].name)

    def arm_summary(self) -> dict:
        """Per arm and for all arms pooled: each series' statistics; which arm the gate judged."""
        pooled = {
            key: ErrorStatistics.of(np.concatenate([arm.series(key).errors.ravel() for arm in self.arms])).as_dict()
            for key in SERIES_UNITS
        }
        return {
            "names": [arm.name for arm in self.arms],
            "judged": {key: worst_arm(self.arms, key, self.config.statistic).name for key in SERIES_UNITS},
            "per_arm": {
                arm.name: {key: arm.series(key).statistics.as_dict() for key in SERIES_UNITS} for arm in self.arms
            },
            "all": pooled,
        }

    def gate_summary(self) -> dict:
        """Both sets of bounds, which one decides, and each verdict."""
        fixed = {
            "pass": self.gate.passed,
            "position_m": self.config.position_tolerance_m,
            "orientation_rad": self.config.orientation_tolerance_rad,
        }
        calibrated = None
        calibrated_config = self.config.calibrated()
        if self.calibrated_gate is not None and calibrated_config is not None:
            calibration = self.config.calibration
            assert calibration is not None
            calibrated = {
                "pass": self.calibrated_gate.passed,
                "position_m": calibrated_config.position_tolerance_m,
                "orientation_rad": calibrated_config.orientation_tolerance_rad,
                "checks": [_check_dict(c) for c in self.calibrated_gate.checks],
                "explained": [
                    calibration.describe("position", self.config.statistic),
                    calibration.describe(self.config.orientation_series, self.config.statistic),
                ],
                "calibration": {**calibration.as_dict(), "file": calibration.source or None},
                "differences": calibration.differences(self.reference.meta),
            }
        return {
            "mode": self.config.mode,
            "deciding_gate": self.config.decides,
            "fixed": fixed,
            "calibrated": calibrated,
            # the names of one release ago (CHANGELOG): the fixed gate was "seed"
            "decides": "seed" if self.config.decides == "fixed" else self.config.decides,
            "seed": fixed,
        }

    @property
    def n_steps(self) -> int:
        return int(self.position.errors.size)

    @property
    def gated_orientation(self) -> AbsoluteTrajectoryError:
        """The orientation series the gate compares (`--rot-metric`)."""
        return self.orientation_rpy if self.config.rotation_metric == "rpy" else self.orientation

    def summary(self) -> dict:
        """The JSON summary of the file contract (docs/files.md): metres and radians, joints in the
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
            "robot_model": self.robot.describe(),
            "arms": self.arm_summary(),
            "gripper": [agreement.as_dict() for agreement in self.grippers],
            "forced": self.forced,
            "forced_differences": list(self.accepted_differences),
            "notices": self.notices(),
            "checks": [_check_dict(c) for c in self.gate.checks],
            "gate": self.gate_summary(),
            "ref": self.reference.meta,
            "dut": self.under_test.meta,
        }

    def notices(self) -> list[dict]:
        """What a reader of any output must know beside the checks, each {kind, text}: a comparison of runs that
        did not see the same inputs ("forced"); a verdict of the fixed bounds on an uncalibrated model
        ("uncalibrated"); the two orientation errors disagreeing where it matters ("orientation")."""
        notices = []
        if self.forced:
            differ = "; ".join(
                f"{d['input']} sha256 {d['under_test'][:12]}... (reference {d['reference'][:12]}...)"
                for d in self.accepted_differences
            )
            notices.append(
                {
                    "kind": "forced",
                    "text": f"FORCED: compared although the two runs did not see the same inputs: {differ}",
                }
            )
        if self.config.decides == "fixed" and self.config.calibration is None:
            statistic = self.config.statistic
            shares = [
                _share(ate.statistics.get(statistic), bound)
                for ate, bound in (
                    (self.position, self.config.position_tolerance_m),
                    (self.gated_orientation, self.config.orientation_tolerance_rad),
                )
            ]
            notices.append(
                {
                    "kind": "uncalibrated",
                    "text": f"the fixed bounds ({self.config.position_tolerance_m:g} m, "
                    f"{self.config.orientation_tolerance_rad:g} rad) decided, not calibrated for this model: position "
                    f"{statistic} at {shares[0]} and orientation at {shares[1]} of them; they may be far too loose "
                    "for this model to catch a broken port",
                }
            )
        if self.config.gripper_check:
            for text in gripper_notes(self.robot, self.reference.meta["units"]):
                notices.append({"kind": "gripper", "text": text})
        apart = self.orientation_disagreement()
        verdicts_differ = self.summary_pass(self.orientation) != self.summary_pass(self.orientation_rpy)
        if apart["count"] and (self.config.rotation_metric == "rpy" or verdicts_differ):
            first = apart["first"][0]
            notices.append(
                {
                    "kind": "orientation",
                    "text": f"the geodesic angle and the roll-pitch-yaw 2-norm differ by more than "
                    f"{apart['relative']:.0%} at {apart['count']} step(s), first at chunk {first['chunk']} step "
                    f"{first['step']} ({first['geodesic']:.3g} vs {first['rpy']:.3g} rad): near +-pi or gimbal "
                    f"lock the RPY difference is not the rotation angle; the gate uses {self.config.rotation_metric}",
                }
            )
        return notices

    def summary_pass(self, ate: AbsoluteTrajectoryError) -> bool:
        """Whether an orientation series is within the orientation bound under the gate's statistic."""
        return bool(ate.statistics.get(self.config.statistic) <= self.config.orientation_tolerance_rad)

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


def _share(value: float, bound: float) -> str:
    """`value` as a percentage of `bound` ('1.3 %'), or 'n/a'."""
    if not np.isfinite(value) or bound <= 0:
        return "n/a"
    return f"{100 * value / bound:.2g} %"


def _check_dict(check: GateCheck) -> dict:
    return {
        "name": check.name,
        "kind": check.kind,
        "per_frame": check.per_frame,
        "pass": check.passed,
        "value": check.value,
        "threshold": check.threshold,
        "unit": check.unit,
        "stat": check.statistic,
        "message": check.message,
    }


def check_comparable(
    reference: TrajectoryArtifact,
    under_test: TrajectoryArtifact,
    robot: RobotModel,
    accept: frozenset[str] = frozenset(),
) -> tuple[dict, ...]:
    """Refuse (InputError) pairs whose comparison would mean nothing: other joints or shapes, or inputs that
    differ (checkpoint, noise, observation) unless their name is in `accept`. Returns the accepted
    differences, each {input, reference, under_test} (the two hashes), for every output to state."""
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
    differences = input_differences(reference.meta, under_test.meta)
    refused = [difference for difference in differences if difference["input"] not in accept]
    if refused:
        what = " and ".join(difference["input"] for difference in refused)
        first = refused[0]
        raise InputError(
            f"{under_test.label}: {what} differ{'s' if len(refused) == 1 else ''} from {reference.label}'s "
            f"({first['input']} sha256 {first['under_test'][:12]}... vs {first['reference'][:12]}...): the two runs "
            "did not see the same input; compare them anyway with --force (or, for a device-under-test checkpoint "
            "converted from the reference's, --converted-checkpoint)"
        )
    return tuple(differences)


def input_differences(reference_meta: dict, under_test_meta: dict) -> list[dict]:
    """The inputs (INPUT_HASHES) whose hashes both metas give and that differ: {input, reference, under_test}."""
    differences = []
    for key, what in INPUT_HASHES.items():
        ref_hash, dut_hash = reference_meta.get(key), under_test_meta.get(key)
        if ref_hash and dut_hash and ref_hash != dut_hash:
            differences.append({"input": what, "reference": ref_hash, "under_test": dut_hash})
    return differences


def compare(
    reference: TrajectoryArtifact,
    under_test: TrajectoryArtifact,
    robot: RobotModel,
    config: GateConfig,
    accept: frozenset[str] = frozenset(),
) -> ComparisonResult:
    """ATE and the gate's verdict of two artifacts; `accept`: inputs allowed to differ (see check_comparable).
    A robot with two arms is judged on its worse arm, series by series."""
    accepted = check_comparable(reference, under_test, robot, accept)
    calibration = (
        reference.meta.get("robot_calibration") or under_test.meta.get("robot_calibration") or robot.calibration
    )
    reference_arms = arm_poses(robot, reference.actions, reference.meta["units"], calibration=calibration)
    under_test_arms = arm_poses(robot, under_test.actions, under_test.meta["units"], calibration=calibration)
    arms = tuple(ArmComparison.of(name, reference_arms[name], under_test_arms[name]) for name in reference_arms)
    judged = {key: worst_arm(arms, key, config.statistic) for key in SERIES_UNITS}
    position, orientation, orientation_rpy = (judged[key].series(key) for key in SERIES_UNITS)
    units = reference.meta["units"]
    ref_units = _to_units(reference.actions, units, units)
    dut_units = _to_units(under_test.actions, under_test.meta["units"], units)
    names = reference.meta.get("joint_names") or list(robot.dataset_joint_names)
    joint_errors = joint_max_abs_errors(ref_units, dut_units, names)
    joint_errors_deg = joint_max_abs_errors(
        robot.dataset_to_degrees(ref_units, units, calibration),
        robot.dataset_to_degrees(dut_units, units, calibration),
        names,
    )
    action_space = ActionSpaceFigures.of(ref_units, dut_units)
    nonfinite = (NonFinite.of(reference.actions), NonFinite.of(under_test.actions))
    grippers = gripper_agreements(robot, ref_units, dut_units, units) if config.gripper_check else ()
    violations = None if config.allclose is None else allclose_violations(ref_units, dut_units, *config.allclose)
    extra = (*((gripper_check(grippers),) if grippers else ()), *recipe_checks(config, action_space, violations))
    gated = orientation_rpy if config.rotation_metric == "rpy" else orientation
    gate = judge(position, gated, *nonfinite, names, config, action_space, joint_errors_deg, extra)
    calibrated_config = config.calibrated()
    calibrated_gate = None
    if calibrated_config is not None:
        calibrated_gate = judge(
            position, gated, *nonfinite, names, calibrated_config, action_space, joint_errors_deg, extra
        )
    return ComparisonResult(
        reference,
        under_test,
        robot,
        judged["position"].reference_poses,
        judged["position"].under_test_poses,
        position,
        orientation,
        orientation_rpy,
        action_space,
        joint_errors,
        gate,
        config,
        accepted,
        calibrated_gate,
        arms,
        grippers,
        calibration,
    )


def gripper_agreements(
    robot: RobotModel, reference: np.ndarray, under_test: np.ndarray, units: str
) -> tuple[GripperAgreement, ...]:
    """Each gripper's open/closed state step by step on both sides (actions [N, T, J] in `units`); a gripper whose
    threshold is not known in those units is left out (`gripper_notes` says so)."""
    agreements = []
    for gripper in robot.grippers:
        spec = gripper.in_units(units)
        if spec is None:
            continue
        index = robot.dataset_joint_names.index(gripper.joint)
        ref, dut = reference[..., index], under_test[..., index]
        agreements.append(
            GripperAgreement.of(
                ref.reshape(-1, ref.shape[-1]),
                dut.reshape(-1, dut.shape[-1]),
                GripperSpec(spec.joint, spec.threshold, spec.margin, spec.open_above),
            )
        )
    return tuple(agreements)


def gripper_notes(robot: RobotModel, units: str) -> list[str]:
    """The grippers whose state could not be compared, and why."""
    return [
        f"gripper {gripper.joint} not compared: robot {robot.name} gives its open/closed threshold in "
        f"{gripper.units}, the actions are in {units}"
        for gripper in robot.grippers
        if gripper.in_units(units) is None
    ]


def _to_units(actions: np.ndarray, units: str, target: str) -> np.ndarray:
    actions = np.asarray(actions, dtype=np.float64)
    if units == target or "normalized" in (units, target):
        return actions
    return np.degrees(actions) if target == "deg" else np.radians(actions)
