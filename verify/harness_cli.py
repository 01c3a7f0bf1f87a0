"""Command-line forms that run the model: the one-shot comparison (and --demo) and `run`."""
from __future__ import annotations

import argparse
import io
import sys
from dataclasses import replace
from pathlib import Path

from verify.cli import _ArgumentParser, add_gate_arguments, add_output_arguments, gate_config
from verify.errors import EXIT_GATE_FAILED, EXIT_PASS, InputError

DTYPES = ("float32", "bfloat16")
DEMO_NOTE = (
    "demo: tiny pi0 with RANDOM weights (seeded) on a generated Koch-like dataset; its numbers show the tool "
    "works, they say nothing about the Koch pi0 checkpoint"
)


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument("--checkpoint", type=Path, help="local lerobot pi0 checkpoint folder")
    inputs.add_argument("--dataset", type=Path, help="local LeRobot dataset folder (v3.0)")
    inputs.add_argument("--episode", type=int, default=0, help="episode index (default 0)")
    inputs.add_argument("--frame", type=int, default=0, help="frame index within the episode (default 0)")
    inputs.add_argument("--noise", type=Path, help="fixed-noise file (default: seed 0, made on the fly)")
    inputs.add_argument("--demo", action="store_true", help="tiny random-weight pi0 and a generated dataset (offline)")
    inputs.add_argument("--cache-dir", type=Path, help="where --demo keeps its dataset and checkpoint (default ~/.cache/verify-ate)")
    inputs.add_argument("--num-inference-steps", type=int, help="override the checkpoint's flow-matching step count")
    timing = parser.add_argument_group("latency")
    timing.add_argument("--iters", type=int, default=5, help="timed calls per device (default 5; 0 = no timing)")
    timing.add_argument("--warmup", type=int, default=1, help="untimed calls before timing (default 1)")


def build_main_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="verify-ate",
        description="Run pi0 on a reference device and a device under test with the same observation and noise, "
        "and gate end-effector ATE. Subcommands: run, compare, noise, fk (verify-ate SUBCOMMAND -h).",
    )
    parser.add_argument("--ref", default=None, help="reference device: cpu, cuda[:i], npu[:i] (default cpu)")
    parser.add_argument("--dut", default=None, help="device under test (default: cuda if present, else cpu at bfloat16)")
    parser.add_argument("--ref-dtype", choices=DTYPES, default=None, help="reference precision (default float32)")
    parser.add_argument("--dut-dtype", choices=DTYPES, default=None, help="device-under-test precision (default float32)")
    add_input_arguments(parser)
    add_gate_arguments(parser)
    add_output_arguments(parser)
    from verify.sweep_cli import add_trace_arguments

    add_trace_arguments(parser)
    return parser


def build_run_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="verify-ate run", description="Run one side and save its trajectory artifact (two-machine workflow).")
    parser.add_argument("--device", default="cpu", help="cpu, cuda[:i], npu[:i] (default cpu)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--save", type=Path, required=True, help="artifact to write (.npz)")
    parser.add_argument("--robot", default="koch_v1_1")
    parser.add_argument("--quiet", action="store_true")
    add_input_arguments(parser)
    return parser


def main_form(argv: list[str]) -> int:
    args = build_main_parser().parse_args(argv)
    import torch

    # The "best other" device: a GPU when there is one, else the same CPU at the other precision.
    dut_default = ("cuda", "float32") if torch.cuda.is_available() else ("cpu", "bfloat16")
    ref_device, ref_dtype = args.ref or "cpu", args.ref_dtype or "float32"
    dut_device = args.dut or dut_default[0]
    dut_dtype = args.dut_dtype or (dut_default[1] if args.dut is None else "float32")
    if args.demo and args.out is None:
        args.out = Path("verify-ate-demo")

    from kinematics import load_robot
    from verify.compare import compare
    from verify.devices import resolve_device
    from verify.harness import SideConfig, run_side
    from verify.outputs import publish
    from verify.progress import Progress

    robot = load_robot(args.robot)
    config = gate_config(args)
    sides = [
        SideConfig(ref_device, ref_dtype, args.iters, args.warmup, args.num_inference_steps),
        SideConfig(dut_device, dut_dtype, args.iters, args.warmup, args.num_inference_steps),
    ]
    for side in sides:  # exit 3 before anything is loaded or written
        resolve_device(side.device)
    if args.demo:
        print(DEMO_NOTE, file=sys.stderr)
    steps_per_side = 3 if args.iters > 0 else 2
    with Progress(total=(2 if args.demo else 1) + 2 * steps_per_side + 2, quiet=args.quiet) as progress:
        inputs = _prepare_inputs(args, robot, progress)
        reference, noise = run_side(sides[0], inputs, progress)
        if inputs.noise is None:  # the default draw is made once and shared, never redrawn
            inputs = replace(inputs, noise=noise)
        under_test, _ = run_side(sides[1], inputs, progress)
        progress.step("comparing")
        result = compare(reference, under_test, robot, config)
        from verify.sweep_cli import publish_trace, trace_one_shot, trace_wanted

        trace = trace_one_shot(args, sides, inputs, noise, result, progress) if trace_wanted(args, result.passed) else None
        progress.step("writing the report" if args.out else "writing results")
        if args.out is not None:
            from noise import save_noise
            from verify.artifact import save_artifact

            save_artifact(reference, args.out / "ref.npz")
            save_artifact(under_test, args.out / "dut.npz")
            save_noise(noise, args.out / "noise.safetensors")
        summary_text = io.StringIO()
        summary = publish(result, out_dir=args.out, json_path=args.json, junit_path=args.junit, stream=summary_text)
        if trace is not None:  # the trace's verdict line, trace.json, and its section on the page
            from verify.outputs import report_arrays

            publish_trace(trace, summary, args.out, args.json, report_arrays(result), stream=summary_text)
    print(summary_text.getvalue(), end="")
    return EXIT_PASS if result.passed else EXIT_GATE_FAILED


