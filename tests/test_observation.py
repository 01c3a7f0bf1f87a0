"""The demo dataset (written by lerobot's own writer) and observations read back through LeRobotDataset."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from verify_ate.kinematics import dataset_forward_kinematics, load_robot
from verify_ate.verify.data import demo_dataset as demo_module  # the module; `demo_dataset` is the conftest fixture
from verify_ate.verify.data.demo_dataset import (
    DEFAULT_PROFILE,
    ensure_demo_dataset,
    load_demo_profile,
    profile_cache_key,
    write_demo_dataset,
)
from verify_ate.verify.data.observation import episode_joint_path, episode_row, inspect_dataset, load_frames
from verify_ate.verify.errors import InputError

PROFILE = yaml.safe_load(DEFAULT_PROFILE.read_text())
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _small_profile(**changes) -> dict:
    profile = json.loads(json.dumps(PROFILE))
    profile.update(episodes=1, frames_per_episode=8, **changes)
    return profile


# ── the demo dataset ──────────────────────────────────────────────────────────────────────────────


@pytest.mark.slow
def test_demo_dataset_looks_like_the_koch_datasets(demo_dataset):
    info = json.loads((demo_dataset / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert (info["robot_type"], info["fps"]) == ("koch", 30)
    assert info["total_episodes"] == PROFILE["episodes"] >= 2
    assert info["total_frames"] == PROFILE["episodes"] * PROFILE["frames_per_episode"]
    names = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
    for key in ("observation.state", "action"):
        assert info["features"][key] == {"dtype": "float32", "shape": [6], "names": names}
    for camera in ("observation.images.laptop", "observation.images.phone"):
        feature = info["features"][camera]
        assert feature["dtype"] == "video"
        assert feature["shape"] == [48, 64, 3]
        assert list((demo_dataset / "videos" / camera).rglob("*.mp4"))
    assert (demo_dataset / "meta" / "stats.json").is_file()
    assert not list(demo_dataset.parent.glob(".*.partial"))


@pytest.mark.slow
def test_demo_dataset_is_cached_by_profile_and_lerobot_version(demo_dataset, demo_cache):
    info = demo_dataset / "meta" / "info.json"
    written = info.stat().st_mtime_ns
    assert ensure_demo_dataset(demo_cache) == demo_dataset
    assert info.stat().st_mtime_ns == written  # not rebuilt
    assert demo_dataset.name == f"koch_demo-{profile_cache_key(load_demo_profile())}"
    other = load_demo_profile({**PROFILE, "seed": PROFILE["seed"] + 1})
    assert profile_cache_key(other) != profile_cache_key(load_demo_profile())


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VERIFY_ATE_CACHE", str(tmp_path / "c"))
    assert demo_module.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("VERIFY_ATE_CACHE")
    assert demo_module.default_cache_dir() == Path.home() / ".cache" / "verify-ate"


@pytest.mark.slow
def test_recorded_motion_is_in_limits_above_the_table_and_smooth(demo_dataset):
    robot = load_robot("koch_v1_1")
    lead = PROFILE["action_lead_frames"]
    for episode in range(PROFILE["episodes"]):
        state = episode_joint_path(demo_dataset, episode)
        action = episode_joint_path(demo_dataset, episode, key="action")
        assert state.shape == (PROFILE["frames_per_episode"], 6)
        assert state.dtype == np.float32
        q_model = robot.dataset_to_model(state)
        assert np.all(q_model >= robot.lower_limits)
        assert np.all(q_model <= robot.upper_limits)
        assert dataset_forward_kinematics(robot, state).position[:, 2].min() > 0.0  # never through the table
        assert np.abs(np.diff(state, axis=0)).max() < 10.0  # degrees per frame at 30 fps: smooth
        np.testing.assert_array_equal(action[:-lead], state[lead:])  # the leader arm is `lead` frames ahead
    assert not np.array_equal(episode_joint_path(demo_dataset, 0), episode_joint_path(demo_dataset, 1))


def test_profile_outside_the_joint_limits_is_refused(tmp_path):
    profile = json.loads(json.dumps(PROFILE))
    profile["joints"]["shoulder_lift"] = {"centre_deg": 150.0, "amplitude_deg": 30.0, "cycles": 1.0}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    with pytest.raises(InputError, match=r"bad\.yaml: .*joint shoulder_lift.*outside the limits"):
        load_demo_profile(path)
    with pytest.raises(InputError, match="missing key 'fps'"):
        load_demo_profile({k: v for k, v in PROFILE.items() if k != "fps"})


@pytest.mark.slow
def test_interrupted_build_leaves_no_half_dataset(tmp_path, monkeypatch):
    target = tmp_path / "datasets" / "koch_demo"
    real_draw = demo_module.draw_view
    calls = []

    def draw_then_fail(*args, **kwargs):
        calls.append(1)
        if len(calls) > 10:
            # lerobot has begun writing, in the hidden staging folder only
            assert list(target.parent.glob(".koch_demo.*.partial/koch_demo/meta/info.json"))
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C in the middle of the episode
        return real_draw(*args, **kwargs)

    monkeypatch.setattr(demo_module, "draw_view", draw_then_fail)
    with pytest.raises(KeyboardInterrupt):
        write_demo_dataset(target, _small_profile())
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # the staging folder is gone too


def test_write_refuses_an_existing_folder(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(InputError, match="taken: already exists"):
        write_demo_dataset(tmp_path / "taken", _small_profile())


# ── observations ──────────────────────────────────────────────────────────────────────────────────


@pytest.mark.slow
def test_load_frames_returns_lerobot_items_and_provenance(demo_dataset):
    observations = load_frames(demo_dataset, 1, [0, 7])
    assert len(observations.frames) == 2
    first = observations.frames[0]
    for camera in ("observation.images.laptop", "observation.images.phone"):
        image = first[camera]
        assert tuple(image.shape) == (3, 48, 64)
        assert str(image.dtype) == "torch.float32"
        assert 0.0 <= float(image.min())
        assert float(image.max()) <= 1.0
    state = episode_joint_path(demo_dataset, 1)
    np.testing.assert_array_equal(observations.frames[1]["observation.state"].numpy(), state[7])
    assert first["task"] == PROFILE["task"] == observations.task
    assert observations.description == {
        "dataset": str(demo_dataset.resolve()),
        "repo_id": f"local/{demo_dataset.name}",
        "codebase_version": "v3.0",
        "robot_type": "koch",
        "fps": 30,
        "episode": 1,
        "episode_length": PROFILE["frames_per_episode"],
        "frames": [0, 7],
        "task": PROFILE["task"],
    }
    assert set(observations.stats["observation.state"]) >= {"mean", "std", "min", "max"}
    assert observations.features["observation.state"]["names"][0] == "shoulder_pan"


@pytest.mark.slow
def test_images_follow_the_arm(demo_dataset):
    frames = load_frames(demo_dataset, 0, [0, 30]).frames
    for camera in ("observation.images.laptop", "observation.images.phone"):
        difference = (frames[0][camera] - frames[1][camera]).abs().mean()
        assert float(difference) > 0.01


@pytest.mark.slow
def test_observation_hash_is_stable_and_tracks_the_frame(demo_dataset):
    first = load_frames(demo_dataset, 0, [5])
    again = load_frames(demo_dataset, 0, [5])
    assert first.sha256 == again.sha256
    assert len(first.sha256) == 64
    assert load_frames(demo_dataset, 0, [6]).sha256 != first.sha256
    assert load_frames(demo_dataset, 1, [5]).sha256 != first.sha256
    assert load_frames(demo_dataset, 0, [5, 6]).sha256 != first.sha256


@pytest.mark.slow
def test_episode_and_frame_out_of_range_say_the_bounds(demo_dataset):
    episodes, length = PROFILE["episodes"], PROFILE["frames_per_episode"]
    with pytest.raises(InputError, match=rf"episode {episodes} out of range, the dataset has {episodes} episodes"):
        load_frames(demo_dataset, episodes, [0])
    with pytest.raises(
        InputError, match=rf"frame {length} out of range, episode 0 has {length} frames \(0..{length - 1}\)"
    ):
        load_frames(demo_dataset, 0, [0, length])
    with pytest.raises(InputError, match="frame -1 out of range"):
        load_frames(demo_dataset, 0, [-1])
    with pytest.raises(InputError, match="episode -1 out of range"):
        episode_joint_path(demo_dataset, -1)
    assert int(episode_row(inspect_dataset(demo_dataset), 1)["length"]) == length


def _legacy_dataset(tmp_path: Path, version: str) -> Path:
    root = tmp_path / "koch_test"
    (root / "meta").mkdir(parents=True)
    info = {"codebase_version": version, "robot_type": "koch", "fps": 30, "total_episodes": 50, "features": {}}
    (root / "meta" / "info.json").write_text(json.dumps(info))
    return root


@pytest.mark.parametrize("version", ["v2.0", "v2.1"])
def test_v2_datasets_get_the_import_command(tmp_path, version):
    root = _legacy_dataset(tmp_path, version)
    command = f"verify-ate import dataset {root.resolve()} --out {root.resolve()}_v30"
    for read in (lambda: load_frames(root, 0, [0]), lambda: episode_joint_path(root, 0)):
        with pytest.raises(InputError) as caught:
            read()
        message = str(caught.value)
        assert message.startswith(f"{root.resolve()}: LeRobot dataset format {version}")
        assert command in message
        assert "\n" not in message
        assert "lerobot 0.3.3" not in message


def test_not_a_dataset_missing_folder_and_a_file(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match=r"plain: not a LeRobot dataset \(no meta/info.json\)"):
        load_frames(tmp_path / "plain", 0, [0])
    with pytest.raises(InputError, match="nowhere: dataset folder does not exist"):
        load_frames(tmp_path / "nowhere", 0, [0])
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InputError, match="file.txt: not a folder"):
        inspect_dataset(tmp_path / "file.txt")


@pytest.mark.slow
def test_incomplete_v30_dataset_is_refused_before_lerobot_looks_at_the_hub(demo_dataset, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "meta").mkdir()
    (broken / "meta" / "info.json").write_text((demo_dataset / "meta" / "info.json").read_text())
    with pytest.raises(InputError, match=r"broken: incomplete LeRobot v3.0 dataset, meta/tasks.parquet is missing"):
        load_frames(broken, 0, [0])
