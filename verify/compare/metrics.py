"""Absolute trajectory error between two pose sequences in one base frame (no alignment).

Modelled on evo's APE: per-step error series, statistics computed one way in one place.
Position error: ||p_ref - p_dut||_2 (m). Orientation error: geodesic angle of R_ref^T R_dut (rad).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from verify_ate.kinematics import Poses
from verify_ate.kinematics.rotations import geodesic_angle, matrix_to_rpy, wrap_angle

# The one table of statistic names (in report order) and of error-series units.
STATISTICS = ("rmse", "mean", "median", "std", "min", "max", "p95")
GATEABLE_STATISTICS = ("rmse", "mean", "median", "max", "p95")
SERIES_UNITS = {"position": "m", "orientation": "rad", "orientation_rpy": "rad"}
ROTATION_METRICS = ("geodesic", "rpy")  # the orientation error the gate may compare


def statistic(errors: np.ndarray, name: str, axis: int | None = None) -> np.ndarray | float:
    """One named statistic of an error series, over all values (axis None) or along `axis`.

    errors: [...] per-step errors. Returns a float (axis None) or an array without `axis`.
    A series (or a row along `axis`) holding any non-finite value gives NaN, so that nothing
    computed from a broken run can look like a pass.
    """
    e = np.asarray(errors, dtype=np.float64)
    if axis is None:
        e = e.ravel()
        axis = 0
    if e.shape[axis] == 0:
        raise ValueError("no errors to summarise")
    if name == "rmse":
        values = np.sqrt(np.mean(e * e, axis=axis))
    elif name == "mean":
        values = np.mean(e, axis=axis)
    elif name == "median":
        values = np.median(e, axis=axis)
    elif name == "std":
        values = np.std(e, axis=axis)
    elif name == "min":
        values = np.min(e, axis=axis)
    elif name == "max":
        values = np.max(e, axis=axis)
    elif name == "p95":
        values = np.percentile(e, 95, axis=axis)
    else:
        raise ValueError(f"unknown statistic {name!r} (one of {', '.join(STATISTICS)})")
    values = np.where(np.all(np.isfinite(e), axis=axis), values, np.nan)
    return float(values) if values.ndim == 0 else values


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
    def of(cls, errors: np.ndarray) -> ErrorStatistics:
        """Statistics of a whole error series [...] (every value pooled); NaN throughout if any is non-finite."""
        return cls(*(float(statistic(errors, name)) for name in STATISTICS))

    def get(self, name: str) -> float:
        if name not in STATISTICS:
            raise ValueError(f"unknown statistic {name!r} (one of {', '.join(STATISTICS)})")
        return getattr(self, name)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def position_errors(reference: Poses, under_test: Poses) -> np.ndarray:
    """Per-step translation error [...] in metres, for poses of any leading shape [...]."""
    difference = np.asarray(reference.position, dtype=np.float64) - np.asarray(under_test.position, dtype=np.float64)
    return np.sqrt(np.einsum("...i,...i->...", difference, difference))


def orientation_errors(reference: Poses, under_test: Poses) -> np.ndarray:
    """Per-step geodesic rotation error [...] in radians, in [0, pi]."""
    return geodesic_angle(reference.rotation, under_test.rotation)


def rpy_errors(reference: Poses, under_test: Poses) -> np.ndarray:
    """Per-step orientation error [...] as the Ascend guide computes it: the 2-norm of the roll-pitch-yaw
    difference, each component wrapped into [-pi, pi) (rad). Not a metric on rotations: it departs
    from the geodesic angle near +-pi and near gimbal lock (pitch +-pi/2)."""
    difference = wrap_angle(matrix_to_rpy(reference.rotation) - matrix_to_rpy(under_test.rotation))
    return np.sqrt(np.einsum("...i,...i->...", difference, difference))


@dataclass(frozen=True)
class AbsoluteTrajectoryError:
    """One error series (per step, any leading shape) and its statistics."""

    name: str  # "position" or "orientation"
    unit: str  # "m" or "rad"
    errors: np.ndarray
    statistics: ErrorStatistics

    @classmethod
    def position(cls, reference: Poses, under_test: Poses) -> AbsoluteTrajectoryError:
        errors = position_errors(reference, under_test)
        return cls("position", SERIES_UNITS["position"], errors, ErrorStatistics.of(errors))

    @classmethod
    def orientation(cls, reference: Poses, under_test: Poses) -> AbsoluteTrajectoryError:
        errors = orientation_errors(reference, under_test)
        return cls("orientation", SERIES_UNITS["orientation"], errors, ErrorStatistics.of(errors))

    @classmethod
    def orientation_rpy(cls, reference: Poses, under_test: Poses) -> AbsoluteTrajectoryError:
        errors = rpy_errors(reference, under_test)
        return cls("orientation_rpy", SERIES_UNITS["orientation_rpy"], errors, ErrorStatistics.of(errors))


@dataclass(frozen=True)
class NonFinite:
    """Where an action array [N, T, J] holds NaN or Inf: how many values, and the first (chunk, step, joint)."""

    count: int
    first: tuple[int, int, int] | None

    @classmethod
    def of(cls, actions: np.ndarray) -> NonFinite:
        bad = ~np.isfinite(np.asarray(actions))
        count = int(bad.sum())
        if count == 0:
            return cls(0, None)
        chunk, step, joint = (int(i) for i in np.argwhere(bad.reshape(-1, *bad.shape[-2:]))[0])
        return cls(count, (chunk, step, joint))

    def describe(self, joint_names: Sequence[str]) -> str:
        """`12 non-finite action values (NaN/Inf), the first at chunk 0 step 17 joint elbow_flex`."""
        if self.first is None:
            return "all actions finite"
        chunk, step, joint = self.first
        name = joint_names[joint] if joint < len(joint_names) else f"#{joint}"
        return f"{self.count} non-finite action values (NaN/Inf), the first at chunk {chunk} step {step} joint {name}"


def joint_max_abs_errors(
    reference_actions: np.ndarray, dut_actions: np.ndarray, joint_names: Sequence[str]
) -> dict[str, float]:
    """Largest absolute difference per joint, in the actions' own units (NaN if any is non-finite)."""
    difference = np.abs(np.asarray(reference_actions, np.float64) - np.asarray(dut_actions, np.float64))
    flat = difference.reshape(-1, difference.shape[-1])
    worst = np.where(np.all(np.isfinite(flat), axis=0), np.max(flat, axis=0, initial=0.0), np.nan)
    return {name: float(value) for name, value in zip(joint_names, worst, strict=True)}


