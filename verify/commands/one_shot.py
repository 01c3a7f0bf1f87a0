"""The model-running commands on one frame: both sides on this host (the one-shot form), or one side (`run`)."""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from verify_ate.kinematics import RobotModel
from verify_ate.verify.compare.artifact import save_artifact
from verify_ate.verify.compare.comparator import compare
from verify_ate.verify.compare.gate import GateConfig
from verify_ate.verify.errors import EXIT_GATE_FAILED, EXIT_PASS
from verify_ate.verify.progress import Progress
from verify_ate.verify.publish import OutputPaths, check_output_file, publish
from verify_ate.verify.run.inputs import ModelSource, prepare_inputs, prepare_inputs_steps
from verify_ate.verify.run.sides import SideConfig, run_side, run_side_steps
from verify_ate.verify.run.trace.config import TraceRequest

COMPARE_STEPS = 1
PUBLISH_STEPS = 1


@dataclass(frozen=True)
class FrameSelection:
    """The one observation and noise of a one-frame run."""

    episode: int = 0
    frame: int = 0
    noise: Path | None = None  # a fixed-noise file; None: seed 0 of the policy's shape, made once and shared


def run_one_shot(
    sides: tuple[SideConfig, SideConfig],
    source: ModelSource,
    selection: FrameSelection,
    robot: RobotModel,
    gate: GateConfig,
    outputs: OutputPaths,
    trace: TraceRequest,
    quiet: bool = False,
    calibrate: bool = False,
) -> int:
    """Reference then device under test on the same inputs, compared and published; returns the exit code.
    calibrate: also measure the reference's noise floor on these inputs and judge the calibrated gate."""
    from verify_ate.verify.model.devices import resolve_device
    from verify_ate.verify.run import calibrate as calibration

    for side in sides:  # exit 3 before anything is loaded or written
        resolve_device(side.device)
    if source.note:
        print(source.note, file=sys.stderr)
    reference_side, under_test_side = sides
    verdict = io.StringIO()  # printed after the progress display has closed
    total = (
        prepare_inputs_steps(source)
        + run_side_steps(reference_side)
        + run_side_steps(under_test_side)
        + (calibration.STEPS if calibrate else 0)
        + COMPARE_STEPS
        + PUBLISH_STEPS
    )
    with Progress(total=total, quiet=quiet) as progress:
        inputs = prepare_inputs(
            source, robot, selection.episode, selection.frame, selection.noise, progress, reference_side.device
        )
        reference, noise = run_side(reference_side, inputs, progress)
        if inputs.noise is None:  # the default draw is made once and shared, never redrawn
            inputs = replace(inputs, noise=noise)
        under_test, _ = run_side(under_test_side, inputs, progress)
        if calibrate:
            measured = calibration.measure_calibration(reference_side, inputs, noise, gate, progress)
            gate = replace(gate, calibration=measured)
        progress.step("comparing")
        result = compare(reference, under_test, robot, gate)
        traced = None
        if trace.wanted(result.passed):
            from verify_ate.verify.run.trace.divergence import trace_one_frame

            name = f"episode {selection.episode} frame {selection.frame}"
            traced = trace_one_frame(trace, sides, inputs, noise, result, name, progress)
        progress.step("writing the report" if outputs.out_dir else "writing results")
        from verify_ate.verify.data.observation import recorded_action_chunk

        horizon = int(result.reference.actions.shape[1])
        dataset = inputs.observations.description["dataset"]
        recorded = recorded_action_chunk(dataset, selection.episode, selection.frame, horizon)
        publish(result, outputs, trace=traced, save_artifacts=True, noise=noise, stream=verdict, recorded=recorded)
    print(verdict.getvalue(), end="")
    return EXIT_PASS if result.passed else EXIT_GATE_FAILED


def run_one_side(
    side: SideConfig, source: ModelSource, selection: FrameSelection, robot: RobotModel, save: Path, quiet: bool = False
) -> int:
    """One side only, saved as a trajectory artifact (the two-machine workflow); returns the exit code."""
    from verify_ate.verify.model.devices import resolve_device

    check_output_file(save)
    resolve_device(side.device)
    if source.note:
        print(source.note, file=sys.stderr)
    with Progress(total=prepare_inputs_steps(source) + run_side_steps(side), quiet=quiet) as progress:
        inputs = prepare_inputs(
            source, robot, selection.episode, selection.frame, selection.noise, progress, side.device
        )
        artifact, noise = run_side(side, inputs, progress)
    save_artifact(artifact, save)
    latency = artifact.meta.get("latency_ms") or {}
    timing = f", latency median {latency['median_ms']:.1f} ms p90 {latency['p90_ms']:.1f} ms" if latency else ""
    print(
        f"wrote {save}: actions {list(artifact.actions.shape)} on {side.label}{timing}; noise sha256 "
        f"{noise.sha256[:12]}..."
    )
    return EXIT_PASS
