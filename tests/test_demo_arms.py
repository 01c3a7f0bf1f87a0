"""The demo of each robot beyond Koch (`--demo --robot so101`, `--demo --robot aloha`): a dataset written by
lerobot's own writer in that robot's units and names, moving every arm inside its chain's limits above the
table, and the tiny pi0 trained on it, committed as verify/model/demo_policy_<robot>/, following the recorded
motion of every arm to within 2 cm of tool-centre-point distance."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from verify_ate.kinematics import arm_poses, load_robot
from verify_ate.verify.data import demo_dataset as demo_module
from verify_ate.verify.errors import InputError
from verify_ate.verify.run.inputs import DemoSource, demo_files, demo_robots, demo_source_for_robot

TRACKING_BOUND_M = 0.02  # the acceptance figure: mean TCP distance to the recorded chunks, over every arm

# robot -> (info.json robot_type, action names, cameras): what the robot's recordings look like
EXPECTED = {
    "so101": (
        "so101_follower",
        [f"{name}.pos" for name in ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")]
        + ["gripper.pos"],
        ["observation.images.up", "observation.images.side"],
    ),
    "aloha": (
        "aloha",
        [
            f"{side}_{name}"
            for side in ("left", "right")
            for name in ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")
        ],
        ["observation.images.top"],
    ),
}
ROBOTS = list(EXPECTED)


def _document(robot: str) -> dict:
    return yaml.safe_load(demo_files(robot).dataset_profile.read_text())


@pytest.fixture(scope="module")
def arm_datasets(tmp_path_factory):
    """Each robot's demo dataset, written by lerobot into one cache for this module (seconds each)."""
    cache = tmp_path_factory.mktemp("demo-arms")
    return {robot: demo_module.ensure_demo_dataset(cache, demo_files(robot).profile()) for robot in ROBOTS}


# ── which demo a robot gets ───────────────────────────────────────────────────────────────────────


def test_each_arm_has_a_demo_and_an_unknown_robot_is_refused_naming_them():
    demos = demo_robots()
    assert list(demos)[0] == "koch_v1_1"  # the default first
    assert set(ROBOTS) <= set(demos)
    with pytest.raises(InputError, match=r"robot 'ur5' has no demo .*koch_v1_1, .*so101"):
        demo_source_for_robot("ur5", "tiny")


@pytest.mark.parametrize("robot", ROBOTS)
def test_the_robot_selects_its_own_profile_recipe_and_checkpoint(robot):
    source = demo_source_for_robot(robot, "tiny")
    assert source == DemoSource(size="tiny", robot=robot)
    files = source.demo
    assert files.dataset_profile.name == f"demo_dataset_{robot}.yaml"
    assert files.committed.name == f"demo_policy_{robot}"
    assert files.profile().robot == robot
    default = DemoSource().demo
    assert (default.robot, default.dataset_profile.name, default.committed.name) == (
        "koch_v1_1",
        "demo_dataset.yaml",
        "demo_policy",
    )
    # cached apart from Koch's: another dataset folder name and key
    assert files.profile().name != default.profile().name
    assert demo_module.profile_cache_key(files.profile()) != demo_module.profile_cache_key(default.profile())
    label = files.profile().label
    assert f"generated {label}-like dataset" in source.note


@pytest.mark.parametrize("robot", ROBOTS)
def test_the_profile_matches_the_robot_model(robot):
    model = load_robot(robot)
    profile = demo_files(robot).profile()
    assert profile.units == model.dataset_units
    assert [name.removesuffix(".pos") for name in profile.joints] == list(model.dataset_joint_names)
    assert list(profile.joints) == EXPECTED[robot][1]


def test_an_envelope_outside_one_arms_limits_is_refused_naming_the_arm():
    document = _document("aloha")
    model = load_robot("aloha")
    arm = model.arms[-1]
    joint = arm.dataset_joints[1]
    index = model.dataset_joint_names.index(joint)
    key = list(document["joints"])[index]
    document["joints"][key] = {**document["joints"][key], "amplitude": 3.0}  # radians: past any shoulder limit
    with pytest.raises(InputError, match=rf"arm {arm.name} joint {joint}: .*outside the limits"):
        demo_module.load_demo_profile(document)


