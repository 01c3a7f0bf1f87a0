"""`verify-ate rollout`: paired closed-loop rollouts on both sides (one host), one side saved (`rollout run`, the
two-machine workflow), or two saved sides judged (`rollout compare`)."""

from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from verify_ate.kinematics import RobotModel
from verify_ate.verify.compare.closed_loop import ClosedLoopGate, RolloutComparison, compare_rollouts
from verify_ate.verify.compare.rollout_artifact import RolloutArtifact, load_rollout, save_rollout
from verify_ate.verify.errors import EXIT_GATE_FAILED, EXIT_PASS, InputError
from verify_ate.verify.progress import Progress
from verify_ate.verify.publish import OutputPaths, check_output_file, output_lines
from verify_ate.verify.run.distributed import on_ranks
from verify_ate.verify.run.inputs import DemoSource, ModelSource, demo_files, prepare_inputs, prepare_inputs_steps
from verify_ate.verify.run.rollout import RolloutPlan, rollouts, rollouts_steps
from verify_ate.verify.run.sides import SideConfig

REFERENCE_NPZ, UNDER_TEST_NPZ = "rollout_ref.npz", "rollout_dut.npz"


@dataclass(frozen=True)
class RolloutRequest:
    """What a rollout command runs besides the sides: the plan and the noise file."""

    plan: RolloutPlan
    noise: Path | None = None


def _environment(plan: RolloutPlan, source: ModelSource, robot: RobotModel | None):
    from verify_ate.verify.envs.factory import make_environment

    if plan.environment != "demo":
        return make_environment(plan.environment)
    if isinstance(source, DemoSource):
        demo = source.demo
    else:
        assert robot is not None  # the demo world's robot is always resolved (RolloutRobotArgs)
        demo = demo_files(robot.name)
    return make_environment("demo", demo.profile())


def _run_sides(
    sides: tuple[SideConfig, ...],
    source: ModelSource,
    robot: RobotModel | None,
    request: RolloutRequest,
    group,
    progress,
) -> tuple[RolloutArtifact, ...]:
    """Inputs prepared (rank 0 first under torchrun: a demo trained on first use is trained once), then every
    side's rollouts of this rank's episodes, gathered onto rank 0."""
    from verify_ate.verify.model.devices import resolve_device
    from verify_ate.verify.run.distributed import rank_device

    def prepare():
        for side in sides:
            resolve_device(rank_device(side.device, group.local_rank, group.world_size))
        return prepare_inputs(source, robot, 0, 0, request.noise, progress, sides[0].device)

    inputs = group.main_first(prepare)
    progress.total = prepare_inputs_steps(source) + rollouts_steps(request.plan, len(sides), group) + 2
    return rollouts(
        sides,
        inputs.checkpoint,
        inputs.observations.stats,
        _environment(request.plan, source, robot),
        request.plan,
        inputs.noise,
        inputs.checkpoint_sha256,
        progress,
        inputs.extra_meta,
        group,
    )


def run_rollout(
    sides: tuple[SideConfig, SideConfig],
    source: ModelSource,
    robot: RobotModel | None,
    request: RolloutRequest,
    gate: ClosedLoopGate,
    outputs: OutputPaths,
    quiet: bool = False,
) -> int:
    """Both sides' rollouts on this host (episodes over torchrun's ranks), judged and published; returns the
    exit code."""

    def work(group) -> int:
        if source.note and group.is_main:
            print(source.note, file=sys.stderr)
        verdict = io.StringIO()
        with Progress(total=None, quiet=quiet or not group.is_main) as progress:
            reference, under_test = _run_sides(sides, source, robot, request, group, progress)

            def judge() -> int:
                progress.step("comparing the rollouts")
                comparison = compare_rollouts(reference, under_test, gate)
                progress.step("writing the report" if outputs.out_dir else "writing results")
                publish_rollout(comparison, reference, under_test, outputs, stream=verdict, save_artifacts=True)
                return EXIT_PASS if comparison.passed else EXIT_GATE_FAILED

            code = group.main_only(judge)
        print(verdict.getvalue(), end="")
        return code

    return on_ranks([side.device for side in sides], work)


def run_rollout_side(
    side: SideConfig,
    source: ModelSource,
    robot: RobotModel | None,
    request: RolloutRequest,
    save: Path,
    quiet: bool = False,
) -> int:
    """One side's rollouts saved as a rollout artifact (the two-machine workflow)."""
    check_output_file(save)

    def work(group) -> int:
        if source.note and group.is_main:
            print(source.note, file=sys.stderr)
        with Progress(total=None, quiet=quiet or not group.is_main) as progress:
            (artifact,) = _run_sides((side,), source, robot, request, group, progress)

        def write() -> int:
            save_rollout(artifact, save)
            successes = int(artifact.success.sum())
            print(
                f"wrote {save}: {artifact.episodes} episodes of {artifact.actions.shape[1]} steps on {side.label} in "
                f"{artifact.meta['environment'].get('env')}, {successes}/{artifact.episodes} succeeded"
            )
            return EXIT_PASS

        return group.main_only(write)

    return on_ranks([side.device], work)


