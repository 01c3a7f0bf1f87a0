"""The gripper check: a gripper that opens where the reference closes fails, naming where; nothing else does."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from verify_ate.verify.compare.gripper import GRIPPER, GripperAgreement, GripperSpec, gripper_check

# Koch-like gripper in degrees: closed near 0, open near 45; open above 20, with 2 degrees either side ambiguous.
SPEC = GripperSpec("gripper", threshold=20.0, margin=2.0)
LOW, HIGH = 0.0, 45.0


def closing_and_opening(n: int = 3, horizon: int = 50) -> np.ndarray:
    """[n, horizon]: each chunk sweeps from open to closed and back (a grasp), crossing the threshold twice."""
    phase = np.linspace(0, 2 * np.pi, horizon)
    return np.stack([LOW + (HIGH - LOW) * (0.5 + 0.5 * np.cos(phase + 0.1 * i)) for i in range(n)])


def test_an_inverted_gripper_fails_naming_the_steps():
    reference = closing_and_opening()
    inverted = HIGH + LOW - reference
    agreement = GripperAgreement.of(reference, inverted, SPEC)
    clear = np.abs(reference - SPEC.threshold) > SPEC.margin
    inverted_state = inverted > SPEC.threshold
    expected = clear & ((reference > SPEC.threshold) != inverted_state)
    np.testing.assert_array_equal(agreement.flips, expected)
    assert agreement.count == int(expected.sum())
    assert agreement.count > 100
    check = gripper_check([agreement])
    assert not check.passed
    assert check.value == agreement.count
    chunk, start, end = agreement.ranges()[0]
    assert (chunk, start) == (0, 0)
    assert check.message.startswith(
        f"gripper FLIPPED at {agreement.count} of 150 steps (gripper: chunk 0 steps 0-{end}"
    )
    first = agreement.first[0]
    assert f"ref {first.reference:.4g} open, dut {first.under_test:.4g} closed" in check.message
    assert (check.name, check.kind, check.unit, check.threshold) == ("gripper", GRIPPER, "steps", 0.0)


def test_a_gripper_equal_to_the_reference_passes():
    reference = closing_and_opening()
    check = gripper_check([GripperAgreement.of(reference, reference.copy(), SPEC)])
    assert check.passed
    assert check.value == 0
    assert check.message.startswith("gripper state agrees on all 150 steps")


def test_steps_within_the_margin_never_count():
    reference = np.array([[19.0, 21.5, 18.1, 22.0, 5.0, 40.0]])
    # Every value crosses the threshold; only the last two are clear of the reference's margin.
    under_test = np.array([[25.0, 10.0, 30.0, 19.0, 30.0, 10.0]])
    agreement = GripperAgreement.of(reference, under_test, SPEC)
    np.testing.assert_array_equal(agreement.ambiguous, [[True, True, True, True, False, False]])
    np.testing.assert_array_equal(agreement.flips, [[False, False, False, False, True, True]])
    check = gripper_check([agreement])
    assert check.message == ("gripper FLIPPED at 2 of 6 steps (gripper: chunk 0 steps 4-5; ref 5 closed, dut 30 open)")
    agreeing = GripperAgreement.of(reference, np.array([[25.0, 10.0, 30.0, 19.0, 5.0, 40.0]]), SPEC)
    assert gripper_check([agreeing]).message == (
        "gripper state agrees on all 6 steps (4 with the reference within the margin of the threshold, not judged)"
    )


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_count_as_flips(bad):
    reference = closing_and_opening(1)
    under_test = reference.copy()
    under_test[0, 7] = bad
    agreement = GripperAgreement.of(reference, under_test, SPEC)
    assert agreement.count == 1
    assert agreement.first[0].step == 7
    assert f"dut {bad:.4g} non-finite" in gripper_check([agreement]).message
    # A broken reference is flagged too, even where its value would read as the threshold's side.
    broken_reference = reference.copy()
    broken_reference[0, 3] = bad
    assert GripperAgreement.of(broken_reference, reference, SPEC).count == 1


def test_two_grippers_combine_into_one_check_naming_which():
    left, right = GripperSpec("left_gripper", 20.0, 2.0), GripperSpec("right_gripper", 20.0, 2.0)
    reference = closing_and_opening(2)
    under_test_right = reference.copy()
    under_test_right[1, 30:34] = HIGH + LOW - reference[1, 30:34]  # closed there on the reference: opened here
    agreements = [
        GripperAgreement.of(reference, reference, left),
        GripperAgreement.of(reference, under_test_right, right),
    ]
    check = gripper_check(agreements)
    assert not check.passed
    assert check.value == 4
    assert check.message.startswith("gripper FLIPPED at 4 of 200 steps (right_gripper 4 of 100: chunk 1 steps 30-33; ")
    assert "left_gripper" not in check.message
    both = gripper_check([GripperAgreement.of(reference, HIGH + LOW - reference, left), agreements[1]])
    assert "(left_gripper " in both.message
    assert "(right_gripper 4 of 100: chunk 1 steps 30-33; " in both.message
    passing = gripper_check([agreements[0], GripperAgreement.of(reference, reference, right)])
    assert passing.message.startswith("gripper state agrees on all 200 steps")


def test_open_below_the_threshold():
    """A gripper whose value shrinks as it opens (open_above False)."""
    spec = GripperSpec("gripper", threshold=0.5, margin=0.05, open_above=False)
    reference = np.array([[0.1, 0.9, 0.2, 0.8]])
    agreement = GripperAgreement.of(reference, np.array([[0.1, 0.9, 0.9, 0.1]]), spec)
    np.testing.assert_array_equal(agreement.reference_open, [[True, False, True, False]])
    np.testing.assert_array_equal(agreement.flips, [[False, False, True, True]])
    assert "ref 0.2 open, dut 0.9 closed" in gripper_check([agreement]).message


def test_many_runs_are_summarised_and_the_json_is_plain():
    reference = np.tile([[5.0, 40.0]], (2, 10))  # alternating closed/open: every inverted step is its own run
    agreement = GripperAgreement.of(reference, HIGH + LOW - reference, SPEC)
    assert agreement.count == 40
    assert len(agreement.ranges()) == 2
    alternating = np.where(np.arange(20) % 2 == 0, 5.0, 40.0)[None, :]
    every_other = alternating.copy()
    every_other[0, ::4] = 40.0  # flips at steps 0, 4, 8, 12, 16: five separate runs
    sparse = GripperAgreement.of(alternating, every_other, SPEC)
    assert sparse.ranges() == [(0, step, step) for step in (0, 4, 8, 12, 16)]
    assert "chunk 0 step 0, chunk 0 step 4, chunk 0 step 8 and 2 more runs" in gripper_check([sparse]).message
    document = json.loads(json.dumps(sparse.as_dict()))
    assert document == {
        "joint": "gripper",
        "threshold": 20.0,
        "margin": 2.0,
        "open_above": True,
        "steps": 20,
        "ambiguous": 0,
        "flips": 5,
        "first": [{"chunk": 0, "step": s, "reference": 5.0, "under_test": 40.0} for s in (0, 4, 8, 12, 16)],
    }


def test_shapes_and_specs_are_checked():
    with pytest.raises(ValueError, match=r"reference \(2, 3\) and under test \(2, 4\)"):
        GripperAgreement.of(np.zeros((2, 3)), np.zeros((2, 4)), SPEC)
    with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
        GripperSpec("gripper", 20.0, -1.0)
    with pytest.raises(ValueError, match="at least one gripper"):
        gripper_check([])
