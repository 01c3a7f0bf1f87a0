"""Shared test helpers: paths, the command line (in this process, or as a real process), artifact factories."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_DATA = Path(__file__).resolve().parent / "data"
KOCH_MJCF = REPO_ROOT / "kinematics" / "models" / "koch_v1_1.xml"  # the Koch follower MJCF, meshes stripped
CONSOLE_SCRIPT = Path(sys.executable).parent / "verify-ate"
# MUJOCO_GL: MuJoCo renders headless on the CPU (ALOHA's camera in tests/test_rollout.py), whoever imports it first.
TEST_ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "MUJOCO_GL": "egl"}
os.environ.update(TEST_ENVIRONMENT)  # before anything imports matplotlib or the hub client


def run_cli(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    """The command line through its console entry point (`verify_ate.verify.cli:main`, what the installed
    `verify-ate` script calls), in this process: stdout and stderr captured, argparse's exits turned into
    return codes. What only a real process shows (signals, the script itself, torchrun) uses `run_process`."""
    from verify_ate.verify.cli import main

    argv = [str(arg) for arg in args]
    stdout, stderr = io.StringIO(), io.StringIO()
    with _environment(env), contextlib.chdir(cwd or REPO_ROOT):
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = main(argv)
            except SystemExit as exit_:  # argparse's usage errors and -h
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    return subprocess.CompletedProcess(["verify-ate", *argv], code, stdout.getvalue(), stderr.getvalue())


@contextlib.contextmanager
def _environment(env):
    before = {key: os.environ.get(key) for key in (env or {})}
    os.environ.update({key: str(value) for key, value in (env or {}).items()})
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_side(checkpoint: Path, dataset: Path, out: Path, *extra, env=None) -> subprocess.CompletedProcess:
    """`verify-ate run` of one side from a checkpoint and dataset folder, untimed, saved at `out`."""
    return run_cli(
        "run",
        "--checkpoint",
        checkpoint,
        "--dataset",
        dataset,
        "--iters",
        "0",
        "--quiet",
        "--save",
        out,
        *extra,
        env=env,
    )


def as_at_a_terminal() -> None:
    """For a child process (Popen preexec_fn): Ctrl-C's default action, as a command typed at a terminal has.
    A shell running a job in the background (a CI wrapper's `&`, nohup) starts it with SIGINT ignored, which
    its children inherit and which Python then keeps; the interruption tests send SIGINT on purpose."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_process(*args, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    """The installed `verify-ate` console script in a real process, as a user runs it."""
    environment = {**os.environ, **TEST_ENVIRONMENT, **(env or {})}
    command = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "verify_ate.verify.cli"]
    return subprocess.run(
        [*command, *map(str, args)],
        cwd=cwd or REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def koch_actions(rng: np.random.Generator, n: int = 1, horizon: int = 50) -> np.ndarray:
    """Smooth, in-limit Koch action chunks in dataset degrees, [n, horizon, 6]."""
    from verify_ate.kinematics import load_robot

    robot = load_robot("koch_v1_1")
    lower, upper = robot.lower_limits, robot.upper_limits
    centre, span = (lower + upper) / 2, (upper - lower) / 2
    t = np.linspace(0, 1, horizon)[None, :, None]
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 5))
    q_model = centre + 0.5 * span * np.sin(2 * np.pi * t + phase)
    gripper = 20 + 10 * np.sin(2 * np.pi * t[..., 0] + phase[..., 0, :1])
    return np.concatenate([robot.model_to_dataset(q_model), gripper[..., None]], axis=-1)


def robot_actions(name: str, rng: np.random.Generator, n: int = 1, horizon: int = 50) -> np.ndarray:
    """Smooth, in-limit action chunks of any robot with joint chains, in its dataset units, [n, horizon, J]; each
    gripper swings across its open/closed threshold."""
    from verify_ate.kinematics import load_robot

    robot = load_robot(name)
    actions = np.zeros((n, horizon, len(robot.dataset_joint_names)))
    t = np.linspace(0, 1, horizon)[None, :, None]
    for arm in robot.arms:
        lower, upper = arm.chain.lower, arm.chain.upper
        centre, span = (lower + upper) / 2, (upper - lower) / 2
        phase = rng.uniform(0, 2 * np.pi, size=(n, 1, arm.n_joints))
        q_model = centre + 0.5 * span * np.sin(2 * np.pi * t + phase)
        actions[..., robot.indices(arm)] = robot.model_to_dataset(q_model, arm=arm)
        if arm.gripper is not None:
            swing = 3 * (arm.gripper.margin or 1.0)
            column = robot.dataset_joint_names.index(arm.gripper.joint)
            actions[..., column] = arm.gripper.threshold + swing * np.sin(2 * np.pi * t[..., 0] + phase[..., 0, :1])
    return actions


def make_artifact(actions: np.ndarray, **meta_overrides):
    from verify_ate.verify.compare.artifact import SCHEMA, TrajectoryArtifact

    meta = {
        "schema": SCHEMA,
        "robot": "koch_v1_1",
        "joint_names": ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"],
        "units": "deg",
        "device": "cpu",
        "dtype": "float32",
        "noise_sha256": "a" * 64,
        "observation_sha256": "b" * 64,
        "checkpoint_sha256": "c" * 64,
        "versions": {"python": sys.version.split()[0]},
    }
    meta.update(meta_overrides)
    return TrajectoryArtifact(np.asarray(actions), meta)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory):
    """One demo cache for the whole session, filled by a first real `verify-ate run --demo`: the demo
    dataset (written by lerobot) and, only where the committed trained tiny pi0 does not match this
    environment, that pi0 trained into the cache. Read-only for tests: one that corrupts a dataset or
    checkpoint copies it into its own tmp_path first (the committed checkpoint is a folder of the repo)."""
    cache = tmp_path_factory.mktemp("verify-ate-cache")
    out = tmp_path_factory.mktemp("warm")
    result = run_cli(
        "run", "--demo", "--cache-dir", cache, "--device", "cpu", "--iters", "0", "--save", out / "warm.npz", "--quiet"
    )
    assert result.returncode == 0, result.stderr
    return cache


def tiny_checkpoint(demo_cache: Path) -> Path:
    """The tiny pi0 checkpoint folder the demo runs with this cache: the committed trained one
    (verify/model/demo_policy/) while it matches, else the one trained into the cache on first use."""
    from verify_ate.verify.data.demo_dataset import load_demo_profile, profile_cache_key
    from verify_ate.verify.model.training import trained_checkpoint_folder

    return trained_checkpoint_folder(demo_cache / "checkpoints", profile_cache_key(load_demo_profile()))


@pytest.fixture(scope="session")
def demo_dataset(demo_cache):
    """The demo dataset folder inside the session's demo cache."""
    from verify_ate.verify.data.demo_dataset import ensure_demo_dataset

    return ensure_demo_dataset(demo_cache)


@pytest.fixture(scope="session")
def mid_checkpoint(tmp_path_factory, demo_dataset):
    """~290M parameters (vocabulary 98304, Gemmas 1024 and 512 wide), seeded, saved by lerobot: big enough
    that the model, not the activations and the interpreter's own allocations (~50 MiB), is what a side
    adds to its memory, and that loading it takes long enough to be interrupted."""
    import torch

    from verify_ate.verify.data.observation import load_frames
    from verify_ate.verify.model.seeded import SeededCheckpoint, save_seeded_checkpoint
    from verify_ate.verify.model.tiny import load_tiny_profile

    profile = load_tiny_profile()
    profile["vlm"].update(width=1024, mlp_dim=4096, head_dim=128)
    profile["action_expert"].update(width=512, mlp_dim=2048, head_dim=128)
    profile["vocab_size"] = 98304
    stats = load_frames(demo_dataset, 0, [0]).stats
    target = tmp_path_factory.mktemp("mid") / "mid_pi0"
    return save_seeded_checkpoint(SeededCheckpoint(profile, 0, stats), target, torch.device("cpu"))


@pytest.fixture
def drawn(monkeypatch):
    """Every figure the plots save, kept for its artists (what was drawn), the PNG written as usual."""
    from verify_ate.reports import plots

    figures = []
    save = plots.save_figure

    def keep(figure, out_png, tight=True):
        figures.append(figure)
        return save(figure, out_png, tight)

    monkeypatch.setattr(plots, "save_figure", keep)
    return figures
