"""Property-based fuzzing of every parser the tool owns, through the command line's own entry point.

For any byte string, or any structured mutation of a valid file, the tool must answer with exit 0, 1
or 2 and at most one line on stderr, never a traceback: trajectory .npz artifacts (`compare`), noise
files (`noise show`), joint CSV (`fk --input`), robot YAML (`fk --robot`), and the sweep's
`--episodes`/`--frames`/`--seeds` expressions (the sweep's argument group, which turns them into a
plan). `verify_ate.verify.cli.main` runs in this process (the console script calls exactly it), so that 500
examples per parser fit the suite; VERIFY_ATE_FUZZ_EXAMPLES raises the count. Examples are
derandomised: every run tries the same inputs, so a failure reproduces.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from conftest import REPO_ROOT, koch_actions, make_artifact
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("VERIFY_ATE_FUZZ_EXAMPLES", "500"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
ROBOT_YAML = REPO_ROOT / "configs" / "robots" / "koch_v1_1.yaml"


def cli(*argv) -> tuple[int, str]:
    """verify_ate.verify.cli.main with stdout and stderr captured: (exit code, stderr)."""
    from verify_ate.verify.cli import main

    stderr = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        code = main([str(arg) for arg in argv])
    return code, stderr.getvalue()


def assert_one_line_answer(code: int, stderr: str, allowed=(0, 1, 2)) -> None:
    assert code in allowed, stderr
    assert "Traceback" not in stderr, stderr
    assert len(stderr.strip().splitlines()) <= 1, stderr


def mutated(data: bytes, edits: list[tuple[int, bytes]], cut: int | None) -> bytes:
    """`data` with byte ranges overwritten and, optionally, cut short: the damage of a disk or a download."""
    buffer = bytearray(data)
    for position, replacement in edits:
        if buffer:
            start = position % len(buffer)
            buffer[start : start + len(replacement)] = replacement
    return bytes(buffer[:cut] if cut is not None else buffer)


EDITS = st.lists(st.tuples(st.integers(0, 1 << 20), st.binary(min_size=1, max_size=16)), max_size=4)
CUTS = st.none() | st.integers(0, 4096)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def files():
    """A valid file of each kind, for the mutations (made once; each example writes its own copy)."""
    from verify_ate.noise import make_noise, save_noise
    from verify_ate.verify.compare.artifact import save_artifact

    folder = Path(tempfile.mkdtemp(prefix="verify-ate-fuzz-"))
    actions = koch_actions(np.random.default_rng(0))
    save_artifact(make_artifact(actions), folder / "ref.npz")
    save_noise(make_noise(0, (1, 50, 32)), folder / "noise.safetensors")
    lines = [",".join(JOINTS)] + [",".join(f"{v:.3f}" for v in row) for row in actions[0, :5]]
    (folder / "joints.csv").write_text("\n".join(lines) + "\n")
    return folder


def _scratch(files: Path, name: str, data: bytes) -> Path:
    path = Path(tempfile.mkdtemp(dir=files)) / name
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- trajectory artifacts


@FUZZ
@given(raw=st.binary(max_size=2048) | st.tuples(EDITS, CUTS))
def test_artifact_bytes(files, raw):
    data = raw if isinstance(raw, bytes) else mutated((files / "ref.npz").read_bytes(), *raw)
    broken = _scratch(files, "dut.npz", data)
    assert_one_line_answer(*cli("compare", files / "ref.npz", broken))


@FUZZ
@given(
    actions=hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64, np.int32, np.float16, np.bool_]),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, max_side=7),
        elements=None,
    ),
    meta=JSON_VALUES | st.just("valid"),
)
def test_artifact_structure(files, actions, meta):
    base = make_artifact(np.zeros((1, 50, 6))).meta
    document = json.dumps(base if meta == "valid" else meta, default=str)
    path = Path(tempfile.mkdtemp(dir=files)) / "dut.npz"
    np.savez(path, actions=actions, meta=np.array(document))
    assert_one_line_answer(*cli("compare", files / "ref.npz", path))


# ---------------------------------------------------------------- noise files


@FUZZ
@given(raw=st.binary(max_size=1024) | st.tuples(EDITS, CUTS))
def test_noise_file_bytes(files, raw):
    data = raw if isinstance(raw, bytes) else mutated((files / "noise.safetensors").read_bytes(), *raw)
    assert_one_line_answer(*cli("noise", "show", _scratch(files, "noise.safetensors", data)), allowed=(0, 2))


@FUZZ
@given(
    values=hnp.arrays(dtype=st.sampled_from([np.float32, np.float64, np.int64]), shape=hnp.array_shapes(max_dims=4)),
    metadata=st.dictionaries(st.sampled_from(["seed", "sha256", "generator", "x"]), st.text(max_size=10), max_size=4),
)
def test_noise_file_structure(files, values, metadata):
    from safetensors.numpy import save_file

    path = Path(tempfile.mkdtemp(dir=files)) / "noise.safetensors"
    save_file({"noise": values}, str(path), metadata=metadata)
    assert_one_line_answer(*cli("noise", "show", path), allowed=(0, 2))


# ---------------------------------------------------------------- joint CSV and robot YAML


CELLS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=6), st.integers().map(str), st.just("")
)


@FUZZ
@given(
    raw=st.binary(max_size=512)
    | st.tuples(
        st.lists(st.sampled_from([*JOINTS, "x", ""]), max_size=8),
        st.lists(st.lists(CELLS, max_size=8), max_size=6),
    )
)
def test_joint_csv(files, raw):
    if isinstance(raw, bytes):
        data = raw
    else:
        header, rows = raw
        data = ("\n".join([",".join(header), *(",".join(row) for row in rows)]) + "\n").encode()
    path = _scratch(files, "joints.csv", data)
    assert_one_line_answer(*cli("fk", "--input", path, "--output", path.with_name("poses.csv")), allowed=(0, 2))


def _replace_at(document, path: list, value):
    """A copy of a YAML document with the node at `path` (keys/indices, wrapped around) replaced."""
    if not path or not isinstance(document, (dict, list)) or not document:
        return value
    copy = dict(document) if isinstance(document, dict) else list(document)
    keys = list(copy) if isinstance(copy, dict) else list(range(len(copy)))
    key = keys[path[0] % len(keys)]
    copy[key] = _replace_at(copy[key], path[1:], value)
    return copy


@FUZZ
@given(
    raw=st.binary(max_size=512)
    | st.tuples(st.lists(st.integers(0, 50), min_size=1, max_size=4), JSON_VALUES | st.just("__delete__"))
)
def test_robot_yaml(files, raw):
    if isinstance(raw, bytes):
        data = raw
    else:
        path_in_document, value = raw
        document = yaml.safe_load(ROBOT_YAML.read_text())
        data = yaml.safe_dump(
            _replace_at(document, path_in_document, None if value == "__delete__" else value)
        ).encode()
    robot = _scratch(files, "robot.yaml", data)
    code, stderr = cli("fk", "--robot", robot, "--input", files / "joints.csv", "--output", robot.with_name("p.csv"))
    assert_one_line_answer(code, stderr, allowed=(0, 2))


# ---------------------------------------------------------------- sweep expressions


EXPRESSIONS = st.text(alphabet="0123456789:-, al", max_size=12) | st.text(max_size=12)


@FUZZ
@given(episodes=EXPRESSIONS, frames=EXPRESSIONS, seeds=EXPRESSIONS)
def test_sweep_expressions(episodes, frames, seeds):
    """The sweep's argument group either turns the three expressions into a plan's selection or refuses
    them with one InputError naming the flag (exit 2 through main), nothing else."""
    from verify_ate.verify.cli.args import CommandLine, SweepArgs
    from verify_ate.verify.errors import InputError

    command = CommandLine("verify-ate sweep", "", SweepArgs())
    try:
        selection, _ = command.parse([f"--episodes={episodes}", f"--frames={frames}", f"--seeds={seeds}"])[SweepArgs]
    except InputError as error:
        message = str(error)
        assert message.startswith(("--episodes", "--frames", "--seeds"))
        assert "\n" not in message
        return
    assert selection.frame_range.step >= 1
    assert all(e >= 0 for e in selection.episodes or ())
    assert selection.seeds
    assert all(seed >= 0 for seed in selection.seeds)
