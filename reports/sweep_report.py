"""The HTML report of a sweep and/or a divergence trace: the one-comparison page plus sections.

The page is templates/sweep.html, which extends report.html (the same banner, gate cards,
statistics, standard plots and provenance) and adds: the sweep (error distribution as histogram
and CDF with the bounds drawn, the per-frame statistic's distribution, the worst frames with their
own plots, the per-frame table files) and the trace (relative error and cosine per module and per
Euler step, the first module over the tolerance). Inputs are plain dicts and arrays, so `reports`
never imports `verify`. Every PNG is written first, index.html last, each atomically.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reports import html, plots
from reports.atomic import write_text

DISTRIBUTION_FILE = "error_distribution.png"
FRAME_STAT_FILE = "frame_statistic_distribution.png"
TRACE_FILE = "trace_relative_error.png"
TRACE_STEPS_FILE = "trace_steps.png"
PHASE_COLOURS = {"prefix": plots.REFERENCE_COLOUR, "step": plots.UNDER_TEST_COLOUR}


@dataclass(frozen=True)
class WorstFrame:
    name: str  # "episode 1 frame 4 seed 0"
    episode: int
    frame: int
    seed: int | None
    position_stat: float
    orientation_stat: float
    passed: bool
    reference_actions: np.ndarray  # [T, J]
    under_test_actions: np.ndarray
    position_errors: np.ndarray  # [T]
    orientation_errors: np.ndarray


@dataclass(frozen=True)
class SweepArrays:
    standard: html.ReportArrays  # the chunks the standard plots draw (worst first)
    shown_chunks: int
    position_errors: np.ndarray  # [U, T], every unit
    orientation_errors: np.ndarray
    position_unit_stat: np.ndarray  # [U] each unit's own statistic
    orientation_unit_stat: np.ndarray
    unit_statistic: str
    worst: list[WorstFrame]


# ---------------------------------------------------------------- plots


def _finite(values) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).ravel()
    return values[np.isfinite(values)]


def _log_axis(values: np.ndarray, bound: float) -> bool:
    """Log x when the errors span more than two decades or sit far below the bound."""
    positive = values[values > 0]
    if len(positive) < 2:
        return False
    top = max(float(positive.max()), bound)
    return top / float(positive.min()) > 100


def _histogram(axes, values: np.ndarray, bound: float, unit: str, gated: tuple[str, float] | None, colour: str, title: str) -> None:
    if len(values) == 0:
        axes.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=axes.transAxes)
        return
    if _log_axis(values, bound):
        positive = values[values > 0]
        low, high = float(positive.min()), max(float(positive.max()), bound)
        bins = np.geomspace(low, high * 1.05, 50)
        axes.hist(np.clip(values, low, None), bins=bins, color=colour, alpha=0.8)
        axes.set_xscale("log")
    else:
        axes.hist(values, bins=50, range=(0.0, max(float(values.max()), bound) * 1.05 or 1.0), color=colour, alpha=0.8)
    axes.axvline(bound, color=plots.BOUND_COLOUR, linestyle="--", linewidth=1.4, label=f"bound {bound:g} {unit}")
    if gated is not None and math.isfinite(gated[1]) and gated[1] > 0:
        axes.axvline(gated[1], color="#2e7d32", linestyle=":", linewidth=1.4, label=f"{gated[0]} {gated[1]:.3g} {unit}")
    axes.set_xlabel(unit)
    axes.set_ylabel("count")
    axes.set_title(title)
    axes.legend(loc="upper right")


def _cdf(axes, values: np.ndarray, bound: float, unit: str, colour: str, title: str) -> None:
    if len(values) == 0:
        axes.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=axes.transAxes)
        return
    ordered = np.sort(values)
    fraction = np.arange(1, len(ordered) + 1) / len(ordered)
    if _log_axis(values, bound):
        axes.set_xscale("log")
        keep = ordered > 0
        ordered, fraction = ordered[keep], fraction[keep]
    axes.step(ordered, fraction, where="post", color=colour, linewidth=1.6)
    within = float(np.mean(values <= bound))
    axes.axvline(bound, color=plots.BOUND_COLOUR, linestyle="--", linewidth=1.4, label=f"bound {bound:g} {unit}: {within:.1%} within")
    axes.set_ylim(0, 1.02)
    axes.set_xlabel(unit)
    axes.set_ylabel("fraction of steps ≤ x")
    axes.set_title(title)
    axes.legend(loc="lower right")


def plot_error_distribution(position_errors, orientation_errors, summary: dict, out_png: Path) -> Path:
    """Histogram and CDF of every per-step error of the sweep, position and orientation, bounds drawn."""
    import matplotlib.pyplot as plt

    with plt.rc_context(plots.STYLE):
        figure, grid = plt.subplots(2, 2, figsize=(10.5, 6.6))
        for row, (key, errors, colour) in enumerate((("position", position_errors, plots.REFERENCE_COLOUR),
                                                      ("orientation", orientation_errors, plots.UNDER_TEST_COLOUR))):
            series = summary[key]
            unit = series.get("unit", "m" if key == "position" else "rad")
            values = _finite(errors)
            gated = (series["stat"], series.get(series["stat"]) if isinstance(series.get(series["stat"]), (int, float)) else math.nan)
            _histogram(grid[row, 0], values, series["threshold"], unit, gated, colour, f"{key} error per step: histogram ({len(values)} steps)")
            _cdf(grid[row, 1], values, series["threshold"], unit, colour, f"{key} error per step: CDF")
            plots.note_nonfinite(grid[row, 0], plots.count_nonfinite(errors), "errors")
        figure.tight_layout()
    return plots.save_figure(figure, out_png)


def plot_frame_statistic(position_stat, orientation_stat, statistic: str, summary: dict, out_png: Path) -> Path:
    """Distribution of each frame's own statistic (one value per chunk), with the bounds."""
    import matplotlib.pyplot as plt

    with plt.rc_context(plots.STYLE):
        figure, grid = plt.subplots(1, 2, figsize=(10.5, 3.4))
        for axes, key, values, colour in ((grid[0], "position", position_stat, plots.REFERENCE_COLOUR),
                                          (grid[1], "orientation", orientation_stat, plots.UNDER_TEST_COLOUR)):
            series = summary[key]
            unit = series.get("unit", "m" if key == "position" else "rad")
            finite = _finite(values)
            _histogram(axes, finite, series["threshold"], unit, None, colour, f"per-frame {key} {statistic} ({len(finite)} frames)")
            plots.note_nonfinite(axes, plots.count_nonfinite(values), "frames")
        figure.tight_layout()
    return plots.save_figure(figure, out_png)


