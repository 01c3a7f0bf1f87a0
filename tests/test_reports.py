"""The report folder: HTML page, PNG plots, CI files; the fk path plot; the progress reporter.

Comparisons are built from real artifacts with the real comparator; the command line runs as a
user runs it, in a subprocess.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import struct
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest
import yaml
from conftest import koch_actions, make_artifact, run_cli

from verify_ate.kinematics import dataset_forward_kinematics, load_robot
from verify_ate.reports.html import PLOT_FILES, render_report
from verify_ate.reports.plots import plot_end_effector_path, plot_step_errors
from verify_ate.verify.compare.artifact import save_artifact
from verify_ate.verify.compare.comparator import compare
from verify_ate.verify.compare.gate import GateConfig
from verify_ate.verify.compare.metrics import STATISTICS
from verify_ate.verify.progress import Progress
from verify_ate.verify.publish import OutputPaths, publish, report_arrays

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
XSS = "<script>alert(1)</script>"
DUT_META = {  # provenance at the top level, latency as median/p90 (a hand-made artifact)
    "device": "npu:0",
    "dtype": "bfloat16",
    "versions": {"python": "3.12.3", "torch": "2.11.0", "torch_npu": "2.11.0", "lerobot": "0.6.1"},
    "latency_ms": {"median": 80.25, "p90": 85.5},
    "task": "grasp a block and put it in the bin",
    "dataset": "/data/koch_test",
    "episode": 25,
    "frame": 0,
}
REF_META = {  # provenance as verify/harness.py writes it: nested observation, latency_ms from measure_latency
    "device": "cpu",
    "dtype": "float32",
    "versions": {"python": "3.12.3", "torch": "2.11.0", "torch_npu": None, "lerobot": "0.6.1"},
    "latency_ms": {
        "median_ms": 670.5,
        "p90_ms": 702.25,
        "model_median_ms": 640.0,
        "model_p90_ms": 650.0,
        "iters": 5,
        "warmup": 1,
        "timer": "perf_counter",
    },
    "observation": {"task": DUT_META["task"], "dataset": "/data/koch_test", "episode": 25, "frames": [0], "fps": 30},
    "device_info": {"name": "AMD EPYC", "threads": 2},
    "note": "a note the page must show",
}


def png_size(path: Path) -> tuple[int, int]:
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


class PageParts(HTMLParser):
    """The parts of a page the tests look at: tags seen, image sources, links, the body's visible text."""

    def __init__(self):
        super().__init__()
        self.tags, self.images, self.urls, self.text = [], [], [], []
        self._in_body = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append(tag)
        self._in_body = self._in_body or tag == "body"
        if tag == "img":
            self.images.append(attributes.get("src"))
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]

    def handle_data(self, data):
        if self._in_body:
            self.text.append(data)


def parse_page(path: Path) -> PageParts:
    parts = PageParts()
    parts.feed(Path(path).read_text(encoding="utf-8"))
    parts.plain_text = " ".join(" ".join(parts.text).split())
    return parts


def comparison(rng, n=1, noise_deg=0.05, shift_deg=None, nan_at=None, ref_meta=None, dut_meta=None):
    reference = koch_actions(rng, n=n)
    under_test = (reference + rng.normal(0, noise_deg, reference.shape)).astype(np.float32)
    if shift_deg is not None:
        under_test[..., 1] += shift_deg  # shoulder_lift: moves the whole arm
    if nan_at is not None:
        under_test[nan_at] = np.nan
    ref = make_artifact(reference, **{**REF_META, **(ref_meta or {})})
    dut = make_artifact(under_test, **{**DUT_META, **(dut_meta or {})})
    return compare(ref, dut, load_robot("koch_v1_1"), GateConfig.from_file())


