"""The commands: each declares its argument groups, parses, and hands typed objects to the library.

verify-ate [main form]   devices, rewrites, model and data, frame, timing, gate, calibrate, outputs, trace
verify-ate run           device, rewrites, model and data, frame, timing, robot; --save
verify-ate sweep         devices, rewrites, model and data, sweep, timing, gate, outputs, trace
verify-ate compare       two artifacts and which inputs may differ, gate, outputs
verify-ate noise         make | show | import
verify-ate fk            robot, a joint CSV or a recorded episode
verify-ate selftest      device, model and data, frame, gate, outputs; every variant and fault vs the reference
verify-ate import        checkpoint | dataset: old-format pi0 folders and LeRobot v2.x datasets, made current
verify-ate rollout       devices, rewrites, model and data, robot, closed loop and its gate, outputs; `run`, `compare`

`parser(name)` builds a command's parser without running anything (the docs test checks every documented
command line against it).
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from pathlib import Path

from verify_ate.verify.cli.args import (
    DEMO_OUT,
    ArgumentParser,
    CalibrateArgs,
    ClosedLoopGateArgs,
    CommandLine,
    CompareArgs,
    FrameArgs,
    GateArgs,
    ModelArgs,
    OutputArgs,
    RewriteArgs,
    RobotArgs,
    RolloutArgs,
    RolloutRobotArgs,
    SingleDeviceArgs,
    SingleRewriteArgs,
    SweepArgs,
    TimingArgs,
    TraceArgs,
    add_debug,
    non_negative_int,
    shape,
)
from verify_ate.verify.errors import InputError

MAIN_DESCRIPTION = (
    "Run a policy on a reference device and a device under test with the same observation and noise, and gate "
    "end-effector ATE. Subcommands: run, compare, sweep, selftest, rollout, noise, fk, import "
    "(verify-ate SUBCOMMAND -h)."
)


# ---------------------------------------------------------------- the main form and the model-running commands


def main_command() -> CommandLine:
    return CommandLine(
        "verify-ate",
        MAIN_DESCRIPTION,
        RewriteArgs(),
        ModelArgs(),
        FrameArgs(),
        TimingArgs(),
        GateArgs(),
        CalibrateArgs(),
        OutputArgs(demo_out=DEMO_OUT),
        TraceArgs(),
    )


def main_form(argv: list[str]) -> int:
    parsed = main_command().parse(argv)
    from verify_ate.verify.commands.one_shot import run_one_shot

    return run_one_shot(
        parsed[RewriteArgs],
        parsed[ModelArgs],
        parsed[FrameArgs],
        parsed[RobotArgs],
        parsed[GateArgs],
        parsed[OutputArgs],
        parsed[TraceArgs],
        quiet=parsed.args.quiet,
        calibrate=parsed[CalibrateArgs],
    )


def _save_flags(parser: argparse.ArgumentParser, what: str = "artifact") -> None:
    parser.add_argument("--save", type=Path, required=True, metavar="FILE", help=f"{what} to write (.npz; required)")
    parser.add_argument("--quiet", action="store_true", help="no progress output on stderr")


def run_command() -> CommandLine:
    return CommandLine(
        "verify-ate run",
        "Run one side and save its trajectory artifact (two-machine workflow).",
        SingleRewriteArgs(),
        ModelArgs(),
        FrameArgs(),
        TimingArgs(),
        RobotArgs(),
        extra=_save_flags,
    )


def run(argv: list[str]) -> int:
    parsed = run_command().parse(argv)
    save = parsed.args.save
    if save.suffix != ".npz":
        raise InputError(f"--save {save}: an artifact is a .npz file")
    from verify_ate.verify.commands.one_shot import run_one_side

    return run_one_side(
        parsed[SingleRewriteArgs], parsed[ModelArgs], parsed[FrameArgs], parsed[RobotArgs], save, parsed.args.quiet
    )


def sweep_command() -> CommandLine:
    return CommandLine(
        "verify-ate sweep",
        "Compare a policy on two devices over many dataset frames and noise seeds (batched; runs under torchrun too).",
        RewriteArgs(),
        ModelArgs(),
        SweepArgs(),
        TimingArgs("timed calls of one inference per device, on the first batch's first frame (0: no timing)"),
        GateArgs(),
        OutputArgs(demo_out=DEMO_OUT / "sweep"),
        TraceArgs(),
    )


def sweep(argv: list[str]) -> int:
    parsed = sweep_command().parse(argv)
    from verify_ate.verify.commands.sweep import run_sweep_command

    selection, report = parsed[SweepArgs]
    return run_sweep_command(
        parsed[RewriteArgs],
        parsed[ModelArgs],
        selection,
        parsed[RobotArgs],
        parsed[GateArgs],
        parsed[OutputArgs],
        parsed[TraceArgs],
        report,
        quiet=parsed.args.quiet,
    )


def _selftest_flags(parser: argparse.ArgumentParser) -> None:
    from verify_ate.verify.model.rewrites import FAULTS, VARIANTS

    parser.add_argument(
        "--variants",
        metavar="NAME[,NAME...]",
        help=f"variants to run (default: all that apply to the checkpoint's policy and run on the device: "
        f"{', '.join(VARIANTS)})",
    )
    parser.add_argument(
        "--faults",
        metavar="FAULT[,FAULT...]",
        help=f"faults to inject (default: all that apply to the checkpoint's policy: {', '.join(FAULTS)})",
    )
    parser.add_argument(
        "--sensitivity",
        action="store_true",
        help="also perturb each module of configs/selftest.yaml and report the smallest perturbation each gate fails",
    )


def selftest_command() -> CommandLine:
    return CommandLine(
        "verify-ate selftest",
        "Is the gate tight enough for this model? Every variant and every fault against the unmodified reference "
        "on the same inputs: variants must pass the calibrated gate, faults must fail it where they were injected.",
        SingleDeviceArgs(),
        TimingArgs(timed=False),
        ModelArgs(),
        FrameArgs(),
        GateArgs(choose_gate=False),
        OutputArgs(demo_out=DEMO_OUT / "selftest"),
        extra=_selftest_flags,
    )


def selftest(argv: list[str]) -> int:
    parsed = selftest_command().parse(argv)
    from verify_ate.verify.commands.selftest import run_selftest
    from verify_ate.verify.model.rewrites import FAULT, VARIANT, parse_names

    side = parsed[SingleDeviceArgs]
    # None: every one that applies to the checkpoint's policy and runs on the device (known once it is read)
    cases = (
        None if parsed.args.variants is None else parse_names(parsed.args.variants, VARIANT),
        None if parsed.args.faults is None else parse_names(parsed.args.faults, FAULT),
    )
    return run_selftest(
        side,
        parsed[ModelArgs],
        parsed[FrameArgs],
        parsed[RobotArgs],
        parsed[GateArgs],
        parsed[OutputArgs],
        cases,
        parsed.args.sensitivity,
        parsed.args.quiet,
    )


# ---------------------------------------------------------------- the commands that need no model


def compare_command() -> CommandLine:
    return CommandLine(
        "verify-ate compare", "Gate two trajectory artifacts made anywhere.", CompareArgs(), GateArgs(), OutputArgs()
    )


def compare(argv: list[str]) -> int:
    parsed = compare_command().parse(argv)
    from verify_ate.verify.commands.tools import compare_artifacts

    return compare_artifacts(parsed[CompareArgs], parsed[RobotArgs], parsed[GateArgs], parsed[OutputArgs])


def noise_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="verify-ate noise", description="Fixed-noise files.")
    add_debug(parser)
    sub = parser.add_subparsers(dest="action", required=True, parser_class=ArgumentParser)
    make = sub.add_parser("make", help="draw seeded Gaussian noise into a safetensors file")
    make.add_argument("--seed", type=non_negative_int, required=True, help="the generator's seed")
    make.add_argument("--shape", type=shape, default=(1, 50, 32), help="B,T,D (1,50,32 is pi0's)")
    make.add_argument("--out", type=Path, required=True, metavar="FILE", help="the noise file to write (required)")
    add_debug(make)
    show = sub.add_parser("show", help="shape, dtype, seed, sha256, mean/std, finiteness")
    show.add_argument("file", type=Path, help="a noise file")
    add_debug(show)
    imported = sub.add_parser("import", help="wrap a .npy or .pt array as a noise file")
    imported.add_argument("source", type=Path, help="the .npy or .pt array")
    imported.add_argument("--out", type=Path, required=True, metavar="FILE", help="the noise file to write (required)")
    add_debug(imported)
    return parser


def noise(argv: list[str]) -> int:
    args = noise_parser().parse_args(argv)
    from verify_ate.verify.commands.tools import import_noise_file, make_noise_file, show_noise_file

    if args.action == "make":
        return make_noise_file(args.seed, args.shape, args.out)
    if args.action == "show":
        return show_noise_file(args.file)
    return import_noise_file(args.source, args.out)


def _fk_flags(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", type=Path, metavar="CSV", help="CSV with one column per joint (dataset units)")
    source.add_argument(
        "--dataset",
        type=Path,
        metavar="DIR",
        help="a local LeRobot dataset, whose recorded joints of one episode to use",
    )
    parser.add_argument("--episode", type=non_negative_int, default=0, help="episode of --dataset")
    parser.add_argument("--key", default="observation.state", help="joint vector of --dataset to use")
    parser.add_argument("--output", type=Path, metavar="CSV", help="CSV of x,y,z (m) and qw,qx,qy,qz (default none)")
    parser.add_argument(
        "--units",
        choices=("deg", "rad", "normalized"),
        help="joint units of the input (default: the robot's dataset units; normalized needs --robot-calibration)",
    )
    parser.add_argument("--frame", choices=("tcp", "flange"), default="tcp", help="which frame's pose")
    parser.add_argument(
        "--plot", type=Path, metavar="PNG", help="the end-effector path in 3D above the table plane (default none)"
    )


def fk_command() -> CommandLine:
    return CommandLine(
        "verify-ate fk", "End-effector poses of a joint log or of a recorded episode.", RobotArgs(), extra=_fk_flags
    )


def fk(argv: list[str]) -> int:
    parsed = fk_command().parse(argv)
    args = parsed.args
    if args.output is None and args.plot is None:
        raise InputError("fk: give --output CSV and/or --plot PNG")
    from verify_ate.verify.commands.tools import forward_kinematics_tool

    return forward_kinematics_tool(
        parsed[RobotArgs],
        input_csv=args.input,
        dataset=args.dataset,
        episode=args.episode,
        key=args.key,
        output=args.output,
        units=args.units,
        frame=args.frame,
        plot=args.plot,
    )


def import_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="verify-ate import", description="Bring inputs in older formats to lerobot 0.6.1's.")
    add_debug(parser)
    sub = parser.add_subparsers(dest="what", required=True, parser_class=ArgumentParser)
    checkpoint = sub.add_parser("checkpoint", help="a pi0 checkpoint folder of an older lerobot or of openpi")
    checkpoint.add_argument("source", type=Path, help="the old checkpoint folder")
    checkpoint.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="the lerobot 0.6.1 checkpoint folder to write (required)"
    )
    checkpoint.add_argument(
        "--dataset", type=Path, metavar="DIR", help="a LeRobot dataset whose info.json fills empty features"
    )
    add_debug(checkpoint)
    dataset = sub.add_parser("dataset", help="a LeRobot v2.0 or v2.1 dataset folder, made into v3.0")
    dataset.add_argument("source", type=Path, help="the dataset folder (never modified)")
    dataset.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="the v3.0 dataset folder to write (required)"
    )
    add_debug(dataset)
    return parser


def import_(argv: list[str]) -> int:
    args = import_parser().parse_args(argv)
    from verify_ate.verify.commands.tools import import_checkpoint_folder, import_dataset_folder

    if args.what == "dataset":
        return import_dataset_folder(args.source, args.out)
    return import_checkpoint_folder(args.source, args.out, args.dataset)


# ---------------------------------------------------------------- closed loop

ROLLOUT_FORMS = ("run", "compare")


def rollout_command() -> CommandLine:
    return CommandLine(
        "verify-ate rollout",
        "Paired closed-loop rollouts: the reference and the device under test each drive their own copy of one "
        "environment from the same seeds, in lock step, with the same noise per chunk; divergence, outcomes and "
        "McNemar's test judged. Forms: rollout run (one side, saved), rollout compare REF DUT.",
        RewriteArgs(),
        ModelArgs(),
        TimingArgs(timed=False),
        RolloutRobotArgs(),
        RolloutArgs(),
        ClosedLoopGateArgs(),
        OutputArgs(demo_out=DEMO_OUT / "rollout"),
    )


def rollout_run_command() -> CommandLine:
    return CommandLine(
        "verify-ate rollout run",
        "One side's closed-loop rollouts, saved for `verify-ate rollout compare` (two-machine workflow).",
        SingleRewriteArgs(),
        ModelArgs(),
        TimingArgs(timed=False),
        RolloutRobotArgs(),
        RolloutArgs(),
        extra=functools.partial(_save_flags, what="rollout artifact"),
    )


def _rollout_compare_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("reference", type=Path, help="the reference's rollout artifact (.npz)")
    parser.add_argument("under_test", type=Path, help="the device under test's rollout artifact (.npz)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="compare although the environments' fingerprints, checkpoints, noise or policies differ; the outputs "
        "say FORCED and what differed",
    )


def rollout_compare_command() -> CommandLine:
    return CommandLine(
        "verify-ate rollout compare",
        "Judge two saved rollout artifacts (no torch needed).",
        ClosedLoopGateArgs(),
        OutputArgs(),
        extra=_rollout_compare_flags,
    )


def rollout(argv: list[str]) -> int:
    if argv and argv[0] == "run":
        parsed = rollout_run_command().parse(argv[1:])
        from verify_ate.verify.commands.rollout import check_rollout_save, run_rollout_side

        check_rollout_save(parsed.args.save)
        return run_rollout_side(
            parsed[SingleRewriteArgs],
            parsed[ModelArgs],
            parsed[RolloutRobotArgs],
            parsed[RolloutArgs],
            parsed.args.save,
            parsed.args.quiet,
        )
    if argv and argv[0] == "compare":
        parsed = rollout_compare_command().parse(argv[1:])
        from verify_ate.verify.commands.rollout import compare_rollout_files

        return compare_rollout_files(
            parsed.args.reference,
            parsed.args.under_test,
            parsed[ClosedLoopGateArgs],
            parsed[OutputArgs],
            parsed.args.force,
        )
    parsed = rollout_command().parse(argv)
    from verify_ate.verify.commands.rollout import run_rollout

    return run_rollout(
        parsed[RewriteArgs],
        parsed[ModelArgs],
        parsed[RolloutRobotArgs],
        parsed[RolloutArgs],
        parsed[ClosedLoopGateArgs],
        parsed[OutputArgs],
        quiet=parsed.args.quiet,
    )


SUBCOMMANDS: dict[str, Callable[[list[str]], int]] = {
    "run": run,
    "compare": compare,
    "sweep": sweep,
    "noise": noise,
    "fk": fk,
    "import": import_,
    "selftest": selftest,
    "rollout": rollout,
}

# Each command's parser, built without running anything ("" is the main form).
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "": lambda: main_command().parser,
    "run": lambda: run_command().parser,
    "sweep": lambda: sweep_command().parser,
    "selftest": lambda: selftest_command().parser,
    "compare": lambda: compare_command().parser,
    "fk": lambda: fk_command().parser,
    "noise": noise_parser,
    "import": import_parser,
    "rollout": lambda: rollout_command().parser,
    "rollout run": lambda: rollout_run_command().parser,
    "rollout compare": lambda: rollout_compare_command().parser,
}
