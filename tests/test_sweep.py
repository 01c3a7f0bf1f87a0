"""`verify-ate sweep`: planning, per-frame statistics and the gate on arrays; then the real command
(tiny lerobot PI0Policy, a dataset written by lerobot) in a subprocess, with its files checked
against an independent recomputation from the saved artifacts."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import run_cli

from verify_ate.kinematics import dataset_forward_kinematics, load_robot
from verify_ate.verify.compare.gate import GateConfig
from verify_ate.verify.compare.metrics import ErrorStatistics, orientation_errors, position_errors, statistic
from verify_ate.verify.errors import InputError
from verify_ate.verify.publish import write_rows
from verify_ate.verify.run.plan import FrameRange, SweepPlan, SweepUnit, parse_index_list, plan_sweep
from verify_ate.verify.run.sweep import ROW_COLUMNS, frame_gate_checks, frame_table

DEMO_FRAMES = 60  # configs/profiles/demo_dataset.yaml frames_per_episode
# The sweep of the `swept` fixture: 2 episodes x 3 frames x 2 seeds, batches of 4, fp32 vs bf16 on the CPU.
SWEPT = (
    "--dut", "cpu", "--dut-dtype", "bfloat16", "--episodes", "0-1", "--frames", "55:100:2", "--seeds", "0,1",
    "--batch-size", "4", "--frame-stat", "max",
)  # fmt: skip
# demo_cache / demo_dataset: the session's demo dataset and tiny checkpoint (conftest).


# ---------------------------------------------------------------- planning


def test_index_lists_and_ranges_parse_as_written():
    assert parse_index_list("0,3,5-9") == [0, 3, 5, 6, 7, 8, 9]
    assert parse_index_list("2, 2,1") == [2, 1]
    for bad in ("", "1,,2", "a", "5-3", "-1"):
        with pytest.raises(InputError) as caught:
            parse_index_list(bad, "episodes")
        # Planning quotes the value it refuses; the command line adds the flag's name.
        assert repr(bad) in str(caught.value)
        assert "--" not in str(caught.value)
    assert FrameRange.parse("0:50:5") == FrameRange(0, 50, 5)
    assert FrameRange.parse("10:") == FrameRange(10, None, 1)
    for bad in ("5", "5:2", "0:10:0", "x:3", "1:2:3:4"):
        with pytest.raises(InputError) as caught:
            FrameRange.parse(bad)
        assert repr(bad) in str(caught.value)
        assert "--" not in str(caught.value)


@pytest.mark.slow
def test_frames_are_clipped_to_each_episode_and_the_plan_says_so(demo_dataset):
    plan = plan_sweep(demo_dataset, [0, 1], FrameRange.parse("55:100:2"), [0, 1], batch_size=4)
    assert plan.frames_per_episode == {0: [55, 57, 59], 1: [55, 57, 59]}
    assert len(plan.notes) == 2
    assert all("clipped" in note and str(DEMO_FRAMES) in note for note in plan.notes)
    # Unit order: episode, frame, seed; batches are consecutive units.
    assert [(u.episode, u.frame, u.seed) for u in plan.units[:3]] == [(0, 55, 0), (0, 55, 1), (0, 57, 0)]
    assert [len(b) for b in plan.batches] == [4, 4, 4]
    assert plan.description()["n_units"] == 12
    with pytest.raises(InputError, match="episode 5 out of range"):
        plan_sweep(demo_dataset, [5], FrameRange(), [0], 8)
    with pytest.raises(InputError, match="selects no frame"):
        plan_sweep(demo_dataset, [0], FrameRange.parse("70:80"), [0], 8)
    whole = plan_sweep(demo_dataset, None, FrameRange(), None, 8)
    assert whole.episodes == (0, 1)
    assert whole.n_frames == 2 * DEMO_FRAMES
    assert whole.units[0].seed is None


# ---------------------------------------------------------------- per-frame statistics and gate


def _plan(n_units: int) -> SweepPlan:
    """Units (episode i // 2, frame i % 2, seed 0), for the array-level tests (no dataset is read)."""
    units = tuple(SweepUnit(i, i // 2, i % 2, 0) for i in range(n_units))
    return SweepPlan(Path("/nonexistent"), units, 4, (0,), FrameRange(), (0,), {0: [0, 1]})


def test_per_frame_statistic_is_the_comparators_statistic_per_frame(rng):
    errors = rng.random((5, 50)) * 1e-3
    errors[3, 7] = np.nan
    for name in ("rmse", "mean", "median", "std", "min", "max", "p95"):
        values = statistic(errors, name, axis=1)
        for row in range(5):
            expected = ErrorStatistics.of(errors[row]).get(name)
            assert (math.isnan(values[row]) and math.isnan(expected)) or values[row] == expected


def test_per_frame_gate_fails_on_one_bad_frame_that_the_pooled_rmse_hides():
    config = GateConfig(0.03, 0.2, "rmse")
    position = np.full((4, 50), 0.001)
    position[2, 10] = 0.05  # one step of one frame over the bound
    orientation = np.full((4, 50), 0.01)
    finite = np.ones(4, dtype=bool)
    pooled_rmse = ErrorStatistics.of(position).rmse
    assert pooled_rmse < 0.03  # the pooled gate passes
    table = frame_table(_plan(4), position, orientation, finite, config, "max")
    assert table.passed.tolist() == [True, True, False, True]
    assert table.worst(1) == [2]
    position_check, orientation_check = frame_gate_checks(_plan(4), table, config)
    assert not position_check.passed
    assert position_check.value == 0.05
    assert position_check.statistic == "max"
    assert "episode 1 frame 0" in position_check.message
    assert "1 of 4 chunks over" in position_check.message
    assert orientation_check.passed
    # Without a frame statistic the pass column uses the pooled statistic per frame (rmse here).
    assert frame_table(_plan(4), position, orientation, finite, config, None).passed.all()


def test_non_finite_frames_fail_and_rank_worst():
    config = GateConfig(0.03, 0.2, "rmse")
    position = np.full((3, 50), 0.001)
    position[1, 0] = np.nan
    finite = np.array([True, False, True])
    table = frame_table(_plan(3), position, np.zeros((3, 50)), finite, config, "max")
    assert table.passed.tolist() == [True, False, True]
    assert table.worst(1) == [1]
    position_check, _ = frame_gate_checks(_plan(3), table, config)
    assert not position_check.passed
    assert "non-finite" in position_check.message


def test_rows_round_trip_through_csv_and_parquet(tmp_path):
    config = GateConfig(0.03, 0.2, "rmse")
    position = np.linspace(0, 0.002, 200).reshape(4, 50)
    table = frame_table(_plan(4), position, position * 10, np.ones(4, bool), config, None)
    write_rows(table, tmp_path / "f.csv", tmp_path / "f.parquet")
    with open(tmp_path / "f.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == ROW_COLUMNS
    assert len(rows) == 4
    assert float(rows[3]["position_max"]) == table.position_max[3]  # repr round-trips float64 exactly
    frame = pq.read_table(tmp_path / "f.parquet").to_pandas()
    assert list(frame.columns) == list(ROW_COLUMNS)
    np.testing.assert_array_equal(frame["orientation_rmse"].to_numpy(), table.orientation_rmse)
    assert not list(tmp_path.glob(".*partial"))


# ---------------------------------------------------------------- the command


def sweep(cache, *args):
    return run_cli("sweep", "--demo", "--cache-dir", cache, "--quiet", "--iters", "0", *args)


@pytest.fixture(scope="module")
def swept(demo_cache, tmp_path_factory):
    """2 episodes x 3 frames x 2 seeds, batches of 4, fp32 vs bf16 on the CPU, with a report."""
    out = tmp_path_factory.mktemp("sweep")
    result = sweep(
        demo_cache,
        *SWEPT,
        "--out",
        out / "report",
        "--json",
        out / "s.json",
    )
    return result, out


@pytest.mark.slow
def test_sweep_writes_rows_report_and_pooled_statistics(swept):
    result, out = swept
    assert result.returncode == 0, result.stderr
    assert "clipped to its 60 frames" in result.stderr  # the clipping is said, not silent
    assert "PASS" in result.stdout
    assert "per-frame position max" in result.stdout
    summary = json.loads((out / "s.json").read_text())
    assert summary["n_steps"] == 12 * 50
    assert summary["shape"] == [12, 50, 6]
    sweep_info = summary["sweep"]
    assert sweep_info["n_units"] == 12
    assert sweep_info["n_batches"] == 3
    assert sweep_info["frame_stat"] == "max"
    assert sweep_info["frames_per_episode"] == {"0": 3, "1": 3}
    assert sweep_info["seeds"] == [0, 1]
    assert {c["name"] for c in summary["checks"]} >= {
        "position",
        "orientation",
        "finite",
        "per-frame position",
        "per-frame orientation",
    }
    report = out / "report"
    for name in (
        "index.html",
        "summary.json",
        "junit.xml",
        "frames.csv",
        "frames.parquet",
        "ref.npz",
        "dut.npz",
        "error_distribution.png",
        "frame_statistic_distribution.png",
        "worst_1_errors.png",
        "worst_1_joints.png",
    ):
        assert (report / name).is_file(), name
    page = (report / "index.html").read_text()
    assert 'id="sweep"' in page
    assert "error_distribution.png" in page
    assert "worst_3_joints.png" in page
    junit = (report / "junit.xml").read_text()
    assert "per-frame position" in junit


@pytest.mark.slow
def test_sweep_files_agree_with_an_independent_recomputation(swept):
    """Pooled statistics equal `compare` on the saved artifacts; each row equals FK + ATE of its chunk."""
    result, out = swept
    assert result.returncode == 0, result.stderr
    report = out / "report"
    compared = run_cli("compare", report / "ref.npz", report / "dut.npz", "--json", out / "compare.json")
    assert compared.returncode == 0, compared.stderr
    one, two = (json.loads(p.read_text()) for p in (out / "s.json", out / "compare.json"))
    for key in ("position", "orientation", "joints", "n_steps"):
        assert one[key] == two[key]
    robot = load_robot("koch_v1_1")
    with np.load(report / "ref.npz", allow_pickle=False) as ref, np.load(report / "dut.npz", allow_pickle=False) as dut:
        ref_poses = dataset_forward_kinematics(robot, ref["actions"], "deg")
        dut_poses = dataset_forward_kinematics(robot, dut["actions"], "deg")
    position = position_errors(ref_poses, dut_poses)
    orientation = orientation_errors(ref_poses, dut_poses)
    rows = pq.read_table(report / "frames.parquet").to_pylist()
    assert [(r["episode"], r["frame"], r["seed"]) for r in rows[:4]] == [(0, 55, 0), (0, 55, 1), (0, 57, 0), (0, 57, 1)]
    for i, row in enumerate(rows):
        assert row["position_rmse"] == ErrorStatistics.of(position[i]).rmse
        assert row["position_max"] == ErrorStatistics.of(position[i]).max
        assert row["orientation_max"] == ErrorStatistics.of(orientation[i]).max
        assert row["pass"] == (row["position_max"] <= 0.03 and row["orientation_max"] <= 0.2)
    # Two seeds of one frame are different draws: their chunks differ.
    assert rows[0]["position_rmse"] != rows[1]["position_rmse"]


@pytest.mark.slow
def test_per_frame_gate_failure_exits_1_and_traces_the_worst_frame(demo_cache, swept, tmp_path):
    """Bounds between the pooled rmse and the worst frame's max: pooled passes, the per-frame gate fails."""
    _, out = swept
    earlier = json.loads((out / "s.json").read_text())
    worst_position = max(r["position_max"] for r in earlier["sweep"]["worst"])
    pos_tol = (earlier["position"]["rmse"] + worst_position) / 2
    result = sweep(
        demo_cache,
        *SWEPT,
        "--pos-tol",
        f"{pos_tol:.9g}",
        "--trace-on-fail",
        "--trace-tol",
        "1e-3",
        "--json",
        tmp_path / "s.json",
        "--out",
        tmp_path / "report",
    )
    assert result.returncode == 1, result.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    checks = {c["name"]: c["pass"] for c in summary["checks"]}
    assert checks["position"] is True
    assert checks["per-frame position"] is False
    trace = summary["trace"]
    assert trace["unit"]["why"] == "worst frame of the sweep"
    assert trace["reproduced"] == {"ref": True, "dut": True}
    # fp32 vs bf16: the vision tower stays fp32 in lerobot's pi0, the first bf16 module is the first VLM layer.
    assert trace["first_divergent"]["label"] == "VLM layer 0"
    assert (tmp_path / "report" / "trace.json").is_file()
    assert 'id="trace"' in (tmp_path / "report" / "index.html").read_text()


@pytest.mark.slow
def test_fixed_noise_file_sweep_and_batch_size_one(demo_cache, tmp_path):
    noise = tmp_path / "noise.safetensors"
    assert run_cli("noise", "make", "--seed", "3", "--out", noise).returncode == 0
    result = sweep(
        demo_cache,
        "--dut",
        "cpu",
        "--dut-dtype",
        "float32",
        "--episodes",
        "1",
        "--frames",
        "0:4:2",
        "--noise",
        noise,
        "--batch-size",
        "1",
        "--json",
        tmp_path / "s.json",
        "--out",
        tmp_path / "out",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["sweep"]["n_batches"] == 2
    assert summary["sweep"]["seeds"] is None
    assert summary["position"]["max"] == 0.0  # the same device and precision, the same batch: bit-identical
    assert summary["ref"]["noise"]["seed"] == 3
    assert summary["ref"]["noise_sha256"] == summary["dut"]["noise_sha256"]


@pytest.mark.slow
def test_bad_sweep_input_is_exit_2_and_a_missing_device_exit_3(demo_cache, tmp_path):
    for args, needle in (
        (("--frames", "5:2"), "--frames"),
        (("--episodes", "9"), "out of range"),
        (("--seeds", "0", "--noise", tmp_path / "n.safetensors"), "exclude each other"),
        (("--batch-size", "0"), "--batch-size"),
    ):
        result = sweep(demo_cache, *args, "--out", tmp_path / "out")
        assert result.returncode == 2, (args, result.stderr)
        assert needle in result.stderr
        assert "Traceback" not in result.stderr
    missing = sweep(demo_cache, "--dut", "npu", "--out", tmp_path / "out")
    assert missing.returncode == 3
    assert "torch_npu" in missing.stderr
    assert not (tmp_path / "out").exists()