def test_publish_writes_a_self_contained_page_with_plots_beside_it(tmp_path, rng):
    out = tmp_path / "report"
    result = comparison(rng)
    stream = io.StringIO()
    summary = publish(result, OutputPaths(out), stream=stream)

    assert summary["pass"] is True
    assert "PASS" in stream.getvalue()
    assert str(out / "index.html") in stream.getvalue()
    for name in ("index.html", "summary.json", "summary.md", "junit.xml", *PLOT_FILES.values()):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*partial")), "a temporary file was left behind"
    for name in PLOT_FILES.values():
        width, height = png_size(out / name)
        assert width > 300
        assert height > 200

    page = parse_page(out / "index.html")
    # Self-contained: no script, no external stylesheet, every image a relative PNG beside the page.
    assert "script" not in page.tags
    assert "link" not in page.tags
    assert sorted(page.images) == sorted(PLOT_FILES.values())
    assert all("://" not in url and not url.startswith("/") for url in page.urls)
    text = page.plain_text
    assert text.startswith("PASS")
    stat = summary["position"]["stat"]
    for key, unit, bound in (("position", "m", "0.03"), ("orientation", "rad", "0.2")):
        assert f"{key} ATE · {stat}" in text
        assert f"{summary[key][stat]:.4g} {unit}" in text
        assert f"≤ {bound} {unit}" in text
    for cell in ("rmse", "mean", "median", "std", "min", "max", "p95", "bound", "pass"):
        assert f" {cell} " in text
    # Provenance: both sides, with versions, hashes, latency, task and dataset position.
    for expected in (
        "device cpu npu:0",
        "dtype float32 bfloat16",
        "torch_npu version — 2.11.0",
        "lerobot version 0.6.1 0.6.1",
        f"noise sha256 {'a' * 64} {'a' * 64}",
        f"observation sha256 {'b' * 64}",
        f"checkpoint sha256 {'c' * 64}",
        "latency median 670.5 ms 80.25 ms",
        "latency p90 702.2 ms 85.5 ms",
        "model latency median 640 ms —",
        "latency timing 5 calls after 1 warm-up, timer perf_counter —",
        f"task {DUT_META['task']} {DUT_META['task']}",
        "dataset /data/koch_test /data/koch_test",
        "episode 25 25",
        "frame — 0",
        "frames [0] —",
        "device_info name AMD EPYC —",
        "observation fps 30 —",
        "latency (median per inference): 80.25 ms under test vs 670.5 ms reference",
        "Note: a note the page must show",
    ):
        assert expected in text, expected


def test_a_failing_gate_reads_fail_with_how_far_over(tmp_path, rng):
    out = tmp_path / "report"
    summary = publish(comparison(rng, shift_deg=15.0), OutputPaths(out), stream=io.StringIO())
    assert summary["pass"] is False
    html = (out / "index.html").read_text()
    assert 'class="banner fail"' in html
    assert 'data-verdict="FAIL"' in html
    text = parse_page(out / "index.html").plain_text
    assert text.startswith("FAIL")
    assert "OVER BOUND" in text
    position_check = next(c for c in summary["checks"] if c["name"] == "position")
    assert "OVER bound 0.03 m by" in position_check["message"]
    assert position_check["message"] in text


def test_non_finite_output_is_plotted_where_finite_and_said_on_the_page(tmp_path, rng):
    out = tmp_path / "report"
    summary = publish(comparison(rng, n=2, nan_at=(0, slice(10, 14), 2)), OutputPaths(out), stream=io.StringIO())
    assert summary["pass"] is False
    assert summary["finite"] is False
    for name in PLOT_FILES.values():
        png_size(out / name)
    text = parse_page(out / "index.html").plain_text
    assert "Non-finite values (NaN/Inf)" in text
    assert "under-test actions: 4 of 600 values are non-finite" in text
    assert "n/a" in text  # statistics of a broken series are not numbers


def test_every_value_non_finite_still_renders(tmp_path, rng):
    result = comparison(rng, nan_at=(0,))
    arrays = report_arrays(result)
    assert not np.isfinite(arrays.under_test_positions).any()
    page = render_report(tmp_path / "report", result.summary(), arrays, STATISTICS)
    assert "FAIL" in parse_page(page).plain_text
    for name in PLOT_FILES.values():
        png_size(tmp_path / "report" / name)


def test_text_from_data_is_escaped_never_live(tmp_path, rng):
    result = comparison(
        rng, ref_meta={"task": f"pick {XSS} up"}, dut_meta={"task": f"pick {XSS} up", "device": f"npu{XSS}"}
    )
    summary = result.summary()
    # A joint name cannot pass compare() (it must match the robot config), so it is injected here,
    # where the renderer takes it: the summary's joint table and the plot titles.
    summary["joints"] = {(XSS if name == "gripper" else name): value for name, value in summary["joints"].items()}
    arrays = report_arrays(result)
    arrays = dataclasses.replace(arrays, joint_names=(*arrays.joint_names[:-1], f"$x$ {XSS}"))
    page = render_report(tmp_path / "report", summary, arrays, STATISTICS)

    parts = parse_page(page)
    assert "script" not in parts.tags
    html = page.read_text()
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert f"pick {XSS} up" in parts.plain_text  # shown to the reader as the literal text
    assert "<th>&lt;script&gt;alert(1)&lt;/script&gt;</th>" in html  # the joint table header
    assert "npu&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the device in banner and provenance


