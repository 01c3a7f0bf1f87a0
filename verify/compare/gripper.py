"""Whether the gripper opens and closes where the reference's does, step by step.

The gripper is not part of the tool pose, so a port that opens it where the reference closes it passes every pose
bound; this check catches that. Each step's state (open or closed) comes from a threshold in the action's own units;
steps where the reference lies within a margin of the threshold are ambiguous (a small numerical difference may
put either side across it) and never count. A non-finite value on either side counts as a flip: nothing broken
passes silently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from verify_ate.verify.compare.gate import GateCheck

# What the gripper check bounds (GateCheck.kind), beside gate.py's kinds. A calibration never sets it.
GRIPPER = "gripper"
FIRST_FLIPS = 5  # how many flips an agreement keeps with their values (for the message and the JSON)
SHOWN_RANGES = 3  # how many runs of flipped steps a message names per gripper


@dataclass(frozen=True)
class GripperSpec:
    """Where a gripper's value sits in the action vector and when it reads open: above `threshold` (the action's
    units), or below it when `open_above` is False. Steps where the reference lies within `margin` of the
    threshold are ambiguous and never count."""

    joint: str  # the name in the action vector, e.g. "gripper" or "left_gripper"
    threshold: float
    margin: float
    open_above: bool = True

    def __post_init__(self) -> None:
        if not math.isfinite(self.threshold):
            raise ValueError(f"gripper {self.joint!r}: threshold must be finite, not {self.threshold}")
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"gripper {self.joint!r}: margin must be a finite number >= 0, not {self.margin}")

    def is_open(self, values: np.ndarray) -> np.ndarray:
        """[...] values -> [...] bool: open past the threshold (a value on it reads closed; NaN reads closed)."""
        return values > self.threshold if self.open_above else values < self.threshold

    def state(self, value: float) -> str:
        """ "open", "closed", or "non-finite" for one value (for messages)."""
        if not math.isfinite(value):
            return "non-finite"
        return "open" if bool(self.is_open(np.asarray(value))) else "closed"


@dataclass(frozen=True)
class GripperFlip:
    """One step where the states differ: where, and both values (the action's units)."""

    chunk: int
    step: int
    reference: float
    under_test: float

    def as_dict(self) -> dict[str, float | int]:
        return {"chunk": self.chunk, "step": self.step, "reference": self.reference, "under_test": self.under_test}


@dataclass(frozen=True, eq=False)
class GripperAgreement:
    """One gripper's open/closed state on both sides over chunks [N, T], and where they disagree."""

    spec: GripperSpec
    reference_open: np.ndarray  # [N, T] bool
    under_test_open: np.ndarray  # [N, T] bool
    ambiguous: np.ndarray  # [N, T] bool: the reference within the margin of the threshold (never counts)
    flips: np.ndarray  # [N, T] bool: the states differ (or a value is non-finite) where the reference is clear
    first: tuple[GripperFlip, ...]  # the first few flips, chunk then step order

    @classmethod
    def of(
        cls, reference: np.ndarray, under_test: np.ndarray, spec: GripperSpec, keep: int = FIRST_FLIPS
    ) -> GripperAgreement:
        """reference, under_test: [N, T] (or [T]) gripper values in the action's units."""
        ref = np.atleast_2d(np.asarray(reference, dtype=np.float64))
        dut = np.atleast_2d(np.asarray(under_test, dtype=np.float64))
        if ref.ndim != 2 or ref.shape != dut.shape:
            raise ValueError(
                f"gripper {spec.joint!r}: reference {ref.shape} and under test {dut.shape} must both be [N, T]"
            )
        reference_open, under_test_open = spec.is_open(ref), spec.is_open(dut)
        # NaN is never within the margin, so a non-finite reference is judged (and flagged) like any other value.
        ambiguous = np.abs(ref - spec.threshold) <= spec.margin
        broken = ~(np.isfinite(ref) & np.isfinite(dut))
        flips = ((reference_open != under_test_open) | broken) & ~ambiguous
        first = tuple(
            GripperFlip(int(chunk), int(step), float(ref[chunk, step]), float(dut[chunk, step]))
            for chunk, step in np.argwhere(flips)[:keep]
        )
        return cls(spec, reference_open, under_test_open, ambiguous, flips, first)

    @property
    def steps(self) -> int:
        return int(self.flips.size)

    @property
    def count(self) -> int:
        """How many steps flipped."""
        return int(self.flips.sum())

    @property
    def ambiguous_count(self) -> int:
        return int(self.ambiguous.sum())

    def ranges(self) -> list[tuple[int, int, int]]:
        """Runs of consecutive flipped steps as (chunk, first step, last step), chunk then step order."""
        padded = np.pad(self.flips, ((0, 0), (1, 1))).astype(np.int8)
        edges = np.diff(padded, axis=1)  # +1 where a run starts, -1 one past where it ends
        starts, ends = np.argwhere(edges == 1), np.argwhere(edges == -1)
        return [(int(chunk), int(start), int(end) - 1) for (chunk, start), (_, end) in zip(starts, ends, strict=True)]

    def describe(self, counted: bool = False) -> str:
        """`left_gripper: chunk 0 steps 14-25, chunk 2 step 3; ref 2.1 closed, dut 40.3 open` (no flip: the joint);
        `counted` adds this gripper's own tally after its name (`left_gripper 12 of 300: ...`)."""
        name = f"{self.spec.joint} {self.count} of {self.steps}" if counted else self.spec.joint
        if not self.first:
            return name
        runs = self.ranges()
        where = ", ".join(
            f"chunk {chunk} step {start}" if start == end else f"chunk {chunk} steps {start}-{end}"
            for chunk, start, end in runs[:SHOWN_RANGES]
        )
        if len(runs) > SHOWN_RANGES:
            where += f" and {len(runs) - SHOWN_RANGES} more runs"
        flip = self.first[0]
        values = (
            f"ref {flip.reference:.4g} {self.spec.state(flip.reference)}, "
            f"dut {flip.under_test:.4g} {self.spec.state(flip.under_test)}"
        )
        return f"{name}: {where}; {values}"

    def as_dict(self) -> dict[str, object]:
        return {
            "joint": self.spec.joint,
            "threshold": self.spec.threshold,
            "margin": self.spec.margin,
            "open_above": self.spec.open_above,
            "steps": self.steps,
            "ambiguous": self.ambiguous_count,
            "flips": self.count,
            "first": [flip.as_dict() for flip in self.first],
        }


def gripper_check(agreements: Sequence[GripperAgreement]) -> GateCheck:
    """One gate check over every gripper (an ALOHA-like robot has two): the flips of all of them, bound 0,
    naming each gripper that flipped, where, and the first flip's values."""
    if not agreements:
        raise ValueError("a gripper check needs at least one gripper")
    flips = sum(agreement.count for agreement in agreements)
    steps = sum(agreement.steps for agreement in agreements)
    if flips == 0:
        ambiguous = sum(agreement.ambiguous_count for agreement in agreements)
        message = f"gripper state agrees on all {steps} steps"
        if ambiguous:
            message += f" ({ambiguous} with the reference within the margin of the threshold, not judged)"
    else:
        # With two grippers each names its own tally, so the reader sees which one (or both) flipped.
        parts = [f"({a.describe(counted=len(agreements) > 1)})" for a in agreements if a.count]
        message = f"gripper FLIPPED at {flips} of {steps} steps {' '.join(parts)}"
    return GateCheck(GRIPPER, flips == 0, float(flips), 0.0, "steps", None, message, kind=GRIPPER)
