"""One import namespace that no other distribution owns: the wheel installs `verify_ate` only, beside PyPI's
`noise` and `configs` distributions (whose names the repository's folders share), and the installed tool works.

A real wheel built from this checkout (pip), a fresh virtual environment, the two PyPI distributions installed
into it, and the installed console script. The environment borrows the project's third-party dependencies
(numpy, matplotlib...) from the test environment's site-packages through a path entry, so that the test
downloads only the two small distributions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile

import pytest
from conftest import REPO_ROOT, koch_actions, make_artifact

pytestmark = pytest.mark.slow


def _run(*command, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, verify-ate script) of a fresh venv holding the wheel, PyPI's noise and configs."""
    root = tmp_path_factory.mktemp("namespace")
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", root, REPO_ROOT)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = root.glob("verify_ate-*.whl")
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    # The project's dependencies from the test environment (a plain path: its .pth files, among them the
    # editable install of this checkout, are not read from there).
    with open(f"{site}/zz_dependencies.pth", "w") as handle:
        handle.write(sysconfig.get_paths()["purelib"] + "\n")
    installs = _run(python, "-m", "pip", "install", "--no-deps", wheel, "noise", "configs")
    assert installs.returncode == 0, installs.stdout[-2000:] + installs.stderr[-2000:]
    return python, env_dir / "bin" / "verify-ate", wheel


def test_the_wheel_holds_one_top_level_package(installed):
    _, _, wheel = installed
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    tops = {name.split("/", 1)[0] for name in names} - {next(n.split("/", 1)[0] for n in names if ".dist-info/" in n)}
    assert tops == {"verify_ate"}
    assert "verify_ate/configs/thresholds.yaml" in names
    assert "verify_ate/verify/model/demo_policy/model.safetensors" in names
    assert "verify_ate/reports/templates/report.html" in names


def test_pypi_noise_and_configs_live_beside_the_installed_tool(installed, tmp_path, rng):
    python, script, _ = installed
    probe = _run(
        python,
        "-c",
        "import noise, configs, verify_ate.noise, verify_ate.verify.cli; "
        "print(noise.pnoise1(0.5), noise.__file__, configs.__file__, verify_ate.__file__)",
        cwd=tmp_path,
    )
    assert probe.returncode == 0, probe.stderr
    value, noise_file, configs_file, ours = probe.stdout.split()
    assert float(value) == pytest.approx(float(value))  # PyPI's Perlin noise answered, not our package
    assert "site-packages/noise" in noise_file
    assert "site-packages/configs" in configs_file
    assert "site-packages/verify_ate" in ours
    from verify_ate.verify.compare.artifact import save_artifact

    actions = koch_actions(rng)
    save_artifact(make_artifact(actions), tmp_path / "ref.npz")
    save_artifact(make_artifact(actions + 0.01), tmp_path / "dut.npz")
    result = _run(
        script, "compare", tmp_path / "ref.npz", tmp_path / "dut.npz", "--json", tmp_path / "s.json",
        "--out", tmp_path / "report", cwd=tmp_path, env={**os.environ, "MPLBACKEND": "Agg"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "s.json").read_text())["pass"] is True
    assert (tmp_path / "report" / "index.html").is_file()
