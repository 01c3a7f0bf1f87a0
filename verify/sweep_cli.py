"""`verify-ate sweep`: many frames x noise seeds through both devices, batched, optionally under torchrun.

    verify-ate sweep --ref cpu --dut npu --checkpoint DIR --dataset DIR --episodes 0,3,5-9 \\
        --frames 0:200:10 --seeds 0,1,2 --batch-size 8 [--frame-stat max] --out reports/sweep
    torchrun --nproc-per-node 8 -m verify.cli sweep --ref npu --dut npu ... # one device per rank

Also the trace flags shared with the one-shot form (--trace, --trace-on-fail, --trace-dump DIR,
--trace-tol) and their outputs. Exit codes as the main form; under torchrun every rank returns the
same code and only rank 0 prints the verdict and writes files.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

from verify.cli import _ArgumentParser, add_gate_arguments, add_output_arguments, gate_config
from verify.errors import EXIT_GATE_FAILED, EXIT_PASS, InputError

DEFAULT_BATCH_SIZE = 8
DEFAULT_WORST_FRAMES = 3
FRAME_STATISTICS = ("rmse", "mean", "median", "max", "p95")


# ---------------------------------------------------------------- arguments


def add_trace_arguments(parser: argparse.ArgumentParser) -> None:
    trace = parser.add_argument_group("divergence trace (configs/trace.yaml)")
    trace.add_argument("--trace", action="store_true", help="record chosen module outputs on both sides and name the first module that diverges")
    trace.add_argument("--trace-on-fail", action="store_true", help="trace automatically when the gate fails")
    trace.add_argument("--trace-dump", type=Path, metavar="DIR", help="also save every traced tensor of both sides (safetensors) under DIR")
    trace.add_argument("--trace-tol", type=float, help="relative error ||ref-dut||/||ref|| above which a module has diverged (default 1e-2)")


def trace_wanted(args, passed: bool) -> bool:
    return bool(args.trace or args.trace_dump is not None or (args.trace_on_fail and not passed))


def build_sweep_parser() -> argparse.ArgumentParser:
    from verify.harness_cli import DTYPES

    parser = _ArgumentParser(
        prog="verify-ate sweep",
        description="Compare pi0 on two devices over many dataset frames and noise seeds (batched; runs under torchrun too).",
    )
    parser.add_argument("--ref", default=None, help="reference device: cpu, cuda[:i], npu[:i] (default cpu)")
    parser.add_argument("--dut", default=None, help="device under test (default: cuda if present, else cpu at bfloat16)")
    parser.add_argument("--ref-dtype", choices=DTYPES, default=None, help="reference precision (default float32)")
    parser.add_argument("--dut-dtype", choices=DTYPES, default=None, help="device-under-test precision (default float32)")
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument("--checkpoint", type=Path, help="local lerobot pi0 checkpoint folder")
    inputs.add_argument("--dataset", type=Path, help="local LeRobot dataset folder (v3.0)")
    inputs.add_argument("--demo", action="store_true", help="tiny random-weight pi0 and a generated dataset (offline)")
    inputs.add_argument("--cache-dir", type=Path, help="where --demo keeps its dataset and checkpoint (default ~/.cache/verify-ate)")
    inputs.add_argument("--num-inference-steps", type=int, help="override the checkpoint's flow-matching step count")
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument("--episodes", default="0", help="episodes: 0,3,5-9 or all (default 0)")
    sweep.add_argument("--frames", default="0:", help="START:STOP[:STEP] within each episode, STOP clipped to its length (default 0: = all)")
    sweep.add_argument("--seeds", default=None, help="noise seeds, one draw each per frame: 0,1,2 or 0-4 (default 0)")
    sweep.add_argument("--noise", type=Path, help="one fixed-noise file for every frame instead of --seeds")
    sweep.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help=f"frames per forward pass (default {DEFAULT_BATCH_SIZE})")
    sweep.add_argument("--frame-stat", choices=FRAME_STATISTICS,
                       help="also gate every frame on its own statistic (e.g. max): each frame's must be within the bounds")
    sweep.add_argument("--worst-frames", type=int, default=DEFAULT_WORST_FRAMES, help=f"worst frames plotted in the report (default {DEFAULT_WORST_FRAMES})")
    timing = parser.add_argument_group("latency")
    timing.add_argument("--iters", type=int, default=5, help="timed calls of the first batch per device (default 5; 0 = none)")
    timing.add_argument("--warmup", type=int, default=1, help="untimed calls before timing (default 1)")
    add_gate_arguments(parser)
    add_output_arguments(parser)
    add_trace_arguments(parser)
    return parser


def resolve_sides(args):
    """(reference, under test) SideConfigs with the main form's defaults."""
    import torch

    from verify.harness import SideConfig

    dut_default = ("cuda", "float32") if torch.cuda.is_available() else ("cpu", "bfloat16")
    ref = SideConfig(args.ref or "cpu", args.ref_dtype or "float32", args.iters, args.warmup, args.num_inference_steps)
    dut_dtype = args.dut_dtype or (dut_default[1] if args.dut is None else "float32")
    dut = SideConfig(args.dut or dut_default[0], dut_dtype, args.iters, args.warmup, args.num_inference_steps)
    return ref, dut


