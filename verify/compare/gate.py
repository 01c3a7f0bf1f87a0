"""The pass/fail judgement: explicit tolerances, one check per bound, each saying by how much."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from verify_ate.verify.compare.calibration import GATE_MODES, Calibration
from verify_ate.verify.compare.metrics import (
    GATEABLE_STATISTICS,
    ROTATION_METRICS,
    AbsoluteTrajectoryError,
    ActionSpaceFigures,
    NonFinite,
)
from verify_ate.verify.configs import CONFIGS_DIR, read_yaml
from verify_ate.verify.errors import InputError

THRESHOLDS_FILE = CONFIGS_DIR / "thresholds.yaml"


@dataclass(frozen=True)
class GateConfig:
    """The bounds and how they are applied. The fixed gate is position and orientation ATE at the bounds of
    configs/thresholds.yaml (the Ascend port's criterion); the action-space bounds (`min_cosine`,
    `max_joint_error_deg`) are off unless set. With a calibration, a calibrated gate is judged too."""

    position_tolerance_m: float
    orientation_tolerance_rad: float
    statistic: str = "rmse"
    rotation_metric: str = "geodesic"  # which orientation error the gate compares: geodesic or rpy
    min_cosine: float | None = None  # every chunk's cosine similarity with the reference at least this
    max_joint_error_deg: float | None = None  # every joint's largest absolute error at most this
    # The Ascend recipes' own criteria, each off unless set, on the raw actions in the artifacts' units: the
    # smallest per-step cosine (pi0.5's "all similarities > 0.99"), the largest and the mean absolute error (ACT's),
    # numpy's allclose at (atol, rtol) (OpenVLA's).
    min_step_cosine: float | None = None
    max_abs_error: float | None = None
    mean_abs_error: float | None = None
    allclose: tuple[float, float] | None = None  # (atol, rtol)
    gripper_check: bool = True  # each gripper's open/closed state must agree step by step (robots that name one)
    mode: str = "both"  # which bounds decide: the fixed, the calibrated, or both reported (the fixed deciding)
    calibration: Calibration | None = None  # the calibrated gate's floors (None: the fixed bounds only)

    def __post_init__(self):
        if self.statistic not in GATEABLE_STATISTICS:
            raise ValueError(f"statistic {self.statistic!r} is not one of {', '.join(GATEABLE_STATISTICS)}")
        if self.rotation_metric not in ROTATION_METRICS:
            raise ValueError(f"rotation metric {self.rotation_metric!r} is not one of {', '.join(ROTATION_METRICS)}")
        for name in ("position_tolerance_m", "orientation_tolerance_rad"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, not {value}")
        if self.mode not in GATE_MODES:
            raise ValueError(f"gate mode {self.mode!r} is not one of {', '.join(GATE_MODES)}")
        if self.min_cosine is not None and not -1.0 <= self.min_cosine <= 1.0:
            raise ValueError(f"min_cosine must lie in [-1, 1], not {self.min_cosine}")
        if self.max_joint_error_deg is not None and not (
            math.isfinite(self.max_joint_error_deg) and self.max_joint_error_deg >= 0
        ):
            raise ValueError(f"max_joint_error_deg must be a finite number >= 0, not {self.max_joint_error_deg}")
        if self.min_step_cosine is not None and not -1.0 <= self.min_step_cosine <= 1.0:
            raise ValueError(f"min_step_cosine must lie in [-1, 1], not {self.min_step_cosine}")
        for name in ("max_abs_error", "mean_abs_error"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, not {value}")
        if self.allclose is not None and not (
            len(self.allclose) == 2 and all(math.isfinite(v) and v >= 0 for v in self.allclose)
        ):
            raise ValueError(f"allclose must be two finite numbers >= 0 (atol, rtol), not {self.allclose}")

    @property
    def orientation_series(self) -> str:
        """The summary key of the gated orientation series."""
        return "orientation" if self.rotation_metric == "geodesic" else "orientation_rpy"

    @property
    def decides(self) -> str:
        """Whose verdict is the exit code: "calibrated" only when asked for, else the fixed gate's."""
        return "calibrated" if self.mode == "calibrated" else "fixed"

    def calibrated(self) -> GateConfig | None:
        """The same gate with the calibration's bounds (never looser than this gate's own), or None when
        there is no calibrated gate to judge."""
        if self.calibration is None or self.mode == "fixed":
            return None
        position = self.calibration.bound("position", self.statistic)
        orientation = self.calibration.bound(self.orientation_series, self.statistic)
        return replace(
            self,
            position_tolerance_m=min(position, self.position_tolerance_m),
            orientation_tolerance_rad=min(orientation, self.orientation_tolerance_rad),
            calibration=None,
            mode="fixed",
        )

    def deciding(self) -> GateConfig:
        """The gate whose bounds decide the exit code: the calibrated one under `--gate calibrated`."""
        calibrated = self.calibrated()
        return calibrated if calibrated is not None and self.decides == "calibrated" else self

    @classmethod
    def from_file(cls, path: Path = THRESHOLDS_FILE, **overrides: object) -> GateConfig:
        """The file's bounds with `overrides` (values the caller has checked) on top; a bad value in the file is
        an InputError naming it."""
        document = read_yaml(path, "gate thresholds")
        try:
            values = {key: document[key] for key in ("position_tolerance_m", "orientation_tolerance_rad", "statistic")}
        except (KeyError, TypeError) as error:
            raise InputError(f"{path}: gate thresholds lack {error}") from None
        for key in (
            "rotation_metric",
            "min_cosine",
            "max_joint_error_deg",
            "gripper_check",
            *RECIPE_KEYS,
        ):
            if document.get(key) is not None:
                values[key] = document[key]
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(
                position_tolerance_m=float(values["position_tolerance_m"]),
                orientation_tolerance_rad=float(values["orientation_tolerance_rad"]),
                statistic=str(values["statistic"]),
                rotation_metric=str(values.get("rotation_metric", "geodesic")),
                min_cosine=None if values.get("min_cosine") is None else float(values["min_cosine"]),
                max_joint_error_deg=None
                if values.get("max_joint_error_deg") is None
                else float(values["max_joint_error_deg"]),
                gripper_check=_flag(values.get("gripper_check", True), "gripper_check"),
                min_step_cosine=_optional(values, "min_step_cosine"),
                max_abs_error=_optional(values, "max_abs_error"),
                mean_abs_error=_optional(values, "mean_abs_error"),
                allclose=None
                if values.get("allclose") is None
                else (float(values["allclose"][0]), float(values["allclose"][1])),
            )
        except (TypeError, ValueError) as error:
            raise InputError(f"{path}: {error}") from None