def test_several_chunks_say_which_chunk_is_plotted(tmp_path, rng):
    result = comparison(rng, n=3)
    page = render_report(tmp_path / "report", result.summary(), report_arrays(result), STATISTICS)
    text = parse_page(page).plain_text
    assert "Chunk 0 of 3 is plotted." in text
    assert "actions 3×50×6" in text
    assert "150 poses compared" in text


def test_rad_artifacts_are_plotted_in_degrees(rng):
    reference = koch_actions(rng)
    ref = make_artifact(np.radians(reference), units="rad")
    dut = make_artifact(np.radians(reference), units="rad")
    arrays = report_arrays(compare(ref, dut, load_robot("koch_v1_1"), GateConfig.from_file()))
    assert arrays.joint_unit == "deg"
    np.testing.assert_allclose(arrays.reference_actions, reference, atol=1e-9)


def test_cli_compare_out_writes_the_whole_report_folder(tmp_path, rng):
    reference = koch_actions(rng, n=2)
    save_artifact(make_artifact(reference, **REF_META), tmp_path / "ref.npz")
    save_artifact(make_artifact(reference + rng.normal(0, 0.05, reference.shape), **DUT_META), tmp_path / "dut.npz")
    out = tmp_path / "reports" / "ci"
    started = time.perf_counter()
    completed = run_cli(
        "compare", tmp_path / "ref.npz", tmp_path / "dut.npz", "--out", out, "--junit", out / "junit.xml"
    )
    seconds = time.perf_counter() - started
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("PASS")
    for name in ("index.html", "summary.json", "summary.md", "junit.xml", *PLOT_FILES.values()):
        assert (out / name).is_file(), name
    for name in PLOT_FILES.values():
        png_size(out / name)
    assert json.loads((out / "summary.json").read_text())["pass"] is True
    assert "**PASS**" in (out / "summary.md").read_text()
    suite = ET.parse(out / "junit.xml").getroot()
    assert suite.get("failures") == "0"
    assert int(suite.get("tests")) == 4  # position, orientation, finite, gripper
    assert parse_page(out / "index.html").plain_text.startswith("PASS")
    assert seconds < 60, f"compare --out took {seconds:.1f}s"


# ---- the end-effector path plot (verify-ate fk --plot) ---------------------------------------


def _line(axes, label):
    return next(line for line in axes.get_lines() if line.get_label() == label)


def test_end_effector_path_plot_draws_each_path_its_shadow_and_the_base(tmp_path, rng, drawn):
    robot = load_robot("koch_v1_1")
    positions = dataset_forward_kinematics(robot, koch_actions(rng, n=3)).position  # [3, 50, 3]
    single = plot_end_effector_path({"path": positions[0]}, tmp_path / "one.png", title="one path")
    several = plot_end_effector_path({"ref": positions, "dut": positions + 0.01}, tmp_path / "many.png")
    for path in (single, several):
        width, height = png_size(path)
        assert 400 < width < 1200
        assert 400 < height < 1200
    axes = drawn[1].axes[0]
    for label, expected in (("ref", positions[0]), ("dut", positions[0] + 0.01)):
        np.testing.assert_allclose(np.stack(_line(axes, label).get_data_3d(), axis=-1), expected)
    shadow = np.stack(_line(axes, "shadow on table").get_data_3d(), axis=-1)
    np.testing.assert_allclose(shadow[:, :2], positions[0][:, :2])
    assert np.all(shadow[:, 2] == 0)  # on the table plane
    others = [c for c in axes.collections if type(c).__name__ == "Line3DCollection"]
    assert len(others) == 2  # the other two chunks of each side, one collection per side
    assert axes.get_title() == "end-effector path"


def test_end_effector_path_plot_survives_paths_under_the_table_and_nan(tmp_path):
    t = np.linspace(0, 1, 50)
    path = np.stack([0.1 * np.cos(6 * t), 0.2 + 0.1 * np.sin(6 * t), 0.05 - 0.2 * t], axis=-1)  # sinks under z=0
    path[5:8] = np.nan
    png_size(plot_end_effector_path({"wrong sign": path}, tmp_path / "under.png"))
    png_size(plot_end_effector_path({"nothing": np.full((4, 3), np.inf)}, tmp_path / "empty.png"))
    with pytest.raises(ValueError, match=r"\[\.\.\., 3\]"):
        plot_end_effector_path({"bad": np.zeros((5, 2))}, tmp_path / "bad.png")


