"""The commands: each declares its argument groups, parses, and hands typed objects to the library.

verify-ate [main form]   devices, model and data, frame, timing, gate, outputs, trace
verify-ate run           device, model and data, frame, timing, robot; --save
verify-ate sweep         devices, model and data, sweep, timing, gate, outputs, trace
verify-ate compare       two artifacts, gate, outputs
verify-ate noise         make | show | import
verify-ate fk            robot, a joint CSV or a recorded episode
verify-ate selftest      device, model and data, frame, gate, outputs; every variant and fault vs the reference
verify-ate import        checkpoint | dataset: old-format pi0 folders and LeRobot v2.x datasets, made current
"""

from __future__ import annotations

from pathlib import Path

from verify.cli.args import (
    DEMO_OUT,
    ArgumentParser,
    DeviceArgs,
    FrameArgs,
    GateArgs,
    ModelArgs,
    OutputArgs,
    RewriteArgs,
    RobotArgs,
    SingleDeviceArgs,
    SweepArgs,
    Timing,
    TimingArgs,
    TraceArgs,
    shape,
)


def _parser(prog: str, description: str, *groups) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=description)
    for group in groups:
        group.add_to_parser(parser)
    _add_debug(parser)
    return parser


def _add_debug(parser: ArgumentParser) -> None:
    # verify.cli.main takes --debug out before any parser runs; declared here so that -h lists it.
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or VERIFY_ATE_DEBUG=1)")


def main_form(argv: list[str]) -> int:
    devices, rewrites, model, frame, timing = DeviceArgs(), RewriteArgs(), ModelArgs(), FrameArgs(), TimingArgs()
    gate, outputs, trace = GateArgs(can_calibrate=True), OutputArgs(demo_out=DEMO_OUT), TraceArgs()
    args = _parser(
        "verify-ate",
        "Run pi0 on a reference device and a device under test with the same observation and noise, and gate "
        "end-effector ATE. Subcommands: run, compare, sweep, selftest, noise, fk, import (verify-ate SUBCOMMAND -h).",
        devices,
        rewrites,
        model,
        frame,
        timing,
        gate,
        outputs,
        trace,
    ).parse_args(argv)
    from verify.commands.one_shot import run_one_shot

    source = model.parse(args)
    robot, gate_config = gate.parse(args)
    sides = rewrites.parse(args, devices.parse(args, timing.parse(args), source.num_inference_steps))
    return run_one_shot(
        sides,
        source,
        frame.parse(args),
        robot,
        gate_config,
        outputs.parse(args),
        trace.parse(args),
        quiet=args.quiet,
        calibrate=gate.calibrate(args),
    )


def run(argv: list[str]) -> int:
    device, model, frame, timing, robot = SingleDeviceArgs(), ModelArgs(), FrameArgs(), TimingArgs(), RobotArgs()
    rewrites = RewriteArgs(single=True)
    parser = _parser(
        "verify-ate run",
        "Run one side and save its trajectory artifact (two-machine workflow).",
        device,
        rewrites,
        model,
        frame,
        timing,
        robot,
    )
    parser.add_argument("--save", type=Path, required=True, help="artifact to write (.npz)")
    parser.add_argument("--quiet", action="store_true", help="no progress output on stderr")
    args = parser.parse_args(argv)
    from verify.commands.one_shot import run_one_side

    source = model.parse(args)
    (side,) = rewrites.parse(args, (device.parse(args, timing.parse(args), source.num_inference_steps),))
    return run_one_side(side, source, frame.parse(args), robot.parse(args), args.save, quiet=args.quiet)


def sweep(argv: list[str]) -> int:
    devices, rewrites, model, selection, timing = (
        DeviceArgs(),
        RewriteArgs(),
        ModelArgs(),
        SweepArgs(),
        TimingArgs("timed calls of the first batch per device"),
    )
    gate, outputs, trace = GateArgs(), OutputArgs(demo_out=DEMO_OUT / "sweep"), TraceArgs()
    args = _parser(
        "verify-ate sweep",
        "Compare pi0 on two devices over many dataset frames and noise seeds (batched; runs under torchrun too).",
        devices,
        rewrites,
        model,
        selection,
        timing,
        gate,
        outputs,
        trace,
    ).parse_args(argv)
    from verify.commands.sweep import run_sweep_command

    source = model.parse(args)
    sides = rewrites.parse(args, devices.parse(args, timing.parse(args), source.num_inference_steps))
    robot, gate_config = gate.parse(args)
    chosen, report = selection.parse(args)
    return run_sweep_command(
        sides, source, chosen, robot, gate_config, outputs.parse(args), trace.parse(args), report, quiet=args.quiet
    )


def compare(argv: list[str]) -> int:
    gate, outputs = GateArgs(), OutputArgs()
    parser = _parser("verify-ate compare", "Gate two trajectory artifacts made anywhere.", gate, outputs)
    parser.add_argument("reference", type=Path, help="REF artifact (.npz, or bare .npy with --units)")
    parser.add_argument("under_test", type=Path, help="DUT artifact (.npz, or bare .npy with --units)")
    parser.add_argument("--units", choices=("deg", "rad"), help="units of bare .npy inputs")
    parser.add_argument("--force", action="store_true", help="compare even if noise or observation hashes differ")
    args = parser.parse_args(argv)
    from verify.commands.tools import compare_artifacts

    robot, gate_config = gate.parse(args)
    return compare_artifacts(
        args.reference, args.under_test, args.units, robot, gate_config, outputs.parse(args), args.force
    )