RECIPE_KEYS = ("min_step_cosine", "max_abs_error", "mean_abs_error", "allclose")


def _optional(values: dict, key: str) -> float | None:
    return None if values.get(key) is None else float(values[key])


def _flag(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, not {value!r}")
    return value


# What a check bounds. A calibration sets the bounds of the position and orientation kinds only.
POSITION, ORIENTATION, FINITE, COSINE, JOINT_ERROR = "position", "orientation", "finite", "cosine", "joint error"
ABS_ERROR, ALLCLOSE = "abs error", "allclose"
CALIBRATED_KINDS = (POSITION, ORIENTATION)


@dataclass(frozen=True)
class GateCheck:
    name: str  # as reported: "position", "orientation", "finite", "per-frame position"...
    passed: bool
    value: float | None
    threshold: float | None
    unit: str
    statistic: str | None
    message: str
    kind: str = ""  # POSITION, ORIENTATION, FINITE, COSINE or JOINT_ERROR
    per_frame: bool = False  # every chunk's own statistic (a sweep's --frame-stat), not the pooled one

    @property
    def calibrated(self) -> bool:
        """Whether a calibration sets this check's bound."""
        return self.kind in CALIBRATED_KINDS


@dataclass(frozen=True)
class GateResult:
    checks: tuple[GateCheck, ...]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def check(self, name: str) -> GateCheck:
        return next(c for c in self.checks if c.name == name)


def _bound_check(ate: AbsoluteTrajectoryError, threshold: float, statistic: str) -> GateCheck:
    value = ate.statistics.get(statistic)
    # NaN compares False, so a non-finite series can never pass a bound.
    passed = bool(value <= threshold)
    verdict = "within" if passed else "OVER"
    message = f"{ate.name} {statistic} {value:.6g} {ate.unit} {verdict} bound {threshold:g} {ate.unit}"
    if not passed and math.isfinite(value):
        message += f" by {value - threshold:.6g} {ate.unit} ({value / threshold:.3g}x)" if threshold > 0 else ""
    kind = POSITION if ate.name == POSITION else ORIENTATION
    return GateCheck(ate.name, passed, value, threshold, ate.unit, statistic, message, kind=kind)


def judge(
    position: AbsoluteTrajectoryError,
    orientation: AbsoluteTrajectoryError,
    reference: NonFinite,
    under_test: NonFinite,
    joint_names: Sequence[str],
    config: GateConfig,
    action_space: ActionSpaceFigures | None = None,
    joint_errors_deg: dict[str, float] | None = None,
    extra: Sequence[GateCheck] = (),
) -> GateResult:
    """The bound checks (`orientation`: the series `config.rotation_metric` names), the finiteness check
    that names the side at fault and its first bad value, the action-space checks when configured, and the
    checks judged elsewhere (`extra`: the grippers')."""
    checks = [
        _bound_check(position, config.position_tolerance_m, config.statistic),
        _bound_check(orientation, config.orientation_tolerance_rad, config.statistic),
        _finite_check(reference, under_test, joint_names),
    ]
    if config.min_cosine is not None and action_space is not None:
        value = action_space.cosine
        passed = bool(value >= config.min_cosine)
        verdict = "at least" if passed else "BELOW"
        message = f"action cosine similarity {value:.6g} {verdict} the minimum {config.min_cosine:g}"
        checks.append(GateCheck("cosine", passed, value, config.min_cosine, "", None, message, kind=COSINE))
    if config.max_joint_error_deg is not None and joint_errors_deg is not None:
        name, value = max(joint_errors_deg.items(), key=lambda item: -math.inf if math.isnan(item[1]) else item[1])
        if any(math.isnan(v) for v in joint_errors_deg.values()):
            name, value = next((n, v) for n, v in joint_errors_deg.items() if math.isnan(v))
        passed = bool(value <= config.max_joint_error_deg)
        verdict = "within" if passed else "OVER"
        message = f"largest joint error {value:.6g} deg ({name}) {verdict} bound {config.max_joint_error_deg:g} deg"
        checks.append(
            GateCheck("joint error", passed, value, config.max_joint_error_deg, "deg", "max", message, kind=JOINT_ERROR)
        )
    return GateResult((*checks, *extra))


def recipe_checks(config: GateConfig, figures: ActionSpaceFigures, allclose_violations: int | None) -> list[GateCheck]:
    """The recipes' criteria that `config` sets, on the raw actions (the artifacts' units `figures` were taken in);
    `allclose_violations`: the values failing allclose at `config.allclose` (None when it is not set)."""
    checks = []
    if config.min_step_cosine is not None:
        cosine, minimum = figures.min_step_cosine, config.min_step_cosine
        verdict = "at least" if cosine >= minimum else "BELOW"
        message = f"smallest per-step action cosine similarity {cosine:.6g} {verdict} the minimum {minimum:g}"
        checks.append(
            GateCheck("step cosine", bool(cosine >= minimum), cosine, minimum, "", "min", message, kind=COSINE)
        )
    for name, value, bound, statistic in (
        ("max abs error", figures.max_abs_error, config.max_abs_error, "max"),
        ("mean abs error", figures.mean_abs_error, config.mean_abs_error, "mean"),
    ):
        if bound is not None:
            verdict = "within" if value <= bound else "OVER"
            message = f"{name} of the actions {value:.6g} {verdict} bound {bound:g} (the artifacts' units)"
            checks.append(GateCheck(name, bool(value <= bound), value, bound, "", statistic, message, kind=ABS_ERROR))
    if config.allclose is not None and allclose_violations is not None:
        atol, rtol = config.allclose
        verdict = "all close" if allclose_violations == 0 else f"{allclose_violations} values NOT close"
        message = f"allclose(atol={atol:g}, rtol={rtol:g}) of the actions: {verdict}"
        checks.append(
            GateCheck(
                "allclose",
                allclose_violations == 0,
                float(allclose_violations),
                0.0,
                "values",
                None,
                message,
                kind=ALLCLOSE,
            )
        )
    return checks


def _finite_check(reference: NonFinite, under_test: NonFinite, joint_names: Sequence[str]) -> GateCheck:
    parts = []
    if under_test.count:
        parts.append(f"under test: {under_test.describe(joint_names)}")
    if reference.count:
        parts.append(
            f"the REFERENCE itself: {reference.describe(joint_names)} (the reference run is broken, not only the "
            "device under test)"
        )
    count = reference.count + under_test.count
    message = "; ".join(parts) if parts else "all actions finite"
    return GateCheck("finite", count == 0, float(count), 0.0, "values", None, message, kind=FINITE)
