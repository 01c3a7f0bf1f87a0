"""The `verify-ate` command line: a thin layer over the comparator, the harness and the reports.

Exit codes (DESIGN.md): 0 pass; 1 gate failed; 2 bad usage, config or input; 3 device or runtime unavailable.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kinematics import RobotConfigError
from noise import NoiseFileError
from verify.errors import EXIT_BAD_INPUT, EXIT_GATE_FAILED, EXIT_PASS, EXIT_UNAVAILABLE, DeviceUnavailableError, InputError

SUBCOMMANDS = ("run", "compare", "noise", "fk", "sweep")


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with exit code 2, never a traceback."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must be comma-separated integers, e.g. 1,50,32, not {text!r}") from None
    if not shape or any(n <= 0 for n in shape):
        raise argparse.ArgumentTypeError(f"shape needs positive sizes, not {text!r}")
    return shape


def add_gate_arguments(parser: argparse.ArgumentParser) -> None:
    gate = parser.add_argument_group("gate (defaults from configs/thresholds.yaml)")
    gate.add_argument("--robot", default="koch_v1_1", help="robot config name in configs/robots/ or a YAML path (default: koch_v1_1)")
    gate.add_argument("--pos-tol", type=float, help="position ATE bound in metres (default 0.03)")
    gate.add_argument("--rot-tol", type=float, help="orientation ATE bound in radians (default 0.2)")
    gate.add_argument("--stat", choices=("rmse", "mean", "median", "max", "p95"), help="statistic the gate compares (default rmse)")


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    out = parser.add_argument_group("outputs")
    out.add_argument("--out", type=Path, help="report folder (summary.json, summary.md, junit.xml, index.html, plots)")
    out.add_argument("--json", type=Path, help="write the JSON summary here too")
    out.add_argument("--junit", type=Path, help="write JUnit XML here too (one testcase per gate)")
    out.add_argument("--quiet", action="store_true", help="no progress output on stderr")


def build_compare_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="verify-ate compare", description="Gate two trajectory artifacts made anywhere.")
    parser.add_argument("reference", type=Path, help="REF artifact (.npz, or bare .npy with --units)")
    parser.add_argument("under_test", type=Path, help="DUT artifact (.npz, or bare .npy with --units)")
    parser.add_argument("--units", choices=("deg", "rad"), help="units of bare .npy inputs")
    parser.add_argument("--force", action="store_true", help="compare even if noise or observation hashes differ")
    add_gate_arguments(parser)
    add_output_arguments(parser)
    return parser


def build_noise_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="verify-ate noise", description="Fixed-noise files.")
    sub = parser.add_subparsers(dest="action", required=True, parser_class=_ArgumentParser)
    make = sub.add_parser("make", help="draw seeded Gaussian noise into a safetensors file")
    make.add_argument("--seed", type=int, required=True)
    make.add_argument("--shape", type=_shape, default=(1, 50, 32), help="B,T,D (default 1,50,32: pi0)")
    make.add_argument("--out", type=Path, required=True)
    show = sub.add_parser("show", help="shape, dtype, seed, sha256, mean/std, finiteness")
    show.add_argument("file", type=Path)
    imported = sub.add_parser("import", help="wrap a .npy or .pt array as a noise file")
    imported.add_argument("source", type=Path)
    imported.add_argument("--out", type=Path, required=True)
    return parser


def build_fk_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="verify-ate fk", description="End-effector poses of a joint log or of a recorded episode.")
    parser.add_argument("--robot", default="koch_v1_1")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", type=Path, help="CSV with one column per joint (dataset units)")
    source.add_argument("--dataset", type=Path, help="a local LeRobot dataset: use the recorded joints of --episode")
    parser.add_argument("--episode", type=int, default=0, help="episode of --dataset (default 0)")
    parser.add_argument("--key", default="observation.state", help="joint vector of --dataset to use (default observation.state)")
    parser.add_argument("--output", type=Path, help="CSV of x,y,z (m) and qw,qx,qy,qz")
    parser.add_argument("--units", choices=("deg", "rad"), help="joint units of the input (default: the robot's dataset units)")
    parser.add_argument("--frame", choices=("tcp", "flange"), default="tcp")
    parser.add_argument("--plot", type=Path, help="PNG of the end-effector path in 3D above the table plane")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            return _dispatch(argv[0], argv[1:])
        from verify.harness_cli import main_form

        return main_form(argv)
    except (InputError, RobotConfigError, NoiseFileError) as error:
        print(f"verify-ate: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except DeviceUnavailableError as error:
        print(f"verify-ate: unavailable: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        print("verify-ate: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - a crash must not read as "gate failed" (exit 1)
        import traceback

        traceback.print_exc()
        print(f"verify-ate: runtime failure: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE


def _dispatch(command: str, argv: list[str]) -> int:
    if command == "compare":
        return run_compare(build_compare_parser().parse_args(argv))
    if command == "noise":
        return run_noise(build_noise_parser().parse_args(argv))
    if command == "fk":
        return run_fk(build_fk_parser().parse_args(argv))
    from verify import harness_cli

    return harness_cli.dispatch(command, argv)


def gate_config(args):
    from verify.gate import GateConfig

    try:
        return GateConfig.from_file(position_tolerance_m=args.pos_tol, orientation_tolerance_rad=args.rot_tol, statistic=args.stat)
    except InputError:
        raise
    except ValueError as error:
        raise InputError(f"configs/thresholds.yaml or flags: {error}") from None


def run_compare(args) -> int:
    from kinematics import load_robot
    from verify.artifact import load_artifact
    from verify.compare import compare
    from verify.outputs import publish

    robot = load_robot(args.robot)
    config = gate_config(args)
    reference = load_artifact(args.reference, args.units, robot.name, robot.dataset_joint_names)
    under_test = load_artifact(args.under_test, args.units, robot.name, robot.dataset_joint_names)
    result = compare(reference, under_test, robot, config, force=args.force)
    publish(result, out_dir=args.out, json_path=args.json, junit_path=args.junit)
    return EXIT_PASS if result.passed else EXIT_GATE_FAILED


def run_noise(args) -> int:
    import json

    from noise import import_noise, load_noise, make_noise, save_noise

    if args.action == "make":
        if args.seed < 0:
            raise InputError(f"--seed must be >= 0, got {args.seed}")
        noise = make_noise(args.seed, args.shape)
        save_noise(noise, args.out)
        print(f"wrote {args.out}: shape {list(noise.shape)} seed {noise.seed} sha256 {noise.sha256}")
    elif args.action == "show":
        print(json.dumps(load_noise(args.file).summary(), indent=2))
    else:
        noise = import_noise(args.source)
        save_noise(noise, args.out)
        print(f"wrote {args.out}: shape {list(noise.shape)} from {args.source} sha256 {noise.sha256}")
    return EXIT_PASS


def run_fk(args) -> int:
    from kinematics import dataset_forward_kinematics, load_robot
    from verify.joint_csv import read_joint_csv, write_pose_csv

    if args.output is None and args.plot is None:
        raise InputError("fk: give --output CSV and/or --plot PNG")
    robot = load_robot(args.robot)
    if args.dataset is not None:
        from verify.observation import episode_joint_path

        joints = episode_joint_path(args.dataset, args.episode, key=args.key)
        if joints.shape[-1] != len(robot.dataset_joint_names):
            raise InputError(f"{args.dataset}: {args.key!r} holds {joints.shape[-1]} values, robot {robot.name} has {len(robot.dataset_joint_names)}")
        source_name = f"{args.dataset.name} episode {args.episode}"
    else:
        joints = read_joint_csv(args.input, robot)
        source_name = args.input.name
    poses = dataset_forward_kinematics(robot, joints, units=args.units, frame=args.frame)
    if args.output is not None:
        write_pose_csv(poses, args.output)
        print(f"wrote {args.output}: {len(joints)} poses ({args.frame}, robot {robot.name})")
    if args.plot is not None:
        from reports.plots import plot_end_effector_path

        plot_end_effector_path({"path": poses.position}, args.plot, title=f"{source_name}: {robot.name} {args.frame} path")
        print(f"wrote {args.plot}")
    return EXIT_PASS


if __name__ == "__main__":
    sys.exit(main())
