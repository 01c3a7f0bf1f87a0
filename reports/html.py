"""The HTML report: one self-contained page (inline CSS, no script, no network) beside its PNG plots.

Input is plain data: the JSON summary dict and a `ReportArrays` of NumPy arrays, so `reports`
never imports `verify`. A sweep and a divergence trace add their sections (templates/sections.html,
which extends report.html) from reports/sweep_report.py and reports/trace_report.py. Text that came
from datasets or checkpoints (task strings, joint names, versions) reaches the page only through
Jinja2 with autoescape on.
Write order: every PNG first, index.html last, each atomically: a page that exists has its plots.
"""

from __future__ import annotations

import datetime as _datetime
import math
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from verify_ate.reports import plots
from verify_ate.reports.atomic import write_text
from verify_ate.reports.data import ReportArrays, SweepArrays
from verify_ate.reports.format import is_number, number, text
from verify_ate.reports.summary_files import SERIES_KEYS
from verify_ate.reports.sweep_report import sweep_section
from verify_ate.reports.trace_report import trace_section

TEMPLATES = Path(__file__).resolve().parent / "templates"
HASH_KEYS = (
    ("noise_sha256", "noise sha256"),
    ("observation_sha256", "observation sha256"),
    ("checkpoint_sha256", "checkpoint sha256"),
)
# Where the input came from, in this order. The harness nests these in meta["observation"]; a
# hand-made artifact may hold them at the top level. Both are read.
SOURCE_KEYS = (
    ("task", "task"),
    ("dataset", "dataset"),
    ("repo_id", "dataset repo id"),
    ("episode", "episode"),
    ("frame", "frame"),
    ("frames", "frames"),
    ("checkpoint", "checkpoint"),
)
SHOWN_KEYS = {
    "device",
    "dtype",
    "versions",
    "latency_ms",
    "load",
    *(k for k, _ in HASH_KEYS),
    *(k for k, _ in SOURCE_KEYS),
}
# latency_ms as the harness writes it: whole predict, then the model call alone.
LATENCY_ROWS = (
    ("latency median", ("median_ms", "median")),
    ("latency p90", ("p90_ms", "p90")),
    ("model latency median", ("model_median_ms",)),
    ("model latency p90", ("model_p90_ms",)),
)
_MISSING = object()

PLOT_FILES = {
    "path": "end_effector_path.png",
    "position": "position_error.png",
    "orientation": "orientation_error.png",
    "joint_traces": "joint_traces.png",
    "joint_errors": "joint_errors.png",
}


def template_environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _source(meta: dict, key: str):
    if key in meta:
        return meta[key]
    observation = meta.get("observation")
    if isinstance(observation, dict) and key in observation:
        return observation[key]
    return _MISSING


def _latency_rows(meta: dict) -> dict[str, str]:
    """meta['latency_ms'] as label -> text: a dict (harness: median_ms/p90_ms/model_*; or median/p90),
    a list of samples, or one number."""
    latency = meta.get("latency_ms")
    if latency is None:
        return {}
    if isinstance(latency, dict):
        rows = {}
        for label, keys in LATENCY_ROWS:
            value = next((latency[k] for k in keys if k in latency), _MISSING)
            if value is not _MISSING:
                rows[label] = number(value, "ms")
        if "iters" in latency:
            rows["latency timing"] = f"{latency['iters']} calls after {latency.get('warmup', 0)} warm-up" + (
                f", timer {latency['timer']}" if latency.get("timer") else ""
            )
        return rows
    if isinstance(latency, (list, tuple)):
        samples = np.asarray([v for v in latency if is_number(v)], dtype=np.float64)
        if samples.size == 0:
            return {}
        return {
            "latency median": number(float(np.median(samples)), "ms"),
            "latency p90": number(float(np.percentile(samples, 90)), "ms"),
        }
    return {"latency median": number(float(latency), "ms") if is_number(latency) else text(latency)}


