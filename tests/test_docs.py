"""The documentation against the real tool: README.md and docs/*.md say nothing the command line refuses.

- Every command line in a fenced code block of README.md and docs/*.md that invokes the tool (`verify-ate`,
  `./bin/verify-ate`, `.venv/bin/verify-ate`, `python -m verify_ate.verify.cli`, `torchrun ... -m
  verify_ate.verify.cli`, and `examples/ci/gate.sh`, which passes its flags to `compare`) is parsed by that
  command's own argparse parser (`verify_ate.verify.cli.commands.PARSERS`), as are the `verify-ate` steps of
  examples/ci/github-actions.yml. Backslash continuations are joined and trailing comments dropped; placeholders
  (`...`, `FILE`, `[--flag]`) are refused, so that every documented line is one a user can paste.
- The README's set-up, demo and recipes run exactly as written (the slow test below).
- Relative links resolve to files and headings inside the repository; README.md stays a short manual.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT, run_cli, tiny_checkpoint

README = REPO_ROOT / "README.md"
DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
WORKFLOW = REPO_ROOT / "examples" / "ci" / "github-actions.yml"
README_MAX_LINES = 150
MIN_COMMAND_LINES = 40  # far below what the pages hold: the test must not pass by finding nothing

TOOL_PROGRAMS = {"verify-ate", "./bin/verify-ate", "bin/verify-ate", ".venv/bin/verify-ate"}
PYTHONS = {"python", "python3", "python3.12", ".venv/bin/python"}
TOOL_MODULE = "verify_ate.verify.cli"
GATE_SCRIPT = "examples/ci/gate.sh"
FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=\S*")
PLACEHOLDER = re.compile(r"\.\.\.|…|^[<\[]|[>\]]$|^[A-Z][A-Z0-9_]*$")
SHELL_OPERATOR = re.compile(r"^[();<>|&]+$")
ACCELERATOR = re.compile(r"(cuda|npu)(:\d+)?")
VARIANT_FLAGS = ("ref_variant", "dut_variant", "variant", "variants")
FAULT_FLAGS = ("inject", "faults")


@dataclass(frozen=True)
class CommandLine:
    path: Path
    line: int  # where the command starts (continuations joined)
    text: str  # as written, continuations joined, the comment dropped
    tokens: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}: {self.text}"


# ---------------------------------------------------------------- reading the pages


def _lines_outside_fences(path: Path) -> list[tuple[int, str, bool]]:
    """(line number, line, inside a fenced code block) for every line that is not a fence itself."""
    rows, fence = [], None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = FENCE.match(line)
        if match and (fence is None or match[1][0] == fence[0] and len(match[1]) >= len(fence)):
            fence = match[1] if fence is None else None
            continue
        rows.append((number, line, fence is not None))
    return rows


def _split(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def code_block_commands(path: Path) -> list[CommandLine]:
    """Every shell line of the page's fenced code blocks, continuations joined, comments dropped."""
    commands, pending = [], None
    for number, line, in_block in _lines_outside_fences(path):
        if not in_block:
            pending = None
            continue
        start, text = pending if pending else (number, "")
        text = f"{text} {line.strip()}".strip()
        if text.endswith("\\"):
            pending = (start, text[:-1].rstrip())
            continue
        pending = None
        try:
            tokens = _split(text)
        except ValueError:  # not shell (JSON, output): no command to check
            continue
        if tokens:
            commands.append(CommandLine(path, start, shlex.join(tokens), tuple(tokens)))
    return commands


def workflow_commands() -> list[CommandLine]:
    """The `run:` steps of the GitHub Actions example, one command per line (folded blocks are one line)."""
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    text = WORKFLOW.read_text(encoding="utf-8").splitlines()
    commands = []
    for job in workflow["jobs"].values():
        for step in job.get("steps", []):
            for line in str(step.get("run", "")).splitlines():
                tokens = _split(line)
                if not tokens:
                    continue
                number = _line_of(text, tokens)
                commands.append(CommandLine(WORKFLOW, number, shlex.join(tokens), tuple(tokens)))
    return commands


def _line_of(text: list[str], tokens: list[str]) -> int:
    """The first line of `text` holding the command's first words (as many as one line holds), else 0."""
    for count in range(min(4, len(tokens)), 0, -1):
        words = " ".join(tokens[:count])
        for number, row in enumerate(text, start=1):
            if words in row and not row.lstrip().startswith("#"):
                return number
    return 0


def _without_assignments(tokens: tuple[str, ...]) -> tuple[str, ...]:
    index = 0
    while index < len(tokens) and ASSIGNMENT.fullmatch(tokens[index]):
        index += 1
    return tokens[index:]