# ---------------------------------------------------------------- the command


def sweep_main(argv: list[str]) -> int:
    args = build_sweep_parser().parse_args(argv)
    from verify.distributed import start_group

    ref, dut = resolve_sides(args)
    if args.demo and args.out is None:
        args.out = Path("verify-ate-demo") / "sweep"
    group = start_group([ref.device, dut.device])
    try:
        group.agree(group.startup_error)
        return _sweep(args, (ref, dut), group)
    finally:
        group.close()


def _sweep(args, sides, group) -> int:
    from verify.progress import Progress
    from verify.sweep import run_sweep

    if args.iters < 0 or args.warmup < 0 or args.worst_frames < 0:
        raise InputError("--iters, --warmup and --worst-frames must be >= 0")
    quiet = args.quiet or not group.is_main
    verdict = io.StringIO()  # printed after the progress display has closed
    with Progress(total=None, quiet=quiet) as progress:
        request = None
        # Rank 0 prepares first (the demo writes its dataset and checkpoint once), then the others.
        for turn in ((True,) if not group.distributed else (True, False)):
            error = None
            if group.is_main == turn:
                try:
                    request = _request(args, sides, group, progress)
                except Exception as caught:  # noqa: BLE001 - agreed on below, re-raised on this rank
                    error = caught
            group.agree(error)
        progress.total = (2 if args.demo else 1) + _side_steps(request, group, args) * 2 + 2  # + comparing, writing
        outcome = run_sweep(request, group, progress)
        code, error = EXIT_PASS, None
        if group.is_main:
            try:
                trace = None
                if trace_wanted(args, outcome.passed):
                    trace = _trace_worst(args, request, outcome, progress)
                progress.step("writing the report")
                publish_sweep(outcome, args.out, args.json, args.junit, args.worst_frames, trace, stream=verdict)
                code = EXIT_PASS if outcome.passed else EXIT_GATE_FAILED
            except Exception as caught:  # noqa: BLE001
                error = caught
        group.agree(error)
        code = group.broadcast_int(code)
    print(verdict.getvalue(), end="")
    return code


def _side_steps(request, group, args) -> int:
    from verify.distributed import batches_of_rank

    mine = len(batches_of_rank(len(request.plan.batches), group.rank, group.world_size))
    return 1 + mine + (1 if args.iters > 0 and group.is_main else 0)