def _load_rows(meta: dict) -> dict[str, str]:
    """meta['load'] (what loading the model cost) as label -> text, beside the latency rows."""
    load = meta.get("load")
    if not isinstance(load, dict):
        return {}
    rows = {}
    if is_number(load.get("seconds")):
        rows["load time"] = number(load["seconds"], "s")
    if is_number(load.get("parameters")):
        size = load.get("parameter_bytes")
        rows["parameters"] = f"{load['parameters']:,}" + (f" ({size / 2**30:.3g} GiB)" if is_number(size) else "")
    for key, label in (("peak_device_memory_mib", "peak device memory"), ("peak_host_rss_mib", "peak host RSS")):
        if is_number(load.get(key)):
            rows[label] = number(load[key], "MiB")
    if is_number(load.get("host_rss_increase_mib")):
        rows["host RSS added by the model"] = number(load["host_rss_increase_mib"], "MiB")
    if load.get("float32_modules"):
        rows["kept in float32"] = ", ".join(text(name) for name in load["float32_modules"])
    if load.get("files"):
        rows["weights read"] = ", ".join(text(name) for name in load["files"])
    if load.get("layout"):
        rows["tensor names"] = text(load["layout"])
    if load.get("tied"):
        rows["filled from a tied twin"] = ", ".join(f"{text(a)} from {text(b)}" for a, b in load["tied"].items())
    return rows


def _provenance_rows(ref: dict, dut: dict) -> list[dict]:
    """One row per fact, reference beside under test; nested dicts (device_info, noise, observation) one
    row per field."""
    rows = []

    def add(label, ref_value, dut_value, kind="text"):
        rows.append(
            {"label": label, "ref": ref_value, "dut": dut_value, "kind": kind, "differs": ref_value != dut_value}
        )

    add("device", text(ref.get("device")), text(dut.get("device")))
    add("dtype", text(ref.get("dtype")), text(dut.get("dtype")))
    for key, label in (("variants", "variants (rewrites of pi0)"), ("faults", "INJECTED faults")):
        if ref.get(key) or dut.get(key):
            add(label, ", ".join(ref.get(key) or []) or "—", ", ".join(dut.get(key) or []) or "—")
    ref_versions, dut_versions = ref.get("versions") or {}, dut.get("versions") or {}
    if not isinstance(ref_versions, dict):
        ref_versions = {"versions": ref_versions}
    if not isinstance(dut_versions, dict):
        dut_versions = {"versions": dut_versions}
    ordered = [k for k in ("python", "torch", "torch_npu", "lerobot") if k in ref_versions or k in dut_versions]
    ordered += sorted((set(ref_versions) | set(dut_versions)) - set(ordered), key=str)
    for key in ordered:
        add(f"{key} version", text(ref_versions.get(key)), text(dut_versions.get(key)))
    for key, label in HASH_KEYS:
        add(label, text(ref.get(key)), text(dut.get(key)), "hash")
    ref_latency, dut_latency = {**_latency_rows(ref), **_load_rows(ref)}, {**_latency_rows(dut), **_load_rows(dut)}
    for label in dict.fromkeys([*ref_latency, *dut_latency]):
        add(label, ref_latency.get(label, "—"), dut_latency.get(label, "—"))
    for key, label in SOURCE_KEYS:
        ref_value, dut_value = _source(ref, key), _source(dut, key)
        if ref_value is not _MISSING or dut_value is not _MISSING:
            add(
                label,
                text(None if ref_value is _MISSING else ref_value),
                text(None if dut_value is _MISSING else dut_value),
            )
    for key in sorted((set(ref) | set(dut)) - SHOWN_KEYS, key=str):
        ref_value, dut_value = ref.get(key), dut.get(key)
        if isinstance(ref_value, dict) or isinstance(dut_value, dict):
            ref_value = ref_value if isinstance(ref_value, dict) else {}
            dut_value = dut_value if isinstance(dut_value, dict) else {}
            shown = SHOWN_KEYS if key == "observation" else set()
            for field in sorted((set(ref_value) | set(dut_value)) - shown, key=str):
                add(f"{key} {field}", text(ref_value.get(field)), text(dut_value.get(field)))
        else:
            add(key, text(ref_value), text(dut_value))
    return rows


