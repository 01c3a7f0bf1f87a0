"""Sweeps under torchrun: device per rank, batch ownership, the gather, one report, one exit code.

The equality test runs the real `torchrun --nproc-per-node 2` (gloo, CPU) against a single-process
run. Both use one intra-op thread (OMP_NUM_THREADS=1, what torchrun sets for its workers anyway):
CPU kernels may sum in a different order with another thread count, and the promise is the same
bits for the same batches on the same kind of device and thread count.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, run_cli, run_process

from verify_ate.verify.run.distributed import Group, backend_for, batches_of_rank, rank_device, wait_until_released

TORCHRUN = Path(sys.executable).parent / "torchrun"
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
SWEEP = (
    "sweep",
    "--demo",
    "--quiet",
    "--iters",
    "0",
    "--dut",
    "cpu",
    "--dut-dtype",
    "bfloat16",
    "--episodes",
    "0,1",
    "--frames",
    "0:6:2",
    "--seeds",
    "0,1",
    "--batch-size",
    "4",
    "--frame-stat",
    "max",
    "--worst-frames",
    "1",
)


def test_each_rank_gets_its_own_accelerator_unless_the_spec_names_one():
    assert rank_device("cuda", 3, 4) == "cuda:3"
    assert rank_device("npu", 1, 8) == "npu:1"
    assert rank_device("npu:5", 1, 8) == "npu:5"
    assert rank_device("cpu", 2, 4) == "cpu"
    assert rank_device("cuda", 3, 1) == "cuda"  # single process: as written
    assert backend_for(["cpu", "cpu"]) == ("gloo", "cpu")
    assert backend_for(["cpu", "cuda"]) == ("cpu:gloo,cuda:nccl", "cuda")
    assert backend_for(["cpu", "npu:0"]) == ("cpu:gloo,npu:hccl", "npu")


def test_batches_are_dealt_round_robin_and_gathered_back_in_unit_order():
    assert [batches_of_rank(7, r, 3) for r in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]
    # single process: one owner list; unit i lands in row i whatever the packing order
    rows = {u: np.full((2, 3), u, dtype=np.float32) for u in (2, 0, 1)}
    gathered = Group().gather_rows(rows, [[2, 0, 1]], (2, 3), np.float32)
    assert gathered.shape == (3, 2, 3)
    assert gathered[:, 0, 0].tolist() == [0.0, 1.0, 2.0]


def test_the_last_barrier_returns_only_once_nothing_else_holds_its_tensor():
    """A rank that exits while gloo's worker still holds the barrier's tensor dies with SIGABRT at exit
    (seen under torchrun: a run that passed, exit -6). Here autograd holds the C++ reference that gloo's
    finished work holds there, and drops it from another thread 0.2 s later."""
    import threading
    import time

    import torch

    token = torch.zeros(1, requires_grad=True)
    graph = [token * token]  # saves `token` for backward: a second reference, held in C++
    assert token._use_count() > 1
    threading.Timer(0.2, graph.clear).start()
    started = time.monotonic()
    wait_until_released(token)
    assert token._use_count() == 1
    assert time.monotonic() - started >= 0.2


def _torchrun(args, env, nproc=2):
    """`--standalone`: a free port for the rendezvous, not 29500, which another job may hold."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", **env}
    return subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc-per-node", str(nproc), "-m", "verify_ate.verify.cli", *map(str, args)],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_two_ranks_under_torchrun_equal_one_process_bit_for_bit(demo_cache, tmp_path):
    single = run_process(
        *SWEEP, "--cache-dir", demo_cache, "--out", tmp_path / "one", "--json", tmp_path / "one.json", env=ONE_THREAD
    )
    assert single.returncode == 0, single.stderr
    ranked = _torchrun(
        [*SWEEP, "--cache-dir", demo_cache, "--out", tmp_path / "two", "--json", tmp_path / "two.json"], ONE_THREAD
    )
    assert ranked.returncode == 0, ranked.stderr[-3000:]
    assert ranked.stdout.count("PASS") == 1  # only rank 0 prints the verdict
    one, two = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("one", "two"))
    for key in ("pass", "position", "orientation", "joints", "n_steps", "checks", "finite", "shape"):
        assert one[key] == two[key], key
    assert [w["unit"] for w in one["sweep"]["worst"]] == [w["unit"] for w in two["sweep"]["worst"]]
    assert one["sweep"]["world_size"] == 1
    assert two["sweep"]["world_size"] == 2
    assert two["ref"]["ranks"] == ["cpu", "cpu"]
    assert len(two["sweep"]["timing"]["ref"]["per_rank_predict_seconds"]) == 2
    assert one["ref"]["observation_sha256"] == two["ref"]["observation_sha256"]
    for side in ("ref", "dut"):
        with np.load(tmp_path / "one" / f"{side}.npz") as a, np.load(tmp_path / "two" / f"{side}.npz") as b:
            assert a["actions"].tobytes() == b["actions"].tobytes()
    assert (tmp_path / "two" / "frames.csv").read_text() == (tmp_path / "one" / "frames.csv").read_text()
    assert (tmp_path / "two" / "index.html").is_file()
    assert not list((tmp_path / "two").glob(".*partial"))


@pytest.mark.slow
def test_a_diffusion_policy_sweep_under_torchrun_equals_one_process_bit_for_bit(demo_dataset, tmp_path):
    """The policy whose every denoising step draws noise: each frame's draws come from its own generator, so a
    frame gives the same bytes on whichever rank, in whichever batch, it runs (a seeded tiny Diffusion Policy)."""
    from verify_ate.verify.data.observation import load_frames
    from verify_ate.verify.model.policies.tiny import build_tiny_policy_checkpoint

    stats = load_frames(demo_dataset, 0, [0]).stats
    checkpoint = build_tiny_policy_checkpoint("diffusion", tmp_path / "diffusion", stats)
    sweep = ["sweep", "--checkpoint", checkpoint, "--dataset", demo_dataset, *SWEEP[2:]]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # in this process, one thread as each rank has (OMP_NUM_THREADS=1)
    try:
        single = run_cli(*sweep, "--out", tmp_path / "one")
    finally:
        torch.set_num_threads(threads)
    assert single.returncode == 0, single.stderr
    ranked = _torchrun([*sweep, "--out", tmp_path / "two"], ONE_THREAD)
    assert ranked.returncode == 0, ranked.stderr[-3000:]
    for side in ("ref", "dut"):
        with np.load(tmp_path / "one" / f"{side}.npz") as a, np.load(tmp_path / "two" / f"{side}.npz") as b:
            assert a["actions"].tobytes() == b["actions"].tobytes()
            assert json.loads(str(b["meta"]))["policy"] == "diffusion"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_a_failure_on_one_rank_is_the_same_exit_code_on_every_rank(demo_cache, tmp_path):
    """Ranks started as torchrun starts them (its environment contract), so each rank's own exit
    code can be read: torchrun itself stops the other ranks when the first one exits."""
    port = _free_port()
    processes = []
    for rank in range(2):
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            **ONE_THREAD,
        }
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "verify_ate.verify.cli",
                    "sweep",
                    "--demo",
                    "--cache-dir",
                    str(demo_cache),
                    "--quiet",
                    "--episodes",
                    "0,4",
                    "--out",
                    str(tmp_path / "out"),
                ],
                cwd=REPO_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [2, 2], outputs
    assert "episode 4 out of range" in outputs[0][1]
    assert "rank 0 of 2 failed" in outputs[1][1]
    assert "episode 4 out of range" in outputs[1][1]
    assert not (tmp_path / "out").exists()