def noise(argv: list[str]) -> int:
    parser = ArgumentParser(prog="verify-ate noise", description="Fixed-noise files.")
    _add_debug(parser)
    sub = parser.add_subparsers(dest="action", required=True, parser_class=ArgumentParser)
    make = sub.add_parser("make", help="draw seeded Gaussian noise into a safetensors file")
    make.add_argument("--seed", type=int, required=True)
    make.add_argument("--shape", type=shape, default=(1, 50, 32), help="B,T,D (default 1,50,32: pi0)")
    make.add_argument("--out", type=Path, required=True)
    show = sub.add_parser("show", help="shape, dtype, seed, sha256, mean/std, finiteness")
    show.add_argument("file", type=Path)
    imported = sub.add_parser("import", help="wrap a .npy or .pt array as a noise file")
    imported.add_argument("source", type=Path)
    imported.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from verify.commands.tools import import_noise_file, make_noise_file, show_noise_file

    if args.action == "make":
        return make_noise_file(args.seed, args.shape, args.out)
    if args.action == "show":
        return show_noise_file(args.file)
    return import_noise_file(args.source, args.out)


def fk(argv: list[str]) -> int:
    robot = RobotArgs()
    parser = _parser("verify-ate fk", "End-effector poses of a joint log or of a recorded episode.", robot)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", type=Path, help="CSV with one column per joint (dataset units)")
    source.add_argument("--dataset", type=Path, help="a local LeRobot dataset: use the recorded joints of --episode")
    parser.add_argument("--episode", type=int, default=0, help="episode of --dataset (default 0)")
    parser.add_argument(
        "--key", default="observation.state", help="joint vector of --dataset to use (default observation.state)"
    )
    parser.add_argument("--output", type=Path, help="CSV of x,y,z (m) and qw,qx,qy,qz")
    parser.add_argument(
        "--units", choices=("deg", "rad"), help="joint units of the input (default: the robot's dataset units)"
    )
    parser.add_argument("--frame", choices=("tcp", "flange"), default="tcp")
    parser.add_argument("--plot", type=Path, help="PNG of the end-effector path in 3D above the table plane")
    args = parser.parse_args(argv)
    from verify.commands.tools import forward_kinematics_tool

    return forward_kinematics_tool(
        robot.parse(args),
        input_csv=args.input,
        dataset=args.dataset,
        episode=args.episode,
        key=args.key,
        output=args.output,
        units=args.units,
        frame=args.frame,
        plot=args.plot,
    )


def import_(argv: list[str]) -> int:
    parser = ArgumentParser(prog="verify-ate import", description="Bring inputs in older formats to lerobot 0.6.1's.")
    _add_debug(parser)
    sub = parser.add_subparsers(dest="what", required=True, parser_class=ArgumentParser)
    checkpoint = sub.add_parser("checkpoint", help="an old-format (lerobot before 0.4) pi0 checkpoint folder")
    checkpoint.add_argument("source", type=Path, help="the old checkpoint folder")
    checkpoint.add_argument("--out", type=Path, required=True, help="the lerobot 0.6.1 checkpoint folder to write")
    checkpoint.add_argument("--dataset", type=Path, help="a LeRobot dataset whose info.json fills empty features")
    _add_debug(checkpoint)
    dataset = sub.add_parser("dataset", help="a LeRobot v2.0 or v2.1 dataset folder, made into v3.0")
    dataset.add_argument("source", type=Path, help="the dataset folder (never modified)")
    dataset.add_argument("--out", type=Path, required=True, help="the v3.0 dataset folder to write")
    _add_debug(dataset)
    args = parser.parse_args(argv)
    from verify.commands.tools import import_checkpoint_folder, import_dataset_folder

    if args.what == "dataset":
        return import_dataset_folder(args.source, args.out)
    return import_checkpoint_folder(args.source, args.out, args.dataset)


def selftest(argv: list[str]) -> int:
    from verify.model.rewrites import FAULT, FAULTS, VARIANT, VARIANTS, parse_names

    device, model, frame = SingleDeviceArgs(), ModelArgs(), FrameArgs()
    gate, outputs = GateArgs(choose_gate=False), OutputArgs(demo_out=DEMO_OUT / "selftest")
    parser = _parser(
        "verify-ate selftest",
        "Is the gate tight enough for this model? Every variant and every fault against the unmodified reference "
        "on the same inputs: variants must pass the calibrated gate, faults must fail it where they were injected.",
        device,
        model,
        frame,
        gate,
        outputs,
    )
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), metavar="NAME[,NAME...]", help="variants to run (default: all)"
    )
    parser.add_argument(
        "--faults", default=",".join(FAULTS), metavar="FAULT[,FAULT...]", help="faults to inject (default: all)"
    )
    parser.add_argument(
        "--sensitivity",
        action="store_true",
        help="also perturb each module of configs/selftest.yaml and report the smallest perturbation each gate fails",
    )
    args = parser.parse_args(argv)
    from verify.commands.selftest import run_selftest

    source = model.parse(args)
    side = device.parse(args, Timing(0, 0), source.num_inference_steps)
    robot, gate_config = gate.parse(args)
    variants = parse_names(args.variants, VARIANT)
    if not side.device.startswith("cuda") and args.variants == ",".join(VARIANTS):
        variants = tuple(name for name in variants if name != "compile-cudagraphs")  # CUDA only
    cases = (variants, parse_names(args.faults, FAULT))
    return run_selftest(
        side, source, frame.parse(args), robot, gate_config, outputs.parse(args), cases, args.sensitivity, args.quiet
    )


SUBCOMMANDS = {
    "run": run,
    "compare": compare,
    "sweep": sweep,
    "noise": noise,
    "fk": fk,
    "import": import_,
    "selftest": selftest,
}
