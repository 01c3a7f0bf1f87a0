"""Absolute trajectory error between two pose sequences in one base frame (no alignment).

Modelled on evo's APE: per-step error series, statistics computed one way in one place.
Position error: ||p_ref - p_dut||_2 (m). Orientation error: geodesic angle of R_ref^T R_dut (rad).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from kinematics import Poses
from kinematics.rotations import geodesic_angle

STATISTICS = ("rmse", "mean", "median", "std", "min", "max", "p95")
GATEABLE_STATISTICS = ("rmse", "mean", "median", "max", "p95")


@dataclass(frozen=True)
class ErrorStatistics:
    rmse: float
    mean: float
    median: float
    std: float
    min: float
    max: float
    p95: float

    @classmethod
    def of(cls, errors: np.ndarray) -> "ErrorStatistics":
        """Statistics of a flat error series. A non-finite value makes every statistic NaN,
        so that nothing computed from a broken run can look like a pass."""
        e = np.asarray(errors, dtype=np.float64).ravel()
        if e.size == 0:
            raise ValueError("no errors to summarise")
        if not np.all(np.isfinite(e)):
            return cls(*([float("nan")] * len(STATISTICS)))
        return cls(
            rmse=float(np.sqrt(np.mean(e * e))),
            mean=float(np.mean(e)),
            median=float(np.median(e)),
            std=float(np.std(e)),
            min=float(np.min(e)),
            max=float(np.max(e)),
            p95=float(np.percentile(e, 95)),
        )

    def get(self, statistic: str) -> float:
        if statistic not in STATISTICS:
            raise ValueError(f"unknown statistic {statistic!r} (one of {', '.join(STATISTICS)})")
        return getattr(self, statistic)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def position_errors(reference: Poses, under_test: Poses) -> np.ndarray:
    """Per-step translation error [...] in metres."""
    difference = np.asarray(reference.position, dtype=np.float64) - np.asarray(under_test.position, dtype=np.float64)
    return np.sqrt(np.einsum("...i,...i->...", difference, difference))


def orientation_errors(reference: Poses, under_test: Poses) -> np.ndarray:
    """Per-step geodesic rotation error [...] in radians, in [0, pi]."""
    return geodesic_angle(reference.rotation, under_test.rotation)


@dataclass(frozen=True)
class AbsoluteTrajectoryError:
    """One error series (per step, any leading shape) and its statistics."""

    name: str  # "position" or "orientation"
    unit: str  # "m" or "rad"
    errors: np.ndarray
    statistics: ErrorStatistics

    @classmethod
    def position(cls, reference: Poses, under_test: Poses) -> "AbsoluteTrajectoryError":
        errors = position_errors(reference, under_test)
        return cls("position", "m", errors, ErrorStatistics.of(errors))

    @classmethod
    def orientation(cls, reference: Poses, under_test: Poses) -> "AbsoluteTrajectoryError":
        errors = orientation_errors(reference, under_test)
        return cls("orientation", "rad", errors, ErrorStatistics.of(errors))


def joint_max_abs_errors(reference_actions: np.ndarray, dut_actions: np.ndarray, joint_names) -> dict[str, float]:
    """Largest absolute difference per joint, in the actions' own units (NaN if any is non-finite)."""
    difference = np.abs(np.asarray(reference_actions, np.float64) - np.asarray(dut_actions, np.float64))
    flat = difference.reshape(-1, difference.shape[-1])
    worst = np.where(np.all(np.isfinite(flat), axis=0), np.max(flat, axis=0, initial=0.0), np.nan)
    return {name: float(value) for name, value in zip(joint_names, worst)}