def plot_frame_errors(frame: WorstFrame, summary: dict, out_png: Path) -> Path:
    """One frame's per-step position and orientation error with the bounds."""
    import matplotlib.pyplot as plt

    with plt.rc_context(plots.STYLE):
        figure, grid = plt.subplots(1, 2, figsize=(10.5, 3.0))
        for axes, key, errors, colour in ((grid[0], "position", frame.position_errors, plots.REFERENCE_COLOUR),
                                          (grid[1], "orientation", frame.orientation_errors, plots.UNDER_TEST_COLOUR)):
            series = summary[key]
            unit = series.get("unit", "m" if key == "position" else "rad")
            errors = np.asarray(errors, dtype=np.float64)
            steps = np.arange(len(errors))
            axes.plot(steps, np.where(np.isfinite(errors), errors, np.nan), color=colour, linewidth=1.6, label=f"{key} error")
            axes.axhline(series["threshold"], color=plots.BOUND_COLOUR, linestyle="--", linewidth=1.4, label=f"bound {series['threshold']:g} {unit}")
            plots.set_error_axis_scale(axes, errors, series["threshold"])
            axes.set_xlim(0, max(len(errors) - 1, 1))
            axes.set_xlabel("step in chunk")
            axes.set_ylabel(f"{key} error ({unit})")
            axes.set_title(f"{plots.plain_text(frame.name)}: {key}")
            axes.legend(loc="upper right")
            plots.note_nonfinite(axes, plots.count_nonfinite(errors), "errors")
        figure.tight_layout()
    return plots.save_figure(figure, out_png)