def tool_arguments(command: CommandLine) -> list[str] | None:
    """The arguments verify-ate's own `main` would get from this line, or None when the line does not run it."""
    tokens = _without_assignments(command.tokens)
    if not tokens:
        return None
    program = tokens[0]
    if program in TOOL_PROGRAMS:
        return list(tokens[1:])
    if (program in PYTHONS or program == "torchrun") and "-m" in tokens:
        module = tokens.index("-m") + 1
        if module < len(tokens) and tokens[module] == TOOL_MODULE:
            return list(tokens[module + 1 :])
    if program in (GATE_SCRIPT, f"./{GATE_SCRIPT}") and len(tokens) >= 3:
        # gate.sh REF DUT [OUT] [compare flags...] runs: verify-ate compare REF DUT --out OUT --junit OUT/junit.xml ...
        out = tokens[3] if len(tokens) > 3 else "runs/gate"
        return ["compare", tokens[1], tokens[2], "--out", out, "--junit", f"{out}/junit.xml", *tokens[4:]]
    return None


def parse_problem(arguments: list[str]) -> str | None:
    """argparse's message for `verify-ate ARGUMENTS`, or None when the real parser accepts it (`-h` included).

    `verify_ate.verify.cli.main` takes `--debug` out before any parser runs, and so does this."""
    from verify_ate.verify.cli.commands import PARSERS
    from verify_ate.verify.errors import InputError
    from verify_ate.verify.model.rewrites import FAULT, VARIANT, parse_names

    arguments = [argument for argument in arguments if argument != "--debug"]
    placeholders = [argument for argument in arguments if PLACEHOLDER.search(argument)]
    if placeholders:
        return f"placeholder {placeholders[0]!r}: write a real-looking value so that the line can be checked"
    operators = [argument for argument in arguments if SHELL_OPERATOR.match(argument)]
    if operators:
        return f"shell operator {operators[0]!r}: write one command per line"
    if arguments and not arguments[0].startswith("-"):
        if arguments[0] not in PARSERS:
            return f"unknown command {arguments[0]!r}"
        name, rest = arguments[0], arguments[1:]
        if rest and f"{name} {rest[0]}" in PARSERS:  # a command's forms: `rollout run`, `rollout compare`
            name, rest = f"{name} {rest[0]}", rest[1:]
    else:
        name, rest = "", arguments
    stderr = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        try:
            namespace = PARSERS[name]().parse_args(rest)
        except SystemExit as exit_:
            return None if exit_.code in (0, None) else stderr.getvalue().strip() or f"exit code {exit_.code}"
    # The variant and fault names are checked by the command's argument group, after argparse: check them here.
    for flags, kind in ((VARIANT_FLAGS, VARIANT), (FAULT_FLAGS, FAULT)):
        for flag in flags:
            value = getattr(namespace, flag, None)
            if value:
                try:
                    parse_names(value, kind)
                except InputError as error:
                    return str(error)
    return None


def _python_target_problem(command: CommandLine) -> str | None:
    """`python -m MODULE` must name an importable module, `python SCRIPT.py` a file of the repository."""
    tokens = _without_assignments(command.tokens)
    if not tokens or tokens[0] not in PYTHONS or len(tokens) < 2:
        return None
    if tokens[1] == "-m" and len(tokens) > 2:
        return None if importlib.util.find_spec(tokens[2]) else f"no module named {tokens[2]}"
    if tokens[1].endswith(".py") and not (REPO_ROOT / tokens[1]).is_file():
        return f"no script {tokens[1]} in the repository"
    return None


# ---------------------------------------------------------------- the fast checks


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines, at most {README_MAX_LINES}"


def test_every_documented_command_line_parses():
    checked, problems = 0, []
    commands = [command for page in PAGES for command in code_block_commands(page)] + workflow_commands()
    for command in commands:
        problem = _python_target_problem(command)
        arguments = tool_arguments(command)
        if arguments is not None:
            checked += 1
            problem = problem or parse_problem(arguments)
        if problem:
            problems.append(f"{command.where}\n    {problem}")
    assert not problems, "documented command lines the real command line refuses:\n" + "\n".join(problems)
    assert checked >= MIN_COMMAND_LINES, f"only {checked} command lines found in README.md and docs/*.md"


def test_the_checker_refuses_what_it_should():
    """The checker itself: a typo, a placeholder, a wrong choice and an unknown fault are each refused."""
    assert parse_problem(["compare", "runs/ref.npz", "runs/dut.npz"]) is None
    assert parse_problem(["run", "-h"]) is None
    assert "did you mean --pos-tol" in parse_problem(["compare", "a.npz", "b.npz", "--pos-toll", "1"])
    assert "placeholder" in parse_problem(["run", "--save", "FILE"])
    assert "placeholder" in parse_problem(["fk", "--input", "joints.csv", "[--units", "rad]"])
    assert "invalid choice" in parse_problem(["--gate", "strict"])
    assert parse_problem(["--inject", "not-a-fault"]) is not None
    assert parse_problem(["comapre", "a.npz", "b.npz"]) == "unknown command 'comapre'"
    line = CommandLine(README, 1, "", ("torchrun", "--nproc-per-node", "2", "-m", TOOL_MODULE, "sweep", "--demo"))
    assert tool_arguments(line) == ["sweep", "--demo"]