def _gate_cards(summary: dict) -> list[dict]:
    """One card per gated error series: position and the orientation series `rot_metric` names."""
    cards = []
    for key in ("position", "orientation_rpy" if summary.get("rot_metric") == "rpy" else "orientation"):
        series = summary[key]
        value, threshold = series.get(series["stat"]), series["threshold"]
        finite = is_number(value) and math.isfinite(value)
        share = value / threshold if finite and threshold > 0 else None
        cards.append(
            {
                "name": key,
                "unit": series["unit"],
                "stat": series["stat"],
                "value": number(value, series.get("unit", "")),
                "threshold": number(threshold, series.get("unit", "")),
                "passed": bool(series["pass"]),
                "share": "n/a" if share is None else f"{share:.1%} of bound",
                "bar": 100.0 if share is None else min(share, 1.0) * 100,
            }
        )
    return cards


def _figure_notes(summary: dict) -> list[str]:
    """What the page says about the action-space figures, and the summary's notices (other than forced)."""
    notes = []
    space = summary.get("action_space")
    if isinstance(space, dict) and is_number(space.get("cosine")):
        unit = text(space.get("units"))
        notes.append(
            f"action space: cosine similarity {space['cosine']:.8f} (smallest per step "
            f"{space['min_step_cosine']:.8f}), MSE {number(space['mse'])} {unit}²"
        )
    notes += [text(notice["text"]) for notice in summary.get("notices", []) if notice.get("kind") != "forced"]
    return notes


def _statistics_rows(summary: dict, statistics: Sequence[str]) -> list[dict]:
    rows = []
    for key in SERIES_KEYS:
        if key not in summary:
            continue
        series = summary[key]
        rows.append(
            {
                "name": key,
                "unit": series.get("unit", ""),
                "cells": [{"text": number(series.get(s)), "gated": s == series["stat"]} for s in statistics],
                "threshold": number(series["threshold"]),
                "passed": bool(series["pass"]),
            }
        )
    return rows


def _nonfinite_notes(arrays: ReportArrays) -> list[str]:
    notes = []
    for what, values in (
        ("reference actions", arrays.reference_actions),
        ("under-test actions", arrays.under_test_actions),
        ("reference end-effector positions", arrays.reference_positions),
        ("under-test end-effector positions", arrays.under_test_positions),
        ("position errors", arrays.position_errors),
        ("orientation errors", arrays.orientation_errors),
    ):
        count = int(np.sum(~np.isfinite(np.asarray(values, dtype=np.float64))))
        if count:
            notes.append(f"{what}: {count} of {np.asarray(values).size} values are non-finite (NaN/Inf)")
    return notes


