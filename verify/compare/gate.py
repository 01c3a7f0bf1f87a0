"""The pass/fail judgement: explicit tolerances, one check per bound, each saying by how much."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from verify.compare.metrics import GATEABLE_STATISTICS, AbsoluteTrajectoryError, NonFinite
from verify.configs import CONFIGS_DIR, read_yaml
from verify.errors import InputError

THRESHOLDS_FILE = CONFIGS_DIR / "thresholds.yaml"


@dataclass(frozen=True)
class GateConfig:
    position_tolerance_m: float
    orientation_tolerance_rad: float
    statistic: str = "rmse"

    def __post_init__(self):
        if self.statistic not in GATEABLE_STATISTICS:
            raise ValueError(f"--stat must be one of {', '.join(GATEABLE_STATISTICS)}, not {self.statistic!r}")
        for name in ("position_tolerance_m", "orientation_tolerance_rad"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, not {value}")

    @classmethod
    def from_file(cls, path: Path = THRESHOLDS_FILE, **overrides: float | str | None) -> GateConfig:
        document = read_yaml(path, "gate thresholds")
        try:
            values = {key: document[key] for key in ("position_tolerance_m", "orientation_tolerance_rad", "statistic")}
        except (KeyError, TypeError) as error:
            raise InputError(f"{path}: gate thresholds lack {error}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(
            float(values["position_tolerance_m"]), float(values["orientation_tolerance_rad"]), str(values["statistic"])
        )


@dataclass(frozen=True)
class GateCheck:
    name: str  # "position", "orientation" or "finite"
    passed: bool
    value: float | None
    threshold: float | None
    unit: str
    statistic: str | None
    message: str


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
    return GateCheck(ate.name, passed, value, threshold, ate.unit, statistic, message)


def judge(
    position: AbsoluteTrajectoryError,
    orientation: AbsoluteTrajectoryError,
    reference: NonFinite,
    under_test: NonFinite,
    joint_names: Sequence[str],
    config: GateConfig,
) -> GateResult:
    """The bound checks, and the finiteness check that names the side at fault and its first bad value."""
    return GateResult(
        (
            _bound_check(position, config.position_tolerance_m, config.statistic),
            _bound_check(orientation, config.orientation_tolerance_rad, config.statistic),
            _finite_check(reference, under_test, joint_names),
        )
    )


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
    return GateCheck("finite", count == 0, float(count), 0.0, "values", None, message)
