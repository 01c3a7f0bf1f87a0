"""Interrupted as a user or a CI runner interrupts: SIGINT and SIGTERM sent to the real process while it
loads the model, runs it, and writes the report. Exit 130/143, one line, and no partial file anywhere:
the report folder appears whole or not at all, an existing one is replaced only by a complete one.
Also two runs writing one folder at once, and an --out on a read-only or a full filesystem.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONSOLE_SCRIPT, REPO_ROOT, as_at_a_terminal, koch_actions, make_artifact, run_cli

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


def start(*args) -> subprocess.Popen:
    command = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "verify_ate.verify.cli"]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    return subprocess.Popen(
        [*command, *map(str, args)],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_at_a_terminal,
    )


def interrupt_at(process: subprocess.Popen, marker: str, signum: int) -> tuple[int, list[str]]:
    """Send `signum` as soon as a progress line containing `marker` appears on stderr."""
    lines = []
    for line in process.stderr:
        lines.append(line.rstrip("\n"))
        if marker in line:
            process.send_signal(signum)
            break
    else:
        pytest.fail(f"the run ended before {marker!r}: {lines}")
    lines += [line.rstrip("\n") for line in process.stderr]
    return process.wait(timeout=300), lines


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders of an interrupted write (hidden .*.partial / .*.old)."""
    return sorted(
        path.name for path in folder.iterdir() if path.name.startswith(".") and path.name.endswith(("partial", "old"))
    )


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("stage", ["loading", "inference"])
def test_interrupted_while_the_model_runs_writes_nothing(mid_checkpoint, demo_dataset, tmp_path, stage, signum):
    out = tmp_path / "runs"
    marker = {"loading": "loading pi0 on cpu float32", "inference": "timing 500 calls"}[stage]
    process = start(
        "--checkpoint",
        mid_checkpoint,
        "--dataset",
        demo_dataset,
        "--dut",
        "cpu",
        "--dut-dtype",
        "bfloat16",
        "--iters",
        "500",
        "--out",
        out / "report",
        "--json",
        out / "s.json",
        "--junit",
        out / "j.xml",
    )
    code, lines = interrupt_at(process, marker, signum)
    assert code == EXIT_CODES[signum], lines
    assert lines[-1].startswith("verify-ate: ")
    assert "interrupted" in lines[-1] or "terminated" in lines[-1]
    assert not any("Traceback" in line for line in lines)
    assert not out.exists() or list(out.iterdir()) == []


def report_sweep(demo_cache) -> tuple:
    """A sweep whose report draws 20 worst frames (seconds of writing): the signal lands while it writes."""
    return (
        "sweep",
        "--demo",
        "--cache-dir",
        demo_cache,
        "--dut",
        "cpu",
        "--dut-dtype",
        "bfloat16",
        "--iters",
        "0",
        "--episodes",
        "0",
        "--frames",
        "0:60:3",
        "--batch-size",
        "20",
        "--worst-frames",
        "20",
    )


@pytest.fixture(scope="module")
def previous_report(demo_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("previous") / "report"
    first = run_cli(*report_sweep(demo_cache), "--out", out, "--quiet")
    assert first.returncode == 0, first.stderr
    return out


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_while_writing_the_report_keeps_the_previous_report_whole(
    demo_cache, previous_report, tmp_path, signum
):
    out = tmp_path / "report"
    shutil.copytree(previous_report, out)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    process = start(*report_sweep(demo_cache), "--out", out, "--json", tmp_path / "s.json")
    code, lines = interrupt_at(process, "writing the report", signum)
    assert code == EXIT_CODES[signum], lines
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before  # the old report, whole
    assert leftovers(tmp_path) == []
    assert not (tmp_path / "s.json").exists()
    if signum == signal.SIGINT:  # and the next run into the same folder works
        again = run_cli(*report_sweep(demo_cache), "--out", out, "--quiet")
        assert again.returncode == 0, again.stderr
        assert {path.name for path in out.iterdir()} == set(before)
        assert leftovers(tmp_path) == []


@pytest.fixture
def two_comparisons(tmp_path, rng):
    from verify_ate.verify.compare.artifact import save_artifact

    actions = koch_actions(rng)
    reference = save_artifact(make_artifact(actions), tmp_path / "ref.npz")
    near = save_artifact(make_artifact(actions + 0.01), tmp_path / "near.npz")
    far = save_artifact(make_artifact(actions + 1.0), tmp_path / "far.npz")
    return reference, near, far


@pytest.mark.slow  # real processes
def test_runs_writing_one_folder_at_once_leave_one_complete_report(two_comparisons, tmp_path):
    reference, near, far = two_comparisons
    out = tmp_path / "shared"
    for _ in range(3):
        processes = [start("compare", reference, dut, "--out", out) for dut in (near, far, near, far)]
        codes = [process.wait(timeout=300) for process in processes]
        assert set(codes) <= {0, 1}, [process.stderr.read() for process in processes]
        summary = json.loads((out / "summary.json").read_text())
        rmse = summary["position"]["rmse"]
        # Every file of the folder comes from the same run as summary.json: no mix of two writers.
        assert f"{rmse:.6g}" in (out / "summary.md").read_text()
        assert ("<failure" in (out / "junit.xml").read_text()) == (not summary["pass"])
        assert (out / "index.html").is_file()
        assert leftovers(tmp_path) == []


def _mount(target: Path, options: str) -> bool:
    target.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
    return result.returncode == 0


@pytest.mark.parametrize("kind", ["read-only", "full"])
def test_an_out_on_a_filesystem_that_cannot_take_it_is_exit_2(two_comparisons, tmp_path, kind):
    reference, near, _ = two_comparisons
    mount = tmp_path / "mnt"
    if not _mount(mount, "ro,size=1m" if kind == "read-only" else "size=24k"):
        pytest.skip(f"cannot mount a small {kind} tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        result = run_cli("compare", reference, near, "--out", mount / "report", "--json", mount / "s.json")
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert str(mount) in lines[0], lines
        assert "Traceback" not in result.stderr, lines
        assert list(mount.iterdir()) == []  # nothing left behind, not even a temporary file
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_debug_shows_the_traceback_that_the_one_line_hides(tmp_path):
    plain = run_cli("compare", tmp_path / "absent.npz", tmp_path / "absent.npz")
    assert plain.returncode == 2
    assert plain.stderr.count("\n") == 1
    assert "Traceback" not in plain.stderr
    for debug in (("--debug",), ()):
        env = {} if debug else {"VERIFY_ATE_DEBUG": "1"}
        shown = run_cli("compare", tmp_path / "absent.npz", tmp_path / "absent.npz", *debug, env=env)
        assert shown.returncode == 2
        assert "Traceback" in shown.stderr
        assert shown.stderr.strip().splitlines()[-1] == plain.stderr.strip()


def test_an_interrupt_a_library_turned_into_an_error_is_found_behind_it():
    """transformers' lazy imports re-raise what interrupted them as ImportError; the broad error handlers around
    library calls (a tokenizer, a config, a processor pipeline) re-raise the interrupt found behind it, so a
    Ctrl-C or SIGTERM during loading still exits 130 or 143, not 2."""
    from verify_ate.verify.errors import Terminated, interrupt_behind

    try:
        try:
            raise Terminated()
        except KeyboardInterrupt as interrupt:
            raise ImportError("Failed to import transformers.models.auto") from interrupt
    except ImportError as error:
        assert isinstance(interrupt_behind(error), Terminated)
    try:
        try:
            raise ValueError("a real problem")
        except ValueError:
            raise ImportError("and another") from None
    except ImportError as error:
        assert interrupt_behind(error) is None
