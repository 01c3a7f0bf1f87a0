"""The divergence-trace section of a report: relative error and cosine per module and per Euler step,
and the first module whose relative error crosses the tolerance. Input is the trace's JSON dict."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from verify_ate.reports import plots
from verify_ate.reports.format import number

TRACE_FILE = "trace_relative_error.png"
TRACE_STEPS_FILE = "trace_steps.png"
PHASE_COLOURS = {"prefix": plots.REFERENCE_COLOUR, "step": plots.UNDER_TEST_COLOUR}


def _entry_phase_kind(phase: str) -> str:
    return "prefix" if phase == "prefix" else "step"


def plot_trace(trace: dict, out_png: Path) -> Path:
    """Relative error and 1 - cosine per traced module in execution order, tolerance and first crossing marked."""
    import matplotlib.pyplot as plt

    entries = trace["entries"]
    tolerance = trace["tolerance"]["relative_error"]
    x = np.arange(len(entries))
    relative = np.array(
        [np.nan if e["relative_error"] is None else e["relative_error"] for e in entries], dtype=np.float64
    )
    cosine = np.array([np.nan if e["cosine"] is None else e["cosine"] for e in entries], dtype=np.float64)
    kinds = np.array([_entry_phase_kind(e["phase"]) for e in entries])
    floor = 1e-12
    with plt.rc_context(plots.STYLE):
        figure, (top, bottom) = plt.subplots(2, 1, figsize=(10.5, 5.6), sharex=True)
        for kind, label in (("prefix", "prefix pass (vision, VLM)"), ("step", "Euler steps (expert, x_t)")):
            mask = kinds == kind
            top.scatter(
                x[mask], np.clip(relative[mask], floor, None), s=14, color=PHASE_COLOURS[kind], label=label, zorder=3
            )
            bottom.scatter(x[mask], np.clip(1 - cosine[mask], floor, None), s=14, color=PHASE_COLOURS[kind], zorder=3)
        top.plot(x, np.clip(relative, floor, None), color="#90a4ae", linewidth=0.7, zorder=1)
        bottom.plot(x, np.clip(1 - cosine, floor, None), color="#90a4ae", linewidth=0.7, zorder=1)
        top.axhline(
            tolerance, color=plots.BOUND_COLOUR, linestyle="--", linewidth=1.4, label=f"tolerance {tolerance:g}"
        )
        first = trace.get("first_divergent")
        if first is not None:
            position = next(
                i for i, e in enumerate(entries) if e["index"] == first["index"] and e["module"] == first["module"]
            )
            value = relative[position] if np.isfinite(relative[position]) else tolerance
            top.scatter(
                [position],
                [max(value, floor)],
                s=120,
                facecolors="none",
                edgecolors=plots.BOUND_COLOUR,
                linewidths=2,
                zorder=4,
                label=f"first over: {plots.plain_text(first['name'])} ({first['phase']})",
            )
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
    x_t = np.array(
        [np.nan if s["x_t_relative_error"] is None else s["x_t_relative_error"] for s in steps], dtype=np.float64
    )
    worst = np.array(
        [np.nan if s["worst_relative_error"] is None else s["worst_relative_error"] for s in steps], dtype=np.float64
    )
    tolerance = trace["tolerance"]["relative_error"]
    with plt.rc_context(plots.STYLE):
        figure, axes = plt.subplots(figsize=(6.4, 3.4))
        axes.plot(x, np.clip(x_t, 1e-12, None), "o-", color=plots.REFERENCE_COLOUR, label="x_t after the step")
        axes.plot(
            x, np.clip(worst, 1e-12, None), "s--", color=plots.UNDER_TEST_COLOUR, label="worst module of the step"
        )
        axes.axhline(
            tolerance, color=plots.BOUND_COLOUR, linestyle="--", linewidth=1.4, label=f"tolerance {tolerance:g}"
        )
        axes.set_yscale("log")
        axes.set_xticks(x)
        axes.set_xlabel("flow-matching (Euler) step")
        axes.set_ylabel("relative error")
        axes.set_title("divergence per integration step")
        axes.legend(loc="upper left", fontsize=7)
    return plots.save_figure(figure, out_png)


def trace_section(out_dir: Path, trace: dict) -> dict:
    plot_trace(trace, out_dir / TRACE_FILE)
    steps_png = plot_trace_steps(trace, out_dir / TRACE_STEPS_FILE)
    first = trace.get("first_divergent")
    rows = []
    for entry in trace["entries"]:
        rows.append(
            {
                "index": entry["index"],
                "name": entry["name"],
                "phase": entry["phase"],
                "module": entry["module"],
                "shape": "×".join(str(n) for n in entry["shape"]),
                "dtypes": entry["ref_dtype"]
                if entry["ref_dtype"] == entry["dut_dtype"]
                else f"{entry['ref_dtype']} / {entry['dut_dtype']}",
                "relative": number(entry["relative_error"], digits=3),
                "cosine": "n/a" if entry["cosine"] is None else f"{entry['cosine']:.8f}",
                "max_abs": number(entry["max_abs_error"], digits=3),
                "method": entry["method"],
                "over": bool(entry["over_tolerance"]),
                "first": first is not None and entry["index"] == first["index"] and entry["module"] == first["module"],
                "note": entry.get("note") or "",
            }
        )
    reproduced = trace.get("reproduced") or {}
    memory = trace.get("memory") or {}
    return {
        "headline": trace["headline"],
        "diverged": first is not None,
        "tolerance": f"{trace['tolerance']['relative_error']:g}",
        "unit": (trace.get("unit") or {}).get("name"),
        "why": (trace.get("unit") or {}).get("why"),
        "reference": trace.get("reference"),
        "under_test": trace.get("under_test"),
        "reproduced": ", ".join(f"{side}: {'yes' if value else 'NO'}" for side, value in reproduced.items())
        or "not checked",
        "memory": f"{memory.get('mode')}: {memory.get('exact_bytes', 0) / 2**20:.1f} MiB exact copies (cap "
        "{memory.get('exact_cap_bytes', 0) / 2**20:.0f} MiB), "
        f"{memory.get('sketched_entries', 0)} outputs sketched",
        "dump_dir": trace.get("dump_dir"),
        "rows": rows,
        "steps": [
            {
                "phase": s["phase"],
                "x_t": number(s["x_t_relative_error"], digits=3),
                "x_t_cosine": "n/a" if s["x_t_cosine"] is None else f"{s['x_t_cosine']:.8f}",
                "worst_module": s["worst_module"] or "—",
                "worst": number(s["worst_relative_error"], digits=3),
            }
            for s in trace.get("steps") or []
        ],
        "trace_png": TRACE_FILE,
        "steps_png": steps_png.name if steps_png is not None else None,
    }
