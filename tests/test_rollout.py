"""Closed loop (`verify-ate rollout`): paired lock-step rollouts in the demo world with the trained tiny pi0, the
paired statistics against SciPy's, the two-machine form equal to the one-host form, and the environment
fingerprint refusal."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import scipy.stats
from conftest import run_cli

from verify_ate.noise import derived_noise, make_noise
from verify_ate.verify.compare.closed_loop import (
    ClosedLoopGate,
    Divergence,
    PairedOutcomes,
    closed_loop_checks,
    mcnemar_exact,
    wilson_interval,
)
from verify_ate.verify.compare.rollout_artifact import load_rollout, save_rollout
from verify_ate.verify.run.rollout import chunk_noise

EPISODES = 3


# ---------------------------------------------------------------- statistics, against SciPy


@pytest.mark.parametrize("successes,trials", [(0, 10), (3, 10), (37, 40), (40, 40), (1, 1), (12, 50)])
def test_wilson_interval_is_scipys(successes, trials):
    expected = scipy.stats.binomtest(successes, trials).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(successes, trials)
    assert low == pytest.approx(expected.low, abs=1e-12)
    assert high == pytest.approx(expected.high, abs=1e-12)


@pytest.mark.parametrize("b,c", [(0, 1), (1, 0), (3, 0), (2, 7), (10, 10), (0, 12), (25, 5)])
def test_mcnemar_exact_is_scipys_binomial_test_on_the_discordant_pairs(b, c):
    assert mcnemar_exact(b, c) == pytest.approx(scipy.stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-12)
    assert mcnemar_exact(0, 0) == 1.0


def test_paired_outcomes_table():
    reference = np.array([1, 1, 1, 0, 0, 1, 0, 1], dtype=bool)
    under_test = np.array([1, 0, 1, 0, 1, 0, 0, 1], dtype=bool)
    outcomes = PairedOutcomes.of(reference, under_test)
    assert (outcomes.both, outcomes.reference_only, outcomes.under_test_only, outcomes.neither) == (3, 2, 1, 2)
    assert outcomes.disagreement == pytest.approx(3 / 8)
    table = outcomes.as_dict()
    assert table["reference_success_rate"] == pytest.approx(5 / 8)
    assert table["mcnemar_p_value"] == pytest.approx(scipy.stats.binomtest(2, 3, 0.5).pvalue)


def test_divergence_time_statistics_and_a_non_finite_step():
    distance = np.array([[0.0, 0.01, 0.05, 0.02], [0.0, 0.0, 0.0, 0.001], [0.0, np.nan, 0.0, 0.0]])
    divergence = Divergence(distance, None, 0.03, "m")
    assert divergence.time_to_divergence() == [2, None, 1]  # NaN counts as diverged
    np.testing.assert_allclose(divergence.per_episode("final"), [0.02, 0.001, 0.0])
    assert math.isnan(divergence.per_episode("max")[2])
    gate = ClosedLoopGate(max_divergence=0.04, divergence_statistic="max")
    outcomes = PairedOutcomes.of(np.ones(3, bool), np.ones(3, bool))
    checks = {check["name"]: check for check in closed_loop_checks(divergence, outcomes, gate, finite=True)}
    assert not checks["divergence"]["pass"]  # a NaN episode never passes
    with pytest.raises(ValueError, match="divergence statistic"):
        ClosedLoopGate(divergence_statistic="p50")


def test_chunk_noise_first_chunk_is_the_file_later_ones_derived_and_the_same_everywhere():
    noise = make_noise(0, (1, 50, 32))
    assert chunk_noise(noise, 7, 0) is noise
    first, again = chunk_noise(noise, 7, 1), chunk_noise(noise, 7, 1)
    np.testing.assert_array_equal(first.values, again.values)
    assert first.values.dtype == np.float32 and first.shape == noise.shape
    assert not np.array_equal(first.values, chunk_noise(noise, 7, 2).values)
    assert not np.array_equal(first.values, chunk_noise(noise, 8, 1).values)
    assert not np.array_equal(first.values, derived_noise(make_noise(1, (1, 50, 32)), 7, 1).values)
    assert abs(float(first.values.std()) - 1.0) < 0.05


# ---------------------------------------------------------------- the demo world


def test_demo_world_replays_a_recorded_episode_to_success_and_draws_as_the_dataset_does():
    from verify_ate.verify.data.demo_dataset import draw_view, episode_joint_motion, load_demo_profile
    from verify_ate.verify.envs.demo_world import DemoWorld, DemoWorldConfig

    profile = load_demo_profile()
    world = DemoWorld(profile, DemoWorldConfig(initial_spread=0.0, goal_tolerance_m=0.03))
    state, action = episode_joint_motion(profile, 1)
    first = world.reset(1)
    np.testing.assert_allclose(first.state, state[0], atol=1e-4)  # through the limits' clip and back
    key, view = next(iter(profile.cameras.items()))
    assert first.image.shape == (profile.height, profile.width, 3)
    # The state's own drawing, exactly as the dataset writer draws a frame.
    from verify_ate.kinematics import arm_poses

    tcp = np.asarray(next(iter(arm_poses(world.robot, first.state[None].astype(np.float64)).values())).position)[0]
    opening = float(np.clip(first.state[-1] / profile.gripper_open, 0.0, 1.0))
    np.testing.assert_array_equal(
        first.image, draw_view(view, tcp, opening, profile.height, profile.width, profile.scene)
    )
    np.testing.assert_allclose(first.frame[key], first.image.transpose(2, 0, 1) / 255.0, atol=1e-7)
    result = first
    for step in range(world.max_steps):
        # The recorded state of the next frame: the world reaches a target within one step.
        result = world.step(state[step + 1])
    assert result.done and result.success
    world.reset(1)
    for _ in range(world.max_steps):
        result = world.step(state[0])  # standing still: the waypoint is out of reach
    assert result.done and not result.success and -result.reward > 0.1


# ---------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def one_host(demo_cache, tmp_path_factory):
    """Both sides on this host in the demo world: the reference fp32, the device under test bf16."""
    out = tmp_path_factory.mktemp("rollout") / "report"
    result = run_cli("rollout", "--demo", "--cache-dir", demo_cache, "--episodes", EPISODES, "--out", out, "--quiet")
    return result, out


def test_one_host_rollout_writes_the_report_and_passes_bf16(one_host):
    result, out = one_host
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("PASS  closed loop in demo: cpu float32 vs cpu bfloat16")
    for name in (
        "index.html",
        "summary.json",
        "junit.xml",
        "rollout_ref.npz",
        "rollout_dut.npz",
        "rollout_paths.png",
        "rollout_divergence.png",
        "rollout_frames.png",
    ):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "rollout" and summary["episodes"] == EPISODES and summary["seeds"] == [0, 1, 2]
    assert summary["steps"] == 59 and summary["n_action_steps"] == 10
    assert len(summary["curve"]["median"]) == 60 and summary["curve"]["median"][0] == 0.0  # same start on both
    assert summary["divergence"]["final"]["max"] < 0.03
    assert set(summary["outcomes"]) >= {"mcnemar_p_value", "reference_wilson_95", "both_succeeded"}
    assert summary["ref"]["environment"] == summary["dut"]["environment"]
    assert summary["ref"]["environment"]["robot"] == "koch_v1_1"
    reference = load_rollout(out / "rollout_ref.npz")
    assert reference.states.shape == (EPISODES, 60, 6) and reference.actions.shape == (EPISODES, 59, 6)
    assert reference.images.shape[:2] == (EPISODES, 60)
    # The recorded tool poses are the robot model's forward kinematics of the recorded joints.
    from verify_ate.kinematics import arm_poses, load_robot

    expected = arm_poses(load_robot("koch_v1_1"), reference.states)["arm"].matrix()
    assert reference.tool_poses.shape == (EPISODES, 60, 1, 4, 4)
    np.testing.assert_array_equal(reference.tool_poses[:, :, 0], expected)
    environment = summary["ref"]["environment"]
    assert environment["tokenizer_sha256"] and environment["processors_sha256"]
    page = (out / "index.html").read_text()
    assert 'id="outcomes"' in page and "McNemar" in page


def test_an_injected_fault_diverges_and_fails_the_closed_loop_gate(demo_cache, tmp_path):
    result = run_cli(
        "rollout", "--demo", "--cache-dir", demo_cache, "--episodes", 2, "--dut", "cpu", "--dut-dtype", "float32",
        "--inject", "rope-interleaved", "--max-divergence", "0.03", "--json", tmp_path / "s.json", "--junit",
        tmp_path / "j.xml", "--quiet",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    failed = [check["name"] for check in summary["checks"] if not check["pass"]]
    assert failed == ["divergence"]
    assert summary["divergence"]["diverged_episodes"] == 2
    assert all(row["time_to_divergence"] is not None for row in summary["per_episode"])
    assert summary["dut"]["faults"] == ["rope-interleaved"]
    assert 'failures="1"' in (tmp_path / "j.xml").read_text()


def test_two_machines_give_the_one_host_figures_and_a_changed_environment_is_refused(one_host, demo_cache, tmp_path):
    _, out = one_host
    sides = {"ref": ("--device", "cpu", "--dtype", "float32"), "dut": ("--device", "cpu", "--dtype", "bfloat16")}
    for name, flags in sides.items():
        saved = run_cli(
            "rollout", "run", "--demo", "--cache-dir", demo_cache, "--episodes", EPISODES, *flags, "--save",
            tmp_path / f"{name}.npz", "--quiet",
        )  # fmt: skip
        assert saved.returncode == 0, saved.stderr
    for name in sides:  # lock step changes nothing: each side's episodes depend on its own policy and the seeds
        alone, paired = load_rollout(tmp_path / f"{name}.npz"), load_rollout(out / f"rollout_{name}.npz")
        np.testing.assert_array_equal(alone.states, paired.states)
        np.testing.assert_array_equal(alone.actions, paired.actions)
    compared = run_cli("rollout", "compare", tmp_path / "ref.npz", tmp_path / "dut.npz", "--json", tmp_path / "c.json")
    assert compared.returncode == 0, compared.stderr
    one_host_summary = json.loads((out / "summary.json").read_text())
    two_machine_summary = json.loads((tmp_path / "c.json").read_text())
    assert two_machine_summary["divergence"] == one_host_summary["divergence"]
    assert two_machine_summary["outcomes"] == one_host_summary["outcomes"]

    # Another renderer on the device under test's machine: refused, then compared under --force and said so.
    changed = load_rollout(tmp_path / "dut.npz")
    changed.meta["environment"]["numpy"] = "0.0-other"
    save_rollout(changed, tmp_path / "dut_other.npz")
    refused = run_cli("rollout", "compare", tmp_path / "ref.npz", tmp_path / "dut_other.npz")
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "environment differs" in refused.stderr and "numpy" in refused.stderr
    forced = run_cli("rollout", "compare", tmp_path / "ref.npz", tmp_path / "dut_other.npz", "--force")
    assert forced.returncode == 0 and "FORCED: environment (numpy" in forced.stdout


def test_bad_rollout_inputs_are_one_line_exit_2(demo_cache, tmp_path):
    not_rollout = tmp_path / "x.npz"
    np.savez(not_rollout, actions=np.zeros((1, 50, 6)))
    result = run_cli("rollout", "compare", not_rollout, not_rollout)
    assert result.returncode == 2 and str(not_rollout) in result.stderr and result.stderr.count("\n") == 1
    result = run_cli("rollout", "--demo", "--cache-dir", demo_cache, "--env", "nowhere")
    assert result.returncode == 2 and "--env" in result.stderr
    result = run_cli("rollout", "--demo", "--cache-dir", demo_cache, "--max-disagreement", "1.5")
    assert result.returncode == 2 and "--max-disagreement" in result.stderr
    result = run_cli("rollout", "--demo", "--cache-dir", demo_cache, "--env", "pusht", "--robot", "so101")
    assert result.returncode == 2 and "--env pusht brings its own robot model" in result.stderr


@pytest.mark.slow
def test_episodes_over_two_torchrun_ranks_equal_one_process_bit_for_bit(demo_cache, tmp_path):
    """Episode i on rank i mod 2, gathered onto rank 0: the same bytes as one process (one intra-op thread in
    both, as torchrun sets for its workers)."""
    import subprocess
    import sys
    from pathlib import Path

    from conftest import REPO_ROOT, run_process

    one_thread = {"OMP_NUM_THREADS": "1"}
    rollout = ["rollout", "--demo", "--cache-dir", str(demo_cache), "--episodes", "3", "--max-steps", "20"]
    single = run_process(*rollout, "--out", tmp_path / "one", env=one_thread)
    assert single.returncode == 0, single.stderr
    torchrun = Path(sys.executable).parent / "torchrun"
    ranked = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "verify_ate.verify.cli", *rollout, "--out",
         str(tmp_path / "two")],
        cwd=REPO_ROOT, env={**os.environ, **one_thread}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert ranked.returncode == 0, ranked.stderr[-3000:]
    assert ranked.stdout.count("PASS") == 1  # only rank 0 prints the verdict
    one, two = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("one", "two"))
    assert two["ref"]["ranks"] == 2 and two["ref"]["timings"]["episodes"] == 3 and two["steps"] == 20
    for side in ("ref", "dut"):
        alone = load_rollout(tmp_path / "one" / f"rollout_{side}.npz")
        ranks = load_rollout(tmp_path / "two" / f"rollout_{side}.npz")
        for name in ("states", "actions", "images", "success", "rewards"):
            assert getattr(alone, name).tobytes() == getattr(ranks, name).tobytes(), (side, name)
    assert two["divergence"] == one["divergence"] and two["outcomes"] == one["outcomes"]


# ---------------------------------------------------------------- a physics environment through lerobot.envs


@pytest.fixture(scope="module")
def pusht_inputs(tmp_path_factory):
    """PushT as lerobot builds it (lerobot.envs, gym-pusht): a LeRobot dataset of two short episodes recorded from
    it with seeded actions, written by lerobot's own writer, and a tiny seeded Diffusion Policy for its 96x96
    camera and 2-D state, with that dataset's statistics."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from verify_ate.verify.data.observation import load_frames
    from verify_ate.verify.envs.factory import make_environment
    from verify_ate.verify.model.policies.tiny import build_tiny_policy_checkpoint, load_policy_profile

    folder = tmp_path_factory.mktemp("pusht")
    features = {
        "observation.image": {"dtype": "video", "shape": (96, 96, 3), "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (2,), "names": ["x", "y"]},
        "action": {"dtype": "float32", "shape": (2,), "names": ["x", "y"]},
    }
    dataset = LeRobotDataset.create(
        repo_id="local/pusht_recorded", fps=10, features=features, root=folder / "pusht_recorded", use_videos=True,
        video_backend="pyav",
    )  # fmt: skip
    world = make_environment("pusht")()
    rng = np.random.default_rng(0)
    for episode in range(2):
        step = world.reset(100 + episode)
        for _ in range(12):
            action = rng.uniform(80.0, 430.0, size=2).astype(np.float32)
            dataset.add_frame(
                {
                    "observation.image": step.image,
                    "observation.state": step.frame["observation.state"],
                    "action": action,
                    "task": step.frame["task"],
                }
            )
            step = world.step(action)
        dataset.save_episode(parallel_encoding=False)
    dataset.finalize()
    world.close()
    stats = load_frames(folder / "pusht_recorded", 0, [0]).stats
    profile = load_policy_profile("diffusion")
    profile["features"] = {"cameras": {"observation.image": [3, 96, 96]}, "state_dim": 2, "action_dim": 2}
    checkpoint = build_tiny_policy_checkpoint("diffusion", folder / "diffusion", stats, profile=profile)
    return checkpoint, folder / "pusht_recorded"


def test_pusht_through_lerobots_environment_layer_end_to_end(pusht_inputs, tmp_path):
    checkpoint, dataset = pusht_inputs
    common = ["rollout", "--env", "pusht", "--checkpoint", checkpoint, "--dataset", dataset, "--episodes", 2,
              "--max-steps", 24, "--n-action-steps", 8, "--dut", "cpu", "--quiet"]  # fmt: skip
    result = run_cli(*common, "--dut-dtype", "float32", "--out", tmp_path / "same")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "same" / "summary.json").read_text())
    assert summary["environment"] == "pusht" and summary["divergence"]["unit"] == "px"
    assert summary["divergence"]["final"]["max"] == 0.0  # the same device and precision: the same bytes
    environment = summary["ref"]["environment"]
    assert environment["gym_id"] == "gym_pusht/PushT-v0" and environment["robot"] is None
    assert {"gym-pusht", "pymunk", "pygame", "lerobot"} <= set(environment["packages"])
    reference = load_rollout(tmp_path / "same" / "rollout_ref.npz")
    assert reference.states.shape == (2, 25, 2) and reference.images.shape == (2, 25, 96, 96, 3)
    assert reference.tool_poses.shape == (2, 25, 0, 4, 4)  # no robot model: the divergence is the pusher's (px)
    assert summary["ref"]["policy"] == "diffusion"
    # The pusher moved: the policy's actions drove lerobot's environment.
    assert float(np.linalg.norm(reference.states[:, -1] - reference.states[:, 0], axis=-1).min()) > 1.0

    bf16 = run_cli(*common, "--dut-dtype", "bfloat16", "--json", tmp_path / "bf16.json")
    assert bf16.returncode == 0, bf16.stderr
    assert json.loads((tmp_path / "bf16.json").read_text())["divergence"]["final"]["max"] > 0.0


