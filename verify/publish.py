"""Where results go: the verdict on stdout, the report folder and the CI files, each written once, atomically.

`publish` is the one way out for every command that judges (the one-shot form, `compare`, `sweep`):
it builds the JSON summary (plus the sweep and trace parts when there are any), prints the verdict,
and writes each requested file exactly once, index.html last, so a page that exists has its plots.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from verify_ate.noise import FixedNoise, save_noise
from verify_ate.reports.atomic import atomic_folder, atomic_path, write_text
from verify_ate.reports.data import ReportArrays, SweepArrays, WorstFrame
from verify_ate.reports.summary_files import write_json, write_junit, write_markdown
from verify_ate.verify.compare.artifact import save_artifact
from verify_ate.verify.compare.comparator import ComparisonResult
from verify_ate.verify.compare.gate import CALIBRATED_KINDS
from verify_ate.verify.compare.metrics import STATISTICS
from verify_ate.verify.errors import InputError

if TYPE_CHECKING:
    from verify_ate.verify.run.sweep import FrameTable, SweepOutcome
    from verify_ate.verify.run.trace.result import TraceResult

ROWS_CSV = "frames.csv"
ROWS_PARQUET = "frames.parquet"
TRACE_JSON = "trace.json"
CALIBRATION_JSON = "calibration.json"  # the calibration the gate used, for later --calibration FILE
# The standard per-step plots of a sweep draw at most this many chunks, worst first.
MAX_PLOTTED_CHUNKS = 64


@dataclass(frozen=True)
class OutputPaths:
    """Where the user asked for results: a report folder, a JSON summary, a JUnit file (each optional)."""

    out_dir: Path | None = None
    json_path: Path | None = None
    junit_path: Path | None = None

    def check(self) -> None:
        """Refuse (InputError) places that cannot take the results, before any work is done."""
        if self.out_dir is not None:
            check_output_folder(Path(self.out_dir))
        for path in (self.json_path, self.junit_path):
            if path is not None:
                check_output_file(Path(path))

    def owner_of(self, filename: str | None) -> Path:
        """Which requested output a failed file operation was for (for the error message)."""
        requested = [Path(p) for p in (self.out_dir, self.json_path, self.junit_path) if p is not None]
        for path in requested:
            if filename and str(filename).startswith(str(path.parent)):
                return path
        return requested[0] if requested else Path(".")


def check_output_folder(path: Path) -> None:
    """A report folder can be put at `path`: not an existing file, in a writable place (InputError)."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is not a folder; a report needs a folder")
    _check_writable(path)


def check_output_file(path: Path) -> None:
    """A file can be written at `path`: not an existing folder, in a writable place (InputError)."""
    if path.is_dir():
        raise InputError(f"{path}: is a folder; a file path is needed here")
    _check_writable(path)


def _check_writable(path: Path) -> None:
    existing = next(parent for parent in (path, *path.parents) if parent.exists())
    folder = existing if existing.is_dir() else existing.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{path}: cannot write there ({folder} is read-only or not writable)")


