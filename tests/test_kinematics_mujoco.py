"""The DH model against MuJoCo loading the reference MJCF: the independent check of the chain.

The MJCF is test data in this repository (kinematics/models/koch_v1_1.xml, the public Koch
follower model with its meshes stripped), so these checks run in every clone.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import KOCH_MJCF, REPO_ROOT

from verify_ate.kinematics import dataset_forward_kinematics, forward_kinematics, load_robot
from verify_ate.kinematics.rotations import geodesic_angle, quaternion_to_matrix

N_CONFIGURATIONS = 10_000


@pytest.fixture(scope="module")
def mujoco_flange_poses():
    """gripper_assembly poses from MuJoCo at seeded random in-limit configurations (MJCF radians)."""
    mujoco = pytest.importorskip("mujoco")
    robot = load_robot("koch_v1_1")
    model = mujoco.MjModel.from_xml_path(str(KOCH_MJCF))
    data = mujoco.MjData(model)
    body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "gripper_assembly")
    joint_qpos = [
        model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)]
        for name in (
            "shoulder_pan_joint",
            "shoulder_lift_joint",
            "elbow_flex_joint",
            "wrist_flex_joint",
            "wrist_roll_joint",
        )
    ]
    rng = np.random.default_rng(0)
    q = rng.uniform(robot.lower_limits, robot.upper_limits, size=(N_CONFIGURATIONS, robot.n_joints))
    gripper = rng.uniform(model.jnt_range[-1, 0], model.jnt_range[-1, 1], size=N_CONFIGURATIONS)
    positions = np.empty((N_CONFIGURATIONS, 3))
    rotations = np.empty((N_CONFIGURATIONS, 3, 3))
    for i in range(N_CONFIGURATIONS):
        data.qpos[:] = 0
        data.qpos[joint_qpos] = q[i]
        data.qpos[model.jnt_qposadr[-1]] = gripper[i]  # the gripper must not move the flange
        mujoco.mj_kinematics(model, data)
        positions[i] = data.xpos[body]
        rotations[i] = data.xmat[body].reshape(3, 3)
    return robot, q, positions, rotations


def test_model_joint_order_matches_mjcf():
    robot = load_robot("koch_v1_1")
    import xml.etree.ElementTree as ET

    mjcf_joints = [j.get("name") for j in ET.parse(KOCH_MJCF).getroot().iter("joint")]
    assert [f"{name}_joint" for name in robot.joint_names] == mjcf_joints[: robot.n_joints]


def test_dh_flange_equals_mujoco_in_mjcf_radians(mujoco_flange_poses):
    robot, q, positions, rotations = mujoco_flange_poses
    poses = forward_kinematics(robot, q, frame="flange")
    assert np.max(np.linalg.norm(poses.position - positions, axis=-1)) < 1e-9
    assert np.max(geodesic_angle(poses.rotation, rotations)) < 1e-9


def test_dh_flange_equals_mujoco_through_dataset_joint_map(mujoco_flange_poses):
    robot, q, positions, rotations = mujoco_flange_poses
    q_dataset = np.concatenate([robot.model_to_dataset(q), np.full((len(q), 1), 35.0)], axis=-1)
    poses = dataset_forward_kinematics(robot, q_dataset, units="deg", frame="flange")
    assert np.max(np.linalg.norm(poses.position - positions, axis=-1)) < 1e-9
    assert np.max(geodesic_angle(poses.rotation, rotations)) < 1e-9


def dh_column(robot, key: str) -> np.ndarray:
    """One DH column of a DH robot's YAML, as loaded."""
    return np.array([float(joint[key]) for joint in robot.dh["joints"]])


def dh_transform(robot, key: str) -> np.ndarray:
    """The YAML's `base` or `tool` transform of a DH robot, 4x4."""
    entry = robot.dh[key]
    pose = np.eye(4)
    pose[:3, :3] = quaternion_to_matrix(np.array(entry["rotation_wxyz"]))
    pose[:3, 3] = entry["translation"]
    return pose


def test_config_numbers_are_what_the_derivation_tool_gives():
    from verify_ate.kinematics.mjcf_to_dh import derive_modified_dh, read_hinge_chain

    robot = load_robot("koch_v1_1")
    joints, flange = read_hinge_chain(KOCH_MJCF, "gripper_assembly")
    derived = derive_modified_dh(joints, flange)
    for key, column in (
        ("a", dh_column(robot, "a")),
        ("alpha", dh_column(robot, "alpha")),
        ("d", dh_column(robot, "d")),
        ("theta_offset", dh_column(robot, "theta_offset")),
    ):
        np.testing.assert_allclose([row[key] for row in derived["rows"]], column, atol=1e-15)
    np.testing.assert_allclose(derived["base"], dh_transform(robot, "base"), atol=1e-15)
    np.testing.assert_allclose(derived["tool"], dh_transform(robot, "tool"), atol=1e-11)


def test_the_documented_derivation_command_reproduces_the_config():
    """`python -m verify_ate.kinematics.mjcf_to_dh MJCF --flange gripper_assembly`, as the config header says."""
    result = subprocess.run(
        [sys.executable, "-m", "verify_ate.kinematics.mjcf_to_dh", str(KOCH_MJCF), "--flange", "gripper_assembly"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    robot = load_robot("koch_v1_1")
    assert [row["mjcf_joint"] for row in printed["joints"]] == [f"{name}_joint" for name in robot.joint_names]
    for key, column in (
        ("a", dh_column(robot, "a")),
        ("alpha", dh_column(robot, "alpha")),
        ("d", dh_column(robot, "d")),
        ("theta_offset", dh_column(robot, "theta_offset")),
    ):
        np.testing.assert_allclose([row[key] for row in printed["joints"]], column, atol=1e-15)
    for name, transform, atol in (
        ("base", dh_transform(robot, "base"), 1e-15),
        ("tool", dh_transform(robot, "tool"), 1e-11),
    ):
        np.testing.assert_allclose(printed[name]["translation"], transform[:3, 3], atol=atol)
        np.testing.assert_allclose(
            quaternion_to_matrix(np.array(printed[name]["rotation_wxyz"])), transform[:3, :3], atol=atol
        )