def _request(args, sides, group, progress):
    """Everything both passes share, checked before any model loads (exit 2/3 early)."""
    from kinematics import load_robot
    from noise import load_noise
    from verify.devices import resolve_device
    from verify.distributed import rank_device
    from verify.harness import check_action_names
    from verify.harness_cli import DEMO_NOTE, demo_meta, model_sources, resolve_checkpoint
    from verify.observation import load_frames
    from verify.sweep import FrameRange, NoiseSource, SweepRequest, parse_index_list, plan_sweep

    robot = load_robot(args.robot)
    config = gate_config(args)
    for side in sides:
        resolve_device(rank_device(side.device, group.local_rank, group.world_size))
    if args.noise is not None and args.seeds is not None:
        raise InputError("--seeds and --noise exclude each other: seeds draw noise per frame, --noise fixes one draw")
    noise = (NoiseSource(fixed=load_noise(args.noise), path=str(args.noise)) if args.noise is not None
             else NoiseSource(seeds=parse_index_list(args.seeds or "0", "--seeds")))
    frame_range = FrameRange.parse(args.frames)
    episodes = None if args.episodes.strip().lower() == "all" else parse_index_list(args.episodes, "--episodes")
    if args.demo and group.is_main:
        print(DEMO_NOTE, file=sys.stderr)
    dataset = model_sources(args, progress)
    if not args.demo:
        progress.step(f"planning the sweep over {dataset}")
    plan = plan_sweep(dataset, episodes, frame_range, noise.seeds, args.batch_size)
    probe = load_frames(dataset, plan.units[0].episode, [plan.units[0].frame])
    checkpoint = resolve_checkpoint(args, probe.stats, progress)
    extra = demo_meta(args)
    check_action_names(probe, robot)
    if group.is_main:
        for note in plan.notes:
            print(f"note: {note}", file=sys.stderr)
    info = {key: probe.description.get(key) for key in ("dataset", "repo_id", "codebase_version", "robot_type", "fps", "task")}
    return SweepRequest(checkpoint, plan, sides, noise, robot, config, probe.stats, info, args.frame_stat, extra)


# ---------------------------------------------------------------- trace


def _trace_worst(args, request, outcome, progress):
    """Trace the worst unit, inside the very batch the sweep ran it in (same frames, same noise rows)."""
    from verify.sweep import FrameLoader, unit_name
    from verify.trace import TraceConfig, trace_divergence

    config = TraceConfig.from_file(relative_tolerance=args.trace_tol)
    plan = request.plan
    worst = outcome.table.worst(1)[0]
    batch = next(b for b in plan.batches if worst in b)
    units = [plan.units[i] for i in batch]
    frames, _ = FrameLoader(plan.dataset).load(units)
    noise_rows = _noise_rows(request, units)
    progress.total = (progress.total or 0) + 2
    return trace_divergence(
        request.checkpoint, frames, noise_rows, batch.index(worst), request.sides, request.dataset_stats, config,
        dump_dir=args.trace_dump, progress=progress,
        compared_actions=(outcome.result.reference.actions[worst], outcome.result.under_test.actions[worst]),
        unit={"unit": worst, "name": unit_name(plan, worst), "why": "worst frame of the sweep", "batch_size": len(units)},
    )


def _noise_rows(request, units):
    """The noise rows of a batch, for the policy's shape ([1, chunk_size, max_action_dim])."""
    from verify.pi0_runner import load_pi0_config

    config = load_pi0_config(Path(request.checkpoint), [] if request.sides[0].num_inference_steps is None else
                             [f"--num_inference_steps={request.sides[0].num_inference_steps}"])
    shape = (1, int(config.chunk_size), int(config.max_action_dim))
    return request.noise.rows(units, shape)


def trace_one_shot(args, sides, inputs, noise, result, progress):
    """--trace on the main form: the one observation and noise of the comparison."""
    from verify.trace import TraceConfig, trace_divergence

    config = TraceConfig.from_file(relative_tolerance=args.trace_tol)
    progress.total = (progress.total or 0) + 2
    return trace_divergence(
        inputs.checkpoint, inputs.observations.frames, noise, 0, sides, inputs.observations.stats, config,
        dump_dir=args.trace_dump, progress=progress,
        compared_actions=(result.reference.actions[0], result.under_test.actions[0]),
        unit={"unit": 0, "name": f"episode {args.episode} frame {args.frame}", "why": "the compared frame", "batch_size": 1},
    )


# ---------------------------------------------------------------- outputs


def format_sweep_lines(summary: dict) -> list[str]:
    sweep = summary["sweep"]
    n_seeds = 0 if sweep["seeds"] is None else len(sweep["seeds"])
    seeds = " with one fixed noise" if not n_seeds else f" x {n_seeds} seed{'s' if n_seeds != 1 else ''}"
    lines = [f"  sweep: {sweep['n_frames']} frames{seeds} = {sweep['n_units']} chunks in {sweep['n_batches']} batches of "
             f"<= {sweep['batch_size']}, {sweep['world_size']} rank(s); {sweep['frames_failed']} chunk(s) fail on their own "
             f"{sweep['unit_statistic']}"]
    return lines  # the plan's notes (clipping) went to stderr when the sweep started, and are in the JSON