def publish(
    result: ComparisonResult,
    outputs: OutputPaths,
    *,
    sweep: SweepOutcome | None = None,
    worst_count: int = 3,
    trace: TraceResult | None = None,
    save_artifacts: bool = False,
    noise: FixedNoise | None = None,
    stream: TextIO | None = None,
    recorded=None,
) -> dict:
    """Print the verdict and write every requested file once; returns the JSON summary.

    result: the comparison (for a sweep, `sweep.result`). sweep: adds the sweep section, frames.csv
    and frames.parquet. trace: adds trace.json and the trace section. save_artifacts: ref.npz and
    dut.npz in the report folder, to re-compare (the commands that ran the model); noise: saved
    beside them, to re-run. worst_count: worst frames listed and plotted for a sweep. recorded: the
    dataset's actions from the compared frame on (verify_ate.verify.data.observation.RecordedChunk), drawn beside
    the predicted paths, with each side's distance from it in the summary.
    """
    stream = stream or sys.stdout
    summary = sweep.summary(max(worst_count, 1)) if sweep is not None else result.summary()
    if recorded is not None:
        summary["recorded"] = {
            "episode": recorded.episode,
            "frame": recorded.frame,
            **result.recorded_distance(recorded.actions, recorded.valid_steps),
        }
    if trace is not None:
        summary["trace"] = trace.summary(full=False)
        if outputs.out_dir is not None:
            summary["trace"]["file"] = TRACE_JSON
    lines = verdict_lines(summary, trace, sweep is not None)
    lines += output_lines(outputs)
    try:
        # Everything is staged first and put in place together at the end: an error or an interruption
        # leaves none of the requested files (and an existing report folder as it was).
        with contextlib.ExitStack() as stack:
            if outputs.out_dir is not None:
                staging = stack.enter_context(atomic_folder(outputs.out_dir))
                _write_report_folder(
                    staging, summary, result, sweep, worst_count, trace, save_artifacts, noise, recorded
                )
            if outputs.json_path is not None:
                write_json(summary, stack.enter_context(atomic_path(outputs.json_path)))
            if outputs.junit_path is not None:
                write_junit(summary, stack.enter_context(atomic_path(outputs.junit_path)))
    except OSError as error:
        where = outputs.owner_of(error.filename)
        raise InputError(f"{where}: cannot write the results there ({error.strerror or error})") from None
    for line in lines:
        print(line, file=stream)
    return summary


def _write_report_folder(
    out_dir: Path,
    summary: dict,
    result: ComparisonResult,
    sweep,
    worst_count: int,
    trace,
    save_artifacts: bool,
    noise,
    recorded=None,
) -> Path:
    """summary.json/md, junit.xml, the artifacts (and rows, trace.json), then the plots, index.html last."""
    from verify_ate.reports.html import render_report  # matplotlib is imported only when a report is asked for

    write_json(summary, out_dir / "summary.json")
    write_markdown(summary, out_dir / "summary.md", STATISTICS)
    write_junit(summary, out_dir / "junit.xml")
    if save_artifacts:
        save_artifact(result.reference, out_dir / "ref.npz")
        save_artifact(result.under_test, out_dir / "dut.npz")
    if noise is not None:
        save_noise(noise, out_dir / "noise.safetensors")
    if result.config.calibration is not None:
        result.config.calibration.save(out_dir / CALIBRATION_JSON)
    if sweep is not None:
        write_rows(sweep.table, out_dir / ROWS_CSV, out_dir / ROWS_PARQUET)
    trace_document = trace.summary() if trace is not None else None
    if trace_document is not None:
        write_json(trace_document, out_dir / TRACE_JSON)
    sweep_arrays = sweep_report_data(sweep, worst_count) if sweep is not None else None
    arrays = report_arrays(result, recorded)
    return render_report(out_dir, summary, arrays, STATISTICS, sweep=sweep_arrays, trace=trace_document)