def _entry_phase_kind(phase: str) -> str:
    return "prefix" if phase == "prefix" else "step"


def plot_trace(trace: dict, out_png: Path) -> Path:
    """Relative error and 1 - cosine per traced module in execution order, tolerance and first crossing marked."""
    import matplotlib.pyplot as plt

    entries = trace["entries"]
    tolerance = trace["tolerance"]["relative_error"]
    x = np.arange(len(entries))
    relative = np.array([np.nan if e["relative_error"] is None else e["relative_error"] for e in entries], dtype=np.float64)
    cosine = np.array([np.nan if e["cosine"] is None else e["cosine"] for e in entries], dtype=np.float64)
    kinds = np.array([_entry_phase_kind(e["phase"]) for e in entries])
    floor = 1e-12
    with plt.rc_context(plots.STYLE):
        figure, (top, bottom) = plt.subplots(2, 1, figsize=(10.5, 5.6), sharex=True)
        for kind, label in (("prefix", "prefix pass (vision, VLM)"), ("step", "Euler steps (expert, x_t)")):
            mask = kinds == kind
            top.scatter(x[mask], np.clip(relative[mask], floor, None), s=14, color=PHASE_COLOURS[kind], label=label, zorder=3)
            bottom.scatter(x[mask], np.clip(1 - cosine[mask], floor, None), s=14, color=PHASE_COLOURS[kind], zorder=3)
        top.plot(x, np.clip(relative, floor, None), color="#90a4ae", linewidth=0.7, zorder=1)
        bottom.plot(x, np.clip(1 - cosine, floor, None), color="#90a4ae", linewidth=0.7, zorder=1)
        top.axhline(tolerance, color=plots.BOUND_COLOUR, linestyle="--", linewidth=1.4, label=f"tolerance {tolerance:g}")
        first = trace.get("first_divergent")
        if first is not None:
            position = next(i for i, e in enumerate(entries) if e["index"] == first["index"] and e["module"] == first["module"])
            value = relative[position] if np.isfinite(relative[position]) else tolerance
            top.scatter([position], [max(value, floor)], s=120, facecolors="none", edgecolors=plots.BOUND_COLOUR, linewidths=2, zorder=4,
                        label=f"first over: {plots.plain_text(first['name'])} ({first['phase']})")
        for axes in (top, bottom):
            axes.set_yscale("log")
        top.set_ylabel("‖ref − dut‖ / ‖ref‖")
        bottom.set_ylabel("1 − cosine")
        bottom.set_xlabel(f"traced output, in execution order (identical outputs, 0, are drawn at {floor:g})")
        figure.suptitle("divergence per module (reference vs under test, same input and noise)", fontweight="bold")
        top.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=4, fontsize=7, frameon=False)
        figure.tight_layout()
    return plots.save_figure(figure, out_png)