def publish_sweep(outcome, out_dir: Path | None, json_path: Path | None, junit_path: Path | None, worst_count: int,
                  trace=None, stream=None) -> dict:
    """Print the verdict; write summary.json/md, junit.xml, frames.csv/.parquet, ref/dut.npz, plots, index.html last."""
    from reports.summary_files import write_json
    from verify.artifact import save_artifact
    from verify.outputs import format_verdict, write_requested_files, write_summary_files
    from verify.sweep import write_rows

    stream = stream or sys.stdout
    summary = outcome.summary(max(worst_count, 1))
    if trace is not None:
        summary["trace"] = trace.summary(full=False)
        if out_dir is not None:
            summary["trace"]["file"] = "trace.json"
    print(format_verdict(summary), file=stream)
    for line in format_sweep_lines(summary):
        print(line, file=stream)
    if trace is not None:
        print(f"  trace ({trace.unit['name'] if trace.unit else 'frame'}): {trace.headline()}", file=stream)
    if out_dir is not None:
        from reports.sweep_report import render_sweep_report

        out_dir = Path(out_dir)
        write_summary_files(summary, out_dir)
        write_rows(outcome.table, out_dir / "frames.csv", out_dir / "frames.parquet")
        save_artifact(outcome.result.reference, out_dir / "ref.npz")
        save_artifact(outcome.result.under_test, out_dir / "dut.npz")
        if trace is not None:
            write_json(trace.summary(), out_dir / "trace.json")
        page = render_sweep_report(out_dir, summary, sweep_report_data(outcome, worst_count),
                                   trace.summary() if trace is not None else None)
        print(f"report: {page}", file=stream)
    write_requested_files(summary, json_path, junit_path)
    return summary


def sweep_report_data(outcome, worst_count: int):
    """Plain arrays for reports/sweep_report.py (which never imports verify)."""
    from reports.sweep_report import SweepArrays, WorstFrame
    from verify.outputs import report_arrays
    from verify.sweep import unit_name

    arrays = report_arrays(outcome.result)
    table = outcome.table
    worst = table.worst(max(worst_count, 1))
    shown = table.worst(min(len(table.score), 64))  # the standard per-step plots: worst first, at most 64 chunks
    pick = lambda values: np.asarray(values)[shown]  # noqa: E731
    from dataclasses import replace

    arrays = replace(arrays, reference_actions=pick(arrays.reference_actions), under_test_actions=pick(arrays.under_test_actions),
                     reference_positions=pick(arrays.reference_positions), under_test_positions=pick(arrays.under_test_positions),
                     position_errors=pick(arrays.position_errors), orientation_errors=pick(arrays.orientation_errors))
    full = report_arrays(outcome.result)
    frames = [
        WorstFrame(
            name=unit_name(outcome.plan, i), episode=int(table.episode[i]), frame=int(table.frame[i]), seed=table.seed[i],
            position_stat=float(table.position_stat[i]), orientation_stat=float(table.orientation_stat[i]),
            passed=bool(table.passed[i]),
            reference_actions=full.reference_actions[i], under_test_actions=full.under_test_actions[i],
            position_errors=full.position_errors[i], orientation_errors=full.orientation_errors[i],
        )
        for i in worst
    ]
    return SweepArrays(
        standard=arrays, shown_chunks=len(shown), position_errors=full.position_errors, orientation_errors=full.orientation_errors,
        position_unit_stat=table.position_stat, orientation_unit_stat=table.orientation_stat, unit_statistic=table.statistic,
        worst=frames,
    )


def publish_trace(trace, summary: dict, out_dir: Path | None, json_path: Path | None, arrays=None, stream=None) -> dict:
    """After the one-shot form's publish(): print the trace verdict, add it to summary.json and the page."""
    from reports.summary_files import write_json

    stream = stream or sys.stdout
    print(f"  trace: {trace.headline()}", file=stream)
    summary = {**summary, "trace": trace.summary(full=False)}
    if out_dir is not None:
        from reports.sweep_report import render_sweep_report

        out_dir = Path(out_dir)
        summary["trace"]["file"] = "trace.json"
        write_json(trace.summary(), out_dir / "trace.json")
        write_json(summary, out_dir / "summary.json")
        render_sweep_report(out_dir, summary, None, trace.summary(), standard=arrays)
    if json_path is not None:
        write_json(summary, json_path)
    return summary