def verdict_lines(summary: dict, trace: TraceResult | None = None, is_sweep: bool = False) -> list[str]:
    """The verdict as printed on stdout: one headline, one line per gate check, then sweep and trace lines."""
    ref, dut = summary["ref"], summary["dut"]
    lines = [
        f"{'PASS' if summary['pass'] else 'FAIL'}  {ref.get('device')} ({ref.get('dtype')}{_rewrites(ref)}) vs "
        f"{dut.get('device')} ({dut.get('dtype')}{_rewrites(dut)}), robot {summary['robot']}, "
        f"{summary['n_steps']} steps",
    ]
    gate = summary.get("gate") or {}
    calibrated = gate.get("calibrated")
    for check in summary["checks"]:
        fixed_label = " (fixed bounds)" if calibrated and _calibrated_bound(check) else ""
        lines.append(f"  [{'ok' if check['pass'] else 'FAIL'}] {check['message']}{fixed_label}")
    if calibrated:
        decides = (
            "decides the exit code" if gate["deciding_gate"] == "calibrated" else "reported; the fixed bounds decide"
        )
        lines.append(f"  calibrated gate: {'PASS' if calibrated['pass'] else 'FAIL'} ({decides})")
        for check in filter(_calibrated_bound, calibrated["checks"]):
            lines.append(f"  [{'ok' if check['pass'] else 'FAIL'}] {check['message']} (calibrated)")
        for difference in calibrated.get("differences", []):
            lines.append(f"  note: the calibration was {difference}")
    for notice in summary.get("notices", []):
        lines.append(f"  {notice_line(notice)}")
    recorded = summary.get("recorded")
    if recorded:
        lines.append(
            f"  recorded path: the reference's tool centre point is {recorded['reference']['mean']:.4g} m from the "
            f"dataset's on average (max {recorded['reference']['max']:.4g} m) over {recorded['valid_steps']} steps"
        )
    if is_sweep:
        lines.append(_sweep_line(summary["sweep"]))
    if trace is not None:
        where = f" ({trace.unit['name'] if trace.unit else 'frame'})" if is_sweep else ""
        lines.append(f"  trace{where}: {trace.headline()}")
    return lines


def notice_line(notice: dict) -> str:
    """A notice of the summary as printed: what to do about it where there is something to do."""
    if notice["kind"] == "forced":
        return notice["text"]
    if notice["kind"] == "uncalibrated":
        return (
            f"note: {notice['text']}; measure its own noise floor with --calibrate (or reuse one with --calibration "
            "FILE)"
        )
    return f"note: {notice['text']}"


def output_lines(outputs: OutputPaths) -> list[str]:
    """Where the results went, or that no report was written and how to get one."""
    if outputs.out_dir is not None:
        return [f"report: {Path(outputs.out_dir) / 'index.html'}"]
    written = [str(path) for path in (outputs.json_path, outputs.junit_path) if path is not None]
    wrote = f"wrote {', '.join(written)}; " if written else ""
    return [f"{wrote}no report written: add --out DIR for the HTML report, plots and CI files"]


def _calibrated_bound(check: dict) -> bool:
    """Whether a calibration sets this check's bound (position and orientation, pooled or per frame);
    the finite, cosine and joint checks are the same in both gates."""
    return check["kind"] in CALIBRATED_KINDS


def _rewrites(meta: dict) -> str:
    """', variants fused-qkv, INJECTED rope-interleaved' for a side that ran rewritten."""
    parts = []
    if meta.get("variants"):
        parts.append(f"variants {'+'.join(meta['variants'])}")
    if meta.get("faults"):
        parts.append(f"INJECTED {'+'.join(meta['faults'])}")
    return "".join(f", {part}" for part in parts)


def _sweep_line(sweep: dict) -> str:
    # The plan's notes (clipping) went to stderr when the sweep started, and are in the JSON.
    n_seeds = 0 if sweep["seeds"] is None else len(sweep["seeds"])
    seeds = " with one fixed noise" if not n_seeds else f" x {n_seeds} seed{'s' if n_seeds != 1 else ''}"
    return (
        f"  sweep: {sweep['n_frames']} frames{seeds} = {sweep['n_units']} chunks in {sweep['n_batches']} batches of "
        f"<= {sweep['batch_size']}, {sweep['world_size']} rank(s); {sweep['chunks_failed']} chunk(s) fail on their own "
        f"{sweep['unit_statistic']}"
    )