def compare_rollout_files(
    reference_path: Path, under_test_path: Path, gate: ClosedLoopGate, outputs: OutputPaths, force: bool = False
) -> int:
    """Two saved rollout artifacts judged and published (no torch)."""
    reference, under_test = load_rollout(reference_path), load_rollout(under_test_path)
    comparison = compare_rollouts(reference, under_test, gate, accept_differences=force)
    verdict = io.StringIO()
    publish_rollout(comparison, reference, under_test, outputs, stream=verdict, save_artifacts=False)
    print(verdict.getvalue(), end="")
    return EXIT_PASS if comparison.passed else EXIT_GATE_FAILED


# ---------------------------------------------------------------- publishing


def tool_paths(artifact: RolloutArtifact) -> np.ndarray:
    """[E, S + 1, arms, 3] per step: every arm's recorded tool centre point (m), or the environment state's first
    three values as one path (zeros where it has fewer)."""
    if artifact.tool_poses.shape[2] > 0:
        return artifact.tool_poses[..., :3, 3]
    states = artifact.states[..., :3]
    padded = np.concatenate([states, np.zeros((*states.shape[:-1], 3 - states.shape[-1]))], axis=-1)
    return padded[..., None, :]


def nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else value


def side_label(meta: dict) -> str:
    """'cpu float32', with the side's variants (+) and injected faults (!) as SideConfig.label writes them."""
    label = f"{meta['device']} {meta['dtype']}"
    label += "".join(f" +{name}" for name in meta.get("variants", []))
    return label + "".join(f" !{name}" for name in meta.get("faults", []))


def verdict_lines(summary: dict) -> list[str]:
    outcomes, divergence = summary["outcomes"], summary["divergence"]
    unit = divergence["unit"]
    median, largest = (nan_if_none(divergence["final"][key]) for key in ("median", "max"))
    lines = [
        f"{'PASS' if summary['pass'] else 'FAIL'}  closed loop in {summary['environment']}: "
        f"{side_label(summary['ref'])} vs {side_label(summary['dut'])}, {summary['episodes']} episodes x "
        f"{summary['steps']} steps",
        f"  success: reference {outcomes['reference_success_rate']:.0%}, under test "
        f"{outcomes['under_test_success_rate']:.0%}; outcomes differ in "
        f"{outcomes['reference_only'] + outcomes['under_test_only']} episodes (McNemar exact "
        f"p = {outcomes['mcnemar_p_value']:.3g})",
        f"  divergence over {divergence['bound']:g} {unit} in {divergence['diverged_episodes']} of "
        f"{summary['episodes']} episodes; final divergence median {median:.3g} {unit}, max {largest:.3g} {unit}",
    ]
    if summary.get("forced"):
        lines.append(
            "  FORCED: "
            + "; ".join(
                d["input"] + (f" ({d['detail']})" if d["detail"] else "") for d in summary["forced_differences"]
            )
        )
    for check in summary["checks"]:
        lines.append(f"  [{'pass' if check['pass'] else 'FAIL'}] {check['name']}: {check['message']}")
    return lines


def publish_rollout(
    comparison: RolloutComparison,
    reference: RolloutArtifact,
    under_test: RolloutArtifact,
    outputs: OutputPaths,
    stream=sys.stdout,
    save_artifacts: bool = True,
) -> None:
    """The verdict on `stream`, and every file asked for, each whole or not at all."""
    from verify_ate.reports.atomic import atomic_folder, atomic_path
    from verify_ate.reports.rollout_report import RolloutArrays, render_rollout, write_rollout_junit
    from verify_ate.reports.summary_files import write_json

    summary = comparison.summary
    with contextlib.ExitStack() as stack:
        if outputs.out_dir is not None:
            staging = stack.enter_context(atomic_folder(outputs.out_dir))
            write_json(summary, staging / "summary.json")
            write_rollout_junit(summary, staging / "junit.xml")
            if save_artifacts:
                save_rollout(reference, staging / REFERENCE_NPZ)
                save_rollout(under_test, staging / UNDER_TEST_NPZ)
            arrays = RolloutArrays(
                tool_paths(reference),
                tool_paths(under_test),
                comparison.divergence.distance,
                reference.images,
                under_test.images,
            )
            render_rollout(staging, summary, arrays)
        if outputs.json_path is not None:
            write_json(summary, stack.enter_context(atomic_path(outputs.json_path)))
        if outputs.junit_path is not None:
            write_rollout_junit(summary, stack.enter_context(atomic_path(outputs.junit_path)))
    for line in verdict_lines(summary):
        print(line, file=stream)
    for line in output_lines(outputs):
        print(line, file=stream)


def check_rollout_save(save: Path) -> None:
    if save.suffix != ".npz":
        raise InputError(f"--save {save}: a rollout artifact is a .npz file")
