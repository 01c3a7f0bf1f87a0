"""The set-up scripts say what they do: scripts/bootstrap.sh (sourced by bin/verify-ate and bin/run-tests)
and examples/ci/gate.sh, run for real in subprocesses.

The install tests never reach a real index: they run the bootstrap from a temporary copy of the repository
whose pyproject.toml names a dependency that does not exist, with pip's configuration replaced by one local
index that refuses connections (a failed install in seconds) or never answers (an install that runs until
it is interrupted)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, as_at_a_terminal

BOOTSTRAP = REPO_ROOT / "scripts" / "bootstrap.sh"
GATE = REPO_ROOT / "examples" / "ci" / "gate.sh"
STAGE = re.compile(r"^bootstrap \[\d+:\d\d\] ", re.MULTILINE)

UNINSTALLABLE_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "verify-ate"
version = "0.0.0"
dependencies = ["verify-ate-test-no-such-dependency==0"]

[project.optional-dependencies]
pi0 = []
"""


def _bootstrap(repo: Path, extras: str, env: dict[str, str], **popen) -> subprocess.Popen:
    """`source scripts/bootstrap.sh EXTRAS` as bin/verify-ate runs it, in its own session so that every
    process it starts can be found afterwards by the session id (its pid)."""
    return subprocess.Popen(
        ["bash", "-c", f"source scripts/bootstrap.sh {extras}"],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=as_at_a_terminal,
        **popen,
    )


def _live_processes_in_session(session: int) -> list[str]:
    """Processes still running in the session; zombies (already dead, waiting for init) do not count."""
    listing = subprocess.run(["ps", "-e", "-o", "sid=,stat=,args="], capture_output=True, text=True, check=True)
    live = []
    for line in listing.stdout.splitlines():
        sid, stat, args = (line.split(None, 2) + ["", ""])[:3]
        if sid == str(session) and not stat.startswith("Z"):
            live.append(f"{stat} {args}")
    return live


