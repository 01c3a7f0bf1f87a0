"""Argument groups: each adds its flags to a parser and turns the parsed values into typed objects.

Every command declares the groups it uses (verify/cli/commands.py); nothing below the command line
ever sees an argparse Namespace. Defaults that depend on the machine (the device under test) and
checks that name a flag live here, once.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

from kinematics import RobotModel, load_robot
from verify.commands.one_shot import FrameSelection
from verify.commands.sweep import SweepReport
from verify.compare.calibration import GATE_MODES
from verify.compare.gate import GateConfig
from verify.compare.metrics import GATEABLE_STATISTICS, ROTATION_METRICS
from verify.errors import EXIT_BAD_INPUT, InputError
from verify.publish import OutputPaths
from verify.run.inputs import MODEL_SIZES, ModelSource
from verify.run.plan import FrameRange, SweepSelection, parse_index_list
from verify.run.sides import DTYPES, SideConfig
from verify.run.trace import TraceRequest

DEMO_OUT = Path("verify-ate-demo")


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with exit code 2, never a traceback."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
    return value


def positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def shape(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"shape must be comma-separated integers, e.g. 1,50,32, not {text!r}"
        ) from None
    if not values or any(n <= 0 for n in values):
        raise argparse.ArgumentTypeError(f"shape needs positive sizes, not {text!r}")
    return values


# ---------------------------------------------------------------- devices and timing


@dataclass(frozen=True)
class Timing:
    iters: int = 5
    warmup: int = 1


class TimingArgs:
    """--iters/--warmup: latency samples per device, after untimed warm-up calls."""

    def __init__(self, what: str = "timed calls per device"):
        self.what = what

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("latency")
        group.add_argument("--iters", type=non_negative_int, default=5, help=f"{self.what} (default 5; 0 = no timing)")
        group.add_argument("--warmup", type=non_negative_int, default=1, help="untimed calls before timing (default 1)")

    def parse(self, args: argparse.Namespace) -> Timing:
        return Timing(args.iters, args.warmup)


class DeviceArgs:
    """--ref/--dut/--ref-dtype/--dut-dtype, and the rule for the device under test's default:
    the "best other" device, a CUDA GPU when there is one, else the same CPU at the other precision."""

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("devices")
        group.add_argument("--ref", default=None, help="reference device: cpu, cuda[:i], npu[:i] (default cpu)")
        group.add_argument(
            "--dut", default=None, help="device under test (default: cuda if present, else cpu at bfloat16)"
        )
        group.add_argument("--ref-dtype", choices=DTYPES, default=None, help="reference precision (default float32)")
        group.add_argument(
            "--dut-dtype", choices=DTYPES, default=None, help="device-under-test precision (default float32)"
        )

    def parse(
        self, args: argparse.Namespace, timing: Timing, num_inference_steps: int | None
    ) -> tuple[SideConfig, SideConfig]:
        """The (reference, under test) pair."""
        dut_device, dut_dtype = args.dut, args.dut_dtype
        if dut_device is None:
            default_device, default_dtype = default_under_test()
            dut_device, dut_dtype = default_device, dut_dtype or default_dtype
        common = {"iters": timing.iters, "warmup": timing.warmup, "num_inference_steps": num_inference_steps}
        reference = SideConfig(args.ref or "cpu", args.ref_dtype or "float32", **common)
        under_test = SideConfig(dut_device, dut_dtype or "float32", **common)
        return reference, under_test


def default_under_test() -> tuple[str, str]:
    """(device, dtype) of the device under test when --dut is not given."""
    import torch

    return ("cuda", "float32") if torch.cuda.is_available() else ("cpu", "bfloat16")


class RewriteArgs:
    """--ref-variant/--dut-variant/--inject (or --variant/--inject for one side): rewrites of pi0 applied
    to one side's loaded model (verify/model/rewrites.py), recorded in its artifact."""

    def __init__(self, single: bool = False):
        self.single = single

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        from verify.model.rewrites import FAULTS, VARIANTS

        group = parser.add_argument_group("variants and faults (README: Variants and faults)")
        variants = f"comma-separated, any of: {', '.join(VARIANTS)}"
        if self.single:
            group.add_argument("--variant", default="", metavar="NAME[,NAME...]", help=f"rewrites of pi0 ({variants})")
        else:
            group.add_argument(
                "--ref-variant", default="", metavar="NAME[,NAME...]", help=f"on the reference ({variants})"
            )
            group.add_argument(
                "--dut-variant", default="", metavar="NAME[,NAME...]", help=f"on the device under test ({variants})"
            )
        group.add_argument(
            "--inject",
            default="",
            metavar="FAULT[,FAULT...]",
            help=f"porting bugs injected on the device under test{' (this side)' if self.single else ''}: "
            f"{', '.join(FAULTS)}",
        )

    def parse(self, args: argparse.Namespace, sides: tuple[SideConfig, ...]) -> tuple[SideConfig, ...]:
        """`sides` with their variants and faults: (one side) or (reference, under test)."""
        from verify.model.rewrites import FAULT, VARIANT, parse_names

        faults = parse_names(args.inject, FAULT)
        if self.single:
            (side,) = sides
            return (replace(side, variants=parse_names(args.variant, VARIANT), faults=faults),)
        reference, under_test = sides
        return (
            replace(reference, variants=parse_names(args.ref_variant, VARIANT)),
            replace(under_test, variants=parse_names(args.dut_variant, VARIANT), faults=faults),
        )


