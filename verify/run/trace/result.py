"""What a trace found: every entry, the first module over the tolerance, per-step figures, the summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from verify_ate.verify.run.trace.comparator import TraceEntry
from verify_ate.verify.run.trace.config import X_T_PATH


@dataclass
class TraceResult:
    entries: list[TraceEntry]
    tolerance: float
    reference_label: str
    under_test_label: str
    memory: dict
    reference_actions: np.ndarray  # [T, J] of the traced row
    under_test_actions: np.ndarray
    reproduced: dict = field(default_factory=dict)  # side -> bool | None: equals the compared run's actions
    unit: dict | None = None  # which frame was traced (episode, frame, seed, why)
    dump_dir: Path | None = None
    config_source: str = ""

    @property
    def first_divergent(self) -> TraceEntry | None:
        return next((entry for entry in self.entries if entry.crossed), None)

    def steps(self) -> list[dict]:
        """Per Euler step: x_t's relative error and cosine, and the worst expert-side entry of that step."""
        rows = {}
        for entry in self.entries:
            if not entry.phase.startswith("step"):
                continue
            row = rows.setdefault(
                entry.phase,
                {
                    "phase": entry.phase,
                    "x_t_relative_error": None,
                    "x_t_cosine": None,
                    "worst_module": None,
                    "worst_relative_error": None,
                },
            )
            if entry.path == X_T_PATH:
                row["x_t_relative_error"], row["x_t_cosine"] = entry.relative_error, entry.cosine
            elif entry.relative_error is not None and (
                row["worst_relative_error"] is None or not entry.relative_error <= row["worst_relative_error"]
            ):
                row["worst_module"], row["worst_relative_error"] = entry.name, entry.relative_error
        return list(rows.values())

    def headline(self) -> str:
        first = self.first_divergent
        if first is None:
            worst = max(
                (e for e in self.entries if e.relative_error is not None), key=lambda e: e.relative_error, default=None
            )
            tail = f"; largest {worst.name} ({worst.phase}) {worst.relative_error:.3g}" if worst else ""
            return f"no traced module exceeds relative error {self.tolerance:g}{tail}"
        value = "n/a" if first.relative_error is None else f"{first.relative_error:.3g}"
        cosine = "" if first.cosine is None else f", cosine {first.cosine:.6f}"
        why = f" ({first.note})" if first.note else ""
        return (
            f"first module over relative error {self.tolerance:g}: {first.name} ({first.phase}, {first.path}) "
            f"relative error {value}{cosine}{why}"
        )

    def summary(self, full: bool = True) -> dict:
        first = self.first_divergent
        document = {
            "tolerance": {"relative_error": self.tolerance},
            "first_divergent": first.as_dict() if first else None,
            "headline": self.headline(),
            "n_entries": len(self.entries),
            "n_over_tolerance": sum(e.crossed for e in self.entries),
            "reference": self.reference_label,
            "under_test": self.under_test_label,
            "unit": self.unit,
            "reproduced": self.reproduced,
            "memory": self.memory,
            "dump_dir": str(self.dump_dir) if self.dump_dir else None,
            "config": self.config_source,
            "trace_ate": row_ate(self.reference_actions, self.under_test_actions),
        }
        if full:
            document["entries"] = [e.as_dict() for e in self.entries]
            document["steps"] = self.steps()
        return document


def row_ate(reference: np.ndarray, under_test: np.ndarray) -> dict:
    difference = np.abs(np.asarray(reference, np.float64) - np.asarray(under_test, np.float64))
    return {"max_abs_joint_error": float(difference.max()) if difference.size else 0.0}
