"""Where a comparison's results go: the report folder and the CI files, all written atomically."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from reports.summary_files import write_json, write_junit, write_markdown
from verify.compare import ComparisonResult


def publish(result: ComparisonResult, out_dir: Path | None = None, json_path: Path | None = None, junit_path: Path | None = None, stream=None) -> dict:
    """Print the verdict, write the requested files; returns the JSON summary.

    `out_dir` gets summary.json, summary.md, junit.xml, then the PNG plots, then index.html last.
    """
    stream = stream or sys.stdout
    summary = result.summary()
    print(format_verdict(summary), file=stream)
    if out_dir is not None:
        from reports.html import render_report  # matplotlib is only imported when a report is asked for

        out_dir = Path(out_dir)
        write_summary_files(summary, out_dir)
        page = render_report(out_dir, summary, report_arrays(result))
        print(f"report: {page}", file=stream)
    write_requested_files(summary, json_path, junit_path)
    return summary


def write_summary_files(summary: dict, out_dir: Path) -> None:
    """summary.json, summary.md and junit.xml of a report folder (before its plots and page)."""
    write_json(summary, out_dir / "summary.json")
    write_markdown(summary, out_dir / "summary.md")
    write_junit(summary, out_dir / "junit.xml")


def write_requested_files(summary: dict, json_path: Path | None, junit_path: Path | None) -> None:
    """The --json and --junit files, wherever the user asked for them."""
    if json_path is not None:
        write_json(summary, json_path)
    if junit_path is not None:
        write_junit(summary, junit_path)


def report_arrays(result: ComparisonResult):
    """The plain arrays the HTML report plots; joints in degrees (what people read on a Koch arm)."""
    from reports.html import ReportArrays

    def degrees(artifact) -> np.ndarray:
        # compare() has already refused units other than deg/rad (the kinematics cannot read them).
        actions = np.asarray(artifact.actions, dtype=np.float64)
        return np.degrees(actions) if artifact.meta.get("units") == "rad" else actions

    return ReportArrays(
        reference_actions=degrees(result.reference),
        under_test_actions=degrees(result.under_test),
        joint_names=tuple(result.robot.dataset_joint_names),
        joint_unit="deg",
        reference_positions=np.asarray(result.reference_poses.position, dtype=np.float64),
        under_test_positions=np.asarray(result.under_test_poses.position, dtype=np.float64),
        position_errors=np.asarray(result.position.errors, dtype=np.float64),
        orientation_errors=np.asarray(result.orientation.errors, dtype=np.float64),
    )


def format_verdict(summary: dict) -> str:
    ref, dut = summary["ref"], summary["dut"]
    lines = [
        f"{'PASS' if summary['pass'] else 'FAIL'}  {ref.get('device')} ({ref.get('dtype')}) vs {dut.get('device')} ({dut.get('dtype')}), "
        f"robot {summary['robot']}, {summary['n_steps']} steps",
    ]
    for check in summary["checks"]:
        lines.append(f"  [{'ok' if check['pass'] else 'FAIL'}] {check['message']}")
    return "\n".join(lines)