def write_plots(out_dir: Path, summary: dict, arrays: ReportArrays) -> list[dict]:
    """Write every PNG; returns what the page shows for each (file, title, caption, layout: tall, wide or '')."""
    ref_label = f"reference ({summary['ref'].get('device')}, {summary['ref'].get('dtype')})"
    dut_label = f"under test ({summary['dut'].get('device')}, {summary['dut'].get('dtype')})"
    n_chunks = int(
        np.asarray(arrays.position_errors).reshape(-1, np.asarray(arrays.position_errors).shape[-1]).shape[0]
    )
    paths = {ref_label: arrays.reference_positions, dut_label: arrays.under_test_positions}
    if arrays.arm_positions:
        paths = {}
        for arm, (reference, under_test) in arrays.arm_positions.items():
            paths[f"{arm} arm: {ref_label}"] = reference
            paths[f"{arm} arm: {dut_label}"] = under_test
    recorded_caption = ""
    if arrays.recorded_positions is not None:
        paths["recorded (dataset)"] = arrays.recorded_positions
        distance = (summary.get("recorded") or {}).get("reference") or {}
        recorded_caption = " The green dotted line is the path the dataset recorded from this frame on" + (
            f"; the reference's prediction is {distance['mean'] * 100:.2f} cm from it on average." if distance else "."
        )
    plots.plot_end_effector_path(
        paths,
        out_dir / PLOT_FILES["path"],
        title=f"end-effector path ({summary.get('robot', 'robot')}, TCP, base frame)",
        linestyles={"recorded (dataset)": ":"},
    )
    figures = [
        {
            "file": PLOT_FILES["path"],
            "title": "End-effector path",
            "caption": "TCP positions in the robot base frame; the grey square is the table plane z = 0, "
            "the black square the robot base. "
            "Equal scale on x, y and z."
            + (f" All {n_chunks} chunks drawn, chunk 0 strongest." if n_chunks > 1 else "")
            + (f" Every arm's path: {', '.join(arrays.arm_positions)}." if arrays.arm_positions else "")
            + recorded_caption,
            "layout": "tall",
        },
    ]
    for key, errors in (("position", arrays.position_errors), ("orientation", arrays.orientation_errors)):
        series = summary[key]
        unit = series["unit"]
        plots.plot_step_errors(
            errors,
            series["threshold"],
            out_dir / PLOT_FILES[key],
            key,
            unit,
            series["stat"],
            series.get(series["stat"]),
        )
        figures.append(
            {
                "file": PLOT_FILES[key],
                "title": f"{key.capitalize()} error per step",
                "caption": f"Error per step ({unit}) with the bound {number(series['threshold'], unit)} "
                "(red dashed) and the gated "
                f"{series['stat']} (green dotted)."
                + (f" {n_chunks} chunks: chunk 0 in blue, the others grey." if n_chunks > 1 else ""),
                "layout": "",
            }
        )
    plots.plot_joint_traces(
        arrays.reference_actions,
        arrays.under_test_actions,
        arrays.joint_names,
        out_dir / PLOT_FILES["joint_traces"],
        unit=arrays.joint_unit,
        reference_label=ref_label,
        under_test_label=dut_label,
    )
    chunk_note = f"Chunk 0 of {n_chunks} is plotted." if n_chunks > 1 else ""
    figures.append(
        {
            "file": PLOT_FILES["joint_traces"],
            "title": f"Joint trajectories ({arrays.joint_unit})",
            "caption": f"Reference (solid blue) and under test (dashed orange) per joint. {chunk_note}".strip(),
            "layout": "wide",
        }
    )
    plots.plot_joint_errors(
        arrays.reference_actions,
        arrays.under_test_actions,
        arrays.joint_names,
        out_dir / PLOT_FILES["joint_errors"],
        unit=arrays.joint_unit,
    )
    figures.append(
        {
            "file": PLOT_FILES["joint_errors"],
            "title": f"Absolute joint error ({arrays.joint_unit})",
            "caption": "|reference − under test| per joint and step."
            + (" Chunk 0 in colour, the other chunks grey." if n_chunks > 1 else ""),
            "layout": "wide",
        }
    )
    return figures


def _tool_version() -> str:
    try:
        return metadata.version("verify-ate")
    except metadata.PackageNotFoundError:
        return "unknown"


def _banner_latency(ref: dict, dut: dict) -> str | None:
    ref_median, dut_median = _latency_rows(ref).get("latency median"), _latency_rows(dut).get("latency median")
    if ref_median is None and dut_median is None:
        return None
    return f"{dut_median or '—'} under test vs {ref_median or '—'} reference"


def _bounds_rows(summary: dict) -> list[dict]:
    """The fixed and the calibrated bounds side by side, with which decides (empty without a calibration)."""
    gate = summary.get("gate") or {}
    calibrated = gate.get("calibrated")
    if not calibrated:
        return []
    fixed = gate["fixed"]
    decides = gate.get("deciding_gate", "fixed")
    return [
        {
            "name": "fixed",
            "position": number(fixed["position_m"], "m"),
            "orientation": number(fixed["orientation_rad"], "rad"),
            "passed": bool(fixed["pass"]),
            "role": "decides the exit code" if decides == "fixed" else "reported",
        },
        {
            "name": "calibrated",
            "position": number(calibrated["position_m"], "m"),
            "orientation": number(calibrated["orientation_rad"], "rad"),
            "passed": bool(calibrated["pass"]),
            "role": ("decides the exit code; " if decides == "calibrated" else "reported; ")
            + "; ".join(text(line) for line in [*calibrated["explained"], *calibrated.get("differences", [])]),
        },
    ]