def _assert_nothing_left_running(session: int) -> None:
    deadline = time.monotonic() + 10
    while (left := _live_processes_in_session(session)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"still running after the bootstrap ended: {left}"


def _offline_environment(tmp_path: Path, index_url: str, **overrides: str) -> dict[str, str]:
    """pip and uv see no configuration but one index; the environment goes to tmp_path/venv."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "VERIFY_ATE_"))}
    environment.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_INDEX_URL=index_url,
        PIP_RETRIES="0",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        VERIFY_ATE_VENV=str(tmp_path / "venv"),
        # The interpreter running the tests is a 3.12; `-m venv` from it makes a venv of its base Python.
        VERIFY_ATE_PYTHON=sys.executable,
        **overrides,
    )
    return environment


@pytest.fixture
def uninstallable_repo(tmp_path):
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy2(BOOTSTRAP, repo / "scripts" / "bootstrap.sh")
    (repo / "pyproject.toml").write_text(UNINSTALLABLE_PYPROJECT)
    return repo


@pytest.fixture
def refusing_index():
    """A local URL whose port is bound but not listening: every connection is refused at once."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{held.getsockname()[1]}/simple"


@pytest.fixture
def silent_index():
    """A local index that has no pip (so upgrading pip succeeds at once) and never answers anything else."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            request = connection.recv(65536)
            if b" /simple/pip/ " in request or b" /simple/uv/ " in request:
                connection.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                connection.close()
            else:
                held.append(connection)

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/simple"
    server.close()
    for connection in held:
        connection.close()


# ---- scripts/bootstrap.sh ------------------------------------------------------------------------


@pytest.mark.parametrize("extras", ["pi0,test", "pi0"])
def test_an_up_to_date_environment_is_left_alone_in_silence(tmp_path, extras):
    """The stamp names this pyproject and the extras (or more): nothing runs, nothing is printed. The
    environment is a stand-in (a bin/python and the stamp), so the test neither needs nor touches .venv."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    pyproject_hash = hashlib.sha256((REPO_ROOT / "pyproject.toml").read_bytes()).hexdigest()
    (venv / ".verify-ate-stamp").write_text(f"{pyproject_hash}\npi0,test\n")
    before = sorted(p.name for p in venv.iterdir())

    started = time.monotonic()
    done = subprocess.run(
        ["bash", "-c", f"source scripts/bootstrap.sh {extras}"],
        cwd=REPO_ROOT,
        env={**os.environ, "VERIFY_ATE_VENV": str(venv)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - started

    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert took < 3, f"an up-to-date environment took {took:.1f} s"
    assert sorted(p.name for p in venv.iterdir()) == before


@pytest.mark.slow
def test_a_failed_install_shows_its_stages_its_log_and_exits_3(tmp_path, uninstallable_repo, refusing_index):
    """uv cannot be had (the only index refuses), so pip takes over and fails too: every stage is a line with
    its elapsed time, the log is named when the install starts, its last 40 lines and its path end the output,
    the exit code is 3, no stamp is written and no heartbeat outlives the script."""
    environment = _offline_environment(tmp_path, refusing_index, VERIFY_ATE_INSTALLER="uv")
    bootstrap = _bootstrap(uninstallable_repo, "pi0", environment)
    stdout, stderr = bootstrap.communicate(timeout=180)

    venv = tmp_path / "venv"
    log = venv / ".verify-ate-install.log"
    assert bootstrap.returncode == 3, stderr
    assert stdout == ""
    stages = [line[STAGE.match(line).end() :] for line in stderr.splitlines() if STAGE.match(line)]
    expected = [
        "finding Python 3.12",
        f"creating the virtual environment {venv} with ",
        "getting uv (pip install uv)",
        "uv could not be installed (see the log); installing with pip instead",
        "upgrading pip",
        f"installing verify-ate[pi0] and its dependencies with pip, several GB on a first install (log: {log})",
        f"installing into {venv} failed (whole log: {log})",
    ]
    assert len(stages) == len(expected), stderr
    for stage, start in zip(stages, expected, strict=True):
        assert stage.startswith(start), (stage, start)
    assert stderr.rstrip().endswith(f"failed (whole log: {log})")
    tail = "\n".join(log.read_text().splitlines()[-40:])
    assert f"bootstrap: ---- last 40 lines of {log} ----\n{tail}\n" in stderr
    assert "No matching distribution found for uv" in log.read_text()
    assert not (venv / ".verify-ate-stamp").exists()
    _assert_nothing_left_running(bootstrap.pid)


@pytest.mark.slow
def test_the_heartbeat_tells_what_pip_does_and_ctrl_c_stops_the_install(tmp_path, uninstallable_repo, silent_index):
    """While pip waits on an index that never answers, a heartbeat line comes every VERIFY_ATE_HEARTBEAT
    seconds with the elapsed time, pip's latest step and the environment's size; Ctrl-C (SIGINT to the whole
    foreground group, as a terminal sends it) stops pip, the script says the environment is incomplete, exits
    130, and leaves no process behind."""
    environment = _offline_environment(
        tmp_path, silent_index, VERIFY_ATE_INSTALLER="pip", VERIFY_ATE_HEARTBEAT="1", PIP_DEFAULT_TIMEOUT="120"
    )
    bootstrap = _bootstrap(uninstallable_repo, "pi0", environment, bufsize=1)
    watchdog = threading.Timer(120, os.killpg, (bootstrap.pid, signal.SIGKILL))
    watchdog.start()
    try:
        seen, heartbeats = [], []
        for line in bootstrap.stderr:  # a loaded machine may beat before pip has said anything
            seen.append(line)
            if re.match(r"^bootstrap \[\d+:\d\d\] \.\.\. .+ \(environment: \d+ MB\)$", line):
                heartbeats.append(line)
                if "Installing build dependencies" in line or "Obtaining" in line:
                    break
        assert heartbeats, "".join(seen)
        assert "Installing build dependencies" in heartbeats[-1] or "Obtaining" in heartbeats[-1], "".join(seen)
        os.killpg(bootstrap.pid, signal.SIGINT)
        rest = bootstrap.stderr.read()
        bootstrap.wait(timeout=60)
    finally:
        watchdog.cancel()
    assert bootstrap.returncode == 130, "".join(seen) + rest
    assert "bootstrap: interrupted; " in rest
    assert "is installed again next time" in rest
    assert not (tmp_path / "venv" / ".verify-ate-stamp").exists()
    _assert_nothing_left_running(bootstrap.pid)


# ---- examples/ci/gate.sh -------------------------------------------------------------------------


def _gate(tmp_path, *args, **env):
    environment = {k: v for k, v in os.environ.items() if k != "VERIFY_ATE"}
    environment.update(PATH="/usr/bin:/bin", **env)
    return subprocess.run(
        ["bash", str(GATE), *map(str, args)], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=60
    )


def test_the_gate_without_verify_ate_on_path_says_how_to_get_it(tmp_path):
    if shutil.which("verify-ate", path="/usr/bin:/bin"):
        pytest.skip("verify-ate is installed system-wide here")
    done = _gate(tmp_path, "ref.npz", "dut.npz")
    assert done.returncode == 3
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert "not on PATH" in done.stderr
    assert "source .venv/bin/activate" in done.stderr
    assert "VERIFY_ATE=/path/to/.venv/bin/verify-ate" in done.stderr
    assert "command not found" not in done.stderr

    absent = tmp_path / "absent" / "verify-ate"
    named = _gate(tmp_path, "ref.npz", "dut.npz", VERIFY_ATE=str(absent))
    assert named.returncode == 3
    assert named.stderr == f"verify-ate gate: VERIFY_ATE={absent} is not a command (no verdict)\n"


def test_the_gate_runs_the_verify_ate_that_VERIFY_ATE_names(tmp_path):
    """A stand-in verify-ate records its arguments and fails the gate: the flags pass through and its exit
    code becomes the gate's, with the gate's own line."""
    fake = tmp_path / "bin" / "verify-ate"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "args"}\nexit 1\n')
    fake.chmod(0o755)
    done = _gate(tmp_path, "ref.npz", "dut.npz", "runs/ci", "--stat", "max", VERIFY_ATE=str(fake))
    assert done.returncode == 1, done.stderr
    assert (tmp_path / "args").read_text().split() == [
        "compare", "ref.npz", "dut.npz", "--out", "runs/ci", "--junit", "runs/ci/junit.xml", "--stat", "max",
    ]  # fmt: skip
    assert "FAILED, the device under test moves the arm differently (report: runs/ci/index.html)" in done.stderr
