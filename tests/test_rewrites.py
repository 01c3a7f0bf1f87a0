"""Variants, faults, the calibrated gate and `verify-ate selftest`, on the demo's trained tiny pi0.

Everything runs lerobot's real PI0Policy on the CPU; the rewrites change one side's loaded model only.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import run_cli

pytest.importorskip("lerobot")

from verify_ate.verify.compare.calibration import Calibration, calibration_from_floors, fixed_ceiling
from verify_ate.verify.errors import InputError
from verify_ate.verify.model.rewrites import CATALOGUE, FAULTS, VARIANTS

# Variants whose float32 arithmetic on the CPU is the reference's, operation for operation.
EXACT_VARIANTS = ("fused-qkv", "rope-hoisted", "add-rmsnorm")
# Variants that reorder float32 arithmetic: allowed to move the tool centre point by rounding only.
# (compile: inductor's generated kernels; about half a minute of compiling on the CPU.)
REORDERING_VARIANTS = ("sdpa", "compile")
# Every variant but compile-cudagraphs, which needs CUDA.
SELFTEST_VARIANTS = (*EXACT_VARIANTS, *REORDERING_VARIANTS, "fused-qkv-bf16")
PI0_FAULTS = tuple(name for name in FAULTS if CATALOGUE[name].applies_to("pi0"))  # ACT's and Diffusion's: test_policies


# ---------------------------------------------------------------- the calibration, pure


def _floors(position: float, orientation: float) -> dict:
    stats = ("rmse", "mean", "median", "max", "p95")
    return {
        "position": dict.fromkeys(stats, position),
        "orientation": dict.fromkeys(stats, orientation),
        "orientation_rpy": dict.fromkeys(stats, orientation),
    }


def test_calibrated_bounds_are_a_multiple_of_the_worst_floor_within_minimum_and_seed():
    calibration = calibration_from_floors(
        {"threads": _floors(1e-9, 1e-8), "bfloat16": _floors(2e-4, 3e-3)}, fixed_ceiling(0.03, 0.2), {}
    )
    assert calibration.floor("position", "rmse") == (2e-4, "bfloat16")
    assert calibration.bound("position", "rmse") == pytest.approx(calibration.multiple * 2e-4)
    tiny = calibration_from_floors({"threads": _floors(0.0, 0.0)}, fixed_ceiling(0.03, 0.2), {})
    assert tiny.bound("position", "rmse") == tiny.minimum["position"]  # never a bound at zero
    huge = calibration_from_floors({"bfloat16": _floors(1.0, 3.0)}, fixed_ceiling(0.03, 0.2), {})
    assert huge.bound("position", "rmse") == 0.03
    assert huge.bound("orientation", "max") == 0.2
    broken = calibration_from_floors({"bfloat16": _floors(float("nan"), 1e-3)}, fixed_ceiling(0.03, 0.2), {})
    assert broken.bound("position", "rmse") == 0.03


def test_a_saved_calibration_loads_back_and_a_broken_one_is_one_line(tmp_path):
    calibration = calibration_from_floors({"batch": _floors(1e-6, 1e-5)}, fixed_ceiling(0.03, 0.2), {"x": 1})
    loaded = Calibration.load(calibration.save(tmp_path / "calibration.json"))
    assert loaded.as_dict() == calibration.as_dict()
    for name, content in (
        ("bad.json", "{not json"),
        ("other.json", '{"format": "something else"}'),
        ("empty.json", '{"format": "verify-ate-calibration/1", "floors": {}}'),
    ):
        (tmp_path / name).write_text(content)
        with pytest.raises(InputError) as caught:
            Calibration.load(tmp_path / name)
        assert str(tmp_path / name) in str(caught.value)
        assert "\n" not in str(caught.value)


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(
    "flags, kind, known",
    [
        (("--dut-variant", "fused-qvk"), "variant", VARIANTS),
        (("--ref-variant", "sdpa,warp-drive"), "variant", VARIANTS),
        (("--inject", "bit-flip"), "fault", FAULTS),
    ],
)
def test_an_unknown_name_is_exit_2_listing_the_known_ones(tmp_path, flags, kind, known):
    result = run_cli("--demo", "--cache-dir", tmp_path, *flags, "--out", tmp_path / "out")
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert f"unknown {kind}" in line
    assert all(name in line for name in known)
    assert not (tmp_path / "out").exists()


def test_gate_calibrated_without_a_calibration_is_exit_2(tmp_path):
    result = run_cli("--demo", "--cache-dir", tmp_path, "--gate", "calibrated")
    assert result.returncode == 2
    assert "--gate calibrated needs a calibration" in result.stderr


# ---------------------------------------------------------------- the self-test


def test_a_fault_under_the_benign_floor_is_harmless_one_between_floor_and_bound_is_missed():
    """Judged on figures alone: caught = fails the calibrated gate where injected (or in a numbered instance of that
    module); harmless = passes it, moving the robot less than the largest benign floor in both series; else missed."""
    from verify_ate.verify.run.selftest import CaseResult

    def fault(position, orientation, calibrated_pass, first="image encoder"):
        return CaseResult(
            "f", "fault", "", "image encoder", fixed_pass=True, calibrated_pass=calibrated_pass, position=position,
            orientation=orientation, first_module=first, floor=(1e-4, 1e-3),
        )  # fmt: skip

    under = fault(5e-5, 5e-4, calibrated_pass=True)
    assert (under.harmless, under.caught, under.ok, under.fixed_misses) == (True, False, True, False)
    assert under.outcome.startswith("harmless on this model")
    between = fault(5e-5, 2e-3, calibrated_pass=True)  # orientation above its floor
    assert (between.harmless, between.ok, between.outcome) == (False, False, "MISSED by the calibrated gate")
    assert fault(1e-2, 1e-1, calibrated_pass=False, first="image encoder 1").caught
    assert not fault(1e-2, 1e-1, calibrated_pass=False, first="image encoder 1 extra").caught
    assert not fault(1e-2, 1e-1, calibrated_pass=False, first="U-Net down 0.0").ok


@pytest.fixture(scope="module")
def selftest(demo_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("selftest") / "report"
    result = run_cli(
        "selftest",
        "--demo",
        "--cache-dir",
        demo_cache,
        "--variants",
        ",".join(SELFTEST_VARIANTS),
        "--out",
        out,
        "--junit",
        out.parent / "junit.xml",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads((out / "selftest.json").read_text())
    return result, document, out


@pytest.mark.slow
def test_selftest_exits_0_with_every_variant_passing_and_every_fault_caught(selftest):
    result, document, out = selftest
    assert result.returncode == 0, result.stdout + result.stderr
    assert document["pass"]
    assert not document["not_as_expected"]
    assert [case["name"] for case in document["cases"]] == [*SELFTEST_VARIANTS, *PI0_FAULTS]
    for name in (*SELFTEST_VARIANTS, *PI0_FAULTS):  # one table row each, on stdout and in the page
        assert any(line.split()[:1] == [name] for line in result.stdout.splitlines()), name
        assert f'id="case-{name}"' in (out / "index.html").read_text()
    counters = re.findall(r"^\[(\d+)/(\d+)\]", result.stderr, flags=re.MULTILINE)
    assert counters[-1][0] == counters[-1][1], result.stderr  # one model, every planned step, none past the total
    assert all(int(count) <= int(total) for count, total in counters), result.stderr
    junit = (out.parent / "junit.xml").read_text()
    assert junit.count("<testcase") == len(document["cases"])
    assert 'failures="0"' in junit
    assert Calibration.load(out / "calibration.json").floors  # the calibration it judged with, reusable


@pytest.mark.slow
@pytest.mark.parametrize("name", EXACT_VARIANTS)
def test_a_variant_with_the_references_arithmetic_gives_its_actions_exactly(selftest, name):
    case = next(c for c in selftest[1]["cases"] if c["name"] == name)
    assert case["exact"]
    assert case["position"] == 0.0
    assert case["first_module"] is None


@pytest.mark.slow
@pytest.mark.parametrize("name", REORDERING_VARIANTS)
def test_a_reordering_variant_moves_the_tool_centre_point_by_rounding_only(selftest, name):
    case = next(c for c in selftest[1]["cases"] if c["name"] == name)
    assert case["calibrated_pass"]
    assert case["position"] < 1e-5


@pytest.mark.slow
def test_the_bfloat16_qkv_weight_passes_the_calibrated_gate(selftest):
    case = next(c for c in selftest[1]["cases"] if c["name"] == "fused-qkv-bf16")
    assert case["calibrated_pass"]
    assert not case["exact"]


@pytest.mark.slow
@pytest.mark.parametrize("name", PI0_FAULTS)
def test_a_fault_fails_the_calibrated_gate_and_the_trace_names_its_module(selftest, name):
    case = next(c for c in selftest[1]["cases"] if c["name"] == name)
    assert not case["calibrated_pass"], case
    assert case["first_module"] == CATALOGUE[name].first_module, case


@pytest.mark.slow
def test_the_fixed_bounds_miss_faults_the_calibrated_bounds_catch_and_the_page_draws_them_failed(selftest):
    _, document, out = selftest
    missed = [case["name"] for case in document["cases"] if case["kind"] == "fault" and case["fixed_pass"]]
    assert missed  # on the trained demo the fixed bounds miss some faults
    assert document["fixed_misses"] == missed
    assert document["seed_misses"] == missed  # the old name, kept for one release
    calibrated = document["bounds"]["position_m"]["calibrated"]
    assert calibrated < document["bounds"]["position_m"]["fixed"]
    page = (out / "index.html").read_text()
    for name in missed:  # a missed fault is a failure of the fixed gate, in red, never a green pass
        row = page.split(f'id="case-{name}"', 1)[1].split("</tr>", 1)[0]
        assert '<td class="bad">pass: MISSED</td>' in row


@pytest.mark.slow
def test_sensitivity_reports_the_smallest_failing_perturbation_per_module(demo_cache, tmp_path, monkeypatch):
    from verify_ate.reports import plots

    figures, save = [], plots.save_figure
    monkeypatch.setattr(
        plots, "save_figure", lambda figure, *args, **kw: figures.append(figure) or save(figure, *args, **kw)
    )
    out = tmp_path / "report"
    result = run_cli(
        "selftest",
        "--demo",
        "--cache-dir",
        demo_cache,
        "--variants",
        "",
        "--faults",
        "noise-reseeded",
        "--sensitivity",
        "--out",
        out,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads((out / "selftest.json").read_text())
    rows = document["sensitivity"]
    assert rows
    (axes,) = figures[0].axes  # the sensitivity plot: one line per module, and both bounds
    lines = {line.get_label(): line for line in axes.get_lines()}
    for row in rows:
        np.testing.assert_allclose(lines[row["label"]].get_ydata(), np.clip(row["position"], 1e-12, None))
    for gate in ("fixed", "calibrated"):
        assert set(lines[f"{gate} bound"].get_ydata()) == {document["bounds"]["position_m"][gate]}
    for row in rows:
        calibrated, fixed = row["smallest_failing_scale_calibrated"], row["smallest_failing_scale_fixed"]
        assert calibrated is not None, row  # caught somewhere up to a 100 % perturbation
        assert fixed is None or calibrated <= fixed  # the calibrated bound is never the looser one
        assert row["position"][-1] > 100 * row["position"][0] > 0  # the larger the perturbation, the further
        assert f"sensitivity {row['label']}" in result.stdout


# ---------------------------------------------------------------- the one-shot form and compare


@pytest.mark.slow
def test_variants_and_faults_are_recorded_and_shown_and_a_calibration_is_reused(demo_cache, tmp_path):
    out = tmp_path / "report"
    demo = ("--demo", "--cache-dir", demo_cache, "--dut", "cpu", "--dut-dtype", "float32", "--iters", "0")
    result = run_cli(
        *demo,
        "--ref-variant",
        "add-rmsnorm",
        "--dut-variant",
        "fused-qkv,rope-hoisted",
        "--inject",
        "rope-interleaved",
        "--calibrate",
        "--out",
        out,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ref"]["variants"] == ["add-rmsnorm"]
    assert summary["ref"]["faults"] == []
    assert summary["dut"]["variants"] == ["fused-qkv", "rope-hoisted"]
    assert summary["dut"]["faults"] == ["rope-interleaved"]
    assert "INJECTED rope-interleaved" in result.stdout
    page = (out / "index.html").read_text()
    assert "INJECTED faults" in page
    assert 'id="bounds-calibrated"' in page
    gate = summary["gate"]
    assert gate["deciding_gate"] == "fixed"
    assert gate["decides"] == "seed"  # the old name, kept for one release
    assert result.returncode == (0 if gate["fixed"]["pass"] else 1)
    assert gate["calibrated"]["pass"] is False  # the fault is over the calibrated bounds
    again = run_cli(
        "compare",
        out / "ref.npz",
        out / "dut.npz",
        "--calibration",
        out / "calibration.json",
        "--gate",
        "calibrated",
        "--json",
        tmp_path / "again.json",
    )
    assert again.returncode == 1, again.stderr
    reused = json.loads((tmp_path / "again.json").read_text())["gate"]["calibrated"]
    assert reused["position_m"] == pytest.approx(gate["calibrated"]["position_m"])
    assert reused["differences"] == []
    assert gate["calibrated"]["differences"] == []
    # A calibration measured on another model is never taken silently: the verdict says so.
    foreign = json.loads((out / "calibration.json").read_text())
    foreign["provenance"]["checkpoint_sha256"] = "f" * 64
    (tmp_path / "foreign.json").write_text(json.dumps(foreign))
    other = run_cli("compare", out / "ref.npz", out / "dut.npz", "--calibration", tmp_path / "foreign.json")
    assert other.returncode == 1, other.stderr
    assert "note: the calibration was measured on another checkpoint (sha256 ffffffffffff" in other.stdout
    # A sweep gated on the calibration: its per-frame checks, frame table and count follow that gate.
    sweep = run_cli(
        "sweep",
        *demo,
        "--frames",
        "0:2",
        "--frame-stat",
        "max",
        "--inject",
        "state-unnormalized",
        "--calibration",
        out / "calibration.json",
        "--gate",
        "calibrated",
        "--out",
        tmp_path / "sweep",
    )
    swept = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    assert sweep.returncode == 1, sweep.stderr
    per_frame = {c["name"]: c for c in swept["gate"]["calibrated"]["checks"] if c["name"].startswith("per-frame")}
    assert per_frame["per-frame position"]["threshold"] == pytest.approx(gate["calibrated"]["position_m"])
    assert {c["name"]: c["threshold"] for c in swept["checks"]}["per-frame position"] == 0.03  # the seed's
    assert not per_frame["per-frame position"]["pass"]
    assert swept["sweep"]["frames_failed"] == 2
    assert "per-frame position max" in sweep.stdout
    assert "another observation" in sweep.stdout