def plot_trace_steps(trace: dict, out_png: Path) -> Path | None:
    """Per Euler step: x_t's relative error and the worst expert-side module of the step."""
    import matplotlib.pyplot as plt

    steps = trace.get("steps") or []
    if not steps:
        return None
    x = np.arange(len(steps))
    x_t = np.array([np.nan if s["x_t_relative_error"] is None else s["x_t_relative_error"] for s in steps], dtype=np.float64)
    worst = np.array([np.nan if s["worst_relative_error"] is None else s["worst_relative_error"] for s in steps], dtype=np.float64)
    tolerance = trace["tolerance"]["relative_error"]
    with plt.rc_context(plots.STYLE):
        figure, axes = plt.subplots(figsize=(6.4, 3.4))
        axes.plot(x, np.clip(x_t, 1e-12, None), "o-", color=plots.REFERENCE_COLOUR, label="x_t after the step")
        axes.plot(x, np.clip(worst, 1e-12, None), "s--", color=plots.UNDER_TEST_COLOUR, label="worst module of the step")
        axes.axhline(tolerance, color=plots.BOUND_COLOUR, linestyle="--", linewidth=1.4, label=f"tolerance {tolerance:g}")
        axes.set_yscale("log")
        axes.set_xticks(x)
        axes.set_xlabel("flow-matching (Euler) step")
        axes.set_ylabel("relative error")
        axes.set_title("divergence per integration step")
        axes.legend(loc="upper left", fontsize=7)
    return plots.save_figure(figure, out_png)


# ---------------------------------------------------------------- page sections


def _unit_of(summary: dict, key: str) -> str:
    return summary[key].get("unit", "m" if key == "position" else "rad")


def _sweep_section(out_dir: Path, summary: dict, sweep: SweepArrays) -> dict:
    described = summary["sweep"]
    plot_error_distribution(sweep.position_errors, sweep.orientation_errors, summary, out_dir / DISTRIBUTION_FILE)
    plot_frame_statistic(sweep.position_unit_stat, sweep.orientation_unit_stat, sweep.unit_statistic, summary, out_dir / FRAME_STAT_FILE)
    worst = []
    for rank, frame in enumerate(sweep.worst, start=1):
        errors_png = f"worst_{rank}_errors.png"
        joints_png = f"worst_{rank}_joints.png"
        plot_frame_errors(frame, summary, out_dir / errors_png)
        plots.plot_joint_traces(frame.reference_actions[None], frame.under_test_actions[None], sweep.standard.joint_names,
                                out_dir / joints_png, unit=sweep.standard.joint_unit)
        worst.append({
            "rank": rank, "name": frame.name, "passed": frame.passed,
            "position": html.number(frame.position_stat, _unit_of(summary, "position")),
            "orientation": html.number(frame.orientation_stat, _unit_of(summary, "orientation")),
            "errors_png": errors_png, "joints_png": joints_png,
        })
    timing = described.get("timing") or {}
    throughput = {
        side: ("n/a" if not timing.get(side, {}).get("frames_per_second") else f"{timing[side]['frames_per_second']:.3g} frames/s")
        for side in ("ref", "dut")
    }
    frame_checks = [c for c in summary.get("checks", []) if str(c["name"]).startswith("per-frame")]
    return {
        "facts": [
            ("episodes", ", ".join(str(e) for e in described["episodes"])),
            ("frames per episode", f"{described['frames']} → " + ", ".join(f"ep {e}: {n}" for e, n in described["frames_per_episode"].items())),
            ("noise", "seeds " + ", ".join(str(s) for s in described["seeds"]) if described["seeds"] is not None else "one fixed noise file"),
            ("chunks compared", f"{described['n_units']} in {described['n_batches']} batches of ≤ {described['batch_size']}"),
            ("ranks", str(described["world_size"])),
            ("throughput (model, frames/s)", f"reference {throughput['ref']}, under test {throughput['dut']}"),
            ("per-frame statistic", described["unit_statistic"] + (" (gated)" if described.get("frame_stat") else " (reported, not gated)")),
            ("frames within bounds", f"{described['frames_passed']} of {described['n_units']}"),
        ],
        "notes": described.get("notes", []),
        "frame_checks": [{"passed": bool(c["pass"]), "message": c["message"]} for c in frame_checks],
        "distribution_png": DISTRIBUTION_FILE,
        "frame_stat_png": FRAME_STAT_FILE,
        "unit_statistic": sweep.unit_statistic,
        "shown_chunks": sweep.shown_chunks,
        "n_units": described["n_units"],
        "worst": worst,
        "rows_csv": described.get("rows_csv"),
        "rows_parquet": described.get("rows_parquet"),
    }


