"""`sweep` end to end: plan, both passes (under torchrun, over every rank), compare, trace, publish.

Exit codes as the one-shot form; under torchrun every rank returns the same code and only rank 0
prints the verdict and writes files.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass

from verify_ate.kinematics import RobotModel
from verify_ate.verify.commands.one_shot import COMPARE_STEPS, PUBLISH_STEPS
from verify_ate.verify.compare.gate import GateConfig
from verify_ate.verify.errors import EXIT_GATE_FAILED, EXIT_PASS
from verify_ate.verify.progress import Progress
from verify_ate.verify.publish import OutputPaths, publish
from verify_ate.verify.run.inputs import DATASET_STEPS, ModelSource
from verify_ate.verify.run.plan import SweepSelection, plan_sweep
from verify_ate.verify.run.sides import SideConfig, check_cameras, dataset_action_names
from verify_ate.verify.run.sweep import SweepRequest, run_sweep, side_pass_steps, trace_worst_unit
from verify_ate.verify.run.trace.config import TraceRequest


@dataclass(frozen=True)
class SweepReport:
    """How a sweep is judged and reported beyond the pooled gate."""

    frame_stat: str | None = None  # also gate every frame on its own statistic
    worst_frames: int = 3  # worst frames plotted


def run_sweep_command(
    sides: tuple[SideConfig, SideConfig],
    source: ModelSource,
    selection: SweepSelection,
    robot: RobotModel,
    gate: GateConfig,
    outputs: OutputPaths,
    trace: TraceRequest,
    report: SweepReport,
    quiet: bool = False,
) -> int:
    """The whole sweep on this rank (or alone); returns the exit code every rank agrees on."""
    from verify_ate.verify.run.distributed import on_ranks

    return on_ranks(
        [side.device for side in sides],
        lambda group: _sweep(sides, source, selection, robot, gate, outputs, trace, report, quiet, group),
    )


def _sweep(sides, source, selection, robot, gate, outputs, trace, report, quiet, group) -> int:
    quiet = quiet or not group.is_main
    verdict = io.StringIO()  # printed after the progress display has closed
    with Progress(total=None, quiet=quiet) as progress:
        # Rank 0 prepares first (the demo writes its dataset and checkpoint once), then the others.
        request = group.main_first(
            lambda: prepare_sweep(sides, source, selection, robot, gate, report.frame_stat, group, progress)
        )
        progress.total = prepare_sweep_steps(source) + _passes_steps(request, group) + COMPARE_STEPS + PUBLISH_STEPS
        outcome = run_sweep(request, group, progress)

        def judge() -> int:
            traced = trace_worst_unit(request, outcome, trace, progress) if trace.wanted(outcome.passed) else None
            progress.step("writing the report")
            publish(
                outcome.result,
                outputs,
                sweep=outcome,
                worst_count=report.worst_frames,
                save_artifacts=True,
                trace=traced,
                stream=verdict,
            )
            return EXIT_PASS if outcome.passed else EXIT_GATE_FAILED

        code = group.main_only(judge)
    print(verdict.getvalue(), end="")
    return code


def _passes_steps(request: SweepRequest, group) -> int:
    """Progress steps of both passes on this rank (`run_passes`)."""
    from verify_ate.verify.run.distributed import batches_of_rank

    mine = len(batches_of_rank(len(request.plan.batches), group.rank, group.world_size))
    return sum(side_pass_steps(side, mine, group.is_main) for side in request.sides)


def prepare_sweep_steps(source: ModelSource) -> int:
    """Progress steps `prepare_sweep` takes."""
    return DATASET_STEPS + 1 + source.checkpoint_steps


def prepare_sweep(
    sides,
    source: ModelSource,
    selection: SweepSelection,
    robot: RobotModel,
    gate: GateConfig,
    frame_stat: str | None,
    group,
    progress,
) -> SweepRequest:
    """Everything both passes share, checked before any model loads (exit 2/3 early)."""
    from verify_ate.verify.data.observation import load_frames
    from verify_ate.verify.model.devices import resolve_device
    from verify_ate.verify.run.distributed import rank_device

    for side in sides:
        resolve_device(rank_device(side.device, group.local_rank, group.world_size))
    noise = selection.noise_source()
    if source.note and group.is_main:
        print(source.note, file=sys.stderr)
    dataset = source.dataset_folder(progress)
    progress.step(f"planning the sweep over {dataset}")
    plan = plan_sweep(
        dataset,
        None if selection.episodes is None else list(selection.episodes),
        selection.frame_range,
        noise.seeds,
        selection.batch_size,
    )
    probe = load_frames(dataset, plan.units[0].episode, [plan.units[0].frame])
    checkpoint = source.checkpoint_folder(probe.stats, progress, sides[0].device)
    names = dataset_action_names(probe.features, str(probe.description["dataset"]), robot, probe.stats)
    check_cameras(probe.features, str(probe.description["dataset"]), checkpoint)
    if group.is_main:
        for note in plan.notes:
            print(f"note: {note}", file=sys.stderr)
    info = {
        key: probe.description.get(key)
        for key in ("dataset", "repo_id", "codebase_version", "robot_type", "fps", "task")
    }
    return SweepRequest(
        checkpoint,
        plan,
        source.cache.checkpoint_sha256(checkpoint),
        sides,
        noise,
        robot,
        gate,
        probe.stats,
        info,
        frame_stat,
        source.extra_meta,
        names,
    )
