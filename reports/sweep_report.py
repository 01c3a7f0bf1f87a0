"""The sweep section of a report: the error distribution as histogram and CDF with the bounds drawn,
the per-frame statistic's distribution, the worst frames with their own plots, the per-frame table
files. Inputs are the summary dict and a `SweepArrays` of plain arrays."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from verify_ate.reports import plots
from verify_ate.reports.data import SweepArrays, WorstFrame
from verify_ate.reports.format import number

DISTRIBUTION_FILE = "error_distribution.png"
FRAME_STAT_FILE = "frame_statistic_distribution.png"


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


def _histogram(
    axes, values: np.ndarray, bound: float, unit: str, gated: tuple[str, float] | None, colour: str, title: str
) -> None:
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
    axes.axvline(
        bound,
        color=plots.BOUND_COLOUR,
        linestyle="--",
        linewidth=1.4,
        label=f"bound {bound:g} {unit}: {within:.1%} within",
    )
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
        for row, (key, errors, colour) in enumerate(
            (
                ("position", position_errors, plots.REFERENCE_COLOUR),
                ("orientation", orientation_errors, plots.UNDER_TEST_COLOUR),
            )
        ):
            series = summary[key]
            unit = series["unit"]
            values = _finite(errors)
            gated = (
                series["stat"],
                series.get(series["stat"]) if isinstance(series.get(series["stat"]), (int, float)) else math.nan,
            )
            _histogram(
                grid[row, 0],
                values,
                series["threshold"],
                unit,
                gated,
                colour,
                f"{key} error per step: histogram ({len(values)} steps)",
            )
            _cdf(grid[row, 1], values, series["threshold"], unit, colour, f"{key} error per step: CDF")
            plots.note_nonfinite(grid[row, 0], plots.count_nonfinite(errors), "errors")
        figure.tight_layout()
    return plots.save_figure(figure, out_png)


def plot_frame_statistic(position_stat, orientation_stat, statistic: str, summary: dict, out_png: Path) -> Path:
    """Distribution of each frame's own statistic (one value per chunk), with the bounds."""
    import matplotlib.pyplot as plt

    with plt.rc_context(plots.STYLE):
        figure, grid = plt.subplots(1, 2, figsize=(10.5, 3.4))
        for axes, key, values, colour in (
            (grid[0], "position", position_stat, plots.REFERENCE_COLOUR),
            (grid[1], "orientation", orientation_stat, plots.UNDER_TEST_COLOUR),
        ):
            series = summary[key]
            unit = series["unit"]
            finite = _finite(values)
            _histogram(
                axes,
                finite,
                series["threshold"],
                unit,
                None,
                colour,
                f"per-frame {key} {statistic} ({len(finite)} frames)",
            )
            plots.note_nonfinite(axes, plots.count_nonfinite(values), "frames")
        figure.tight_layout()
    return plots.save_figure(figure, out_png)


def plot_frame_errors(frame: WorstFrame, summary: dict, out_png: Path) -> Path:
    """One frame's per-step position and orientation error with the bounds."""
    import matplotlib.pyplot as plt

    with plt.rc_context(plots.STYLE):
        figure, grid = plt.subplots(1, 2, figsize=(10.5, 3.0))
        for axes, key, errors, colour in (
            (grid[0], "position", frame.position_errors, plots.REFERENCE_COLOUR),
            (grid[1], "orientation", frame.orientation_errors, plots.UNDER_TEST_COLOUR),
        ):
            series = summary[key]
            unit = series["unit"]
            errors = np.asarray(errors, dtype=np.float64)
            steps = np.arange(len(errors))
            axes.plot(
                steps, np.where(np.isfinite(errors), errors, np.nan), color=colour, linewidth=1.6, label=f"{key} error"
            )
            axes.axhline(
                series["threshold"],
                color=plots.BOUND_COLOUR,
                linestyle="--",
                linewidth=1.4,
                label=f"bound {series['threshold']:g} {unit}",
            )
            plots.set_error_axis_scale(axes, errors, series["threshold"])
            axes.set_xlim(0, max(len(errors) - 1, 1))
            axes.set_xlabel("step in chunk")
            axes.set_ylabel(f"{key} error ({unit})")
            axes.set_title(f"{plots.plain_text(frame.name)}: {key}")
            axes.legend(loc="upper right")
            plots.note_nonfinite(axes, plots.count_nonfinite(errors), "errors")
        figure.tight_layout()
    return plots.save_figure(figure, out_png)


# ---------------------------------------------------------------- page sections


def sweep_section(out_dir: Path, summary: dict, sweep: SweepArrays) -> dict:
    described = summary["sweep"]
    plot_error_distribution(sweep.position_errors, sweep.orientation_errors, summary, out_dir / DISTRIBUTION_FILE)
    plot_frame_statistic(
        sweep.position_unit_stat, sweep.orientation_unit_stat, sweep.unit_statistic, summary, out_dir / FRAME_STAT_FILE
    )
    worst = []
    for rank, frame in enumerate(sweep.worst, start=1):
        errors_png = f"worst_{rank}_errors.png"
        joints_png = f"worst_{rank}_joints.png"
        plot_frame_errors(frame, summary, out_dir / errors_png)
        plots.plot_joint_traces(
            frame.reference_actions[None],
            frame.under_test_actions[None],
            sweep.standard.joint_names,
            out_dir / joints_png,
            unit=sweep.standard.joint_unit,
        )
        worst.append(
            {
                "rank": rank,
                "name": frame.name,
                "passed": frame.passed,
                "position": number(frame.position_stat, summary["position"]["unit"]),
                "orientation": number(frame.orientation_stat, summary["orientation"]["unit"]),
                "errors_png": errors_png,
                "joints_png": joints_png,
            }
        )
    timing = described.get("timing") or {}
    throughput = {
        side: (
            "n/a"
            if not timing.get(side, {}).get("frames_per_second")
            else f"{timing[side]['frames_per_second']:.3g} frames/s"
        )
        for side in ("ref", "dut")
    }
    frame_checks = [c for c in summary.get("checks", []) if str(c["name"]).startswith("per-frame")]
    return {
        "facts": [
            ("episodes", ", ".join(str(e) for e in described["episodes"])),
            (
                "frames per episode",
                f"{described['frames']} → "
                + ", ".join(f"ep {e}: {n}" for e, n in described["frames_per_episode"].items()),
            ),
            (
                "noise",
                "seeds " + ", ".join(str(s) for s in described["seeds"])
                if described["seeds"] is not None
                else "one fixed noise file",
            ),
            (
                "chunks compared",
                f"{described['n_units']} in {described['n_batches']} batches of ≤ {described['batch_size']}",
            ),
            ("ranks", str(described["world_size"])),
            ("throughput (model, frames/s)", f"reference {throughput['ref']}, under test {throughput['dut']}"),
            (
                "per-frame statistic",
                described["unit_statistic"] + (" (gated)" if described.get("frame_stat") else " (reported, not gated)"),
            ),
            ("chunks within bounds", f"{described['chunks_passed']} of {described['n_units']}"),
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