class SingleDeviceArgs:
    """--device/--dtype of `run` (one side)."""

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("device")
        group.add_argument("--device", default="cpu", help="cpu, cuda[:i], npu[:i] (default cpu)")
        group.add_argument("--dtype", choices=DTYPES, default="float32")

    def parse(self, args: argparse.Namespace, timing: Timing, num_inference_steps: int | None) -> SideConfig:
        return SideConfig(args.device, args.dtype, timing.iters, timing.warmup, num_inference_steps)


# ---------------------------------------------------------------- model and data


class ModelArgs:
    """--checkpoint/--dataset/--demo/--cache-dir/--num-inference-steps/--size/--save-checkpoint."""

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("model and data")
        group.add_argument("--checkpoint", type=Path, help="local lerobot pi0 checkpoint folder")
        group.add_argument("--dataset", type=Path, help="local LeRobot dataset folder (v3.0)")
        group.add_argument(
            "--demo", action="store_true", help="tiny pi0 trained on a generated dataset, and that dataset (offline)"
        )
        group.add_argument(
            "--cache-dir", type=Path, help="where --demo keeps its dataset and checkpoint (default ~/.cache/verify-ate)"
        )
        group.add_argument(
            "--num-inference-steps", type=positive_int, help="override the checkpoint's flow-matching step count"
        )
        group.add_argument(
            "--size",
            choices=MODEL_SIZES,
            default="tiny",
            help="--demo's model: tiny (cached checkpoint) or full (real pi0 size, seeded weights made on each "
            "device, nothing written) (default tiny)",
        )
        group.add_argument(
            "--save-checkpoint",
            type=Path,
            metavar="DIR",
            help="with --demo: also write the demo's model as a checkpoint folder here, and run it from there",
        )

    def parse(self, args: argparse.Namespace) -> ModelSource:
        return ModelSource(
            args.checkpoint,
            args.dataset,
            args.demo,
            args.cache_dir,
            args.num_inference_steps,
            args.size,
            args.save_checkpoint,
        )


class FrameArgs:
    """--episode/--frame/--noise: the one observation and noise of a one-frame run."""

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("observation and noise")
        group.add_argument("--episode", type=int, default=0, help="episode index (default 0)")
        group.add_argument("--frame", type=int, default=0, help="frame index within the episode (default 0)")
        group.add_argument("--noise", type=Path, help="fixed-noise file (default: seed 0, made on the fly)")

    def parse(self, args: argparse.Namespace) -> FrameSelection:
        return FrameSelection(args.episode, args.frame, args.noise)


