"""ATE metrics: hand-computed cases and agreement with evo's APE (no alignment)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from verify_ate.kinematics import Poses
from verify_ate.kinematics.rotations import geodesic_angle, matrix_to_quaternion, quaternion_to_matrix
from verify_ate.verify.compare.gate import GateConfig, judge
from verify_ate.verify.compare.metrics import AbsoluteTrajectoryError, ErrorStatistics, NonFinite, joint_max_abs_errors


def _poses(positions, rotations) -> Poses:
    return Poses(np.asarray(positions, dtype=np.float64), np.asarray(rotations, dtype=np.float64))


def _random_poses(rng, n):
    return _poses(rng.normal(size=(n, 3)) * 0.1, Rotation.random(n, random_state=rng.integers(1 << 31)).as_matrix())


def test_identical_trajectories_have_exactly_zero_error(rng):
    poses = _random_poses(rng, 200)
    for ate in (AbsoluteTrajectoryError.position(poses, poses), AbsoluteTrajectoryError.orientation(poses, poses)):
        assert np.all(ate.errors == 0.0)
        assert all(value == 0.0 for value in ate.statistics.as_dict().values())


def test_pure_translation():
    identity = np.broadcast_to(np.eye(3), (3, 3, 3))
    reference = _poses([[0, 0, 0], [1, 0, 0], [0, 2, 0]], identity)
    shifted = _poses([[0.03, 0.04, 0], [1, 0, 0], [0, 2, 0.1]], identity)
    position = AbsoluteTrajectoryError.position(reference, shifted)
    np.testing.assert_allclose(position.errors, [0.05, 0.0, 0.1], atol=1e-15)
    stats = position.statistics
    assert stats.rmse == pytest.approx(math.sqrt((0.05**2 + 0.1**2) / 3))
    assert stats.mean == pytest.approx(0.05)
    assert stats.median == pytest.approx(0.05)
    assert stats.max == pytest.approx(0.1)
    assert stats.min == 0.0
    assert stats.std == pytest.approx(np.std([0.05, 0.0, 0.1]))
    assert stats.p95 == pytest.approx(0.095)  # linear interpolation between 0.05 and 0.1
    assert np.all(AbsoluteTrajectoryError.orientation(reference, shifted).errors == 0.0)


def test_pure_rotation_about_each_axis():
    angles = np.array([0.1, 0.5, 1.0, 2.0, 3.0])
    for axis in np.eye(3):
        rotated = Rotation.from_rotvec(angles[:, None] * axis).as_matrix()
        identity = np.broadcast_to(np.eye(3), rotated.shape)
        origin = np.zeros((len(angles), 3))
        orientation = AbsoluteTrajectoryError.orientation(_poses(origin, identity), _poses(origin, rotated))
        np.testing.assert_allclose(orientation.errors, angles, atol=1e-14)
        assert np.all(AbsoluteTrajectoryError.position(_poses(origin, identity), _poses(origin, rotated)).errors == 0)


@pytest.mark.parametrize("angle", [np.pi, np.pi - 1e-9, np.pi - 1e-6, 1e-9, 1e-6])
def test_rotation_near_pi_and_near_zero_is_accurate(angle, rng):
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    base = Rotation.random(random_state=7).as_matrix()
    turned = base @ Rotation.from_rotvec(angle * axis).as_matrix()
    error = geodesic_angle(base, turned)
    assert 0.0 <= error <= np.pi
    assert error == pytest.approx(angle, abs=1e-12)


def test_against_evo_ape_without_alignment(rng):
    evo_metrics = pytest.importorskip("evo.core.metrics")
    from evo.core.trajectory import PoseTrajectory3D

    n = 500
    reference = _random_poses(rng, n)
    perturbation = Rotation.from_rotvec(rng.normal(size=(n, 3)) * 0.3).as_matrix()
    under_test = _poses(reference.position + rng.normal(size=(n, 3)) * 0.02, reference.rotation @ perturbation)

    def se3(poses):
        matrices = np.tile(np.eye(4), (n, 1, 1))
        matrices[:, :3, :3], matrices[:, :3, 3] = poses.rotation, poses.position
        return PoseTrajectory3D(poses_se3=list(matrices), timestamps=np.arange(n, dtype=float))

    for relation, ate in (
        (evo_metrics.PoseRelation.translation_part, AbsoluteTrajectoryError.position(reference, under_test)),
        (evo_metrics.PoseRelation.rotation_angle_rad, AbsoluteTrajectoryError.orientation(reference, under_test)),
    ):
        ape = evo_metrics.APE(relation)
        ape.process_data((se3(reference), se3(under_test)))
        np.testing.assert_allclose(ate.errors, ape.error, atol=1e-9)
        evo_stats = ape.get_all_statistics()
        for name in ("rmse", "mean", "median", "std", "min", "max"):
            assert ate.statistics.get(name) == pytest.approx(evo_stats[name], abs=1e-12), name


def test_nonfinite_errors_make_every_statistic_nan_and_fail_the_gate():
    stats = ErrorStatistics.of(np.array([0.0, np.nan, 0.01]))
    assert all(math.isnan(v) for v in stats.as_dict().values())
    zero = _poses(np.zeros((2, 3)), np.broadcast_to(np.eye(3), (2, 3, 3)))
    broken = _poses([[0, 0, 0], [np.nan, 0, 0]], np.broadcast_to(np.eye(3), (2, 3, 3)))
    position = AbsoluteTrajectoryError.position(zero, broken)
    orientation = AbsoluteTrajectoryError.orientation(zero, zero)
    names = ["a", "b", "c"]
    broken_actions = np.zeros((1, 2, 3))
    broken_actions[0, 1, 2] = np.inf
    result = judge(
        position,
        orientation,
        NonFinite.of(np.zeros((1, 2, 3))),
        NonFinite.of(broken_actions),
        names,
        GateConfig(0.03, 0.2),
    )
    assert not result.passed
    assert not result.check("position").passed
    assert not result.check("finite").passed
    assert result.check("orientation").passed
    assert result.check("finite").message == (
        "under test: 1 non-finite action values (NaN/Inf), the first at chunk 0 step 1 joint c"
    )


def test_gate_uses_the_chosen_statistic_and_says_by_how_much():
    reference = _poses(np.zeros((4, 3)), np.broadcast_to(np.eye(3), (4, 3, 3)))
    under_test = _poses([[0, 0, 0], [0, 0, 0], [0, 0, 0], [0.1, 0, 0]], np.broadcast_to(np.eye(3), (4, 3, 3)))
    position = AbsoluteTrajectoryError.position(reference, under_test)
    orientation = AbsoluteTrajectoryError.orientation(reference, under_test)
    finite = NonFinite(0, None)
    assert judge(position, orientation, finite, finite, [], GateConfig(0.03, 0.2, "median")).passed  # median 0
    by_rmse = judge(position, orientation, finite, finite, [], GateConfig(0.03, 0.2, "rmse"))  # rmse 0.05
    assert not by_rmse.passed
    assert "position rmse 0.05 m OVER bound 0.03 m by 0.02 m" in by_rmse.check("position").message
    with pytest.raises(ValueError, match="statistic .std. is not one of"):
        GateConfig(0.03, 0.2, "std")


def test_joint_errors_are_per_joint_maxima():
    reference = np.zeros((2, 3, 2))
    under_test = np.array([[[1, -2], [0, 0], [0, 0]], [[0, 0], [-3, 0.5], [0, 0]]], dtype=float)
    assert joint_max_abs_errors(reference, under_test, ["a", "b"]) == {"a": 3.0, "b": 2.0}


def test_quaternion_round_trip_including_half_turns(rng):
    rotations = np.concatenate(
        [Rotation.random(1000, random_state=3).as_matrix(), Rotation.from_rotvec(np.pi * np.eye(3)).as_matrix()]
    )
    back = quaternion_to_matrix(matrix_to_quaternion(rotations))
    np.testing.assert_allclose(back, rotations, atol=1e-14)


def test_unreadable_thresholds_file_is_a_one_line_input_error(tmp_path):
    from verify_ate.verify.errors import InputError

    with pytest.raises(
        InputError, match="absent.yaml: cannot read the gate thresholds \\(No such file or directory\\)"
    ):
        GateConfig.from_file(tmp_path / "absent.yaml")
    partial = tmp_path / "partial.yaml"
    partial.write_text("position_tolerance_m: 0.03\n")
    with pytest.raises(InputError, match="partial.yaml: gate thresholds lack 'orientation_tolerance_rad'"):
        GateConfig.from_file(partial)
