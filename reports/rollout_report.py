"""The closed-loop report: both rollouts' tool paths in one 3D plot, divergence over time with its bound, the
outcome table with McNemar's p-value, and both sides' camera frames around the first divergence.

Input is the rollout summary (verify/compare/closed_loop.py, the JSON written beside it) and plain arrays, so
`reports` never imports `verify`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from verify_ate.reports import plots
from verify_ate.reports.atomic import write_text
from verify_ate.reports.format import number
from verify_ate.reports.summary_files import JUnitCase, junit_suite_xml

PATHS_PNG = "rollout_paths.png"
DIVERGENCE_PNG = "rollout_divergence.png"
FRAMES_PNG = "rollout_frames.png"
FRAMES_SHOWN = 4  # frames per side in the strip, the first divergence among them


@dataclass(frozen=True)
class RolloutArrays:
    """What the plots draw: per-episode paths [E, S + 1, arms, 3] (every arm's tool centre point, m; or the
    environment's state, its first three values, padded, as one path), per-step divergence [E, S + 1], and one
    camera's images [E, S + 1, H, W, 3]."""

    reference_paths: np.ndarray
    under_test_paths: np.ndarray
    distance: np.ndarray
    reference_images: np.ndarray
    under_test_images: np.ndarray


def _side(meta: dict) -> str:
    """'cpu float32 !fault' as the verdict names a side."""
    faults = "".join(f" !{name}" for name in meta.get("faults", []))
    return f"{meta.get('device')} {meta.get('dtype')}{faults}"


def focus_episode(summary: dict) -> int:
    """The episode the paths and frames show: the first that diverged, else the one with the largest final
    divergence."""
    rows = summary["per_episode"]
    diverged = [row for row in rows if row["time_to_divergence"] is not None]
    if diverged:
        return int(min(diverged, key=lambda row: row["time_to_divergence"])["episode"])
    finals = [row["final_distance"] if np.isfinite(row["final_distance"]) else np.inf for row in rows]
    return int(np.argmax(finals))


def plot_paths(summary: dict, arrays: RolloutArrays, out_png: Path) -> Path:
    import matplotlib.pyplot as plt

    focus = focus_episode(summary)
    unit = summary["divergence"]["unit"]
    with plt.rc_context(plots.STYLE):
        figure = plt.figure(figsize=(7.5, 6.0))
        axes = figure.add_subplot(projection="3d")
        arms = arrays.reference_paths.shape[2]
        for episode in range(arrays.reference_paths.shape[0]):
            if episode == focus:
                continue
            for paths, colour in (
                (arrays.reference_paths, plots.REFERENCE_COLOUR),
                (arrays.under_test_paths, plots.UNDER_TEST_COLOUR),
            ):
                for arm in range(arms):
                    path = paths[episode, :, arm]
                    axes.plot(path[:, 0], path[:, 1], path[:, 2], color=colour, alpha=0.18, linewidth=0.8)
        for paths, colour, label in (
            (arrays.reference_paths, plots.REFERENCE_COLOUR, f"reference ({plots.plain_text(_side(summary['ref']))})"),
            (
                arrays.under_test_paths,
                plots.UNDER_TEST_COLOUR,
                f"under test ({plots.plain_text(_side(summary['dut']))})",
            ),
        ):
            for arm in range(arms):
                path = paths[focus, :, arm]
                style = ("-", "--", ":", "-.")[arm % 4]
                axes.plot(
                    path[:, 0], path[:, 1], path[:, 2], color=colour, linewidth=2.0, linestyle=style,
                    label=label if arms == 1 else f"{label}, arm {arm + 1}",
                )  # fmt: skip
                axes.scatter(*path[0], color=colour, marker="o", s=18)
                axes.scatter(*path[-1], color=colour, marker="x", s=30)
        axes.set_xlabel(f"x ({unit})")
        axes.set_ylabel(f"y ({unit})")
        axes.set_zlabel(f"z ({unit})")
        axes.set_title(f"tool paths, episode {focus} bold (o start, x end); other episodes faint")
        axes.legend(loc="upper left")
        return plots.save_figure(figure, out_png)


def plot_divergence(summary: dict, arrays: RolloutArrays, out_png: Path) -> Path:
    import matplotlib.pyplot as plt

    divergence = summary["divergence"]
    steps = np.arange(arrays.distance.shape[1])
    with plt.rc_context(plots.STYLE):
        figure, axes = plt.subplots(figsize=(9.5, 4.2))
        for row in arrays.distance:
            axes.plot(steps, row, color="#7f8c9b", alpha=0.35, linewidth=0.8)
        axes.plot(
            steps, summary["curve"]["median"], color=plots.REFERENCE_COLOUR, linewidth=2.0, label="median over episodes"
        )
        axes.plot(
            steps,
            summary["curve"]["p90"],
            color=plots.UNDER_TEST_COLOUR,
            linewidth=1.6,
            linestyle="--",
            label="90th percentile",
        )
        axes.axhline(
            divergence["bound"],
            color=plots.BOUND_COLOUR,
            linestyle=":",
            linewidth=1.2,
            label=f"bound {divergence['bound']:g} {divergence['unit']}",
        )
        axes.set_xlabel("step")
        axes.set_ylabel(f"divergence ({divergence['unit']})")
        axes.set_title("distance between the two sides, step by step (grey: each episode)")
        axes.legend(loc="upper left")
        return plots.save_figure(figure, out_png)


def frame_steps(summary: dict, n_steps: int) -> list[int]:
    """The steps the frame strip shows: around the focus episode's first divergence, else evenly spaced."""
    focus = focus_episode(summary)
    first = summary["per_episode"][focus]["time_to_divergence"]
    if first is None:
        return [int(v) for v in np.linspace(0, n_steps - 1, FRAMES_SHOWN).round()]
    start = max(0, min(first - 1, n_steps - FRAMES_SHOWN))
    return list(range(start, min(start + FRAMES_SHOWN, n_steps)))


def plot_frames(summary: dict, arrays: RolloutArrays, out_png: Path) -> Path:
    import matplotlib.pyplot as plt

    focus = focus_episode(summary)
    shown = frame_steps(summary, arrays.reference_images.shape[1])
    first = summary["per_episode"][focus]["time_to_divergence"]
    with plt.rc_context(plots.STYLE):
        figure, grid = plt.subplots(2, len(shown), figsize=(2.4 * len(shown), 4.4), squeeze=False)
        for row, (images, name) in enumerate(
            ((arrays.reference_images, "reference"), (arrays.under_test_images, "under test"))
        ):
            for column, step in enumerate(shown):
                axes = grid[row][column]
                axes.imshow(images[focus, step])
                axes.set_xticks([])
                axes.set_yticks([])
                axes.grid(False)
                marker = " (first divergence)" if step == first else ""
                axes.set_title(f"{name}, step {step}{marker}", fontsize=8)
        figure.suptitle(f"episode {focus}: one camera on both sides")
        return plots.save_figure(figure, out_png)


def render_rollout(out_dir: str | Path, summary: dict, arrays: RolloutArrays) -> Path:
    """Write the plots, then out_dir/index.html; returns the page."""
    from verify_ate.reports.html import template_environment

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_paths(summary, arrays, out_dir / PATHS_PNG)
    plot_divergence(summary, arrays, out_dir / DIVERGENCE_PNG)
    plot_frames(summary, arrays, out_dir / FRAMES_PNG)
    unit = summary["divergence"]["unit"]
    rows = [
        {
            **row,
            "final_text": number(row["final_distance"], unit),
            "max_text": number(row["max_distance"], unit),
            "rotation_text": "—" if row["final_rotation"] is None else number(row["final_rotation"], "rad"),
        }
        for row in summary["per_episode"]
    ]
    page = (
        template_environment()
        .get_template("rollout.html")
        .render(
            summary=summary,
            rows=rows,
            focus=focus_episode(summary),
            paths_png=PATHS_PNG,
            divergence_png=DIVERGENCE_PNG,
            frames_png=FRAMES_PNG,
        )
    )
    return write_text(out_dir / "index.html", page)


def rollout_junit_xml(summary: dict) -> str:
    """One testcase per closed-loop check, and one per episode (its outcomes and divergence, never failing)."""
    label = f"{summary['ref'].get('device')} vs {summary['dut'].get('device')}"
    classname = f"verify-ate.rollout.{summary.get('environment')}"
    cases = [
        JUnitCase(
            classname, f"{check['name']}", check["message"], None if check["pass"] else f"{label}: {check['message']}"
        )
        for check in summary["checks"]
    ]
    unit = summary["divergence"]["unit"]
    for row in summary["per_episode"]:
        message = (
            f"seed {row['seed']}: reference {_outcome(row['reference_success'])}, under test "
            f"{_outcome(row['under_test_success'])}; final divergence {number(row['final_distance'], unit)}, first "
            f"over the bound at step {row['time_to_divergence']}"
        )
        cases.append(JUnitCase(f"{classname}.episodes", f"episode {row['episode']}", message, None))
    outcomes = summary["outcomes"]
    properties = {
        "mcnemar_p_value": f"{outcomes['mcnemar_p_value']:.4g}",
        "forced": "true" if summary.get("forced") else "false",
    }
    return junit_suite_xml("verify-ate rollout", cases, properties)


def _outcome(success: bool) -> str:
    return "success" if success else "failure"


def write_rollout_junit(summary: dict, path: Path) -> Path:
    return write_text(path, rollout_junit_xml(summary))
