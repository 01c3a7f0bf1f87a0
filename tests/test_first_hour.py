"""A new user's first hour: nothing passes silently, nothing looks hung, words mean what they say.

The command line runs through its entry point in this process (conftest.run_cli); the model commands run the
demo's tiny pi0 on the session's demo cache.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import time
import xml.etree.ElementTree as ET

import pytest
from conftest import koch_actions, make_artifact, run_cli, tiny_checkpoint

from verify_ate.verify.cli.args import HelpFormatter
from verify_ate.verify.cli.commands import PARSERS
from verify_ate.verify.compare.artifact import save_artifact
from verify_ate.verify.progress import Progress

# ---------------------------------------------------------------- nothing passes silently


@pytest.fixture
def artifacts(tmp_path, rng):
    """A reference artifact, and under-test artifacts that saw another checkpoint, another noise draw."""
    actions = koch_actions(rng, n=2)
    made = {
        "ref": make_artifact(actions),
        "other_checkpoint": make_artifact(actions + 0.01, checkpoint_sha256="d" * 64),
        "other_noise": make_artifact(actions + 0.01, noise_sha256="f" * 64),
    }
    return {name: save_artifact(artifact, tmp_path / f"{name}.npz") for name, artifact in made.items()}


def test_a_compare_of_different_checkpoints_is_refused_unless_the_user_says_it_is_intended(artifacts, tmp_path):
    refused = run_cli("compare", artifacts["ref"], artifacts["other_checkpoint"], "--out", tmp_path / "r")
    assert refused.returncode == 2, refused.stderr
    assert "checkpoint differs" in refused.stderr
    assert "--converted-checkpoint" in refused.stderr
    assert not (tmp_path / "r").exists()
    converted = run_cli(
        "compare", artifacts["ref"], artifacts["other_checkpoint"], "--converted-checkpoint", "--json", tmp_path / "c"
    )
    assert converted.returncode == 0, converted.stderr
    assert "FORCED: compared although the two runs did not see the same inputs: checkpoint sha256 dddd" in (
        converted.stdout
    )
    summary = json.loads((tmp_path / "c").read_text())
    assert summary["forced"] is True
    assert summary["forced_differences"] == [{"input": "checkpoint", "reference": "c" * 64, "under_test": "d" * 64}]
    # The narrower flag accepts a checkpoint conversion only: other noise is still refused.
    noise = run_cli("compare", artifacts["ref"], artifacts["other_noise"], "--converted-checkpoint")
    assert noise.returncode == 2
    assert "noise differs" in noise.stderr


def test_a_forced_compare_says_so_and_what_differed_in_every_output(artifacts, tmp_path):
    out = tmp_path / "report"
    result = run_cli("compare", artifacts["ref"], artifacts["other_noise"], "--force", "--out", out)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "FORCED" in line)
    assert "noise sha256 ffffffffffff... (reference aaaaaaaaaaaa...)" in line
    assert "**FORCED: compared although" in (out / "summary.md").read_text()
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    properties = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert properties["forced"] == "true"
    assert properties["forced.noise"] == f"{'a' * 64} vs {'f' * 64}"
    assert "FORCED" in suite.find("system-out").text
    page = (out / "index.html").read_text()
    assert 'id="forced"' in page
    assert "it does not say whether the device under test moves the robot" in page
    assert "may differ" not in page


def test_without_out_the_verdict_says_no_report_was_written_and_how_to_get_one(artifacts, tmp_path):
    nothing = run_cli("compare", artifacts["ref"], artifacts["ref"])
    assert nothing.returncode == 0, nothing.stderr
    assert nothing.stdout.splitlines()[-1] == "no report written: add --out DIR for the HTML report, plots and CI files"
    json_only = run_cli("compare", artifacts["ref"], artifacts["ref"], "--json", tmp_path / "s.json")
    assert json_only.stdout.splitlines()[-1].startswith(f"wrote {tmp_path / 's.json'}; no report written")
    with_out = run_cli("compare", artifacts["ref"], artifacts["ref"], "--out", tmp_path / "r")
    assert with_out.stdout.splitlines()[-1] == f"report: {tmp_path / 'r' / 'index.html'}"


def test_the_fixed_bounds_deciding_uncalibrated_say_how_far_and_how_to_calibrate(artifacts, tmp_path):
    from verify_ate.verify.compare.calibration import calibration_from_floors, fixed_ceiling

    result = run_cli("compare", artifacts["ref"], artifacts["other_noise"], "--force", "--json", tmp_path / "s.json")
    summary = json.loads((tmp_path / "s.json").read_text())
    notice = next(n for n in summary["notices"] if n["kind"] == "uncalibrated")
    share = 100 * summary["position"]["rmse"] / 0.03
    assert f"position rmse at {share:.2g} %" in notice["text"]
    assert "may be far too loose" in notice["text"]
    assert "measure its own noise floor with --calibrate" in result.stdout
    floors = {"bfloat16": {s: dict.fromkeys(("rmse", "mean", "median", "max", "p95"), 1e-3) for s in SERIES}}
    calibration_from_floors(floors, fixed_ceiling(0.03, 0.2), {}).save(tmp_path / "cal.json")
    calibrated = run_cli(
        "compare", artifacts["ref"], artifacts["other_noise"], "--force", "--calibration", tmp_path / "cal.json"
    )
    assert "--calibrate" not in calibrated.stdout
    assert "may be far too loose" not in calibrated.stdout


SERIES = ("position", "orientation", "orientation_rpy")


def test_the_two_orientation_errors_are_noted_only_where_they_change_a_verdict(tmp_path, rng):
    actions = koch_actions(rng, n=2)
    reference = save_artifact(make_artifact(actions), tmp_path / "ref.npz")
    under_test = save_artifact(make_artifact(actions + 0.2), tmp_path / "dut.npz")
    first = run_cli("compare", reference, under_test, "--json", tmp_path / "s.json")
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["orientation_disagreement"]["count"] > 0  # they disagree somewhere...
    assert "roll-pitch-yaw" not in first.stdout  # ...but both pass, so nothing to say
    geodesic, rpy = summary["orientation"]["rmse"], summary["orientation_rpy"]["rmse"]
    between = (geodesic + rpy) / 2
    second = run_cli("compare", reference, under_test, "--rot-tol", f"{between:.9g}")
    assert "roll-pitch-yaw" in second.stdout  # now one passes and the other fails


# ---------------------------------------------------------------- words that mean what they say


def test_a_mistyped_command_or_flag_is_answered_with_what_was_meant():
    command = run_cli("comapre", "a.npz", "b.npz")
    assert command.returncode == 2
    assert "unknown command 'comapre'; did you mean 'compare'?" in command.stderr
    flag = run_cli("--demo", "--dut-dytpe", "bfloat16")
    assert flag.returncode == 2
    assert "did you mean --dut-dtype?" in flag.stderr
    assert len(flag.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # the demo cache
def test_a_weights_file_given_as_checkpoint_says_to_pass_its_folder(demo_cache, demo_dataset, tmp_path):
    weights = tiny_checkpoint(demo_cache) / "model.safetensors"
    result = run_cli("--checkpoint", weights, "--dataset", demo_dataset, "--dut", "cpu")
    assert result.returncode == 2
    assert f"--checkpoint {weights}: is a file; pass the checkpoint's folder ({weights.parent})" in result.stderr


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_every_flag_has_help_that_states_its_default(command):
    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    formatter = HelpFormatter("verify-ate")
    unexplained = []
    for parser in parsers(PARSERS[command]()):
        for action in parser._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            text = formatter._get_help_string(action)
            switch = isinstance(action, (argparse._StoreTrueAction, argparse._StoreConstAction))
            if not text or not (switch or action.required or "default" in text):
                unexplained.append(f"{parser.prog} {'/'.join(action.option_strings)}: {text!r}")
    assert unexplained == []


# ---------------------------------------------------------------- nothing looks hung, counters are right


def _counters(stderr: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in re.findall(r"^\[(\d+)/(\d+)\]", stderr, flags=re.MULTILINE)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv",
    [
        ("--demo", "--dut", "cpu", "--dut-dtype", "bfloat16"),
        ("--demo", "--dut", "cpu", "--iters", "0", "--calibrate", "--trace"),
        ("run", "--demo", "--iters", "2"),
        ("sweep", "--demo", "--frames", "0:4", "--seeds", "0,1", "--batch-size", "3"),
    ],
    ids=["one-shot", "calibrate-and-trace", "run", "sweep"],
)
def test_the_progress_counter_ends_on_its_total(demo_cache, tmp_path, argv):
    extra = ("--save", tmp_path / "side.npz") if argv[0] == "run" else ("--out", tmp_path / "out")
    result = run_cli(*argv, "--cache-dir", demo_cache, *extra)
    assert result.returncode == 0, result.stderr
    counters = _counters(result.stderr)
    assert counters, result.stderr
    assert all(count <= total for count, total in counters), result.stderr
    assert counters[-1][0] == counters[-1][1], result.stderr  # the done line: every planned step was taken


def test_a_long_step_says_it_is_still_running():
    stream = io.StringIO()
    with Progress(2, stream=stream, heartbeat_s=0.3) as progress:
        progress.step("compiling")
        time.sleep(1.6)
    lines = stream.getvalue().splitlines()
    alive = [line for line in lines if "(still running," in line]
    assert alive, lines
    assert alive[0].startswith("[1/2] compiling ")


def test_a_step_past_the_plan_raises_the_total_and_is_marked():
    stream = io.StringIO()
    with Progress(1, stream=stream, heartbeat_s=None) as progress:
        progress.step("one")
        progress.step("two")
    assert progress.overrun
    assert stream.getvalue().splitlines()[1].startswith("[2/2] two")


@pytest.mark.slow
def test_a_sweep_counts_chunks_and_times_one_inference(demo_cache, tmp_path):
    result = run_cli(
        "sweep", "--demo", "--cache-dir", demo_cache, "--frames", "0:3", "--seeds", "0,1", "--iters", "2",
        "--json", tmp_path / "s.json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "sweep: 3 frames x 2 seeds = 6 chunks" in result.stdout
    assert "0 of 6 chunks over" not in result.stdout  # only the per-frame checks say that, and none ran
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["ref"]["latency_ms"]["batch_size"] == 1
    assert summary["ref"]["throughput"]["batch_mean_ms"] > 0
