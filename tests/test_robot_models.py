"""Every robot model read from its own MJCF or URDF equals MuJoCo (and pinocchio, for a URDF) to 1e-9 m / 1e-9 rad
over 10,000 random in-limit configurations, arm by arm, through the robot config the tool loads."""

from __future__ import annotations

import numpy as np
import pytest

from verify_ate.kinematics import available_robots, forward_kinematics, load_robot
from verify_ate.kinematics.chain import Chain, chain_poses
from verify_ate.kinematics.model_files import ModelFileError, read_chain
from verify_ate.kinematics.robot import CONFIG_DIR, MODELS_DIR, RobotConfigError
from verify_ate.kinematics.rotations import geodesic_angle

mujoco = pytest.importorskip("mujoco")

N_CONFIGURATIONS = 10_000
FILE_ROBOTS = [name for name in available_robots() if load_robot(name).model_file not in ("DH rows", "")]


def random_configurations(chain: Chain, count: int, seed: int = 0) -> np.ndarray:
    low = np.where(np.isfinite(chain.lower), chain.lower, -np.pi)
    high = np.where(np.isfinite(chain.upper), chain.upper, np.pi)
    return np.random.default_rng(seed).uniform(low, high, size=(count, chain.n_joints))


def mujoco_poses(path, tool: str, joint_names, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MuJoCo's pose of body or site `tool` for each row of q (joints set by name, every other joint at 0)."""
    model = mujoco.MjModel.from_xml_path(str(path))
    data = mujoco.MjData(model)
    addresses = [model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)] for name in joint_names]
    site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, tool)
    body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, tool)
    assert site >= 0 or body >= 0, f"{path} has no site or body {tool}"
    positions, rotations = np.empty((len(q), 3)), np.empty((len(q), 3, 3))
    for i, row in enumerate(q):
        data.qpos[:] = model.qpos0
        data.qpos[addresses] = row
        mujoco.mj_kinematics(model, data)
        if site >= 0:
            positions[i], rotations[i] = data.site_xpos[site], data.site_xmat[site].reshape(3, 3)
        else:
            positions[i], rotations[i] = data.xpos[body], data.xmat[body].reshape(3, 3)
    return positions, rotations


def assert_same_poses(poses, positions: np.ndarray, rotations: np.ndarray) -> None:
    assert np.max(np.linalg.norm(np.asarray(poses.position) - positions, axis=-1)) < 1e-9
    assert np.max(geodesic_angle(np.asarray(poses.rotation), rotations)) < 1e-9


@pytest.mark.parametrize("name", FILE_ROBOTS)
def test_every_arm_equals_mujoco(name, tmp_path):
    robot = load_robot(name)
    for arm in robot.arms:
        entry = next(e for e in _arm_entries(robot) if e["name"] == arm.name)
        q = random_configurations(arm.chain, N_CONFIGURATIONS)
        model_path = MODELS_DIR / entry.get("model_file", robot.model_file)
        if model_path.suffix == ".urdf":
            model_path = _mujoco_readable_urdf(model_path, tmp_path)
        positions, rotations = mujoco_poses(model_path, entry["tcp"], arm.chain.joint_names, q)
        positions, rotations = _placed(entry, positions, rotations)
        assert_same_poses(forward_kinematics(robot, q, frame="flange", arm=arm), positions, rotations)


@pytest.mark.parametrize("name", [n for n in FILE_ROBOTS if load_robot(n).model_file.endswith(".urdf")])
def test_urdf_arms_equal_pinocchio(name):
    pinocchio = pytest.importorskip("pinocchio")
    robot = load_robot(name)
    model = pinocchio.buildModelFromUrdf(str(MODELS_DIR / robot.model_file))
    data = model.createData()
    for arm in robot.arms:
        entry = next(e for e in _arm_entries(robot) if e["name"] == arm.name)
        frame = model.getFrameId(entry["tcp"], pinocchio.FrameType.BODY)
        q = random_configurations(arm.chain, N_CONFIGURATIONS, seed=1)
        indices = [model.joints[model.getJointId(joint)].idx_q for joint in arm.chain.joint_names]
        positions, rotations = np.empty((len(q), 3)), np.empty((len(q), 3, 3))
        for i, row in enumerate(q):
            configuration = pinocchio.neutral(model)
            configuration[indices] = row
            pinocchio.framesForwardKinematics(model, data, configuration)
            placement = data.oMf[frame]
            positions[i], rotations[i] = placement.translation, placement.rotation
        positions, rotations = _placed(entry, positions, rotations)
        assert_same_poses(forward_kinematics(robot, q, frame="flange", arm=arm), positions, rotations)


def test_the_mjcf_reader_equals_mujoco_on_the_koch_reference_and_the_dh_model():
    """The Koch MJCF read as a chain, the DH rows derived from it and MuJoCo: one pose."""
    path = MODELS_DIR / "koch_v1_1.xml"
    chain = read_chain(path, "gripper_assembly")
    q = random_configurations(chain, 2000)
    positions, rotations = mujoco_poses(path, "gripper_assembly", chain.joint_names, q)
    assert_same_poses(chain_poses(chain, q, frame="flange"), positions, rotations)
    robot = load_robot("koch_v1_1")
    assert_same_poses(forward_kinematics(robot, q, frame="flange"), positions, rotations)