def dispatch(command: str, argv: list[str]) -> int:
    if command == "run":
        return run_one_side(build_run_parser().parse_args(argv))
    if command == "sweep":
        from verify.sweep_cli import sweep_main

        return sweep_main(argv)
    raise InputError(f"unknown subcommand {command!r}")


def run_one_side(args) -> int:
    from kinematics import load_robot
    from verify.artifact import save_artifact
    from verify.devices import resolve_device
    from verify.harness import SideConfig, run_side
    from verify.progress import Progress

    if args.save.suffix != ".npz":
        raise InputError(f"{args.save}: --save writes a .npz trajectory artifact")
    robot = load_robot(args.robot)
    side = SideConfig(args.device, args.dtype, args.iters, args.warmup, args.num_inference_steps)
    resolve_device(side.device)
    if args.demo:
        print(DEMO_NOTE, file=sys.stderr)
    with Progress(total=(2 if args.demo else 1) + (3 if args.iters > 0 else 2), quiet=args.quiet) as progress:
        inputs = _prepare_inputs(args, robot, progress)
        artifact, noise = run_side(side, inputs, progress)
    save_artifact(artifact, args.save)
    latency = artifact.meta.get("latency_ms") or {}
    timing = f", latency median {latency['median_ms']:.1f} ms p90 {latency['p90_ms']:.1f} ms" if latency else ""
    print(f"wrote {args.save}: actions {list(artifact.actions.shape)} on {side.label}{timing}; noise sha256 {noise.sha256[:12]}...")
    return EXIT_PASS


def _prepare_inputs(args, robot, progress):
    """Observation, noise and checkpoint shared by every side of this run."""
    from noise import load_noise
    from verify.harness import RunInputs
    from verify.observation import load_frames

    dataset = model_sources(args, progress)
    if not args.demo:
        progress.step(f"reading episode {args.episode} frame {args.frame} of {dataset}")
    observations = load_frames(dataset, args.episode, [args.frame])
    checkpoint = resolve_checkpoint(args, observations.stats, progress)
    noise = load_noise(args.noise) if args.noise is not None else None
    return RunInputs(checkpoint, observations, noise, str(args.noise) if args.noise else None, robot, demo_meta(args))


def model_sources(args, progress) -> Path:
    """The dataset folder of this run, after checking --demo against --checkpoint/--dataset."""
    if args.demo:
        if args.checkpoint or args.dataset:
            raise InputError("--demo brings its own checkpoint and dataset; drop --checkpoint/--dataset or --demo")
        from verify.demo_dataset import default_cache_dir, ensure_demo_dataset

        progress.step("preparing the demo dataset (written by lerobot on first use)")
        return ensure_demo_dataset(args.cache_dir or default_cache_dir())
    missing = [flag for flag, value in (("--checkpoint", args.checkpoint), ("--dataset", args.dataset)) if value is None]
    if missing:
        raise InputError(f"{' and '.join(missing)} required (or --demo for the embedded default)")
    if not args.checkpoint.is_dir():
        raise InputError(f"{args.checkpoint}: checkpoint folder not found")
    return args.dataset


def resolve_checkpoint(args, dataset_stats: dict | None, progress) -> Path:
    """--checkpoint, or under --demo the tiny random-weight checkpoint built for this dataset's statistics."""
    if not args.demo:
        return args.checkpoint
    from verify.demo_dataset import default_cache_dir
    from verify.tiny_pi0 import ensure_tiny_checkpoint

    progress.step("preparing the tiny random-weight pi0 checkpoint")
    return ensure_tiny_checkpoint(Path(args.cache_dir or default_cache_dir()) / "checkpoints", dataset_stats, seed=0)


def demo_meta(args) -> dict:
    return {"demo": True, "note": DEMO_NOTE} if args.demo else {}