def test_step_error_plot_draws_the_errors_the_bound_and_the_gated_statistic(tmp_path, drawn):
    errors = np.zeros((2, 50))
    errors[0] = np.linspace(0.0, 0.01, 50)
    png_size(plot_step_errors(errors, 0.03, tmp_path / "zero.png", "position", "m", "rmse", 0.004))
    axes = drawn[0].axes[0]
    np.testing.assert_array_equal(_line(axes, "chunk 0").get_ydata(), errors[0])
    assert set(_line(axes, "bound 0.03 m").get_ydata()) == {0.03}
    assert set(_line(axes, "rmse 0.004 m (gated)").get_ydata()) == {0.004}
    (others,) = axes.collections  # chunk 1, drawn thin behind chunk 0
    assert others.get_label() == "chunk 1"
    np.testing.assert_array_equal(others.get_segments()[0][:, 1], errors[1])
    errors[1, 3] = np.inf
    png_size(plot_step_errors(errors, 0.03, tmp_path / "inf.png", "position", "m", "rmse", float("nan")))
    axes = drawn[1].axes[0]
    assert [text.get_text() for text in axes.texts] == ["1 non-finite errors not shown"]
    assert not any("(gated)" in line.get_label() for line in axes.get_lines())  # a NaN statistic is not drawn


def test_fk_plot_through_the_cli(tmp_path, rng):
    robot = load_robot("koch_v1_1")
    actions = koch_actions(rng)[0]
    header = ",".join(robot.dataset_joint_names)
    rows = "\n".join(",".join(f"{v:.6f}" for v in row) for row in actions)
    (tmp_path / "joints.csv").write_text(f"{header}\n{rows}\n")
    completed = run_cli("fk", "--input", tmp_path / "joints.csv", "--plot", tmp_path / "path.png")
    assert completed.returncode == 0, completed.stderr
    width, height = png_size(tmp_path / "path.png")
    assert width > 400
    assert height > 400


# ---- progress on stderr -----------------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_prints_one_line_per_step_off_a_terminal():
    stream, clock = io.StringIO(), FakeClock()
    with Progress(3, stream=stream, clock=clock) as progress:
        progress.step("running ref (cpu float32)")
        clock.now += 12.34
        progress.step("running dut (cpu bfloat16)")
        clock.now += 1.0
    assert stream.getvalue().splitlines() == [
        "[1/3] running ref (cpu float32) 0.0s",
        "[2/3] running dut (cpu bfloat16) 12.3s",
        "[2/3] done 13.3s",
    ]
    assert "\r" not in stream.getvalue()


def test_progress_redraws_a_bar_on_a_terminal():
    stream, clock = Terminal(), FakeClock()
    progress = Progress(4, stream=stream, clock=clock)
    progress.step("loading a long step name")
    clock.now += 2.0
    progress.step("short")
    progress.close()
    output = stream.getvalue()
    assert output.count("\r") == 3
    assert output.count("\n") == 1
    assert output.endswith("\n")
    assert "\r#####............... [1/4] loading a long step name 0.0s\x1b[K" in output
    assert "\r##########.......... [2/4] short 2.0s\x1b[K" in output
    progress.close()  # twice is harmless
    assert stream.getvalue() == output


def test_progress_quiet_writes_nothing_and_a_failure_is_named():
    stream = io.StringIO()
    with Progress(2, quiet=True, stream=stream) as progress:
        progress.step("anything")
    assert stream.getvalue() == ""

    stream = io.StringIO()
    with pytest.raises(RuntimeError, match="boom"), Progress(None, stream=stream, clock=FakeClock()) as progress:
        progress.step("step without a known total")
        raise RuntimeError("boom")
    assert stream.getvalue().splitlines() == ["[1] step without a known total 0.0s", "[1] failed 0.0s"]
    with pytest.raises(RuntimeError, match="closed"):
        progress.step("after close")


# ---- the CI examples ----------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "ci"


