"""Arms beyond the Koch: the gripper's own check, two arms, end-effector actions, units and calibration, and which
robot a dataset was recorded with. Each through the real command line and real artifacts on disk."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from conftest import koch_actions, make_artifact, robot_actions, run_cli

from verify_ate.kinematics import RobotConfigError, arm_poses, load_robot
from verify_ate.kinematics.robot import robot_for_dataset
from verify_ate.kinematics.rotations import matrix_to_quaternion
from verify_ate.kinematics.units import degrees_to_normalized, motor_ranges
from verify_ate.verify.compare.artifact import save_artifact
from verify_ate.verify.compare.comparator import compare
from verify_ate.verify.compare.gate import GateConfig
from verify_ate.verify.publish import report_arrays

KOCH_NAMES = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


def save_pair(tmp_path, reference: np.ndarray, under_test: np.ndarray, robot: str = "koch_v1_1", **meta):
    names = list(load_robot(robot).dataset_joint_names)
    paths = []
    for name, actions in (("ref", reference), ("dut", under_test)):
        artifact = make_artifact(actions, robot=robot, joint_names=names, **meta)
        paths.append(save_artifact(artifact, tmp_path / f"{name}.npz"))
    return paths


def test_an_inverted_gripper_passes_every_pose_bound_and_fails_its_own_check(tmp_path, rng):
    """A port that opens the gripper where the reference closes it moves no tool centre point."""
    reference = koch_actions(rng, n=2)
    under_test = reference.copy()
    threshold = load_robot("koch_v1_1").arm.gripper.threshold
    under_test[..., 5] = 2 * threshold - reference[..., 5]  # mirrored about the threshold: open <-> closed
    ref_path, dut_path = save_pair(tmp_path, reference, under_test)
    junit = tmp_path / "junit.xml"
    result = run_cli("compare", ref_path, dut_path, "--json", tmp_path / "s.json", "--junit", junit)
    assert result.returncode == 1, result.stdout + result.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["position"]["pass"] and summary["orientation"]["pass"]
    assert summary["position"]["max"] == 0.0
    gripper = next(check for check in summary["checks"] if check["name"] == "gripper")
    assert not gripper["pass"]
    assert "gripper FLIPPED" in gripper["message"] and "chunk 0 steps" in gripper["message"]
    assert summary["gripper"][0]["flips"] > 0
    failed = [c.get("name") for c in ET.parse(junit).getroot().iter("testcase") if c.find("failure") is not None]
    assert len(failed) == 1 and "gripper" in failed[0]
    assert "gripper FLIPPED" in result.stdout

    quiet = run_cli("compare", ref_path, dut_path, "--no-gripper-check", "--json", tmp_path / "off.json")
    assert quiet.returncode == 0
    assert "gripper" not in {c["name"] for c in json.loads((tmp_path / "off.json").read_text())["checks"]}


def test_two_arms_are_judged_on_the_worse_arm_with_every_figure_per_arm(tmp_path, rng, drawn):
    reference = robot_actions("aloha", rng, n=2)
    under_test = reference.copy()
    robot = load_robot("aloha")
    right = robot.indices(robot.arms[1])
    under_test[..., right] += 0.02  # rad: the right arm only
    ref_path, dut_path = save_pair(tmp_path, reference, under_test, robot="aloha", units="rad")
    out = tmp_path / "report"
    result = run_cli("compare", ref_path, dut_path, "--out", out, "--pos-tol", "0.001")
    assert result.returncode == 1, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    arms = summary["arms"]
    assert arms["names"] == ["left", "right"]
    assert arms["judged"] == {"position": "right", "orientation": "right", "orientation_rpy": "right"}
    assert arms["per_arm"]["left"]["position"]["max"] == 0.0
    assert arms["per_arm"]["right"]["position"]["rmse"] == pytest.approx(summary["position"]["rmse"])
    assert arms["all"]["position"]["max"] == pytest.approx(summary["position"]["max"])
    assert arms["all"]["position"]["rmse"] < summary["position"]["rmse"]  # the pooled figure hides the worse arm
    assert len(summary["joints"]) == 14
    assert summary["joints"]["left_waist"] == 0.0 and summary["joints"]["right_waist"] == pytest.approx(0.02)
    assert summary["robot_model"]["arms"] == ["left", "right"]
    path_axes = drawn[0].axes[0]
    labels = {line.get_label() for line in path_axes.get_lines()}
    for arm in ("left", "right"):
        assert any(label.startswith(f"{arm} arm: reference") for label in labels)
        assert any(label.startswith(f"{arm} arm: under test") for label in labels)


def test_the_path_plot_of_two_arms_draws_each_arms_own_positions(rng):
    robot = load_robot("aloha")
    reference = robot_actions("aloha", rng)
    artifacts = [make_artifact(reference, robot="aloha", joint_names=list(robot.dataset_joint_names), units="rad")] * 2
    result = compare(*artifacts, robot, GateConfig(0.03, 0.2))
    arrays = report_arrays(result)
    poses = arm_poses(robot, reference, "rad")
    for arm in ("left", "right"):
        np.testing.assert_array_equal(arrays.arm_positions[arm][0], poses[arm].position)
    assert not np.allclose(poses["left"].position, poses["right"].position)


@pytest.mark.parametrize("rotation", ["axis_angle", "rot6d", "quaternion"])
def test_end_effector_actions_are_compared_as_poses_without_kinematics(tmp_path, rng, rotation):
    robot = load_robot(f"ee_{rotation}")
    reference_poses = arm_poses(load_robot("koch_v1_1"), koch_actions(rng, n=2))["arm"]
    turn = np.radians(1.0)  # the device under test: 1 degree about the tool's own z, 5 mm along x
    twist = np.array([[np.cos(turn), -np.sin(turn), 0.0], [np.sin(turn), np.cos(turn), 0.0], [0.0, 0.0, 1.0]])
    sides = []
    for rotation_matrix, shift in ((reference_poses.rotation, 0.0), (reference_poses.rotation @ twist, 0.005)):
        position = reference_poses.position + np.array([shift, 0.0, 0.0])
        sides.append(np.concatenate([position, _encode(rotation, rotation_matrix), np.zeros((2, 50, 1))], axis=-1))
    ref_path, dut_path = save_pair(tmp_path, *sides, robot=robot.name, units="pose")
    result = run_cli("compare", ref_path, dut_path, "--json", tmp_path / "s.json")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["position"]["max"] == pytest.approx(0.005, abs=1e-12)
    assert summary["orientation"]["max"] == pytest.approx(turn, abs=1e-9)


def _encode(rotation: str, matrix: np.ndarray) -> np.ndarray:
    if rotation == "quaternion":
        return matrix_to_quaternion(matrix)
    if rotation == "rot6d":
        return np.concatenate([matrix[..., :, 0], matrix[..., :, 1]], axis=-1)
    quaternion = matrix_to_quaternion(matrix)
    angle = 2 * np.arctan2(np.linalg.norm(quaternion[..., 1:], axis=-1), quaternion[..., 0])
    axis = quaternion[..., 1:] / np.maximum(np.linalg.norm(quaternion[..., 1:], axis=-1, keepdims=True), 1e-300)
    return axis * angle[..., None]


CALIBRATION = {
    name: {"id": i + 1, "drive_mode": 0, "homing_offset": 0, "range_min": 10 + 10 * i, "range_max": 4090 - 20 * i}
    for i, name in enumerate(KOCH_NAMES)
}


def test_normalised_recordings_become_the_same_poses_as_degrees_through_the_calibration(tmp_path, rng):
    """lerobot >= 0.4's -100..100 range, turned into angles by the arm's calibration file, moves the tool centre
    point exactly as the same motion recorded in degrees."""
    robot = load_robot("koch_v1_1")
    degrees = koch_actions(rng, n=1)
    ranges = motor_ranges(CALIBRATION, KOCH_NAMES)
    modes = ["range_m100_100"] * 5 + ["range_0_100"]
    normalized = degrees_to_normalized(degrees, modes, ranges, apply_drive_mode=False)
    assert np.all(np.abs(normalized[..., :5]) <= 100)
    np.testing.assert_allclose(
        arm_poses(robot, normalized, "normalized", calibration=CALIBRATION)["arm"].position,
        arm_poses(robot, degrees, "deg")["arm"].position,
        atol=1e-12,
    )
    ref_path, dut_path = save_pair(tmp_path, normalized, normalized, units="normalized", robot_calibration=CALIBRATION)
    result = run_cli("compare", ref_path, dut_path, "--json", tmp_path / "s.json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((tmp_path / "s.json").read_text())["position"]["max"] == 0.0

    calibration_file = tmp_path / "koch.json"
    calibration_file.write_text(json.dumps(CALIBRATION))
    csv = tmp_path / "joints.csv"
    csv.write_text(",".join(KOCH_NAMES) + "\n" + "\n".join(",".join(f"{v:.12f}" for v in row) for row in normalized[0]))
    fk = run_cli(
        "fk", "--input", csv, "--units", "normalized", "--robot-calibration", calibration_file,
        "--output", tmp_path / "poses.csv",
    )  # fmt: skip
    assert fk.returncode == 0, fk.stdout + fk.stderr
    poses = np.loadtxt(tmp_path / "poses.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(poses[:, :3], arm_poses(robot, degrees, "deg")["arm"].position[0], atol=1e-8)

    missing = run_cli("fk", "--input", csv, "--units", "normalized", "--output", tmp_path / "p.csv")
    assert missing.returncode == 2
    assert "--robot-calibration FILE" in missing.stderr


def test_values_that_cannot_be_angles_in_the_declared_unit_are_refused_with_the_units_that_fit(tmp_path, rng):
    """Degrees read as radians put the arm through itself: exit 2, naming the file, the joint and its range, and
    the units in which the values would be angles; no output is written."""
    degrees = koch_actions(rng, n=1)[0]
    csv = tmp_path / "joints.csv"
    csv.write_text(",".join(KOCH_NAMES) + "\n" + "\n".join(",".join(f"{v:.6f}" for v in row) for row in degrees))
    result = run_cli("fk", "--input", csv, "--units", "rad", "--output", tmp_path / "p.csv")
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert f"{csv}: joint " in line and "which as rad lies outside robot koch_v1_1's limits" in line
    assert "they would fit as degrees (--robot-units deg)" in line
    assert not (tmp_path / "p.csv").exists()
    assert run_cli("fk", "--input", csv, "--output", tmp_path / "p.csv").returncode == 0  # the robot's own: degrees


@pytest.mark.parametrize(
    ("robot_type", "names", "expected"),
    [
        ("koch", [f"main_{n}" for n in KOCH_NAMES], "koch_v1_1"),
        ("koch_follower", [f"{n}.pos" for n in KOCH_NAMES], "koch_v1_1"),
        ("so101_follower", [f"{n}.pos" for n in KOCH_NAMES], "so101"),
        ("so100_follower", [f"{n}.pos" for n in KOCH_NAMES], "so100"),
        ("so101", KOCH_NAMES, "so101_old_calib"),
        ("bi_so_follower", [f"{s}_{n}.pos" for s in ("left", "right") for n in KOCH_NAMES], "bi_so101"),
        (None, list(load_robot("aloha").dataset_joint_names), "aloha"),
        (None, ["x", "y", "z", "roll", "pitch", "yaw", "gripper"], "ee_axis_angle"),
        ("libero", ["eef_x", "eef_y", "eef_z", "q0", "q1", "q2", "q3", "gripper"], "ee_quaternion"),
    ],
)
def test_a_dataset_names_its_robot(robot_type, names, expected):
    assert robot_for_dataset(robot_type, names, "DATASET").name == expected


def test_a_dataset_that_fits_several_arms_or_none_asks_for_robot():
    with pytest.raises(RobotConfigError, match=r"DATASET: no robot_type and actions .* fit several robots"):
        robot_for_dataset(None, KOCH_NAMES, "DATASET")
    with pytest.raises(RobotConfigError, match=r"DATASET: .* match no known robot .*pass --robot"):
        robot_for_dataset("unitree_g1", ["a", "b"], "DATASET")


def test_unit_of_a_koch_follower_recording_is_the_normalised_range():
    robot = load_robot("koch_v1_1")
    assert robot.units_for("koch_follower") == "normalized"
    assert robot.units_for("koch") == "deg"
    assert load_robot("so101").units_for("so101_follower") == "deg"  # lerobot 0.6.1's so_follower: use_degrees=True