def test_aloha_through_lerobots_environment_layer_measures_both_arms_tool_points(tmp_path):
    """gym-aloha's insertion task as lerobot builds it (MuJoCo rendering headless on the CPU), driven by a tiny
    seeded ACT for its 14 joints and 480x640 camera: the divergence is between both arms' tool centre points through
    the ALOHA robot model, and a side against itself does not diverge."""
    from verify_ate.kinematics import arm_poses, load_robot
    from verify_ate.verify.compare.closed_loop import ClosedLoopGate, compare_rollouts
    from verify_ate.verify.envs.factory import make_environment
    from verify_ate.verify.model.policies.tiny import build_tiny_policy_checkpoint, load_policy_profile
    from verify_ate.verify.run.rollout import RolloutPlan, rollouts
    from verify_ate.verify.run.sides import SideConfig

    width = 14
    stats = {
        key: {"mean": np.zeros(width), "std": np.ones(width), "min": -np.ones(width), "max": np.ones(width)}
        for key in ("observation.state", "action")
    }
    stats["observation.images.top"] = {
        name: np.full((3, 1, 1), value) for name, value in (("mean", 0.5), ("std", 0.25), ("min", 0.0), ("max", 1.0))
    }
    profile = load_policy_profile("act")
    profile["features"] = {
        "cameras": {"observation.images.top": [3, 480, 640]},
        "state_dim": width,
        "action_dim": width,
    }
    checkpoint = build_tiny_policy_checkpoint("act", tmp_path / "act_aloha", stats, profile=profile)
    make_env = make_environment("aloha")
    plan = RolloutPlan("aloha", episodes=1, seed=0, n_action_steps=2, max_steps=4)
    sides = (SideConfig("cpu", iters=0), SideConfig("cpu", iters=0))
    reference, under_test = rollouts(sides, checkpoint, stats, make_env, plan, None, "0" * 64)
    assert reference.meta["environment"]["gym_id"] == "gym_aloha/AlohaInsertion-v0"
    assert reference.meta["environment"]["robot"] == "aloha" and reference.meta["environment"]["MUJOCO_GL"] == "egl"
    assert reference.states.shape == (1, 5, width) and reference.images.shape == (1, 5, 480, 640, 3)
    assert reference.tool_poses.shape == (1, 5, 2, 4, 4)
    expected = arm_poses(load_robot("aloha"), reference.states)
    np.testing.assert_array_equal(reference.tool_poses[:, :, 1], expected["right"].matrix())
    assert float(np.abs(reference.states[0, -1] - reference.states[0, 0]).max()) > 1e-3  # the policy moved the arms
    comparison = compare_rollouts(reference, under_test, ClosedLoopGate(max_divergence=0.0))
    assert comparison.divergence.unit == "m" and comparison.passed
    assert comparison.summary["divergence"]["final"]["max"] == 0.0