def _trace_section(out_dir: Path, trace: dict) -> dict:
    plot_trace(trace, out_dir / TRACE_FILE)
    steps_png = plot_trace_steps(trace, out_dir / TRACE_STEPS_FILE)
    first = trace.get("first_divergent")
    rows = []
    for entry in trace["entries"]:
        rows.append({
            "index": entry["index"], "name": entry["name"], "phase": entry["phase"], "module": entry["module"],
            "shape": "×".join(str(n) for n in entry["shape"]),
            "dtypes": entry["ref_dtype"] if entry["ref_dtype"] == entry["dut_dtype"] else f"{entry['ref_dtype']} / {entry['dut_dtype']}",
            "relative": html.number(entry["relative_error"], digits=3),
            "cosine": "n/a" if entry["cosine"] is None else f"{entry['cosine']:.8f}",
            "max_abs": html.number(entry["max_abs_error"], digits=3),
            "method": entry["method"], "over": bool(entry["over_tolerance"]),
            "first": first is not None and entry["index"] == first["index"] and entry["module"] == first["module"],
            "note": entry.get("note") or "",
        })
    reproduced = trace.get("reproduced") or {}
    memory = trace.get("memory") or {}
    return {
        "headline": trace["headline"],
        "diverged": first is not None,
        "tolerance": f"{trace['tolerance']['relative_error']:g}",
        "unit": (trace.get("unit") or {}).get("name"),
        "why": (trace.get("unit") or {}).get("why"),
        "reference": trace.get("reference"), "under_test": trace.get("under_test"),
        "reproduced": ", ".join(f"{side}: {'yes' if value else 'NO'}" for side, value in reproduced.items()) or "not checked",
        "memory": f"{memory.get('mode')}: {memory.get('exact_bytes', 0) / 2**20:.1f} MiB exact copies (cap {memory.get('exact_cap_bytes', 0) / 2**20:.0f} MiB), "
                  f"{memory.get('sketched_entries', 0)} outputs sketched",
        "dump_dir": trace.get("dump_dir"),
        "rows": rows,
        "steps": [{"phase": s["phase"], "x_t": html.number(s["x_t_relative_error"], digits=3),
                   "x_t_cosine": "n/a" if s["x_t_cosine"] is None else f"{s['x_t_cosine']:.8f}",
                   "worst_module": s["worst_module"] or "—", "worst": html.number(s["worst_relative_error"], digits=3)}
                  for s in trace.get("steps") or []],
        "trace_png": TRACE_FILE,
        "steps_png": steps_png.name if steps_png is not None else None,
    }


def render_sweep_report(out_dir: str | Path, summary: dict, sweep: SweepArrays | None, trace: dict | None,
                        standard: html.ReportArrays | None = None) -> Path:
    """Write every plot, then out_dir/index.html (the one-comparison page plus the sweep/trace sections)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    standard = sweep.standard if sweep is not None else standard
    if standard is None:
        raise ValueError("render_sweep_report needs the standard report arrays")
    figures = html.write_plots(out_dir, summary, standard)
    if sweep is not None and sweep.shown_chunks < len(sweep.position_errors):
        for figure in figures:
            figure["caption"] += f" Drawn: the {sweep.shown_chunks} worst of {len(sweep.position_errors)} chunks, worst as chunk 0."
    elif sweep is not None:
        for figure in figures:
            figure["caption"] += " Chunks are ordered worst first: chunk 0 is the worst frame of the sweep."
    context = html.page_context(summary, standard, figures)
    context["sweep"] = _sweep_section(out_dir, summary, sweep) if sweep is not None else None
    context["trace"] = _trace_section(out_dir, trace) if trace is not None else None
    page = html.template_environment().get_template("sweep.html").render(**context)
    return write_text(out_dir / "index.html", page)
