"""`verify-ate selftest`: is this gate tight enough for this model? (verify/run/selftest.py)"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import replace

from verify_ate.kinematics import RobotModel
from verify_ate.reports.atomic import atomic_folder, atomic_path
from verify_ate.reports.summary_files import write_json
from verify_ate.verify.commands.one_shot import FrameSelection
from verify_ate.verify.compare.gate import GateConfig
from verify_ate.verify.errors import EXIT_GATE_FAILED, EXIT_PASS, InputError
from verify_ate.verify.model.rewrites import FAULT, VARIANT
from verify_ate.verify.progress import Progress
from verify_ate.verify.publish import CALIBRATION_JSON, OutputPaths, output_lines
from verify_ate.verify.run.inputs import ModelSource, prepare_inputs, prepare_inputs_steps
from verify_ate.verify.run.selftest import SelftestConfig, SelftestHarness, sensitivity_steps
from verify_ate.verify.run.sides import LOAD_STEPS, SideConfig, default_noise, load_runner


def run_selftest(
    side: SideConfig,
    source: ModelSource,
    selection: FrameSelection,
    robot: RobotModel,
    gate: GateConfig,
    outputs: OutputPaths,
    cases: tuple[tuple[str, ...] | None, tuple[str, ...] | None],
    sensitivity: bool = False,
    quiet: bool = False,
) -> int:
    """Every case in `cases` (variants, faults; None: every one that applies to the checkpoint's policy and runs on
    the device) on `side` against `side` unmodified, all on one loaded model; returns the exit code: 0 when every
    variant passes the calibrated gate and every fault fails it where it was injected."""
    from verify_ate.verify.model.devices import parse_device, resolve_device
    from verify_ate.verify.model.rewrites import CATALOGUE, FAULTS, VARIANTS, applicable
    from verify_ate.verify.run import calibrate
    from verify_ate.verify.run.inputs import UserSource

    resolve_device(side.device)
    policy = getattr(source, "policy", "pi0")  # a demo's; a user's checkpoint says in its config.json
    if isinstance(source, UserSource):
        from verify_ate.verify.model.policies import checkpoint_adapter

        policy = checkpoint_adapter(source.checkpoint).name
    backend = parse_device(side.device).backend
    cases = (
        applicable(VARIANTS, backend, policy) if cases[0] is None else cases[0],
        applicable(FAULTS, backend, policy) if cases[1] is None else cases[1],
    )
    if side.variants or side.faults:
        raise InputError("selftest applies each variant and fault itself; no variant or fault may be given")
    config = SelftestConfig.from_file()
    if source.note:
        print(source.note, file=sys.stderr)
    rewrites = [CATALOGUE[name] for group in cases for name in group]
    total = (
        prepare_inputs_steps(source)
        + LOAD_STEPS
        + (calibrate.STEPS if gate.calibration is None else 0)
        + SelftestHarness.REFERENCE_STEPS
        + SelftestHarness.CASE_STEPS * len(rewrites)
        + (sensitivity_steps(config) if sensitivity else 0)
    )
    with Progress(total=total, quiet=quiet) as progress:
        inputs = prepare_inputs(
            source, robot, selection.episode, selection.frame, selection.noise, progress, side.device
        )
        progress.step(f"loading {policy} on {side.label}")
        with load_runner(side, inputs.checkpoint, inputs.observations.stats, progress=progress) as runner:
            noise = inputs.noise or default_noise(runner.expected_noise_shape)
            if gate.calibration is None:
                calibration = calibrate.measure_calibration(side, inputs, noise, gate, progress, runner=runner)
                gate = replace(gate, calibration=calibration)
            gate = replace(gate, mode="both")
            harness = SelftestHarness(runner, side, inputs, gate, config, noise, progress)
            results = [harness.case(rewrite) for rewrite in rewrites]
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
    missed = [case.name for case in results if case.fixed_misses]
    harmless = [case.name for case in results if case.harmless]
    passed = not failing
    variants = sum(case.kind == VARIANT for case in results)
    faults = sum(case.kind == FAULT and not case.harmless for case in results)
    headline = (
        f"{_count(variants, 'variant')} {'passes' if variants == 1 else 'pass'} and {_count(faults, 'fault')} "
        f"{'is' if faults == 1 else 'are'} caught where injected"
        if passed
        else f"not as expected: {', '.join(failing)}"
    )
    if harmless:
        headline += f"; harmless on this model (under the benign floor): {', '.join(harmless)}"
    if missed:
        headline += f"; the fixed bounds miss {', '.join(missed)}"
    description = inputs.observations.description
    return {
        "pass": passed,
        "headline": headline,
        "reference": side.label,
        "checkpoint_sha256": inputs.checkpoint_sha256,
        "observation": f"{description.get('dataset')} episode {description.get('episode')} frame "
        f"{description.get('frames')}",
        "stat": gate.statistic,
        "bounds": {  # "seed": the fixed bounds' name of one release ago (CHANGELOG)
            "position_m": {
                "fixed": gate.position_tolerance_m,
                "seed": gate.position_tolerance_m,
                "calibrated": calibrated.position_tolerance_m,
            },
            "orientation_rad": {
                "fixed": gate.orientation_tolerance_rad,
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
        "fixed_misses": missed,
        "seed_misses": missed,  # the old name, kept for one release (CHANGELOG)
        "not_as_expected": failing,
        "harmless": harmless,
        "sensitivity": [row.as_dict() for row in rows] or None,
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def table_lines(document: dict) -> list[str]:
    """The table on stdout: one row per case, then the sensitivity rows."""
    stat = document["stat"]
    lines = [
        f"{'PASS' if document['pass'] else 'FAIL'}  selftest on {document['reference']}: {document['headline']}",
        f"  bounds ({stat}): fixed {document['bounds']['position_m']['fixed']:g} m / "
        f"{document['bounds']['orientation_rad']['fixed']:g} rad; calibrated "
        f"{document['bounds']['position_m']['calibrated']:.3g} m / "
        f"{document['bounds']['orientation_rad']['calibrated']:.3g} rad",
        f"  {'name':20s} {'kind':8s} {'fixed':6s} {'calib':5s} {'position m':>11s} {'orient rad':>11s}  "
        f"{'first diverging module':26s} outcome",
    ]
    for case in document["cases"]:
        first = case["first_module"] or ("exact" if case["exact"] else "-")
        outcome = case["outcome"]
        fixed = ("pass" if case["fixed_pass"] else "FAIL") + ("*" if case["fixed_misses"] else "")
        lines.append(
            f"  {case['name']:20s} {case['kind']:8s} {fixed:6s} {'pass' if case['calibrated_pass'] else 'FAIL':5s} "
            f"{case['position']:11.3g} {case['orientation']:11.3g}  {first:26s} {outcome}"
        )
    if document["fixed_misses"]:
        lines.append("  * a fault the fixed bounds let through: missed by them")
    for row in document["sensitivity"] or []:
        fixed, calibrated = (
            "none" if value is None else f"{value:g}"
            for value in (row["smallest_failing_scale_fixed"], row["smallest_failing_scale_calibrated"])
        )
        lines.append(
            f"  sensitivity {row['label']:28s} smallest failing perturbation: fixed {fixed}, calibrated {calibrated}"
        )
    return lines


def _write(outputs: OutputPaths, document: dict, gate: GateConfig) -> None:
    from verify_ate.reports.selftest_report import render_selftest, write_selftest_junit

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
    for line in output_lines(outputs):
        print(line)