def test_links_stay_inside_the_repository_and_resolve():
    problems = []
    for page in PAGES:
        for number, line, in_block in _lines_outside_fences(page):
            if in_block:
                continue
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                if re.match(r"[a-z]+:", target):
                    continue  # a web address
                file, _, anchor = target.partition("#")
                resolved = (page.parent / file).resolve() if file else page
                where = f"{page.relative_to(REPO_ROOT)}:{number}: {target}"
                if not resolved.is_relative_to(REPO_ROOT):
                    problems.append(f"{where}: outside the repository")
                elif not resolved.exists():
                    problems.append(f"{where}: no such file")
                elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                    problems.append(f"{where}: no heading #{anchor} in {resolved.relative_to(REPO_ROOT)}")
    assert not problems, "\n".join(problems)


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces made hyphens."""
    anchors = set()
    for _, line, in_block in _lines_outside_fences(page):
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match and not in_block:
            anchors.add(re.sub(r"[^\w\- ]", "", match[1].strip().lower()).replace(" ", "-"))
    return anchors


def test_selftest_page_names_every_variant_and_fault():
    from verify_ate.verify.model.rewrites import FAULTS, VARIANTS

    page = (REPO_ROOT / "docs" / "selftest.md").read_text(encoding="utf-8")
    missing = [name for name in VARIANTS if f"| `{name}` |" not in page]
    missing += [name for name in FAULTS if f"- `{name}`:" not in page]
    assert not missing, f"docs/selftest.md lacks a row or paragraph for {missing}"


# ---------------------------------------------------------------- the README, run as written


SET_UP_ONLY = {
    "./bin/run-tests": "the test suite itself",
    "source": "shell set-up: this test puts the environment's bin/ on PATH where a command needs it",
}


@pytest.mark.slow
def test_readme_runs_as_written(tmp_path, demo_cache, demo_dataset):
    """The README's set-up, demo, two-machine recipe and calibration, in order and exactly as written, in a
    folder holding what they name: `pi0_model/` (the tiny demo checkpoint), `koch_test/` (the demo dataset) and
    `examples/` (this repository's). Each `verify-ate` line runs in this process through the console entry point
    (`./bin/verify-ate --demo` is `verify-ate --demo` once `.venv/` exists) and must exit 0. Lines naming a
    `cuda` or `npu` device are only parsed: this machine may have neither. `./bin/run-tests` is this suite and
    `source .venv/bin/activate` is done by putting the environment's bin/ on PATH. Then docs/ci.md's
    `examples/ci/gate.sh` line runs, as a real process, on the artifacts the recipe made."""
    shutil.copytree(tiny_checkpoint(demo_cache), tmp_path / "pi0_model")
    shutil.copytree(demo_dataset, tmp_path / "koch_test")
    (tmp_path / "examples").symlink_to(REPO_ROOT / "examples", target_is_directory=True)
    environment = {"VERIFY_ATE_CACHE": str(demo_cache)}
    ran, parsed_only = [], []
    for command in code_block_commands(README):
        arguments = tool_arguments(command)
        if arguments is None:
            program = _without_assignments(command.tokens)[0]
            assert program in SET_UP_ONLY, f"{command.where}: a README command this test does not know how to run"
            continue
        assert parse_problem(arguments) is None, command.where
        if any(ACCELERATOR.fullmatch(argument.rpartition("=")[2]) for argument in arguments):
            parsed_only.append(command.text)
            continue
        if command.tokens[0] == GATE_SCRIPT:
            result = _run_gate_script(command, tmp_path)
        else:
            result = run_cli(*arguments, cwd=tmp_path, env=environment)
        assert result.returncode == 0, f"{command.where}\nexit {result.returncode}\n{result.stderr[-3000:]}"
        ran.append(command.text)

    assert (tmp_path / "verify-ate-demo" / "index.html").is_file(), "the demo's report is not where README says"
    assert (tmp_path / "runs" / "ascend" / "index.html").is_file()
    assert (tmp_path / "runs" / "calib" / "calibration.json").is_file()
    assert any("--device npu" in text for text in parsed_only), "the recipe's device under test is an NPU"
    assert len(ran) >= 6, ran

    gate_lines = [c for c in code_block_commands(REPO_ROOT / "docs" / "ci.md") if c.tokens[0] == GATE_SCRIPT]
    assert gate_lines, "docs/ci.md shows no examples/ci/gate.sh line"
    for command in gate_lines:
        result = _run_gate_script(command, tmp_path)
        assert result.returncode == 0, f"{command.where}\n{result.stdout}\n{result.stderr[-3000:]}"
        assert "verify-ate gate: PASS" in result.stdout
        out = Path(command.tokens[3])
        assert (tmp_path / out / "index.html").is_file()
        assert (tmp_path / out / "junit.xml").is_file()


def _run_gate_script(command: CommandLine, folder: Path) -> subprocess.CompletedProcess:
    """examples/ci/gate.sh run as written (from `folder`, whose examples/ is this repository's), with the
    environment's verify-ate on PATH, as `source .venv/bin/activate` puts it there."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(
        list(command.tokens),
        cwd=folder,
        env={**os.environ, "PATH": path, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"},
        capture_output=True,
        text=True,
        timeout=300,
    )
