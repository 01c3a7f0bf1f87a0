"""PNG plots of one comparison (matplotlib, Agg backend), each written atomically.

Every function takes plain arrays (no project types), so `reports` never imports `verify`.
Non-finite values are never plotted and never crash a plot: they are dropped from lines and
axis limits, and the figure says how many there were.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window; must precede pyplot

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection
from mpl_toolkits.mplot3d.art3d import Line3DCollection, Poly3DCollection

from verify_ate.reports.atomic import write_bytes

REFERENCE_COLOUR = "#1f5fa8"
UNDER_TEST_COLOUR = "#e07b00"
BOUND_COLOUR = "#c62828"
PATH_COLOURS = (REFERENCE_COLOUR, UNDER_TEST_COLOUR, "#2e7d32", "#6a1b9a", "#00838f", "#8d6e63")
DPI = 110

STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 8,
    "legend.framealpha": 0.85,
}


def save_figure(figure, out_png: str | Path, tight: bool = True) -> Path:
    """Render to memory first, so the file appears complete (atomic rename) or not at all.

    `tight` crops to the drawn content (one extra layout pass); grids set their margins themselves.
    """
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight" if tight else None)
    plt.close(figure)
    return write_bytes(out_png, buffer.getvalue())


def plain_text(text) -> str:
    """Data text (joint names, devices) shown literally: no mathtext from '$', no hidden '_label' legend entries."""
    text = str(text).replace("$", r"\$")
    return " " + text if text.startswith("_") else text


def _finite_or_nan(values) -> np.ndarray:
    values = np.array(values, dtype=np.float64)
    values[~np.isfinite(values)] = np.nan
    return values


def count_nonfinite(values) -> int:
    return int(np.sum(~np.isfinite(np.asarray(values, dtype=np.float64))))


def note_nonfinite(axes, count: int, what: str = "values") -> None:
    if count:
        axes.text(
            0.5,
            0.5,
            f"{count} non-finite {what} not shown",
            transform=axes.transAxes,
            ha="center",
            va="center",
            color=BOUND_COLOUR,
            fontsize=9,
            fontweight="bold",
            bbox={"facecolor": "white", "edgecolor": BOUND_COLOUR, "alpha": 0.9},
        )


def as_paths(positions) -> list[np.ndarray]:
    """One [T, 3] path per leading index: [T, 3] is one path, [N, T, 3] is N paths, more leading dims are flattened."""
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim < 1 or positions.shape[-1] != 3:
        raise ValueError(f"positions must be [..., 3], got shape {list(positions.shape)}")
    if positions.ndim <= 2:
        return [positions.reshape(-1, 3)]
    return list(positions.reshape(-1, positions.shape[-2], 3))


def plot_end_effector_path(
    paths: Mapping[str, np.ndarray],
    out_png: str | Path,
    title: str | None = None,
    base_position: Sequence[float] = (0.0, 0.0, 0.0),
    linestyles: Mapping[str, str] | None = None,
) -> Path:
    """3D end-effector path(s) above the table plane z=0, robot base marked, equal axis scaling.

    `paths` maps a label to positions in metres, [T, 3] or [N, T, 3] (one line per leading index).
    The box always holds the base, so a path that is far away or under the table (a wrong joint
    sign or offset) is visible at a glance; points under the table are counted in red.
    """
    labelled = [(plain_text(label), as_paths(positions)) for label, positions in paths.items()]
    if not labelled:
        raise ValueError("no paths to plot")
    base = np.asarray(base_position, dtype=np.float64)
    finite_points = [p[np.all(np.isfinite(p), axis=-1)] for _, group in labelled for p in group]
    everything = np.concatenate([base[None], *finite_points], axis=0)
    n_nonfinite = sum(int(np.sum(~np.all(np.isfinite(p), axis=-1))) for _, group in labelled for p in group)
    n_below = sum(int(np.sum(p[:, 2] < -1e-9)) for p in finite_points)

    # One cube around base and path: equal scaling on all three axes, never a squashed dimension.
    low, high = everything.min(axis=0), everything.max(axis=0)
    centre = (low + high) / 2
    half = max(float(np.max(high - low)) / 2 * 1.15, 0.05)
    lows, highs = centre - half, centre + half
    lows[2] = min(lows[2], -0.02)  # the table plane always shows, even for a path far above it

    with plt.rc_context(STYLE):
        figure = plt.figure(figsize=(6.4, 5.6))
        axes = figure.add_subplot(projection="3d")
        table = [
            (lows[0], lows[1], 0.0),
            (highs[0], lows[1], 0.0),
            (highs[0], highs[1], 0.0),
            (lows[0], highs[1], 0.0),
        ]
        axes.add_collection3d(
            Poly3DCollection([table], facecolor="#9e9e9e", alpha=0.18, edgecolor="#757575", linewidth=0.6)
        )
        axes.scatter(*base, marker="s", s=70, color="black", depthshade=False, label="robot base", zorder=5)
        axes.plot([base[0], base[0]], [base[1], base[1]], [0.0, base[2]], color="black", linewidth=1)
        for index, (label, group) in enumerate(labelled):
            colour = PATH_COLOURS[index % len(PATH_COLOURS)]
            style = {plain_text(k): v for k, v in (linestyles or {}).items()}.get(label, "-" if index == 0 else "--")
            if len(group) > 1:  # the other chunks as one collection: hundreds of chunks draw as fast as one
                axes.add_collection3d(
                    Line3DCollection(
                        [_finite_or_nan(p) for p in group[1:]],
                        colors=colour,
                        linewidths=0.9,
                        linestyles=style,
                        alpha=0.4,
                    )
                )
            path = _finite_or_nan(group[0])
            axes.plot(
                path[:, 0],
                path[:, 1],
                path[:, 2],
                style,
                color=colour,
                linewidth=1.6 if index == 0 else 1.3,
                alpha=0.95,
                label=label,
            )
            valid = path[np.all(np.isfinite(path), axis=-1)]
            if len(valid):
                axes.scatter(*valid[0], marker="o", s=22, color=colour, depthshade=False)
                axes.scatter(*valid[-1], marker="^", s=30, color=colour, depthshade=False)
        # The first path's shadow on the table: its height above (or under) the table reads at a glance.
        shadow = _finite_or_nan(labelled[0][1][0])
        axes.plot(
            shadow[:, 0],
            shadow[:, 1],
            np.zeros(len(shadow)),
            ":",
            color="#757575",
            linewidth=1.0,
            label="shadow on table",
        )
        axes.set_xlim(lows[0], highs[0])
        axes.set_ylim(lows[1], highs[1])
        axes.set_zlim(lows[2], highs[2])
        axes.set_box_aspect((1.0, 1.0, (highs[2] - lows[2]) / (2 * half)))  # metres per unit length equal on x, y, z
        axes.set_xlabel("x (m)")
        axes.set_ylabel("y (m)")
        axes.set_zlabel("z (m)")
        axes.view_init(elev=22, azim=-60)
        notes = ["table plane z = 0 (grey); o start, ^ end"]
        if n_below:
            notes.append(f"WARNING: {n_below} points under the table (z < 0): check joint signs/offsets")
        if n_nonfinite:
            notes.append(f"{n_nonfinite} non-finite positions not shown")
        figure.text(
            0.02, 0.01, "\n".join(notes), fontsize=8, color=BOUND_COLOUR if (n_below or n_nonfinite) else "#555555"
        )
        axes.legend(loc="upper left", bbox_to_anchor=(0.0, 1.0))
        axes.set_title(plain_text(title) if title else "end-effector path")
    return save_figure(figure, out_png)


def _chunk_lines(steps: np.ndarray, values: np.ndarray, label: str | None = None) -> LineCollection:
    """Thin grey lines, one per row of `values` [chunks, steps], drawn as one collection (fast for many chunks)."""
    segments = np.stack([np.broadcast_to(steps, values.shape), _finite_or_nan(values)], axis=-1)
    return LineCollection(segments, colors="#90a4ae", linewidths=0.7, alpha=0.6, label=label, zorder=1)


def _other_chunks(n_chunks: int) -> str:
    return "chunk 1" if n_chunks == 2 else f"chunks 1-{n_chunks - 1}"


def set_error_axis_scale(axes, values: np.ndarray, bound: float) -> str:
    """Log scale when the errors sit far below the bound, so their shape stays visible beside it."""
    finite = values[np.isfinite(values)]
    positive = finite[finite > 0]
    if bound > 0 and len(positive) and float(np.max(finite)) < bound / 20:
        axes.set_yscale("log", nonpositive="clip")
        axes.set_ylim(float(np.min(positive)) / 3, bound * 2)
        return "log scale"
    top = max(bound, float(np.max(finite)) if len(finite) else 0.0)
    axes.set_ylim(0, top * 1.15 if top > 0 else 1.0)
    return "linear scale"


def plot_step_errors(
    errors,
    bound: float,
    out_png: str | Path,
    name: str,
    unit: str,
    statistic: str,
    gated_value: float | None,
) -> Path:
    """Per-step error of every chunk [N, T] (chunk 0 bold, others thin), the bound and the gated statistic."""
    errors = np.asarray(errors, dtype=np.float64)
    errors = errors.reshape(-1, errors.shape[-1]) if errors.ndim >= 1 else errors.reshape(1, 1)
    n_chunks, horizon = errors.shape
    steps = np.arange(horizon)
    with plt.rc_context(STYLE):
        figure, axes = plt.subplots(figsize=(6.4, 3.6))
        if n_chunks > 1:
            axes.add_collection(_chunk_lines(steps, errors[1:], label=_other_chunks(n_chunks)))
        axes.plot(
            steps,
            _finite_or_nan(errors[0]),
            color=REFERENCE_COLOUR,
            linewidth=1.6,
            label="chunk 0" if n_chunks > 1 else f"{name} error",
        )
        axes.axhline(bound, color=BOUND_COLOUR, linestyle="--", linewidth=1.4, label=f"bound {bound:g} {unit}")
        if gated_value is not None and np.isfinite(gated_value):
            axes.axhline(
                gated_value,
                color="#2e7d32",
                linestyle=":",
                linewidth=1.4,
                label=f"{statistic} {gated_value:.3g} {unit} (gated)",
            )
        scale = set_error_axis_scale(axes, errors, bound)
        axes.set_xlim(0, max(horizon - 1, 1))
        axes.set_xlabel("step in chunk")
        axes.set_ylabel(f"{name} error ({unit})")
        chunks = f", {n_chunks} chunks" if n_chunks > 1 else ""
        axes.set_title(f"per-step {name} error{chunks} ({scale})")
        axes.legend(loc="upper right")
        note_nonfinite(axes, count_nonfinite(errors), "errors")
    return save_figure(figure, out_png)


def _joint_grid(n_joints: int):
    columns = 3 if n_joints > 4 else n_joints
    rows = int(np.ceil(n_joints / columns))
    figure, grid = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.6 * rows + 0.7), squeeze=False, sharex=True)
    # Fixed margins instead of tight_layout: same look, no extra layout pass (the slowest part of a grid).
    figure.subplots_adjust(
        left=0.06, right=0.99, bottom=0.1, top=1 - 0.7 / (2.6 * rows + 0.7), wspace=0.22, hspace=0.32
    )
    for extra in grid.ravel()[n_joints:]:
        extra.set_visible(False)
    return figure, grid.ravel()


def plot_joint_traces(
    reference,
    under_test,
    joint_names: Sequence[str],
    out_png: str | Path,
    unit: str = "deg",
    reference_label: str = "reference",
    under_test_label: str = "under test",
) -> Path:
    """Reference vs under-test trace per joint, chunk 0 only (stated in the title when N > 1)."""
    unit = plain_text(unit)
    reference = np.asarray(reference, dtype=np.float64)
    under_test = np.asarray(under_test, dtype=np.float64)
    n_chunks = reference.shape[0] if reference.ndim == 3 else 1
    reference = reference.reshape(-1, *reference.shape[-2:])[0]
    under_test = under_test.reshape(-1, *under_test.shape[-2:])[0]
    steps = np.arange(reference.shape[0])
    with plt.rc_context(STYLE):
        figure, panels = _joint_grid(reference.shape[-1])
        for j, axes in enumerate(panels[: reference.shape[-1]]):
            axes.plot(
                steps,
                _finite_or_nan(reference[:, j]),
                color=REFERENCE_COLOUR,
                linewidth=1.8,
                label=plain_text(reference_label),
            )
            axes.plot(
                steps,
                _finite_or_nan(under_test[:, j]),
                "--",
                color=UNDER_TEST_COLOUR,
                linewidth=1.3,
                label=plain_text(under_test_label),
            )
            axes.set_title(plain_text(joint_names[j]) if j < len(joint_names) else f"joint {j}")
            axes.set_ylabel(unit)
            note_nonfinite(axes, count_nonfinite(reference[:, j]) + count_nonfinite(under_test[:, j]))
        for axes in panels[-3:]:
            axes.set_xlabel("step in chunk")
        handles, labels = panels[0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="upper right", ncol=2, frameon=False, bbox_to_anchor=(0.99, 1.0))
        which = f"chunk 0 of {n_chunks}" if n_chunks > 1 else "one chunk"
        figure.suptitle(
            f"joint trajectories, reference vs under test ({unit}, {which})", fontweight="bold", x=0.01, ha="left"
        )
    return save_figure(figure, out_png, tight=False)


def plot_joint_errors(
    reference, under_test, joint_names: Sequence[str], out_png: str | Path, unit: str = "deg"
) -> Path:
    """|reference - under test| per joint and step: chunk 0 bold, other chunks thin grey."""
    unit = plain_text(unit)
    difference = np.abs(np.asarray(reference, dtype=np.float64) - np.asarray(under_test, dtype=np.float64))
    difference = difference.reshape(-1, *difference.shape[-2:])  # [N, T, J]
    n_chunks, horizon, n_joints = difference.shape
    steps = np.arange(horizon)
    with plt.rc_context(STYLE):
        figure, panels = _joint_grid(n_joints)
        for j, axes in enumerate(panels[:n_joints]):
            if n_chunks > 1:
                axes.add_collection(_chunk_lines(steps, difference[1:, :, j]))
            axes.plot(steps, _finite_or_nan(difference[0, :, j]), color=UNDER_TEST_COLOUR, linewidth=1.5)
            column = difference[:, :, j]
            finite = column[np.isfinite(column)]
            worst = f"max {np.max(finite):.3g} {unit}" if len(finite) else "no finite values"
            name = plain_text(joint_names[j]) if j < len(joint_names) else f"joint {j}"
            axes.set_title(f"{name}  ({worst})")
            axes.set_ylabel(f"|error| ({unit})")
            axes.set_ylim(bottom=0, top=(float(np.max(finite)) * 1.15 if len(finite) and np.max(finite) > 0 else 1.0))
            note_nonfinite(axes, count_nonfinite(column))
        for axes in panels[-3:]:
            axes.set_xlabel("step in chunk")
        which = f"all {n_chunks} chunks, chunk 0 in colour" if n_chunks > 1 else "one chunk"
        figure.suptitle(f"absolute joint error per step ({unit}, {which})", fontweight="bold", x=0.01, ha="left")
    return save_figure(figure, out_png, tight=False)
