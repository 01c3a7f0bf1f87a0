"""The self-test page: one row per variant and fault, both gates' verdicts, the trace's first module,
and the sensitivity table and plot. Input is the self-test's JSON dict (verify/run/selftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from verify_ate.reports import plots
from verify_ate.reports.atomic import write_text
from verify_ate.reports.format import number
from verify_ate.reports.summary_files import JUnitCase, junit_suite_xml

SENSITIVITY_PNG = "sensitivity.png"


def plot_sensitivity(rows: list[dict], bounds: dict, out_png: Path) -> Path:
    """Position statistic against the perturbation scale, one line per module, both bounds drawn."""
    import matplotlib.pyplot as plt

    with plt.rc_context(plots.STYLE):
        figure, axes = plt.subplots(figsize=(9.5, 4.6))
        for row in rows:
            values = np.clip(np.asarray(row["position"], dtype=np.float64), 1e-12, None)
            axes.plot(row["scales"], values, marker="o", label=row["label"])
        for name, style in (("fixed", "--"), ("calibrated", ":")):
            if bounds.get(name) is not None:
                axes.axhline(bounds[name], color="black", linestyle=style, linewidth=1, label=f"{name} bound")
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("relative perturbation of the module's output")
        axes.set_ylabel(f"position {bounds.get('stat', '')} (m)")
        axes.legend(loc="upper left", fontsize=7)
        return plots.save_figure(figure, out_png)


def _scale(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def render_selftest(out_dir: str | Path, document: dict) -> Path:
    """Write the sensitivity plot (when there is one), then out_dir/index.html; returns the page."""
    from verify_ate.reports.html import template_environment

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bounds = document["bounds"]
    sensitivity = document.get("sensitivity")
    if sensitivity:
        plot_sensitivity(sensitivity, {**bounds["position_m"], "stat": document["stat"]}, out_dir / SENSITIVITY_PNG)
    rows = [
        {
            **case,
            "position_text": number(case["position"], "m"),
            "orientation_text": number(case["orientation"], "rad"),
        }
        for case in document["cases"]
    ]
    sensitivity_rows = [
        {
            **row,
            "fixed_text": _scale(row["smallest_failing_scale_fixed"]),
            "calibrated_text": _scale(row["smallest_failing_scale_calibrated"]),
        }
        for row in sensitivity or []
    ]
    page = (
        template_environment()
        .get_template("selftest.html")
        .render(document=document, rows=rows, sensitivity=sensitivity_rows, sensitivity_png=SENSITIVITY_PNG)
    )
    return write_text(out_dir / "index.html", page)


def write_selftest_junit(document: dict, path: Path) -> Path:
    """JUnit XML: one testcase per variant and fault, failed when its outcome is not the expected one."""
    cases = []
    for case in document["cases"]:
        expected = (
            "pass the calibrated gate"
            if case["kind"] == "variant"
            else f"fail the calibrated gate, first diverging at {case['expected_module']}"
        )
        got = (
            f"calibrated gate {'pass' if case['calibrated_pass'] else 'FAIL'}, first diverging module "
            f"{case['first_module'] or 'none'}, position {case['position']:.3g} m; {case['outcome']}"
        )
        message = f"expected to {expected}; {got}"
        cases.append(JUnitCase(f"selftest.{case['kind']}", case["name"], message, None if case["ok"] else message))
    return write_text(path, junit_suite_xml("verify-ate selftest", cases))
