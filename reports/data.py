"""The plain data the reports draw: NumPy arrays, never the harness's own objects (reports never import verify)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ReportArrays:
    """The per-step data behind the plots (plain arrays; N chunks of T steps, J joints)."""

    reference_actions: np.ndarray  # [N, T, J] in joint_unit
    under_test_actions: np.ndarray  # [N, T, J] in joint_unit
    joint_names: tuple[str, ...]
    joint_unit: str  # unit of the two action arrays, e.g. "deg"
    reference_positions: np.ndarray  # [N, T, 3] m
    under_test_positions: np.ndarray  # [N, T, 3] m
    position_errors: np.ndarray  # [N, T] m
    orientation_errors: np.ndarray  # [N, T] rad
    recorded_positions: np.ndarray | None = None  # [T', 3] m: the dataset's recorded path from the frame on
    # Robots with several arms: arm -> (reference, under test) positions [N, T, 3] m, every arm's path drawn.
    arm_positions: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass(frozen=True)
class WorstFrame:
    name: str  # "episode 1 frame 4 seed 0"
    episode: int
    frame: int
    seed: int | None
    position_stat: float
    orientation_stat: float
    passed: bool
    reference_actions: np.ndarray  # [T, J]
    under_test_actions: np.ndarray
    position_errors: np.ndarray  # [T]
    orientation_errors: np.ndarray


@dataclass(frozen=True)
class SweepArrays:
    standard: ReportArrays  # the chunks the standard plots draw (worst first)
    shown_chunks: int
    position_errors: np.ndarray  # [U, T], every unit
    orientation_errors: np.ndarray
    position_unit_stat: np.ndarray  # [U] each unit's own statistic
    orientation_unit_stat: np.ndarray
    unit_statistic: str
    worst: list[WorstFrame]
