"""A calibrated gate: bounds derived from the reference's own benign noise floor on the same inputs.

The fixed bounds (0.03 m, 0.2 rad: the Ascend port's criterion, configs/thresholds.yaml) do not know the
model; on a small model they sit orders of magnitude above what a benign change moves the robot, so a
broken port can pass them. A calibration measures what
benign changes do to the reference itself (another precision, another thread count, the frame in
another batch; `verify/run/calibrate.py`), and bounds the device under test at `multiple` times
the largest of those floors, never looser than the fixed bounds and never tighter than a minimum
below which differences are float32 rounding at the robot's scale (configs/calibration.yaml).

A calibration is a small JSON file (`calibration.json`) that later runs and `compare` take with
`--calibration FILE`. The floors of every gateable statistic are kept, so one file serves any `--stat`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from verify_ate.kinematics import RobotModel, dataset_forward_kinematics
from verify_ate.reports.atomic import write_text
from verify_ate.verify.compare.artifact import INPUT_HASHES
from verify_ate.verify.compare.metrics import GATEABLE_STATISTICS, SERIES_UNITS, AbsoluteTrajectoryError, statistic
from verify_ate.verify.configs import CONFIGS_DIR, read_yaml
from verify_ate.verify.errors import InputError

CALIBRATION_FILE = CONFIGS_DIR / "calibration.yaml"
FORMAT = "verify-ate-calibration/1"
GATE_MODES = ("fixed", "calibrated", "both")
OLD_GATE_MODES = {"seed": "fixed"}  # names of one release ago (CHANGELOG), still accepted
SERIES = tuple(SERIES_UNITS)  # position, orientation, orientation_rpy


@dataclass(frozen=True)
class CalibrationPolicy:
    """How floors become bounds (configs/calibration.yaml)."""

    multiple: float
    minimum: dict[str, float]  # series -> the smallest bound used

    @classmethod
    def from_file(cls, path: Path = CALIBRATION_FILE) -> CalibrationPolicy:
        document = read_yaml(path, "calibration settings")
        try:
            multiple = float(document["multiple"])
            minimum = {
                "position": float(document["minimum_position_m"]),
                "orientation": float(document["minimum_orientation_rad"]),
            }
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"{path}: invalid calibration settings ({error})") from None
        minimum["orientation_rpy"] = minimum["orientation"]
        if not (math.isfinite(multiple) and multiple >= 1) or not all(v > 0 for v in minimum.values()):
            raise InputError(f"{path}: multiple must be >= 1 and the minimum bounds > 0")
        return cls(multiple, minimum)


@dataclass(frozen=True)
class Calibration:
    """Benign floors of one reference on one set of inputs, and the bounds they give.

    floors: source ("bfloat16", "threads", "batch", "tf32") -> series -> statistic -> value;
    ceiling: the fixed bounds per series, which a calibrated bound never exceeds;
    provenance: the reference's device, dtype and input hashes the floors were measured on.
    """

    floors: dict[str, dict[str, dict[str, float]]]
    multiple: float
    minimum: dict[str, float]
    ceiling: dict[str, float]
    provenance: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # the file it was read from, if any

    def floor(self, series: str, statistic: str) -> tuple[float, str]:
        """The largest benign value of `series` under `statistic`, and the source that gave it."""
        values = [(float(by_series[series][statistic]), name) for name, by_series in self.floors.items()]
        if not values:
            return 0.0, "none"
        value, name = max(values, key=lambda item: -math.inf if math.isnan(item[0]) else item[0])
        return value, name

    def bound(self, series: str, statistic: str) -> float:
        """multiple x floor, at least the minimum, at most the fixed bound."""
        floor, _ = self.floor(series, statistic)
        if not math.isfinite(floor):
            return self.ceiling[series]
        return min(self.ceiling[series], max(self.minimum[series], self.multiple * floor))

    def describe(self, series: str, statistic: str) -> str:
        floor, name = self.floor(series, statistic)
        unit = SERIES_UNITS[series]
        return (
            f"{series} {statistic} bound {self.bound(series, statistic):.3g} {unit} = {self.multiple:g} x floor "
            f"{floor:.3g} {unit} ({name}), within [{self.minimum[series]:g}, {self.ceiling[series]:g}] {unit}"
        )

    def differences(self, reference_meta: dict[str, Any]) -> list[str]:
        """What the floors were measured on that this reference did not see, one phrase per input:
        another checkpoint means other floors; another observation or noise is how a calibration of one
        frame serves a sweep. Empty when every hash matches or one side does not know it."""
        found = []
        for key, what in INPUT_HASHES.items():
            measured, current = self.provenance.get(key), reference_meta.get(key)
            if measured and current and measured != current:
                found.append(
                    f"measured on another {what} (sha256 {measured[:12]}..., this reference {current[:12]}...)"
                )
        return found

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "floors": self.floors,
            "multiple": self.multiple,
            "minimum": self.minimum,
            "ceiling": self.ceiling,
            "provenance": self.provenance,
        }

    def save(self, path: Path) -> Path:
        return write_text(path, json.dumps(self.as_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """A saved calibration, or a one-line InputError naming the file and what is wrong with it."""
        path = Path(path)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise InputError(f"{path}: cannot read the calibration ({error.strerror})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(f"{path}: not a calibration file (invalid JSON: {error})") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise InputError(f"{path}: not a calibration file (format is not {FORMAT!r})")
        try:
            floors = {
                str(name): {
                    series: {stat: float(by_series[series][stat]) for stat in GATEABLE_STATISTICS} for series in SERIES
                }
                for name, by_series in document["floors"].items()
            }
            calibration = cls(
                floors,
                float(document["multiple"]),
                {series: float(document["minimum"][series]) for series in SERIES},
                {series: float(document["ceiling"][series]) for series in SERIES},
                dict(document.get("provenance") or {}),
                str(path),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise InputError(f"{path}: invalid calibration ({type(error).__name__}: {error})") from None
        if not floors:
            raise InputError(f"{path}: invalid calibration (no floors)")
        return calibration


def calibration_from_floors(
    floors: dict[str, dict[str, dict[str, float]]],
    ceiling: dict[str, float],
    provenance: dict[str, Any],
    policy: CalibrationPolicy | None = None,
) -> Calibration:
    """A calibration of measured floors under the configured multiple and minimum bounds."""
    policy = policy or CalibrationPolicy.from_file()
    return Calibration(floors, policy.multiple, dict(policy.minimum), dict(ceiling), provenance)


def gate_mode(name: str) -> str:
    """A gate mode by its name or its name of one release ago ("seed" is now "fixed")."""
    return OLD_GATE_MODES.get(name, name)


def fixed_ceiling(position_m: float, orientation_rad: float) -> dict[str, float]:
    """The fixed bounds per series (both orientation series share the orientation bound)."""
    return {"position": position_m, "orientation": orientation_rad, "orientation_rpy": orientation_rad}


def benign_floor(
    robot: RobotModel, units: str, reference: np.ndarray, changed: np.ndarray
) -> dict[str, dict[str, float]]:
    """What one benign change did to the reference: series -> statistic -> value.

    reference, changed: actions [N, T, J] in the dataset's `units`, the same inputs."""
    reference_poses = dataset_forward_kinematics(robot, reference, units)
    changed_poses = dataset_forward_kinematics(robot, changed, units)
    series = (
        AbsoluteTrajectoryError.position(reference_poses, changed_poses),
        AbsoluteTrajectoryError.orientation(reference_poses, changed_poses),
        AbsoluteTrajectoryError.orientation_rpy(reference_poses, changed_poses),
    )
    return {ate.name: {stat: float(statistic(ate.errors, stat)) for stat in GATEABLE_STATISTICS} for ate in series}