def test_the_readers_refuse_what_they_do_not_understand(tmp_path):
    ball = tmp_path / "ball.xml"
    ball.write_text(
        '<mujoco><worldbody><body name="a"><joint name="j" type="ball"/>'
        '<inertial pos="0 0 0" mass="1" diaginertia="1 1 1"/><site name="tip"/></body></worldbody></mujoco>'
    )
    with pytest.raises(ModelFileError, match=r"ball.xml: joint 'j' on the path is of type 'ball'"):
        read_chain(ball, "tip")
    with pytest.raises(ModelFileError, match=r"no body or site named 'nowhere'"):
        read_chain(ball, "nowhere")
    (tmp_path / "not.xml").write_text("<robot><link")
    with pytest.raises(ModelFileError, match=r"not.xml: cannot read the model file"):
        read_chain(tmp_path / "not.xml", "tip")


def test_mjcf_frames_defaults_and_euler_follow_mujoco(tmp_path):
    """Default classes, childclass, euler in degrees with a custom sequence, axisangle, off-axis hinges with a
    pivot and a ref, a slide, and a site as the tool: each as MuJoCo compiles it."""
    path = tmp_path / "frames.xml"
    path.write_text(
        """<mujoco>
  <compiler angle="degree" eulerseq="zyx"/>
  <default>
    <joint axis="0 1 0"/>
    <default class="tilted"><joint axis="1 1 0.3" range="-80 70"/></default>
  </default>
  <worldbody>
    <body name="a" pos="0.1 0.2 0.3" euler="10 20 30">
      <inertial pos="0 0 0" mass="1" diaginertia="1 1 1"/>
      <joint name="j1" range="-90 90"/>
      <body name="b" pos="0.2 0 0" axisangle="1 0 1 40" childclass="tilted">
        <inertial pos="0 0 0" mass="1" diaginertia="1 1 1"/>
        <joint name="j2" pos="0.05 0.01 0" ref="12"/>
        <frame pos="0 0.1 0" quat="0.9 0.1 0.3 0.2">
          <body name="c" xyaxes="0 1 0 -1 0 0.2">
            <inertial pos="0 0 0" mass="1" diaginertia="1 1 1"/>
            <joint name="j3" type="slide" axis="0 0 1" range="-0.1 0.1"/>
            <joint name="j4" axis="0 0 -1"/>
            <site name="tip" pos="0.03 0 0.02" zaxis="1 0 1"/>
          </body>
        </frame>
      </body>
    </body>
  </worldbody>
</mujoco>"""
    )
    chain = read_chain(path, "tip")
    assert chain.joint_names == ("j1", "j2", "j3", "j4")
    np.testing.assert_allclose(chain.lower[:2], np.radians([-90.0, -80.0]))
    q = random_configurations(chain, 500)
    model = mujoco.MjModel.from_xml_path(str(path))
    reference = np.radians(12.0)
    # MuJoCo's qpos of a hinge with ref is the angle plus ref: set qpos so that both turn the same.
    shifted = q.copy()
    shifted[:, 1] += reference
    positions, rotations = mujoco_poses(path, "tip", chain.joint_names, shifted)
    assert model.nq == 4
    assert_same_poses(chain_poses(chain, shifted, frame="flange"), positions, rotations)


def _arm_entries(robot) -> list[dict]:
    import yaml

    return yaml.safe_load(robot.source.read_text())["arms"]


def _mujoco_readable_urdf(path, folder):
    """MuJoCo reads a URDF itself, but fuses fixed links into their parents unless told not to, which would drop
    a tool frame such as gripper_frame_link: a copy with that one compiler setting added."""
    text = path.read_text()
    start = text.index(">", text.index("<robot")) + 1
    copy = folder / path.name
    copy.write_text(text[:start] + '<mujoco><compiler fusestatic="false"/></mujoco>' + text[start:])
    return copy


def _placed(entry: dict, positions: np.ndarray, rotations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference poses moved by the arm's `base` (where a two-arm robot stands each copy of one arm's model)."""
    if "base" not in entry:
        return positions, rotations
    from verify_ate.kinematics.rotations import quaternion_to_matrix

    turn = quaternion_to_matrix(np.array(entry["base"]["rotation_wxyz"]))
    return positions @ turn.T + np.array(entry["base"]["translation"]), turn @ rotations


def test_a_users_robot_reads_the_model_file_beside_its_yaml(tmp_path):
    """docs/robots.md's recipe: a YAML and its URDF in one folder of the user's own, loaded by path."""
    import shutil

    import yaml

    shutil.copy(MODELS_DIR / "so101_new_calib.urdf", tmp_path / "my_arm.urdf")
    document = yaml.safe_load((CONFIG_DIR / "so101.yaml").read_text())
    document.update(name="my_arm", model_file="my_arm.urdf", robot_types=[])
    (tmp_path / "my_arm.yaml").write_text(yaml.safe_dump(document))
    mine, committed = load_robot(tmp_path / "my_arm.yaml"), load_robot("so101")
    assert mine.model_file == "my_arm.urdf"
    q = random_configurations(committed.arm.chain, 100)
    np.testing.assert_array_equal(forward_kinematics(mine, q).position, forward_kinematics(committed, q).position)
    (tmp_path / "my_arm.urdf").unlink()
    with pytest.raises(RobotConfigError, match=r"my_arm.yaml: .*my_arm.urdf"):
        load_robot(tmp_path / "my_arm.yaml")
