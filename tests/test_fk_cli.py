"""`verify-ate fk`: joint CSV in dataset units -> pose CSV, through the real console script."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import koch_actions, run_cli

from verify_ate.kinematics import dataset_forward_kinematics, load_robot
from verify_ate.kinematics.rotations import quaternion_to_matrix

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


def test_fk_csv_round_trip(tmp_path, rng):
    actions = koch_actions(rng, n=1, horizon=30)[0]
    pd.DataFrame(actions, columns=JOINTS).to_csv(tmp_path / "joints.csv", index=False)
    result = run_cli(
        "fk", "--robot", "koch_v1_1", "--input", tmp_path / "joints.csv", "--output", tmp_path / "poses.csv"
    )
    assert result.returncode == 0, result.stderr
    poses = pd.read_csv(tmp_path / "poses.csv")
    assert list(poses.columns) == ["x", "y", "z", "qw", "qx", "qy", "qz"]
    assert len(poses) == 30
    expected = dataset_forward_kinematics(load_robot("koch_v1_1"), actions)
    np.testing.assert_allclose(poses[["x", "y", "z"]].to_numpy(), expected.position, atol=1e-8)
    rotations = quaternion_to_matrix(poses[["qw", "qx", "qy", "qz"]].to_numpy())
    np.testing.assert_allclose(rotations, expected.rotation, atol=1e-7)


def test_fk_radians_and_missing_gripper_column(tmp_path, rng):
    actions = koch_actions(rng, n=1, horizon=5)[0]
    pd.DataFrame(np.radians(actions[:, :5]), columns=JOINTS[:5]).to_csv(tmp_path / "rad.csv", index=False)
    result = run_cli("fk", "--input", tmp_path / "rad.csv", "--units", "rad", "--output", tmp_path / "poses.csv")
    assert result.returncode == 0, result.stderr
    expected = dataset_forward_kinematics(load_robot("koch_v1_1"), actions).position
    np.testing.assert_allclose(pd.read_csv(tmp_path / "poses.csv")[["x", "y", "z"]].to_numpy(), expected, atol=1e-8)


def test_fk_bad_csv_is_one_line_exit_2(tmp_path):
    pd.DataFrame({"shoulder_pan": [0.0], "elbow_flex": [1.0]}).to_csv(tmp_path / "partial.csv", index=False)
    result = run_cli("fk", "--input", tmp_path / "partial.csv", "--output", tmp_path / "out.csv")
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"verify-ate: error: {tmp_path / 'partial.csv'}: missing joint columns")
    pd.DataFrame({name: ["oops"] for name in JOINTS}).to_csv(tmp_path / "text.csv", index=False)
    result = run_cli("fk", "--input", tmp_path / "text.csv", "--output", tmp_path / "out.csv")
    assert result.returncode == 2
    assert "column 'shoulder_pan' row 2 is not a finite number" in result.stderr
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.slow
def test_fk_of_a_recorded_episode_with_its_plot(demo_dataset, tmp_path):
    """A recorded episode's end-effector path, read from a LeRobot dataset written by lerobot (the
    session's demo_dataset)."""
    from verify_ate.verify.data.observation import episode_joint_path

    dataset = demo_dataset
    result = run_cli(
        "fk",
        "--dataset",
        dataset,
        "--episode",
        "1",
        "--output",
        tmp_path / "poses.csv",
        "--plot",
        tmp_path / "path.png",
    )
    assert result.returncode == 0, result.stderr
    states = episode_joint_path(dataset, 1)
    poses = pd.read_csv(tmp_path / "poses.csv")
    assert len(poses) == len(states)
    expected = dataset_forward_kinematics(load_robot("koch_v1_1"), states).position
    np.testing.assert_allclose(poses[["x", "y", "z"]].to_numpy(), expected, atol=1e-8)
    assert (poses["z"] > 0).all()  # the demo arm never goes through the table
    assert (tmp_path / "path.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    missing = run_cli("fk", "--dataset", tmp_path / "nowhere", "--plot", tmp_path / "x.png")
    assert missing.returncode == 2
    assert "nowhere" in missing.stderr
    assert not (tmp_path / "x.png").exists()