def test_a_motion_through_the_table_is_refused():
    document = _document("so101")
    model = load_robot("so101")
    # Search the centres of the kinematic joints for one that puts the tool centre point under the table.
    for lift in np.linspace(-90.0, 90.0, 13):
        for elbow in np.linspace(-90.0, 90.0, 13):
            q = np.zeros(len(model.dataset_joint_names))
            q[[1, 2]] = lift, elbow
            q_model = model.dataset_to_model(q)
            chain = model.arm.chain
            if np.any(q_model < chain.lower) or np.any(q_model > chain.upper):
                continue
            if arm_poses(model, q[None])[model.arm.name].position[0, 2] < -0.05:
                joints = {key: dict(spec) for key, spec in document["joints"].items()}
                for key, centre in zip(list(joints)[:5], q[:5], strict=True):
                    joints[key] = {"centre": float(centre), "amplitude": 0.0, "cycles": 1.0}
                with pytest.raises(InputError, match="under the table"):
                    demo_module.load_demo_profile({**document, "joints": joints})
                return
    pytest.fail("no in-limit pose of the SO-101 puts its tool centre point under the table")


def test_a_two_armed_scene_draws_both_tool_centre_points():
    profile = demo_files("aloha").profile()
    scene = profile.scene
    left, right = np.array([-0.2, 0.0, 0.2]), np.array([0.25, 0.1, 0.3])
    image = demo_module.draw_view("top", np.stack([left, right]), [1.0, 0.0], 48, 64, scene)
    canvas = demo_module._Canvas(48, 64, *scene.windows["top"])
    for point, green in ((left, 250), (right, 120)):
        row, col = (round(v) for v in canvas.to_pixel(point[0], point[1]))
        assert tuple(image[row, col]) == (60, green, 60)  # each arm's gripper, as open as it is


# ── the datasets, written by lerobot ──────────────────────────────────────────────────────────────


