"""Forward kinematics behaviour beyond the MuJoCo check: batching, torch, the joint map, configs."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from verify_ate.kinematics import RobotConfigError, dataset_forward_kinematics, forward_kinematics, load_robot
from verify_ate.kinematics.robot import CONFIG_DIR


@pytest.fixture(scope="module")
def robot():
    return load_robot("koch_v1_1")


def test_any_leading_batch_shape_gives_the_same_poses(robot, rng):
    q = rng.uniform(robot.lower_limits, robot.upper_limits, size=(4, 3, 7, robot.n_joints))
    batched = forward_kinematics(robot, q)
    flat = forward_kinematics(robot, q.reshape(-1, robot.n_joints))
    assert batched.position.shape == (4, 3, 7, 3)
    assert batched.rotation.shape == (4, 3, 7, 3, 3)
    np.testing.assert_array_equal(batched.position.reshape(-1, 3), flat.position)
    single = forward_kinematics(robot, q[1, 2, 3])
    np.testing.assert_allclose(single.position, batched.position[1, 2, 3], atol=1e-15)


def test_rotations_are_orthonormal(robot, rng):
    poses = forward_kinematics(robot, rng.uniform(robot.lower_limits, robot.upper_limits, size=(1000, robot.n_joints)))
    identity = np.einsum("nji,njk->nik", poses.rotation, poses.rotation)
    np.testing.assert_allclose(identity, np.broadcast_to(np.eye(3), identity.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(poses.rotation), 1.0, atol=1e-12)


def test_torch_matches_numpy_in_float64(robot, rng):
    torch = pytest.importorskip("torch")
    q = rng.uniform(robot.lower_limits, robot.upper_limits, size=(64, 50, robot.n_joints))
    numpy_poses = forward_kinematics(robot, q)
    torch_poses = forward_kinematics(robot, torch.from_numpy(q))
    assert torch_poses.position.dtype == torch.float64
    np.testing.assert_allclose(torch_poses.position.numpy(), numpy_poses.position, atol=1e-14)
    np.testing.assert_allclose(torch_poses.rotation.numpy(), numpy_poses.rotation, atol=1e-14)


def test_dataset_zero_is_the_straight_horizontal_arm(robot):
    """KOCH.md: dataset zero is 'a straight horizontal position'; the flange reaches far forward at shoulder height."""
    flange = dataset_forward_kinematics(robot, np.zeros(6), frame="flange").position
    shoulder_height = robot.arm.chain.base[2, 3]
    assert flange[1] > 0.25  # upper arm + forearm + wrist, stretched toward +y
    assert abs(flange[2] - shoulder_height) < 0.02
    assert abs(flange[0]) < 0.01


def test_dataset_rotated_position_lifts_the_upper_arm_to_vertical(robot):
    """Dataset +90 on shoulder_lift and elbow_flex is the MJCF zero L pose: elbow above the shoulder."""
    q = robot.dataset_to_model(np.array([0, 90, 90, 0, 0, 0.0]))
    np.testing.assert_allclose(q, 0.0, atol=1e-15)
    flange = forward_kinematics(robot, q, frame="flange").position
    assert flange[2] > 0.15
    assert flange[1] > 0.15


def test_gripper_never_moves_the_tcp(robot):
    a = dataset_forward_kinematics(robot, np.array([10, 20, 30, 40, 50, 0.0]))
    b = dataset_forward_kinematics(robot, np.array([10, 20, 30, 40, 50, 60.0]))
    np.testing.assert_array_equal(a.position, b.position)


def test_tcp_offset_moves_along_the_flange_axes(robot, tmp_path, rng):
    document = yaml.safe_load((CONFIG_DIR / "koch_v1_1.yaml").read_text())
    document["tcp_offset"] = [0.0, 0.0, 0.05]
    path = tmp_path / "koch_with_fingers.yaml"
    path.write_text(yaml.safe_dump(document))
    with_tcp = load_robot(path)
    q = rng.uniform(robot.lower_limits, robot.upper_limits, size=(10, robot.n_joints))
    flange = forward_kinematics(with_tcp, q, frame="flange")
    tcp = forward_kinematics(with_tcp, q, frame="tcp")
    np.testing.assert_allclose(tcp.position - flange.position, 0.05 * flange.rotation[..., :, 2], atol=1e-15)


def test_unknown_robot_names_the_known_ones():
    with pytest.raises(RobotConfigError, match="unknown robot 'ur5'.*koch_v1_1"):
        load_robot("ur5")


def test_broken_robot_config_is_a_config_error(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\ndh_convention: modified\njoints: [{name: a}]\n")
    with pytest.raises(RobotConfigError, match="broken.yaml: invalid robot config"):
        load_robot(path)


def test_wrong_joint_count_is_refused(robot):
    with pytest.raises(ValueError, match="expected 5 joint values"):
        forward_kinematics(robot, np.zeros((3, 4)))
