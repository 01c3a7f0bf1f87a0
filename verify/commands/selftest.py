"""`verify-ate selftest`: is this gate tight enough for this model? (verify/run/selftest.py)"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import replace
from pathlib import Path

from kinematics import RobotModel
from reports.atomic import atomic_folder, atomic_path
from reports.summary_files import write_json
from verify.commands.one_shot import FrameSelection
from verify.compare.gate import GateConfig
from verify.errors import EXIT_GATE_FAILED, EXIT_PASS, InputError
from verify.progress import Progress
from verify.publish import CALIBRATION_JSON, OutputPaths
from verify.run.inputs import ModelSource, prepare_inputs
from verify.run.selftest import FAULT, VARIANT, SelftestConfig, SelftestHarness
from verify.run.sides import SideConfig, default_noise


def run_selftest(
    side: SideConfig,
    source: ModelSource,
    selection: FrameSelection,
    robot: RobotModel,
    gate: GateConfig,
    outputs: OutputPaths,
    cases: tuple[tuple[str, ...], tuple[str, ...]],
    sensitivity: bool = False,
    quiet: bool = False,
) -> int:
    """Every case in `cases` (variants, faults) on `side` against `side` unmodified; returns the exit code:
    0 when every variant passes the calibrated gate and every fault fails it where it was injected."""
    from verify.model.devices import resolve_device
    from verify.model.rewrites import CATALOGUE
    from verify.model.runner import noise_shape_of

    resolve_device(side.device)
    if side.variants or side.faults:
        raise InputError("selftest applies each variant and fault itself; drop --variant/--inject")
    config = SelftestConfig.from_file()
    if source.demo:
        print(source.note, file=sys.stderr)
    variants, faults = cases
    total = 4 + len(variants) + len(faults) + (len(config.modules) * len(config.scales) if sensitivity else 0)
    with Progress(total=total, quiet=quiet) as progress:
        inputs = prepare_inputs(
            source, robot, selection.episode, selection.frame, selection.noise, progress, side.device
        )
        noise = inputs.noise or default_noise(noise_shape_of(inputs.checkpoint, side.num_inference_steps))
        if gate.calibration is None:
            from verify.run.calibrate import measure_calibration

            gate = replace(gate, calibration=measure_calibration(side, inputs, noise, gate, progress))
        gate = replace(gate, mode="both")
        harness = SelftestHarness(side, inputs, gate, config, noise, progress)
        results = [harness.case(name, VARIANT, CATALOGUE[name].summary, None) for name in variants]
        results += [harness.case(name, FAULT, CATALOGUE[name].summary, CATALOGUE[name].first_module) for name in faults]
        rows = harness.sensitivity() if sensitivity else []
    document = selftest_document(side, inputs, gate, results, rows)
    for line in table_lines(document):
        print(line)
    _write(outputs, document, gate)
    return EXIT_PASS if document["pass"] else EXIT_GATE_FAILED


def selftest_document(side, inputs, gate: GateConfig, results, rows) -> dict:
    calibrated = gate.calibrated()
    assert calibrated is not None and gate.calibration is not None
    failing = [case.name for case in results if not case.ok]
    missed = [case.name for case in results if case.seed_misses]
    passed = not failing
    variants, faults = (sum(case.kind == kind for case in results) for kind in (VARIANT, FAULT))
    headline = (
        f"{_count(variants, 'variant')} {'passes' if variants == 1 else 'pass'} and {_count(faults, 'fault')} "
        f"{'is' if faults == 1 else 'are'} caught where injected"
        if passed
        else f"not as expected: {', '.join(failing)}"
    )
    if missed:
        headline += f"; the seed's fixed bounds miss {', '.join(missed)}"
    description = inputs.observations.description
    return {
        "pass": passed,
        "headline": headline,
        "reference": side.label,
        "checkpoint_sha256": inputs.checkpoint_sha256,
        "observation": f"{description.get('dataset')} episode {description.get('episode')} frame "
        f"{description.get('frames')}",
        "stat": gate.statistic,
        "bounds": {
            "position_m": {"seed": gate.position_tolerance_m, "calibrated": calibrated.position_tolerance_m},
            "orientation_rad": {
                "seed": gate.orientation_tolerance_rad,
                "calibrated": calibrated.orientation_tolerance_rad,
            },
        },
        "calibration_explained": [
            gate.calibration.describe("position", gate.statistic),
            gate.calibration.describe(gate.orientation_series, gate.statistic),
        ],
        "calibration": gate.calibration.as_dict(),
        "cases": [case.as_dict() for case in results],
        "seed_misses": missed,
        "not_as_expected": failing,
        "sensitivity": [row.as_dict() for row in rows] or None,
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def table_lines(document: dict) -> list[str]:
    """The table on stdout: one row per case, then the sensitivity rows."""
    stat = document["stat"]
    lines = [
        f"{'PASS' if document['pass'] else 'FAIL'}  selftest on {document['reference']}: {document['headline']}",
        f"  bounds ({stat}): seed {document['bounds']['position_m']['seed']:g} m / "
        f"{document['bounds']['orientation_rad']['seed']:g} rad; calibrated "
        f"{document['bounds']['position_m']['calibrated']:.3g} m / "
        f"{document['bounds']['orientation_rad']['calibrated']:.3g} rad",
        f"  {'name':20s} {'kind':8s} {'seed':5s} {'calib':5s} {'position m':>11s} {'orient rad':>11s}  "
        f"{'first diverging module':26s} outcome",
    ]
    for case in document["cases"]:
        first = case["first_module"] or ("exact" if case["exact"] else "-")
        outcome = case["outcome"]
        seed = ("pass" if case["seed_pass"] else "FAIL") + ("*" if case["seed_misses"] else "")
        lines.append(
            f"  {case['name']:20s} {case['kind']:8s} {seed:5s} {'pass' if case['calibrated_pass'] else 'FAIL':5s} "
            f"{case['position']:11.3g} {case['orientation']:11.3g}  {first:26s} {outcome}"
        )
    if document["seed_misses"]:
        lines.append("  * a fault the seed's fixed bounds let through")
    for row in document["sensitivity"] or []:
        seed, calibrated = (
            "none" if value is None else f"{value:g}"
            for value in (row["smallest_failing_seed"], row["smallest_failing_calibrated"])
        )
        lines.append(
            f"  sensitivity {row['label']:28s} smallest failing perturbation: seed {seed}, calibrated {calibrated}"
        )
    return lines


def _write(outputs: OutputPaths, document: dict, gate: GateConfig) -> None:
    from reports.selftest_report import render_selftest, write_selftest_junit

    with contextlib.ExitStack() as stack:
        if outputs.out_dir is not None:
            staging = stack.enter_context(atomic_folder(outputs.out_dir))
            write_json(document, staging / "selftest.json")
            assert gate.calibration is not None
            gate.calibration.save(staging / CALIBRATION_JSON)
            write_selftest_junit(document, staging / "junit.xml")
            render_selftest(staging, document)
        if outputs.json_path is not None:
            write_json(document, stack.enter_context(atomic_path(outputs.json_path)))
        if outputs.junit_path is not None:
            write_selftest_junit(document, stack.enter_context(atomic_path(outputs.junit_path)))
    if outputs.out_dir is not None:
        print(f"report: {Path(outputs.out_dir) / 'index.html'}")