@pytest.mark.slow
@pytest.mark.parametrize("robot", ROBOTS)
def test_the_dataset_is_written_by_lerobot_in_the_robots_names_and_units(robot, arm_datasets):
    from verify_ate.verify.data.observation import episode_joint_path

    dataset = arm_datasets[robot]
    robot_type, names, cameras = EXPECTED[robot]
    info = json.loads((dataset / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert info["robot_type"] == robot_type
    for key in ("observation.state", "action"):
        assert info["features"][key] == {"dtype": "float32", "shape": [len(names)], "names": names}
    assert sorted(key for key, feature in info["features"].items() if feature["dtype"] == "video") == sorted(cameras)
    for camera in cameras:
        assert list((dataset / "videos" / camera).rglob("*.mp4"))
    model = load_robot(robot)
    profile = demo_files(robot).profile()
    for episode in range(profile.episodes):
        state = episode_joint_path(dataset, episode)
        action = episode_joint_path(dataset, episode, key="action")
        assert state.shape == (profile.frames_per_episode, len(names))
        for arm in model.arms:
            q_model = model.dataset_to_model(state, arm=arm)
            assert np.all(q_model >= arm.chain.lower), arm.name
            assert np.all(q_model <= arm.chain.upper), arm.name
        for arm, poses in arm_poses(model, state).items():
            assert poses.position[:, 2].min() > 0.0, arm  # never through the table
        lead = profile.action_lead_frames
        np.testing.assert_array_equal(action[:-lead], state[lead:])


# ── the committed trained checkpoints ─────────────────────────────────────────────────────────────


@pytest.mark.parametrize("robot", ROBOTS)
def test_the_committed_checkpoint_was_trained_on_this_demo(robot):
    """A changed profile, recipe, tiny profile or library version without a regenerated demo_policy_<robot>/
    fails here (the demo then trains a copy on first use): run scripts/train_demo_policy.py --robot ROBOT."""
    from verify_ate.verify.model.training import TRAINING_FILE, stored_identity, training_identity

    files = demo_files(robot)
    profile = files.profile()
    expected = training_identity(
        demo_module.profile_cache_key(profile), files.training_recipe(), files.tiny_profile(profile)
    )
    assert stored_identity(files.committed) == expected
    record = json.loads((files.committed / TRAINING_FILE).read_text())
    assert len(record["loss_per_step"]) == record["recipe"]["steps"]
    assert record["wall_seconds"] < 120  # the budget on one thread, as measured when it was trained
    assert record["tracking"]["mean_tcp_distance_m"] <= TRACKING_BOUND_M
    assert set(record["tracking"]["arms"]) == {arm.name for arm in load_robot(robot).arms}
    assert (files.committed / "loss_curve.png").stat().st_size > 0
    assert sum(path.stat().st_size for path in files.committed.iterdir()) <= 2_000_000


@pytest.mark.slow
@pytest.mark.parametrize("robot", ROBOTS)
def test_the_committed_checkpoint_follows_every_arms_recorded_motion(robot, arm_datasets):
    from verify_ate.verify.model.training import TRAINING_FILE, trained_checkpoint_folder
    from verify_ate.verify.run.inputs import demo_tracking_error

    files = demo_files(robot)
    profile = files.profile()
    found = trained_checkpoint_folder(
        arm_datasets[robot].parent,
        demo_module.profile_cache_key(profile),
        files.training_recipe(),
        files.tiny_profile(profile),
        files.committed,
    )
    assert found == files.committed  # the demo runs the committed one, not a copy trained on first use
    tracking = demo_tracking_error(files.committed, arm_datasets[robot], load_robot(robot))
    assert tracking["frames"] == profile.episodes * profile.frames_per_episode
    assert tracking["mean_tcp_distance_m"] <= TRACKING_BOUND_M, tracking
    for arm, figures in tracking["arms"].items():
        assert figures["mean_tcp_distance_m"] <= TRACKING_BOUND_M, arm
    recorded = json.loads((files.committed / TRAINING_FILE).read_text())["tracking"]
    assert tracking["mean_tcp_distance_m"] == pytest.approx(recorded["mean_tcp_distance_m"], abs=1e-3)


# ── the command line on each robot's demo ─────────────────────────────────────────────────────────


@pytest.mark.slow
@pytest.mark.parametrize("robot", ROBOTS)
def test_demo_robot_runs_the_whole_check_on_that_robot(robot, arm_datasets, tmp_path):
    from conftest import run_cli

    cache = arm_datasets[robot].parent.parent  # the module's cache: the dataset is found there, not rewritten
    out = tmp_path / "report"
    result = run_cli(
        "--demo", "--robot", robot, "--cache-dir", cache, "--dut", "cpu", "--dut-dtype", "bfloat16",
        "--iters", "0", "--out", out, "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    summary = json.loads((out / "summary.json").read_text())
    model = load_robot(robot)
    assert summary["robot"] == robot
    assert summary["robot_model"]["zero_convention"] == model.zero_convention
    assert summary["arms"]["names"] == [arm.name for arm in model.arms]
    assert set(summary["joints"]) == set(EXPECTED[robot][1])  # every joint of every arm, the dataset's names
    assert [check["name"] for check in summary["checks"] if check["kind"] == "gripper"] == ["gripper"]
    assert f"generated {demo_files(robot).profile().label}-like dataset" in result.stdout + result.stderr
    if len(model.arms) > 1:  # the plot's legend is checked in test_arms.py; the caption says whose paths it draws
        names = ", ".join(arm.name for arm in model.arms)
        assert f"Every arm&#39;s path: {names}." in (out / "index.html").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("robot", ROBOTS)
def test_fk_dataset_finds_the_robot_and_writes_every_arms_poses(robot, arm_datasets, tmp_path):
    import csv

    from conftest import run_cli

    from verify_ate.verify.data.observation import episode_joint_path

    result = run_cli(
        "fk", "--dataset", arm_datasets[robot], "--episode", "1", "--output", tmp_path / "poses.csv",
        "--plot", tmp_path / "path.png",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "poses.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    model = load_robot(robot)
    assert len(rows) == demo_files(robot).profile().frames_per_episode
    poses = arm_poses(model, episode_joint_path(arm_datasets[robot], 1))  # observation.state, fk's default
    for arm, expected in poses.items():
        prefix = f"{arm}_" if len(poses) > 1 else ""
        z = np.array([float(row[f"{prefix}z"]) for row in rows])
        np.testing.assert_allclose(z, expected.position[:, 2], atol=1e-6)
    assert (tmp_path / "path.png").stat().st_size > 0