@dataclass(frozen=True)
class ActionSpaceFigures:
    """The figures an action-space verifier (the Ascend pi0.5 one) reports, over chunks [N, T, J] in one unit:
    cosine similarity of each whole chunk (the smallest over chunks), the smallest per-step cosine,
    the mean squared error. NaN when any value is non-finite."""

    cosine: float
    min_step_cosine: float
    mse: float
    max_abs_error: float = float("nan")  # the Ascend ACT recipe's figures: largest and mean |ref - dut|
    mean_abs_error: float = float("nan")

    @classmethod
    def of(cls, reference: np.ndarray, under_test: np.ndarray) -> ActionSpaceFigures:
        a = np.asarray(reference, dtype=np.float64).reshape(-1, *np.shape(reference)[-2:])
        b = np.asarray(under_test, dtype=np.float64).reshape(a.shape)
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            return cls(float("nan"), float("nan"), float("nan"))
        chunk = _cosine(a.reshape(len(a), -1), b.reshape(len(b), -1))
        step = _cosine(a, b)
        error = np.abs(a - b)
        return cls(
            float(np.min(chunk)),
            float(np.min(step)),
            float(np.mean((a - b) ** 2)),
            float(np.max(error)),
            float(np.mean(error)),
        )

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def allclose_violations(reference: np.ndarray, under_test: np.ndarray, atol: float, rtol: float) -> int:
    """How many action values fail numpy's allclose test |dut - ref| <= atol + rtol * |ref| (the Ascend OpenVLA
    recipe's `np.allclose(npu, cpu, rtol, atol)`, the reference as numpy's second argument); a non-finite value
    always fails."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(under_test, dtype=np.float64).reshape(a.shape)
    with np.errstate(invalid="ignore"):
        close = np.abs(b - a) <= atol + rtol * np.abs(a)
    return int(np.size(close) - np.count_nonzero(close & np.isfinite(a) & np.isfinite(b)))


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity along the last axis; 1 where both vectors are zero (identical), 0 where one is."""
    dot = np.einsum("...i,...i->...", a, b)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    both_zero = (np.linalg.norm(a, axis=-1) == 0) & (np.linalg.norm(b, axis=-1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(both_zero, 1.0, np.where(norms > 0, dot / norms, 0.0))