def report_arrays(result: ComparisonResult, recorded=None) -> ReportArrays:
    """The plain arrays the HTML report plots; joints in degrees (what people read on a Koch arm).
    recorded: a RecordedChunk whose tool centre point path is drawn beside the predicted ones."""

    def degrees(artifact) -> np.ndarray:
        return result.robot.dataset_to_degrees(artifact.actions, artifact.meta["units"], result.robot_calibration)

    return ReportArrays(
        reference_actions=degrees(result.reference),
        under_test_actions=degrees(result.under_test),
        joint_names=tuple(result.reference.meta.get("joint_names") or result.robot.dataset_joint_names),
        joint_unit="m, rad (pose values)" if result.reference.meta["units"] == "pose" else "deg",
        reference_positions=np.asarray(result.reference_poses.position, dtype=np.float64),
        under_test_positions=np.asarray(result.under_test_poses.position, dtype=np.float64),
        position_errors=np.asarray(result.position.errors, dtype=np.float64),
        orientation_errors=np.asarray(result.orientation.errors, dtype=np.float64),
        recorded_positions=None
        if recorded is None
        else result.recorded_positions(recorded.actions, recorded.valid_steps),
        arm_positions={
            arm.name: (
                np.asarray(arm.reference_poses.position, dtype=np.float64),
                np.asarray(arm.under_test_poses.position, dtype=np.float64),
            )
            for arm in result.arms
        }
        if len(result.arms) > 1
        else {},
    )


def sweep_report_data(outcome: SweepOutcome, worst_count: int) -> SweepArrays:
    """The sweep's arrays for the report: the standard plots draw the worst chunks first."""
    from verify_ate.verify.run.sweep import unit_name

    full = report_arrays(outcome.result)
    table = outcome.table
    shown = table.worst(min(len(table.score), MAX_PLOTTED_CHUNKS))

    def pick(values: np.ndarray) -> np.ndarray:
        return np.asarray(values)[shown]

    standard = replace(
        full,
        reference_actions=pick(full.reference_actions),
        under_test_actions=pick(full.under_test_actions),
        reference_positions=pick(full.reference_positions),
        under_test_positions=pick(full.under_test_positions),
        position_errors=pick(full.position_errors),
        orientation_errors=pick(full.orientation_errors),
    )
    worst = [
        WorstFrame(
            name=unit_name(outcome.plan, i),
            episode=int(table.episode[i]),
            frame=int(table.frame[i]),
            seed=table.seed[i],
            position_stat=float(table.position_stat[i]),
            orientation_stat=float(table.orientation_stat[i]),
            passed=bool(table.passed[i]),
            reference_actions=full.reference_actions[i],
            under_test_actions=full.under_test_actions[i],
            position_errors=full.position_errors[i],
            orientation_errors=full.orientation_errors[i],
        )
        for i in table.worst(max(worst_count, 1))
    ]
    return SweepArrays(
        standard=standard,
        shown_chunks=len(shown),
        position_errors=full.position_errors,
        orientation_errors=full.orientation_errors,
        position_unit_stat=table.position_stat,
        orientation_unit_stat=table.orientation_stat,
        unit_statistic=table.statistic,
        worst=worst,
    )


def write_rows(table: FrameTable, csv_path: Path | None = None, parquet_path: Path | None = None) -> None:
    """The per-frame table as CSV and Parquet (each written atomically). Metres and radians."""
    from verify_ate.verify.run.sweep import ROW_COLUMNS

    rows = table.rows()
    if csv_path is not None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=ROW_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: ("" if row[k] is None else (repr(row[k]) if isinstance(row[k], float) else row[k]))
                    for k in ROW_COLUMNS
                }
            )
        write_text(csv_path, buffer.getvalue())
    if parquet_path is not None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {
            "episode": pa.array(table.episode.astype(np.int64)),
            "frame": pa.array(table.frame.astype(np.int64)),
            "seed": pa.array(table.seed, type=pa.int64()),
            "position_rmse": pa.array(table.position_rmse),
            "position_max": pa.array(table.position_max),
            "orientation_rmse": pa.array(table.orientation_rmse),
            "orientation_max": pa.array(table.orientation_max),
            "finite": pa.array(table.finite.astype(bool)),
            "pass": pa.array(table.passed.astype(bool)),
        }
        arrow = pa.table(columns).replace_schema_metadata(
            {"units": "position m, orientation rad", "statistic": table.statistic}
        )
        with atomic_path(parquet_path) as temporary:
            pq.write_table(arrow, str(temporary))
