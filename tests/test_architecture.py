"""The shape of the code (ARCHITECTURE.md): no import circles, layers that only import downwards,
no argparse below the command line, and a `compare` that needs neither torch nor lerobot.

Imports are read from the source with `ast`, function-local ones included: an import made lazily
inside a function still ties the two modules together.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT

NAMESPACE = "verify_ate"  # the one import name of the distribution; its subpackages are the folders below
TOP_PACKAGES = ("verify", "kinematics", "noise", "reports")
# Each unit may import only from the units listed for it (its own modules always), and from the namespace's
# root (`verify_ate`: its version and where configs/ lies). Units are named by folder: verify's subpackages
# are separate units; order is from the command line down to the leaves.
ALLOWED = {
    "verify.cli": {
        "verify.commands",
        "verify.publish",
        "verify.run",
        "verify.model",  # only the catalogue of variant and fault names (verify/model/rewrites.py, no torch)
        "verify.envs",  # only the names of the environments (configs/rollout.yaml)
        "verify.compare",
        "verify.errors",
        "kinematics",
        "noise",
    },
    "verify.commands": {
        "verify.publish",
        "verify.run",
        "verify.envs",
        "verify.model",
        "verify.data",
        "verify.compare",
        "verify.progress",
        "verify.errors",
        "kinematics",
        "noise",
        "reports",
    },
    "verify.publish": {"verify.run", "verify.compare", "verify.errors", "noise", "reports"},
    "verify.run": {
        "verify.envs",
        "verify.model",
        "verify.upstream",
        "verify.cache",
        "verify.data",
        "verify.compare",
        "verify.configs",
        "verify.errors",
        "kinematics",
        "noise",
        "reports",
    },
    # the environments a closed-loop rollout drives: the demo world (drawn as the demo dataset is) and lerobot.envs
    "verify.envs": {"verify.data", "verify.configs", "verify.errors", "kinematics"},
    "verify.model": {"verify.upstream", "verify.cache", "verify.configs", "verify.errors", "noise", "reports"},
    # the fence: the only unit that reaches into lerobot's, transformers' and torch's internals
    "verify.upstream": {"verify.errors"},
    "verify.data": {"verify.upstream", "verify.cache", "verify.configs", "verify.errors", "kinematics", "reports"},
    "verify.compare": {"verify.configs", "verify.errors", "kinematics", "reports"},
    "verify.progress": set(),
    "verify.cache": set(),
    "verify.configs": {"verify.errors"},
    "verify.errors": {"kinematics", "noise"},  # their input errors are exit 2 too
    "kinematics": set(),
    "noise": {"reports"},  # reports.atomic: every file the tool writes is written one way
    "reports": set(),
}


def _module_name(path: Path) -> str:
    """The folder-relative name (`verify.cli.args`), which is `verify_ate.` + it once installed."""
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[str]:
    """Every absolute import target of a file (function-local ones too), dotted names as written."""
    targets = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return targets


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for package in TOP_PACKAGES for path in (REPO_ROOT / package).rglob("*.py")}


def _unit(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "verify" or len(parts) == 1:
        return parts[0]
    return ".".join(parts[:2])


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for target in _imports(path):
            if not target.startswith(f"{NAMESPACE}."):
                continue
            target = target.removeprefix(f"{NAMESPACE}.")
            if target.split(".")[0] in TOP_PACKAGES and (resolved := resolve(target)) and resolved != name:
                graph[name].add(resolved)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for successor in graph.get(node, ()):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def test_every_import_of_the_project_goes_through_its_own_namespace():
    """`import noise` or `from verify.cli import main` would find another distribution's package (PyPI has
    `noise`, `configs`, `reports`, `verify` and `kinematics`) or none at all once installed."""
    bare = sorted(
        f"{name} imports {target}"
        for package in (*TOP_PACKAGES, "tests", "bench", "scripts")
        for path in (REPO_ROOT / package).rglob("*.py")
        for target in _imports(path)
        if target.split(".")[0] in (*TOP_PACKAGES, "configs")
        for name in [_module_name(path)]
    )
    assert bare == []


def test_no_import_circle_between_modules():
    assert _cycles(_import_graph()) == []


def test_units_import_only_downwards():
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in _import_graph().items()
        for target in targets
        if _unit(target) != _unit(module) and _unit(target) not in ALLOWED[_unit(module)]
    )
    assert wrong == []


def test_no_unit_circle():
    units: dict[str, set[str]] = defaultdict(set)
    for module, targets in _import_graph().items():
        units[_unit(module)].update(_unit(t) for t in targets if _unit(t) != _unit(module))
    assert _cycles(units) == []


def test_argparse_lives_in_the_command_line_only():
    def imports_argparse(path: Path) -> bool:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import) and any(alias.name == "argparse" for alias in node.names):
                return True
            if isinstance(node, ast.ImportFrom) and node.module == "argparse":
                return True
        return False

    users = sorted(
        name
        for name, path in _modules().items()
        if not name.startswith("verify.cli")
        and imports_argparse(path)
        and name != "kinematics.mjcf_to_dh"  # a maintainer's script with its own small command line
    )
    assert users == []


def _rollout_artifact(rng, offset: float):
    """A small rollout artifact of an environment without a robot model (two episodes, three steps), made here."""
    from verify_ate.verify.compare.rollout_artifact import ROLLOUT_SCHEMA, RolloutArtifact

    meta = {
        "schema": ROLLOUT_SCHEMA, "policy": "act", "device": "cpu", "dtype": "float32", "seeds": [0, 1],
        "environment": {"env": "pusht", "robot": None, "state_unit": "px"}, "noise_sha256": "0" * 64,
        "checkpoint_sha256": "1" * 64, "n_action_steps": 2,
    }  # fmt: skip
    return RolloutArtifact(
        states=rng.normal(size=(2, 4, 2)) + offset,
        actions=rng.normal(size=(2, 3, 2)).astype(np.float32),
        rewards=np.zeros((2, 3)),
        done=np.zeros((2, 3), dtype=bool),
        success=np.array([True, False]),
        steps=np.array([3, 3]),
        images=np.zeros((2, 4, 8, 8, 3), dtype=np.uint8),
        tool_poses=np.zeros((2, 4, 0, 4, 4)),
        meta=meta,
    )


@pytest.fixture
def model_free_commands(tmp_path, rng):
    """Real runs of the three commands that need no model, on files made here."""
    import pandas as pd
    from conftest import koch_actions, make_artifact

    from verify_ate.verify.compare.artifact import save_artifact
    from verify_ate.verify.compare.rollout_artifact import save_rollout

    actions = koch_actions(rng, n=1)
    save_artifact(make_artifact(actions), tmp_path / "ref.npz")
    save_artifact(make_artifact(actions + 0.1), tmp_path / "dut.npz")
    names = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
    pd.DataFrame(actions[0], columns=names).to_csv(tmp_path / "joints.csv", index=False)
    for side, offset in (("ref", 0.0), ("dut", 0.5)):
        save_rollout(_rollout_artifact(rng, offset), tmp_path / f"rollout_{side}.npz")
    return {
        "rollout compare": [
            "rollout",
            "compare",
            tmp_path / "rollout_ref.npz",
            tmp_path / "rollout_dut.npz",
            "--out",
            tmp_path / "closed_loop",
        ],
        "compare": ["compare", tmp_path / "ref.npz", tmp_path / "dut.npz", "--out", tmp_path / "report"],
        "noise": ["noise", "make", "--seed", "0", "--out", tmp_path / "noise.safetensors"],
        "fk": [
            "fk",
            "--input",
            tmp_path / "joints.csv",
            "--output",
            tmp_path / "poses.csv",
            "--plot",
            tmp_path / "path.png",
        ],
    }


@pytest.mark.parametrize("command", ["compare", "noise", "fk", "rollout compare"])
def test_commands_without_a_model_import_neither_torch_nor_lerobot(model_free_commands, command):
    """A CI gate job installs only the core dependencies: `compare`, `noise`, `fk` and `rollout compare` must need
    neither torch nor the dataset reader (pyarrow, which pandas may load on its own when it is there)."""
    argv = [str(part) for part in model_free_commands[command]]
    heavy = ("torch", "lerobot", "transformers", "verify_ate.verify.data.observation", "verify_ate.verify.upstream")
    probe = (
        "import sys\nfrom verify_ate.verify.cli import main\n"
        f"code = main({argv!r})\n"
        f"heavy = sorted(m for m in {heavy!r} if m in sys.modules)\n"
        "print(f'exit:{code} heavy:' + ','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "exit:0 heavy:"
