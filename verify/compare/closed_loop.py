"""Closed-loop agreement of two paired rollouts: per-step divergence, time to divergence, outcomes and their
paired statistics (no torch).

Two rollouts are paired when they share everything but the device: the same environment, reset from the same
seed, the same noise for each chunk. Episode e of the reference and episode e of the device under test are one
pair. Divergence at step k is the distance between the two sides' tool centre points (m) and the rotation angle
between their orientations (rad), the same error the open-loop ATE takes per step, here along the executed
path; an environment without a robot model is compared on its own state vector (its units).

Paired outcomes: McNemar's exact test on the discordant pairs (one side succeeded, the other failed), and a
Wilson score interval for each side's success rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from verify_ate.kinematics import Poses
from verify_ate.verify.compare.metrics import orientation_errors, position_errors

if TYPE_CHECKING:
    from verify_ate.verify.compare.rollout_artifact import RolloutArtifact

# Per-episode statistics of a divergence series the gate may compare (over the steps of one episode).
DIVERGENCE_STATISTICS = ("final", "max", "mean")
WILSON_Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile


def wilson_interval(successes: int, trials: int, z: float = WILSON_Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95 % by default); (0, 1) when there are no trials."""
    if trials == 0:
        return 0.0, 1.0
    if not 0 <= successes <= trials:
        raise ValueError(f"{successes} successes out of {trials} trials")
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(reference_only: int, under_test_only: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs against Binomial(b + c, 1/2); 1.0 with none."""
    discordant = reference_only + under_test_only
    if discordant == 0:
        return 1.0
    smaller = min(reference_only, under_test_only)
    tail = sum(math.comb(discordant, k) for k in range(smaller + 1)) / 2.0**discordant
    return min(1.0, 2.0 * tail)


@dataclass(frozen=True)
class PairedOutcomes:
    """The agreement table of N paired episodes and its statistics."""

    both: int
    reference_only: int
    under_test_only: int
    neither: int
    p_value: float  # McNemar's exact test
    reference_interval: tuple[float, float]
    under_test_interval: tuple[float, float]

    @classmethod
    def of(cls, reference: np.ndarray, under_test: np.ndarray) -> PairedOutcomes:
        ref, dut = np.asarray(reference, dtype=bool), np.asarray(under_test, dtype=bool)
        if ref.shape != dut.shape or ref.ndim != 1:
            raise ValueError(f"paired outcomes need two [episodes] vectors, got {ref.shape} and {dut.shape}")
        both, ref_only = int(np.sum(ref & dut)), int(np.sum(ref & ~dut))
        dut_only, neither = int(np.sum(~ref & dut)), int(np.sum(~ref & ~dut))
        n = ref.size
        return cls(
            both,
            ref_only,
            dut_only,
            neither,
            mcnemar_exact(ref_only, dut_only),
            wilson_interval(both + ref_only, n),
            wilson_interval(both + dut_only, n),
        )

    @property
    def episodes(self) -> int:
        return self.both + self.reference_only + self.under_test_only + self.neither

    @property
    def disagreement(self) -> float:
        """The share of episodes whose outcome differs between the two sides."""
        return (self.reference_only + self.under_test_only) / self.episodes if self.episodes else 0.0

    def as_dict(self) -> dict:
        n = self.episodes
        return {
            "episodes": n,
            "both_succeeded": self.both,
            "reference_only": self.reference_only,
            "under_test_only": self.under_test_only,
            "neither": self.neither,
            "disagreement": self.disagreement,
            "mcnemar_p_value": self.p_value,
            "reference_success_rate": (self.both + self.reference_only) / n if n else None,
            "under_test_success_rate": (self.both + self.under_test_only) / n if n else None,
            "reference_wilson_95": list(self.reference_interval),
            "under_test_wilson_95": list(self.under_test_interval),
        }


@dataclass(frozen=True)
class Divergence:
    """Per-episode, per-step divergence of two paired rollouts: `distance` [E, S] (m, or the environment state's
    units), `rotation` [E, S] rad (None without a robot model), `bound` the distance over which the two are said
    to have diverged."""

    distance: np.ndarray
    rotation: np.ndarray | None
    bound: float
    unit: str

    @classmethod
    def of_poses(cls, reference: Poses, under_test: Poses, bound: float) -> Divergence:
        """From both sides' tool poses [E, S] (or [E, S, arms]: the worse arm per step)."""
        distance = position_errors(reference, under_test)
        rotation = orientation_errors(reference, under_test)
        if distance.ndim == 3:
            distance, rotation = distance.max(axis=-1), rotation.max(axis=-1)
        return cls(distance, rotation, bound, "m")

    @classmethod
    def of_states(cls, reference: np.ndarray, under_test: np.ndarray, bound: float, unit: str) -> Divergence:
        """From both sides' environment state vectors [E, S, K]: their Euclidean distance."""
        difference = np.asarray(reference, dtype=np.float64) - np.asarray(under_test, dtype=np.float64)
        return cls(np.sqrt(np.einsum("...i,...i->...", difference, difference)), None, bound, unit)

    @property
    def episodes(self) -> int:
        return int(self.distance.shape[0])

    def time_to_divergence(self) -> list[int | None]:
        """Per episode, the first step whose distance exceeds the bound (a non-finite one counts), else None."""
        over = ~(self.distance <= self.bound)
        return [int(np.argmax(row)) if row.any() else None for row in over]

    def per_episode(self, name: str) -> np.ndarray:
        """One statistic over each episode's steps: final (the last step), max or mean; NaN when any is NaN."""
        if name == "final":
            return self.distance[:, -1].astype(np.float64)
        if name == "max":
            values = self.distance.max(axis=1)
        elif name == "mean":
            values = self.distance.mean(axis=1)
        else:
            raise ValueError(f"unknown divergence statistic {name!r} (one of {', '.join(DIVERGENCE_STATISTICS)})")
        return np.where(np.all(np.isfinite(self.distance), axis=1), values, np.nan)

    def curve(self) -> dict[str, np.ndarray]:
        """Median and 90th percentile over episodes at every step (the divergence curve)."""
        return {
            "median": np.median(self.distance, axis=0),
            "p90": np.percentile(self.distance, 90, axis=0),
        }


@dataclass(frozen=True)
class ClosedLoopGate:
    """Optional bounds on closed-loop agreement (configs/thresholds.yaml `rollout:`, flags override).

    divergence_bound: the distance over which two rollouts have diverged (time to divergence), m;
    max_divergence: gate `divergence_statistic` of every episode's distance against this (None: off);
    max_disagreement: gate the share of episodes whose outcome differs (None: off);
    min_p_value: fail when McNemar's p-value is below this, i.e. the success rates differ significantly
    (None: off)."""

    divergence_bound: float = 0.03
    divergence_statistic: str = "final"
    max_divergence: float | None = None
    max_disagreement: float | None = None
    min_p_value: float | None = None

    @classmethod
    def from_file(cls, path: Path | None = None, **overrides: object) -> ClosedLoopGate:
        """configs/thresholds.yaml's `rollout:` bounds with `overrides` (checked values; None: the file's) on top;
        a bad value in the file is an InputError naming it."""
        from verify_ate.verify.compare.gate import THRESHOLDS_FILE
        from verify_ate.verify.configs import read_yaml
        from verify_ate.verify.errors import InputError

        path = path or THRESHOLDS_FILE
        document = (read_yaml(path, "gate thresholds") or {}).get("rollout") or {}
        values = {
            "divergence_bound": document.get("divergence_bound_m", 0.03),
            "divergence_statistic": document.get("divergence_statistic", "final"),
            **{key: document.get(key) for key in ("max_divergence", "max_disagreement", "min_p_value")},
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        try:
            return cls(
                divergence_bound=float(values["divergence_bound"]),
                divergence_statistic=str(values["divergence_statistic"]),
                **{
                    key: None if values[key] is None else float(values[key])
                    for key in ("max_divergence", "max_disagreement", "min_p_value")
                },
            )
        except (TypeError, ValueError) as error:
            raise InputError(f"{path}: rollout: {error}") from None

    def __post_init__(self) -> None:
        if self.divergence_statistic not in DIVERGENCE_STATISTICS:
            raise ValueError(
                f"divergence statistic {self.divergence_statistic!r}: one of {', '.join(DIVERGENCE_STATISTICS)}"
            )
        if not self.divergence_bound >= 0 or not (self.max_divergence is None or self.max_divergence >= 0):
            raise ValueError(f"divergence bounds must be >= 0 (got {self.divergence_bound}, {self.max_divergence})")
        for name in ("max_disagreement", "min_p_value"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"{name} must lie in [0, 1], not {value}")


def closed_loop_checks(
    divergence: Divergence, outcomes: PairedOutcomes, gate: ClosedLoopGate, finite: bool
) -> list[dict]:
    """The closed-loop gate's checks, each {name, pass, value, threshold, unit, message}; `finite` first, always."""
    checks = [
        {
            "name": "finite",
            "pass": finite,
            "value": None,
            "threshold": None,
            "unit": "",
            "message": "every action and state finite on both sides" if finite else "non-finite actions or states",
        }
    ]
    if gate.max_divergence is not None:
        values = divergence.per_episode(gate.divergence_statistic)
        worst = float(np.max(values)) if np.all(np.isfinite(values)) else math.nan
        worst_episode = int(np.nanargmax(values)) if np.any(np.isfinite(values)) else 0
        passed = bool(worst <= gate.max_divergence)
        checks.append(
            {
                "name": "divergence",
                "pass": passed,
                "value": worst,
                "threshold": gate.max_divergence,
                "stat": gate.divergence_statistic,
                "unit": divergence.unit,
                "message": (
                    f"worst episode's {gate.divergence_statistic} divergence {worst:.4g} {divergence.unit} "
                    f"(episode {worst_episode}) {'<=' if passed else '>'} {gate.max_divergence:g} {divergence.unit}"
                ),
            }
        )
    if gate.max_disagreement is not None:
        share = outcomes.disagreement
        passed = share <= gate.max_disagreement
        checks.append(
            {
                "name": "success_disagreement",
                "pass": passed,
                "value": share,
                "threshold": gate.max_disagreement,
                "unit": "",
                "message": (
                    f"outcomes differ in {outcomes.reference_only + outcomes.under_test_only} of {outcomes.episodes} "
                    f"episodes ({share:.0%}) {'<=' if passed else '>'} {gate.max_disagreement:.0%}"
                ),
            }
        )
    if gate.min_p_value is not None:
        passed = outcomes.p_value >= gate.min_p_value
        checks.append(
            {
                "name": "mcnemar",
                "pass": passed,
                "value": outcomes.p_value,
                "threshold": gate.min_p_value,
                "unit": "",
                "message": (
                    f"McNemar exact p = {outcomes.p_value:.3g} {'>=' if passed else '<'} {gate.min_p_value:g} "
                    f"({outcomes.reference_only} reference-only vs {outcomes.under_test_only} under-test-only "
                    "successes)"
                ),
            }
        )
    return checks


# ---------------------------------------------------------------- two rollout artifacts judged

# Inputs two paired rollouts must share; --force compares anyway and says which differed.
PAIRED_INPUTS = {
    "environment": "environment",
    "checkpoint_sha256": "checkpoint",
    "noise_sha256": "noise",
    "policy": "policy",
}
# What must match even under --force: without it the episodes are not pairs at all.
PAIRING = ("seeds", "n_action_steps")


@dataclass(frozen=True)
class RolloutComparison:
    summary: dict  # the JSON contract (docs/files.md, "Rollout summary")
    divergence: Divergence
    outcomes: PairedOutcomes

    @property
    def passed(self) -> bool:
        return bool(self.summary["pass"])


def environment_differences(reference: dict, under_test: dict) -> list[dict]:
    """Every fingerprint key whose value differs between the two sides' environments."""
    keys = sorted(set(reference) | set(under_test))
    return [
        {"key": key, "reference": reference.get(key), "under_test": under_test.get(key)}
        for key in keys
        if reference.get(key) != under_test.get(key)
    ]


def input_differences(ref_meta: dict, dut_meta: dict) -> list[dict]:
    differences: list[dict] = []
    for key, name in PAIRED_INPUTS.items():
        if key == "environment":
            changed = environment_differences(ref_meta.get(key, {}), dut_meta.get(key, {}))
            if changed:
                detail = "; ".join(f"{d['key']}: {d['reference']!r} vs {d['under_test']!r}" for d in changed)
                differences.append({"input": name, "reference": "", "under_test": "", "detail": detail})
        elif ref_meta.get(key) != dut_meta.get(key):
            differences.append(
                {"input": name, "reference": ref_meta.get(key), "under_test": dut_meta.get(key), "detail": ""}
            )
    return differences


def divergence_of(reference: RolloutArtifact, under_test: RolloutArtifact, bound: float) -> Divergence:
    """Per-step divergence of two rollout artifacts: their recorded tool poses (the worse arm), or without a robot
    model the distance between the environments' state vectors."""
    if reference.tool_poses.shape[2] == 0:
        unit = reference.meta["environment"].get("state_unit", "")
        return Divergence.of_states(reference.states, under_test.states, bound, unit)

    def poses(artifact: RolloutArtifact) -> Poses:
        return Poses(artifact.tool_poses[..., :3, 3], artifact.tool_poses[..., :3, :3])

    return Divergence.of_poses(poses(reference), poses(under_test), bound)


def compare_rollouts(
    reference: RolloutArtifact, under_test: RolloutArtifact, gate: ClosedLoopGate, accept_differences: bool = False
) -> RolloutComparison:
    """Judge two rollout artifacts (verify/compare/rollout_artifact.py). InputError when they are not pairs, or
    when their environments or inputs differ (unless `accept_differences`, --force)."""
    from verify_ate.verify.errors import InputError

    for key in PAIRING:
        if reference.meta.get(key) != under_test.meta.get(key):
            raise InputError(
                f"{under_test.label}: {key} {under_test.meta.get(key)} differs from the reference's "
                f"{reference.meta.get(key)} ({reference.label}): the episodes are not pairs"
            )
    if reference.states.shape[:2] != under_test.states.shape[:2]:
        raise InputError(
            f"{under_test.label}: {list(under_test.states.shape[:2])} episodes x steps, the reference "
            f"{list(reference.states.shape[:2])}: the episodes are not pairs"
        )
    differences = input_differences(reference.meta, under_test.meta)
    if differences and not accept_differences:
        first = differences[0]
        detail = first["detail"] or f"{first['reference']} vs {first['under_test']}"
        raise InputError(
            f"{under_test.label}: its {first['input']} differs from the reference's ({detail}); a different "
            "environment reads as device drift: use the same one, or --force to compare anyway"
        )
    divergence = divergence_of(reference, under_test, gate.divergence_bound)
    outcomes = PairedOutcomes.of(reference.success, under_test.success)
    finite = bool(
        np.all(np.isfinite(reference.states))
        and np.all(np.isfinite(under_test.states))
        and np.all(np.isfinite(reference.actions))
        and np.all(np.isfinite(under_test.actions))
    )
    checks = closed_loop_checks(divergence, outcomes, gate, finite)
    if not finite:
        sides = {"reference": reference, "under test": under_test}
        where = [
            f"{name} episode {index} step {_first_nonfinite(artifact.actions[index])}"
            for name, artifact in sides.items()
            for index in range(artifact.episodes)
            if _first_nonfinite(artifact.actions[index]) is not None
        ]
        checks[0]["message"] = (
            "non-finite actions (the episode stopped there): "
            + ", ".join(where[:6])
            + (f" and {len(where) - 6} more" if len(where) > 6 else "")
        )
    summary = rollout_summary(reference, under_test, divergence, outcomes, gate, checks, differences)
    return RolloutComparison(summary, divergence, outcomes)


def _first_nonfinite(actions: np.ndarray) -> int | None:
    """The first step of one episode whose action holds a non-finite value (the episode ended there)."""
    bad = ~np.all(np.isfinite(actions), axis=-1)
    return int(np.argmax(bad)) if bad.any() else None


def _spread(values: np.ndarray) -> dict:
    finite = values[np.isfinite(values)]
    if finite.size != values.size or values.size == 0:
        return {"median": None, "p90": None, "max": None}
    return {
        "median": float(np.median(values)),
        "p90": float(np.percentile(values, 90)),
        "max": float(np.max(values)),
    }


def rollout_summary(
    reference: RolloutArtifact,
    under_test: RolloutArtifact,
    divergence: Divergence,
    outcomes: PairedOutcomes,
    gate: ClosedLoopGate,
    checks: list[dict],
    differences: list[dict],
) -> dict:
    times = divergence.time_to_divergence()
    diverged = [t for t in times if t is not None]
    seeds = reference.meta.get("seeds", list(range(reference.episodes)))
    final_rotation = divergence.rotation[:, -1] if divergence.rotation is not None else None
    episodes = [
        {
            "episode": index,
            "seed": seeds[index],
            "reference_success": bool(reference.success[index]),
            "under_test_success": bool(under_test.success[index]),
            "reference_steps": int(reference.steps[index]),
            "under_test_steps": int(under_test.steps[index]),
            "time_to_divergence": times[index],
            "final_distance": float(divergence.distance[index, -1]),
            "max_distance": float(divergence.distance[index].max()),
            "final_rotation": None if final_rotation is None else float(final_rotation[index]),
            "first_nonfinite_action": {
                "reference": _first_nonfinite(reference.actions[index]),
                "under_test": _first_nonfinite(under_test.actions[index]),
            },
        }
        for index in range(reference.episodes)
    ]
    curve = divergence.curve()
    return {
        "pass": all(check["pass"] for check in checks),
        "kind": "rollout",
        "environment": reference.meta["environment"].get("env"),
        "task": reference.meta["environment"].get("task"),
        "episodes": reference.episodes,
        "steps": int(divergence.distance.shape[1] - 1),
        "n_action_steps": reference.meta.get("n_action_steps"),
        "seeds": seeds,
        "divergence": {
            "unit": divergence.unit,
            "bound": gate.divergence_bound,
            "diverged_episodes": len(diverged),
            "time_to_divergence": times,
            "median_time_to_divergence": float(np.median(diverged)) if diverged else None,
            "final": _spread(divergence.per_episode("final")),
            "max": _spread(divergence.per_episode("max")),
            "mean": _spread(divergence.per_episode("mean")),
            "final_rotation_rad": None if final_rotation is None else _spread(final_rotation),
        },
        "curve": {name: [float(v) for v in values] for name, values in curve.items()},
        "outcomes": outcomes.as_dict(),
        "per_episode": episodes,
        "checks": checks,
        "gate": {
            "divergence_bound": gate.divergence_bound,
            "divergence_statistic": gate.divergence_statistic,
            "max_divergence": gate.max_divergence,
            "max_disagreement": gate.max_disagreement,
            "min_p_value": gate.min_p_value,
        },
        "forced": bool(differences),
        "forced_differences": differences,
        "ref": reference.meta,
        "dut": under_test.meta,
    }