@pytest.mark.slow  # real processes
def test_gate_script_passes_the_exit_code_through(tmp_path, rng):
    reference = koch_actions(rng)
    shifted = reference.copy()
    shifted[..., 1] += 15.0
    save_artifact(make_artifact(reference), tmp_path / "ref.npz")
    save_artifact(make_artifact(shifted, device="cuda:0"), tmp_path / "bad.npz")
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MPLBACKEND": "Agg",
    }

    def gate(*args):
        return subprocess.run(
            ["bash", str(EXAMPLES / "gate.sh"), *map(str, args)],
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
        )

    passed = gate(tmp_path / "ref.npz", tmp_path / "ref.npz", tmp_path / "same")
    assert passed.returncode == 0, passed.stderr
    assert f"PASS (report: {tmp_path / 'same'}/index.html)" in passed.stdout
    assert (tmp_path / "same" / "junit.xml").is_file()
    failed = gate(tmp_path / "ref.npz", tmp_path / "bad.npz", tmp_path / "bad", "--stat", "max")
    assert failed.returncode == 1
    assert "FAILED" in failed.stderr
    assert json.loads((tmp_path / "bad" / "summary.json").read_text())["position"]["stat"] == "max"
    assert parse_page(tmp_path / "bad" / "index.html").plain_text.startswith("FAIL")
    failures = [f.get("message") for f in ET.parse(tmp_path / "bad" / "junit.xml").getroot().iter("failure")]
    assert any("position max" in message and "OVER bound 0.03 m by" in message for message in failures), failures
    missing = gate(tmp_path / "ref.npz", tmp_path / "absent.npz", tmp_path / "none")
    assert missing.returncode == 2
    assert "absent.npz: file not found" in missing.stderr
    assert "bad input" in missing.stderr
    assert gate(tmp_path / "ref.npz").returncode == 2


@pytest.mark.slow  # real processes
def test_github_workflow_gate_job_runs_as_written_and_publishes_what_it_wrote(tmp_path, rng):
    """The example workflow's gate job, its shell steps run as GitHub runs them (`bash -e`, a failed step
    skips the later ones unless they say `if: always()`) in a folder holding the two artifacts its download
    step fetches: the real `verify-ate compare` gates, the job summary gets summary.md, and the JUnit file
    and report folder the publishing steps name are what the command wrote."""
    workflow = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())
    gate_job = workflow["jobs"]["gate"]
    assert gate_job["permissions"]["checks"] == "write"
    uses = {step.get("uses", "").split("@")[0]: step for step in gate_job["steps"]}
    junit_action, upload = uses["mikepenz/action-junit-report"], uses["actions/upload-artifact"]
    assert junit_action.get("if") == "always()"
    assert upload.get("if") == "always()"
    assert uses["actions/download-artifact"]["with"]["pattern"] == "trajectory-*"
    shell_steps = [step for step in gate_job["steps"] if "run" in step and not step["run"].startswith("pip install")]
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MPLBACKEND": "Agg",
    }

    def run_gate_job(workspace: Path, dut: np.ndarray | None) -> tuple[list[int], str]:
        workspace.mkdir()
        save_artifact(make_artifact(reference), workspace / "ref.npz")  # what the download step puts in place
        if dut is not None:
            save_artifact(make_artifact(dut, device="npu:0"), workspace / "dut.npz")
        summary = workspace.parent / f"{workspace.name}-step-summary.md"
        codes = []
        for step in shell_steps:
            if any(code != 0 for code in codes) and step.get("if") != "always()":
                continue
            completed = subprocess.run(
                ["bash", "-e", "-c", step["run"]],
                cwd=workspace,
                capture_output=True,
                text=True,
                timeout=300,
                env={**environment, "GITHUB_STEP_SUMMARY": str(summary)},
            )
            codes.append(completed.returncode)
        return codes, summary.read_text() if summary.exists() else ""

    reference = koch_actions(rng)
    shifted = reference.copy()
    shifted[..., 1] += 15.0  # over the position bound: the gate fails, the always() steps still publish

    codes, step_summary = run_gate_job(tmp_path / "failing", shifted)
    assert codes == [1, 0]  # the gate step fails the job, the summary step runs anyway
    workspace = tmp_path / "failing"
    junit = workspace / junit_action["with"]["report_paths"]
    failures = [f.get("message") for f in ET.parse(junit).getroot().iter("failure")]
    assert any("position" in message and "OVER bound 0.03 m by" in message for message in failures), failures
    published = workspace / upload["with"]["path"]
    assert {"index.html", "summary.json", "summary.md", "junit.xml"} <= {p.name for p in published.iterdir()}
    assert junit.parent.resolve() == published.resolve()
    assert (published / "summary.md").read_text() in step_summary
    assert "**FAIL**" in step_summary
    assert "verify-ate-report" in step_summary
    assert upload["with"]["name"] == "verify-ate-report"

    codes, step_summary = run_gate_job(tmp_path / "no-dut", None)  # the under-test job left no artifact
    assert codes == [2, 0]
    assert "wrote no summary" in step_summary
    assert not (tmp_path / "no-dut" / upload["with"]["path"]).exists()