def page_context(summary: dict, arrays: ReportArrays, figures: list[dict], statistics: Sequence[str]) -> dict:
    ref, dut = summary["ref"], summary["dut"]
    shape = summary.get("shape") or list(np.asarray(arrays.reference_actions).shape)
    joint_unit = summary.get("joint_units", arrays.joint_unit)
    return {
        "passed": bool(summary["pass"]),
        "verdict": "PASS" if summary["pass"] else "FAIL",
        "ref": {"device": text(ref.get("device")), "dtype": text(ref.get("dtype"))},
        "dut": {"device": text(dut.get("device")), "dtype": text(dut.get("dtype"))},
        "robot": text(summary.get("robot")),
        "policy": text(ref.get("policy")) if ref.get("policy") else None,  # artifacts of before policies: none
        "shape": "×".join(str(n) for n in shape),
        "n_steps": summary.get("n_steps"),
        "statistic": summary["position"]["stat"],
        # The banner shows one task (the reference's when both have one); provenance lists both sides.
        "task": next(
            (text(task) for task in (_source(ref, "task"), _source(dut, "task")) if task not in (_MISSING, None)), None
        ),
        "latency": _banner_latency(ref, dut),
        "notes": [
            *dict.fromkeys(text(meta["note"]) for meta in (ref, dut) if meta.get("note")),
            *_figure_notes(summary),
        ],
        "forced": [text(n["text"]) for n in summary.get("notices", []) if n.get("kind") == "forced"],
        "cards": _gate_cards(summary),
        "bounds": _bounds_rows(summary),
        "checks": [
            {"passed": bool(c["pass"]), "name": c["name"], "message": c["message"]} for c in summary.get("checks", [])
        ],
        "statistics": _statistics_rows(summary, statistics),
        "statistic_names": list(statistics),
        "joints": [
            {"name": text(name), "value": number(value, joint_unit)}
            for name, value in summary.get("joints", {}).items()
        ],
        "joint_unit": joint_unit,
        "provenance": _provenance_rows(ref, dut),
        "nonfinite": _nonfinite_notes(arrays),
        "figures": figures,
        "generated": _datetime.datetime.now(_datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "tool_version": _tool_version(),
    }


def render_report(
    out_dir: str | Path,
    summary: dict,
    arrays: ReportArrays,
    statistics: Sequence[str],
    sweep: SweepArrays | None = None,
    trace: dict | None = None,
) -> Path:
    """Write every plot, then `out_dir/index.html` last; returns the page's path.

    statistics: the statistic names of the table, in order. `sweep` and `trace` (the trace's JSON
    dict) add their sections; the standard plots then draw `sweep.standard`, worst chunk first.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if sweep is not None:
        arrays = sweep.standard
    figures = write_plots(out_dir, summary, arrays)
    if sweep is not None and sweep.shown_chunks < len(sweep.position_errors):
        for figure in figures:
            figure["caption"] += (
                f" Drawn: the {sweep.shown_chunks} worst of {len(sweep.position_errors)} chunks, worst as chunk 0."
            )
    elif sweep is not None:
        for figure in figures:
            figure["caption"] += " Chunks are ordered worst first: chunk 0 is the worst frame of the sweep."
    context = page_context(summary, arrays, figures, statistics)
    template = "report.html"
    if sweep is not None or trace is not None:
        template = "sections.html"
        context["sweep"] = sweep_section(out_dir, summary, sweep) if sweep is not None else None
        context["trace"] = trace_section(out_dir, trace) if trace is not None else None
    page = template_environment().get_template(template).render(**context)
    return write_text(out_dir / "index.html", page)
