"""The harness end to end: real lerobot PI0Policy (the demo's tiny pi0, trained on the demo dataset), a
dataset written by lerobot, the real console script in a subprocess."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

pytestmark = pytest.mark.slow  # every test runs the model command line; most on the session's demo_cache (conftest)


def demo(cache, *args):
    return run_cli("--demo", "--cache-dir", cache, "--quiet", *args)


def test_cpu_float32_against_itself_is_exactly_zero(demo_cache, tmp_path):
    result = demo(
        demo_cache,
        "--dut",
        "cpu",
        "--dut-dtype",
        "float32",
        "--iters",
        "2",
        "--warmup",
        "1",
        "--out",
        tmp_path / "out",
        "--json",
        tmp_path / "s.json",
    )
    assert result.returncode == 0, result.stderr
    assert "tiny pi0 TRAINED on a generated Koch-like dataset" in result.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["pass"] is True
    assert summary["position"]["max"] == 0.0
    assert summary["orientation"]["max"] == 0.0
    assert all(value == 0.0 for value in summary["joints"].values())
    for side in ("ref", "dut"):
        meta = summary[side]
        assert meta["latency_ms"]["iters"] == 2
        assert meta["latency_ms"]["median_ms"] > 0
        assert meta["latency_ms"]["p90_ms"] > 0
        assert meta["versions"]["lerobot"] == "0.6.1"
        assert meta["versions"]["torch_npu"] is None
        assert len(meta["checkpoint_sha256"]) == 64
        assert len(meta["observation_sha256"]) == 64
        assert meta["demo"] is True
    for name in ("ref.npz", "dut.npz", "noise.safetensors", "summary.json", "junit.xml"):
        assert (tmp_path / "out" / name).is_file()


def test_float32_against_bfloat16_is_finite_and_not_zero(demo_cache, tmp_path):
    result = demo(
        demo_cache,
        "--dut",
        "cpu",
        "--dut-dtype",
        "bfloat16",
        "--iters",
        "0",
        "--json",
        tmp_path / "s.json",
        "--out",
        tmp_path / "out",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["finite"] is True
    assert 0 < summary["position"]["rmse"] < 1
    assert 0 < summary["orientation"]["rmse"] < np.pi
    assert summary["ref"]["dtype"] == "float32"
    assert summary["dut"]["dtype"] == "bfloat16"


def test_run_run_compare_equals_the_one_shot(demo_cache, tmp_path):
    noise = tmp_path / "noise.safetensors"
    assert run_cli("noise", "make", "--seed", "7", "--out", noise).returncode == 0
    one_shot = demo(
        demo_cache,
        "--dut",
        "cpu",
        "--dut-dtype",
        "bfloat16",
        "--noise",
        noise,
        "--iters",
        "0",
        "--json",
        tmp_path / "one.json",
        "--out",
        tmp_path / "out",
    )
    assert one_shot.returncode in (0, 1), one_shot.stderr
    for name, dtype in (("ref", "float32"), ("dut", "bfloat16")):
        side = run_cli(
            "run",
            "--demo",
            "--cache-dir",
            demo_cache,
            "--device",
            "cpu",
            "--dtype",
            dtype,
            "--noise",
            noise,
            "--iters",
            "0",
            "--quiet",
            "--save",
            tmp_path / f"{name}.npz",
        )
        assert side.returncode == 0, side.stderr
    compared = run_cli("compare", tmp_path / "ref.npz", tmp_path / "dut.npz", "--json", tmp_path / "two.json")
    assert compared.returncode == one_shot.returncode, compared.stderr
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    for key in ("position", "orientation"):
        assert one[key] == two[key]
    assert one["joints"] == two["joints"]
    assert one["ref"]["noise_sha256"] == two["ref"]["noise_sha256"] == two["dut"]["noise_sha256"]


def test_artifacts_made_with_different_noise_are_refused(demo_cache, tmp_path):
    for seed in ("0", "1"):
        assert run_cli("noise", "make", "--seed", seed, "--out", tmp_path / f"n{seed}.safetensors").returncode == 0
        side = run_cli(
            "run",
            "--demo",
            "--cache-dir",
            demo_cache,
            "--noise",
            tmp_path / f"n{seed}.safetensors",
            "--iters",
            "0",
            "--quiet",
            "--save",
            tmp_path / f"s{seed}.npz",
        )
        assert side.returncode == 0, side.stderr
    refused = run_cli("compare", tmp_path / "s0.npz", tmp_path / "s1.npz", "--out", tmp_path / "report")
    assert refused.returncode == 2
    assert "noise sha256" in refused.stderr
    assert "--force" in refused.stderr
    assert not (tmp_path / "report").exists()
    with np.load(tmp_path / "s0.npz", allow_pickle=False) as a, np.load(tmp_path / "s1.npz", allow_pickle=False) as b:
        assert not np.array_equal(a["actions"], b["actions"])


def test_npu_without_torch_npu_exits_3_naming_it_and_writes_nothing(demo_cache, tmp_path):
    result = demo(demo_cache, "--dut", "npu", "--out", tmp_path / "out", "--json", tmp_path / "s.json")
    assert result.returncode == 3, result.stderr
    assert "torch_npu" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "s.json").exists()
    single = run_cli("run", "--demo", "--cache-dir", demo_cache, "--device", "npu:0", "--save", tmp_path / "dut.npz")
    assert single.returncode == 3
    assert "torch_npu" in single.stderr
    assert not (tmp_path / "dut.npz").exists()


def test_noise_of_the_wrong_shape_is_exit_2_naming_the_file(demo_cache, tmp_path):
    noise = tmp_path / "short.safetensors"
    assert run_cli("noise", "make", "--seed", "0", "--shape", "1,10,32", "--out", noise).returncode == 0
    result = demo(demo_cache, "--dut", "cpu", "--noise", noise, "--out", tmp_path / "out")
    assert result.returncode == 2
    assert f"{noise}: noise shape [1, 10, 32] does not fit the policy, which needs [1, 50, 32]" in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_inputs_are_usage_errors(tmp_path):
    result = run_cli("--dut", "cpu")
    assert result.returncode == 2
    assert "--checkpoint and --dataset required" in result.stderr
    result = run_cli("--dut", "cpu", "--checkpoint", tmp_path / "absent", "--dataset", tmp_path)
    assert result.returncode == 2
    assert "absent: checkpoint folder not found" in result.stderr
    result = run_cli("--dut", "tpu", "--checkpoint", tmp_path, "--dataset", tmp_path)
    assert result.returncode == 2
    assert "not a device spec" in result.stderr