class SweepArgs:
    """--episodes/--frames/--seeds/--noise/--batch-size, and how the frames are judged and shown."""

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("sweep")
        group.add_argument("--episodes", default="0", help="episodes: 0,3,5-9 or all (default 0)")
        group.add_argument(
            "--frames",
            default="0:",
            help="START:STOP[:STEP] within each episode, STOP clipped to its length (default 0: = all)",
        )
        group.add_argument(
            "--seeds", default=None, help="noise seeds, one draw each per frame: 0,1,2 or 0-4 (default 0)"
        )
        group.add_argument("--noise", type=Path, help="one fixed-noise file for every frame instead of --seeds")
        group.add_argument("--batch-size", type=positive_int, default=8, help="frames per forward pass (default 8)")
        group.add_argument(
            "--frame-stat",
            choices=GATEABLE_STATISTICS,
            help="also gate every frame on its own statistic (e.g. max): each frame's must be within the bounds",
        )
        group.add_argument(
            "--worst-frames", type=non_negative_int, default=3, help="worst frames plotted in the report (default 3)"
        )

    def parse(self, args: argparse.Namespace) -> tuple[SweepSelection, SweepReport]:
        if args.noise is not None and args.seeds is not None:
            raise InputError(
                "--seeds and --noise exclude each other: seeds draw noise per frame, --noise fixes one draw"
            )
        episodes = (
            None if args.episodes.strip().lower() == "all" else _flag(parse_index_list, "--episodes", args.episodes)
        )
        seeds = None if args.noise is not None else _flag(parse_index_list, "--seeds", args.seeds or "0")
        selection = SweepSelection(
            episodes=None if episodes is None else tuple(episodes),
            frame_range=_flag(FrameRange.parse, "--frames", args.frames),
            seeds=None if seeds is None else tuple(seeds),
            noise=args.noise,
            batch_size=args.batch_size,
        )
        return selection, SweepReport(args.frame_stat, args.worst_frames)


def _flag(parse, flag: str, text: str):
    """parse(text), its InputError prefixed with the flag the text came from."""
    try:
        return parse(text)
    except InputError as error:
        raise InputError(f"{flag}: {error}") from None


# ---------------------------------------------------------------- judging and reporting


class GateArgs:
    """--robot/--pos-tol/--rot-tol/--stat/--rot-metric/--min-cosine/--max-joint-error (configs/thresholds.yaml),
    and the calibrated gate: --gate, --calibration FILE, and --calibrate where the command runs the model."""

    def __init__(self, can_calibrate: bool = False, choose_gate: bool = True):
        self.can_calibrate = can_calibrate
        self.choose_gate = choose_gate  # False: the command judges both gates itself (selftest)

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("gate (defaults from configs/thresholds.yaml)")
        group.add_argument(
            "--robot",
            default="koch_v1_1",
            help="robot config name in configs/robots/ or a YAML path (default: koch_v1_1)",
        )
        group.add_argument("--pos-tol", type=float, help="position ATE bound in metres (default 0.03)")
        group.add_argument("--rot-tol", type=float, help="orientation ATE bound in radians (default 0.2)")
        group.add_argument("--stat", choices=GATEABLE_STATISTICS, help="statistic the gate compares (default rmse)")
        group.add_argument(
            "--rot-metric",
            choices=ROTATION_METRICS,
            help="orientation error the gate compares: geodesic (the rotation angle) or rpy (the 2-norm of the "
            "wrapped roll-pitch-yaw difference, the Ascend guide's); both are reported (default geodesic)",
        )
        group.add_argument(
            "--min-cosine", type=float, help="also gate the action chunks' cosine similarity (e.g. 0.99; default off)"
        )
        group.add_argument(
            "--max-joint-error",
            type=float,
            metavar="DEG",
            help="also gate every joint's largest absolute error in degrees (default off)",
        )
        if self.choose_gate:
            group.add_argument(
                "--gate",
                choices=GATE_MODES,
                default="both",
                help="which bounds decide the exit code: seed (fixed, configs/thresholds.yaml), calibrated (from the "
                "reference's noise floor), or both reported with the seed's deciding (default both)",
            )
        group.add_argument(
            "--calibration", type=Path, metavar="FILE", help="a calibration.json saved by an earlier --calibrate run"
        )
        if self.can_calibrate:
            group.add_argument(
                "--calibrate",
                action="store_true",
                help="measure the reference's benign noise floor on these inputs (bfloat16, another thread count, "
                "another batch, TF32 on CUDA) and gate at a multiple of it too (configs/calibration.yaml)",
            )

    def calibrate(self, args: argparse.Namespace) -> bool:
        """Whether this run measures its own calibration."""
        return bool(getattr(args, "calibrate", False))

    def parse(self, args: argparse.Namespace) -> tuple[RobotModel, GateConfig]:
        from verify.compare.calibration import Calibration

        robot = load_robot(args.robot)
        if self.calibrate(args) and args.calibration is not None:
            raise InputError("--calibrate measures a calibration and --calibration FILE reads one: pass one of them")
        mode = getattr(args, "gate", "both")
        if mode == "calibrated" and args.calibration is None and not self.calibrate(args):
            where = "--calibrate or --calibration FILE" if self.can_calibrate else "--calibration FILE"
            raise InputError(f"--gate calibrated needs a calibration: add {where}")
        calibration = Calibration.load(args.calibration) if args.calibration is not None else None
        try:
            gate = GateConfig.from_file(
                position_tolerance_m=args.pos_tol,
                orientation_tolerance_rad=args.rot_tol,
                statistic=args.stat,
                rotation_metric=args.rot_metric,
                min_cosine=args.min_cosine,
                max_joint_error_deg=args.max_joint_error,
            )
        except InputError:
            raise
        except ValueError as error:
            raise InputError(f"configs/thresholds.yaml or flags: {error}") from None
        return robot, replace(gate, mode=mode, calibration=calibration)


class RobotArgs:
    """--robot alone (commands that do not gate)."""

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--robot",
            default="koch_v1_1",
            help="robot config name in configs/robots/ or a YAML path (default: koch_v1_1)",
        )

    def parse(self, args: argparse.Namespace) -> RobotModel:
        return load_robot(args.robot)


class OutputArgs:
    """--out/--json/--junit/--quiet. Under --demo, --out defaults to `demo_out`."""

    def __init__(self, demo_out: Path | None = None):
        self.demo_out = demo_out

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("outputs")
        group.add_argument(
            "--out", type=Path, help="report folder (summary.json, summary.md, junit.xml, index.html, plots)"
        )
        group.add_argument("--json", type=Path, help="write the JSON summary here too")
        group.add_argument("--junit", type=Path, help="write JUnit XML here too (one testcase per gate)")
        group.add_argument("--quiet", action="store_true", help="no progress output on stderr")

    def parse(self, args: argparse.Namespace) -> OutputPaths:
        out = args.out
        if out is None and getattr(args, "demo", False):
            out = self.demo_out
        outputs = OutputPaths(out, args.json, args.junit)
        outputs.check()
        return outputs


class TraceArgs:
    """--trace/--trace-on-fail/--trace-dump/--trace-tol (defaults in configs/trace.yaml)."""

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("divergence trace (configs/trace.yaml)")
        group.add_argument(
            "--trace",
            action="store_true",
            help="record chosen module outputs on both sides and name the first module that diverges",
        )
        group.add_argument("--trace-on-fail", action="store_true", help="trace automatically when the gate fails")
        group.add_argument(
            "--trace-dump",
            type=Path,
            metavar="DIR",
            help="also save every traced tensor of both sides (safetensors) under DIR",
        )
        group.add_argument(
            "--trace-tol",
            type=float,
            help="relative error ||ref-dut||/||ref|| above which a module has diverged (default 1e-2)",
        )

    def parse(self, args: argparse.Namespace) -> TraceRequest:
        return TraceRequest(args.trace, args.trace_on_fail, args.trace_dump, args.trace_tol)
