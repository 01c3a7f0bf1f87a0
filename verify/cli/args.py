"""Argument groups: each adds its flags to a parser and turns the parsed values into one typed object.

A group declares the groups whose objects its own parsing needs (`depends_on`, as Polygraphy's argument
groups do); a command lists the groups it uses (verify/cli/commands.py) and `CommandLine` adds what they
depend on, parses the flags, and builds every object in dependency order. Nothing below the command line
ever sees an argparse Namespace. Defaults that depend on the machine (the device under test) and checks
that name a flag live here, once: the library's messages quote values and files, and the group that
passed the value adds the flag's name.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from verify_ate.kinematics import RobotModel, available_robots, load_robot
from verify_ate.kinematics.robot import UNITS, robot_for_dataset
from verify_ate.verify.commands.one_shot import FrameSelection
from verify_ate.verify.commands.sweep import SweepReport
from verify_ate.verify.compare.artifact import ARTIFACT_UNITS, INPUT_HASHES
from verify_ate.verify.compare.calibration import GATE_MODES, OLD_GATE_MODES
from verify_ate.verify.compare.gate import GateConfig
from verify_ate.verify.compare.metrics import GATEABLE_STATISTICS, ROTATION_METRICS
from verify_ate.verify.errors import EXIT_BAD_INPUT, InputError
from verify_ate.verify.model.precision import DTYPES
from verify_ate.verify.publish import OutputPaths
from verify_ate.verify.run.inputs import DEFAULT_DEMO_ROBOT, MODEL_SIZES, DemoSource, ModelSource, UserSource
from verify_ate.verify.run.plan import FrameRange, SweepSelection, parse_index_list
from verify_ate.verify.run.sides import SideConfig
from verify_ate.verify.run.trace.config import TraceRequest

DEMO_OUT = Path("verify-ate-demo")
DEFAULT_ROBOT = "koch_v1_1"


# ---------------------------------------------------------------- the parser


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says it in words."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        switch = isinstance(action, (argparse._StoreTrueAction, argparse._StoreConstAction, argparse._HelpAction))
        if "default" in text or switch or action.required or not action.option_strings:
            return text
        if action.default is None:
            return f"{text} (default none)"
        default = ",".join(map(str, action.default)) if isinstance(action.default, tuple) else action.default
        return f"{text} (default {default})"


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with exit code 2, never a traceback, and suggests the
    flag or choice that was probably meant."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:  # argparse's signature: it never returns
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}{self._suggestion(message)}\n")

    def _suggestion(self, message: str) -> str:
        match = re.match(r"unrecognized arguments: (\S+)", message)
        if not match:
            return ""
        word = match[1].split("=", 1)[0]
        options = [option for action in self._actions for option in action.option_strings]
        close = difflib.get_close_matches(word, options, n=1, cutoff=0.7)
        return f"; did you mean {close[0]}?" if close else ""


def close_command(word: str, commands: Iterable[str]) -> str | None:
    """The command `word` was probably meant to be (a typo of one), or None."""
    close = difflib.get_close_matches(word, list(commands), n=1, cutoff=0.6)
    return close[0] if close else None


# ---------------------------------------------------------------- groups and their composition


class ArgGroup:
    """Flags turned into one typed object. `depends_on`: groups whose objects `parse` reads through `parsed`
    (added to a command that lacks them); `optional`: groups it reads when the command has them."""

    depends_on: ClassVar[tuple[type[ArgGroup], ...]] = ()
    optional: ClassVar[tuple[type[ArgGroup], ...]] = ()

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        raise NotImplementedError

    def parse(self, args: argparse.Namespace, parsed: Parsed) -> Any:
        raise NotImplementedError


class Parsed:
    """The objects the groups of one command line made, by group class."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self._objects: dict[type[ArgGroup], Any] = {}

    def __getitem__(self, group: type[ArgGroup]) -> Any:
        return self._objects[group]

    def get(self, group: type[ArgGroup], default: Any = None) -> Any:
        return self._objects.get(group, default)

    def __contains__(self, group: type[ArgGroup]) -> bool:
        return group in self._objects


class CommandLine:
    """One command's parser, made from its groups (and the groups they depend on)."""

    def __init__(self, prog: str, description: str, *groups: ArgGroup, extra: Callable[[Any], None] | None = None):
        self.groups = _with_dependencies(groups)
        self.parser = ArgumentParser(prog=prog, description=description)
        for group in self.groups:
            group.add_to_parser(self.parser)
        if extra is not None:
            extra(self.parser)
        add_debug(self.parser)

    def parse(self, argv: list[str]) -> Parsed:
        parsed = Parsed(self.parser.parse_args(argv))
        for group in self.groups:
            parsed._objects[type(group)] = group.parse(parsed.args, parsed)
        return parsed


def _with_dependencies(groups: Iterable[ArgGroup]) -> list[ArgGroup]:
    """`groups` plus the groups they depend on, each once, every group after those it depends on."""
    ordered: list[ArgGroup] = []
    given = {type(group): group for group in groups}

    def visit(group: ArgGroup, path: tuple[type[ArgGroup], ...]) -> None:
        if type(group) in (type(g) for g in ordered):
            return
        if type(group) in path:
            raise RuntimeError(f"argument groups depend on each other in a circle: {path}")
        for needed in (*group.depends_on, *(o for o in group.optional if o in given)):
            visit(given.get(needed) or needed(), (*path, type(group)))
        ordered.append(group)

    for group in groups:
        visit(group, ())
    return ordered


def add_debug(parser: argparse.ArgumentParser) -> None:
    # verify_ate.verify.cli.main takes --debug out before any parser runs; declared here so that -h lists it.
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or VERIFY_ATE_DEBUG=1)")


# ---------------------------------------------------------------- value types


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


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def non_negative_float(text: str) -> float:
    value = _float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, not {text}")
    return value


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0, not 0")
    return value


def cosine(text: str) -> float:
    value = _float(text)
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [-1, 1], not {text}")
    return value


def allclose_tolerances(text: str) -> tuple[float, float]:
    """ "ATOL,RTOL": two finite numbers >= 0."""
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"must be ATOL,RTOL (two numbers), not {text}")
    atol, rtol = (non_negative_float(part.strip()) for part in parts)
    return atol, rtol


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


def _flag(parse: Callable[[str], Any], flag: str, text: str) -> Any:
    """parse(text), its InputError prefixed with the flag the text came from."""
    try:
        return parse(text)
    except InputError as error:
        raise InputError(f"{flag}: {error}") from None


# ---------------------------------------------------------------- model and data


class ModelArgs(ArgGroup):
    """--checkpoint/--dataset/--demo/--cache-dir/--num-inference-steps/--size/--save-checkpoint/--policy -> a
    ModelSource."""

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("model and data")
        group.add_argument(
            "--checkpoint", type=Path, metavar="DIR", help="local lerobot pi0 checkpoint folder (config.json, weights)"
        )
        group.add_argument("--dataset", type=Path, metavar="DIR", help="local LeRobot dataset folder (v3.0, or v2.x)")
        group.add_argument(
            "--demo", action="store_true", help="tiny pi0 trained on a generated dataset, and that dataset (offline)"
        )
        group.add_argument(
            "--cache-dir",
            type=Path,
            metavar="DIR",
            help="where the demo and imported old-format inputs are kept (default ~/.cache/verify-ate, or "
            "$VERIFY_ATE_CACHE)",
        )
        group.add_argument(
            "--num-inference-steps",
            type=positive_int,
            metavar="N",
            help="flow-matching step count on both sides (default: the checkpoint's)",
        )
        group.add_argument(
            "--size",
            choices=MODEL_SIZES,
            default="tiny",
            help="--demo's model: tiny (trained, cached) or full (real pi0 size, seeded weights made on each "
            "device, nothing written)",
        )
        group.add_argument(
            "--save-checkpoint",
            type=Path,
            metavar="DIR",
            help="with --demo: also write the demo's model as a checkpoint folder here, and run it from there",
        )
        from verify_ate.verify.model.policies import supported_policies

        group.add_argument(
            "--policy",
            choices=supported_policies(),
            help="with --demo: the policy trained on the demo dataset (default pi0); a checkpoint's policy comes from "
            "its config.json",
        )

    def parse(self, args: argparse.Namespace, parsed: Parsed) -> ModelSource:
        if not args.demo:
            if args.size != "tiny" or args.save_checkpoint is not None:
                raise InputError("--size and --save-checkpoint choose and keep the demo's model: add --demo")
            if args.policy is not None:
                raise InputError(
                    "--policy chooses the demo's policy (add --demo); a checkpoint's policy comes from its config.json"
                )
            missing = [
                flag for flag, value in (("--checkpoint", args.checkpoint), ("--dataset", args.dataset)) if not value
            ]
            if missing:
                raise InputError(f"{' and '.join(missing)} required (or --demo for the embedded default)")
            if args.checkpoint.is_file():
                raise InputError(
                    f"--checkpoint {args.checkpoint}: is a file; pass the checkpoint's folder "
                    f"({args.checkpoint.parent}), which holds config.json and the weights"
                )
            return UserSource(args.checkpoint, args.dataset, args.cache_dir, args.num_inference_steps)
        if args.checkpoint or args.dataset:
            raise InputError("--demo brings its own checkpoint and dataset; drop --checkpoint/--dataset or --demo")
        robot = getattr(args, "robot", None) or DEFAULT_DEMO_ROBOT  # --robot lives in RobotArgs, where a command has it
        return DemoSource(
            args.cache_dir,
            args.size,
            args.save_checkpoint,
            args.num_inference_steps,
            robot=robot,
            policy=args.policy or "pi0",
        )


class FrameArgs(ArgGroup):
    """--episode/--frame/--noise: the one observation and noise of a one-frame run."""

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("observation and noise")
        group.add_argument("--episode", type=non_negative_int, default=0, help="episode index")
        group.add_argument("--frame", type=non_negative_int, default=0, help="frame index within the episode")
        group.add_argument(
            "--noise", type=Path, metavar="FILE", help="fixed-noise file (default: seed 0, made on the fly)"
        )

    def parse(self, args: argparse.Namespace, parsed: Parsed) -> FrameSelection:
        return FrameSelection(args.episode, args.frame, args.noise)


class SweepArgs(ArgGroup):
    """--episodes/--frames/--seeds/--noise/--batch-size/--frame-stat/--worst-frames."""

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("sweep")
        group.add_argument("--episodes", default="0", help="episodes: 0,3,5-9 or all")
        group.add_argument(
            "--frames",
            default="0:",
            help="START:STOP[:STEP] within each episode, STOP clipped to its length (default 0:, every frame)",
        )
        group.add_argument("--seeds", help="noise seeds, one draw each per frame: 0,1,2 or 0-4 (default 0)")
        group.add_argument(
            "--noise",
            type=Path,
            metavar="FILE",
            help="one fixed-noise file for every frame instead of --seeds (default: --seeds)",
        )
        group.add_argument("--batch-size", type=positive_int, default=8, metavar="N", help="frames per forward pass")
        group.add_argument(
            "--frame-stat",
            choices=GATEABLE_STATISTICS,
            help="also gate every chunk on its own statistic (e.g. max): each must be within the bounds (default off)",
        )
        group.add_argument(
            "--worst-frames", type=non_negative_int, default=3, metavar="N", help="worst chunks plotted in the report"
        )

    def parse(self, args: argparse.Namespace, parsed: Parsed) -> tuple[SweepSelection, SweepReport]:
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


# ---------------------------------------------------------------- devices, timing, rewrites


@dataclass(frozen=True)
class Timing:
    iters: int = 5
    warmup: int = 1


class TimingArgs(ArgGroup):
    """--iters/--warmup: latency samples per device, after untimed warm-up calls (`timed=False`: a command that
    times nothing, with no such flags)."""

    def __init__(self, what: str = "timed calls per device (0: no timing)", timed: bool = True):
        self.what = what
        self.timed = timed

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        if not self.timed:
            return
        group = parser.add_argument_group("latency")
        group.add_argument("--iters", type=non_negative_int, default=5, metavar="N", help=self.what)
        group.add_argument(
            "--warmup", type=non_negative_int, default=1, metavar="N", help="untimed calls before timing"
        )

    def parse(self, args: argparse.Namespace, parsed: Parsed) -> Timing:
        return Timing(args.iters, args.warmup) if self.timed else Timing(0, 0)


class DeviceArgs(ArgGroup):
    """--ref/--dut/--ref-dtype/--dut-dtype -> (reference, under test) SideConfigs, and the rule for the device
    under test's default: the "best other" device, a CUDA GPU when there is one, else the CPU at bfloat16."""

    depends_on = (TimingArgs, ModelArgs)

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("devices")
        group.add_argument("--ref", help="reference device: cpu, cuda[:i], npu[:i] (default cpu)")
        group.add_argument("--dut", help="device under test (default: cuda if present, else cpu at bfloat16)")
        group.add_argument("--ref-dtype", choices=DTYPES, help="reference precision (default float32)")
        group.add_argument(
            "--dut-dtype",
            choices=DTYPES,
            help="device-under-test precision (default float32; bfloat16 when --dut defaults to the cpu)",
        )

    def parse(self, args: argparse.Namespace, parsed: Parsed) -> tuple[SideConfig, SideConfig]:
        dut_device, dut_dtype = args.dut, args.dut_dtype
        if dut_device is None:
            default_device, default_dtype = default_under_test()
            dut_device, dut_dtype = default_device, dut_dtype or default_dtype
        timing = parsed[TimingArgs]
        common = {
            "iters": timing.iters,
            "warmup": timing.warmup,
            "num_inference_steps": parsed[ModelArgs].num_inference_steps,
        }
        reference = SideConfig(args.ref or "cpu", args.ref_dtype or "float32", **common)
        under_test = SideConfig(dut_device, dut_dtype or "float32", **common)
        return reference, under_test


def default_under_test() -> tuple[str, str]:
    """(device, dtype) of the device under test when --dut is not given."""
    import torch

    return ("cuda", "float32") if torch.cuda.is_available() else ("cpu", "bfloat16")


class SingleDeviceArgs(ArgGroup):
    """--device/--dtype of a command that runs one side -> its SideConfig."""

    depends_on = (TimingArgs, ModelArgs)

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("device")
        group.add_argument("--device", default="cpu", help="cpu, cuda[:i], npu[:i]")
        group.add_argument("--dtype", choices=DTYPES, default="float32", help="precision of this side")

    def parse(self, args: argparse.Namespace, parsed: Parsed) -> SideConfig:
        timing = parsed[TimingArgs]
        return SideConfig(args.device, args.dtype, timing.iters, timing.warmup, parsed[ModelArgs].num_inference_steps)


class RewriteArgs(ArgGroup):
    """--ref-variant/--dut-variant/--inject: rewrites of pi0 applied to one side's loaded model
    (verify/model/rewrites.py), recorded in its artifact -> the (reference, under test) sides with them."""

    depends_on = (DeviceArgs,)

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        from verify_ate.verify.model.rewrites import FAULTS, VARIANTS

        group = parser.add_argument_group("variants and faults (docs/selftest.md)")
        variants = f"comma-separated, any of: {', '.join(VARIANTS)}; default none"
        group.add_argument("--ref-variant", default="", metavar="NAME[,NAME...]", help=f"on the reference ({variants})")
        group.add_argument(
            "--dut-variant", default="", metavar="NAME[,NAME...]", help=f"on the device under test ({variants})"
        )
        group.add_argument(
            "--inject",
            default="",
            metavar="FAULT[,FAULT...]",
            help=f"porting bugs injected on the device under test: {', '.join(FAULTS)} (default none)",
        )

    def parse(self, args: argparse.Namespace, parsed: Parsed) -> tuple[SideConfig, SideConfig]:
        from verify_ate.verify.model.rewrites import FAULT, VARIANT, parse_names

        reference, under_test = parsed[DeviceArgs]
        return (
            replace(reference, variants=parse_names(args.ref_variant, VARIANT)),
            replace(
                under_test,
                variants=parse_names(args.dut_variant, VARIANT),
                faults=parse_names(args.inject, FAULT),
            ),
        )


class SingleRewriteArgs(ArgGroup):
    """--variant/--inject of a command that runs one side -> that side with them."""

    depends_on = (SingleDeviceArgs,)

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        from verify_ate.verify.model.rewrites import FAULTS, VARIANTS

        group = parser.add_argument_group("variants and faults (docs/selftest.md)")
        group.add_argument(
            "--variant",
            default="",
            metavar="NAME[,NAME...]",
            help=f"rewrites of pi0, comma-separated, any of: {', '.join(VARIANTS)} (default none)",
        )
        group.add_argument(
            "--inject",
            default="",
            metavar="FAULT[,FAULT...]",
            help=f"porting bugs injected on this side: {', '.join(FAULTS)} (default none)",
        )

    def parse(self, args: argparse.Namespace, parsed: Parsed) -> SideConfig:
        from verify_ate.verify.model.rewrites import FAULT, VARIANT, parse_names

        side = parsed[SingleDeviceArgs]
        return replace(side, variants=parse_names(args.variant, VARIANT), faults=parse_names(args.inject, FAULT))


# ---------------------------------------------------------------- judging


class RobotArgs(ArgGroup):
    """--robot/--robot-units/--robot-calibration -> the robot model: the one named, else the one the dataset (or the
    compared artifact) says it was recorded with, else Koch v1.1."""

    optional = (ModelArgs,)

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("robot")
        group.add_argument(
            "--robot",
            help="robot config name in configs/robots/ or a YAML path (default: the dataset's robot_type and joint "
            f"names, an artifact's robot, else {DEFAULT_ROBOT}); --demo --robot NAME picks that robot's demo",
        )
        group.add_argument(
            "--robot-units",
            choices=UNITS,
            help="the units the dataset's joints are in, when not the robot's own: deg, rad, or normalized "
            "(lerobot's -100..100 range, which needs --robot-calibration)",
        )
        group.add_argument(
            "--robot-calibration",
            type=Path,
            metavar="FILE",
            help="the arm's lerobot calibration JSON (homing offset, range min/max per motor): turns lerobot's "
            "normalised joint range into angles",
        )

    def parse(self, args: argparse.Namespace, parsed: Parsed) -> RobotModel:
        robot, robot_type = self._named_or_detected(args, parsed)
        units = args.robot_units or robot.units_for(robot_type)
        calibration = None
        if args.robot_calibration is not None:
            from verify_ate.kinematics.units import read_calibration_document

            calibration = read_calibration_document(args.robot_calibration, robot.dataset_joint_names)
        return replace(robot, dataset_units=units, calibration=calibration)

    @staticmethod
    def _named_or_detected(args: argparse.Namespace, parsed: Parsed) -> tuple[RobotModel, str | None]:
        """The robot, and the dataset's robot_type when there is a dataset (it may choose the units)."""
        source = parsed.get(ModelArgs, None)
        folder = source.dataset if isinstance(source, UserSource) else getattr(args, "dataset", None)
        robot_type, names = dataset_robot(folder) if isinstance(folder, Path) and folder.is_dir() else (None, [])
        if args.robot:
            return load_robot(args.robot), robot_type
        if names:
            return robot_for_dataset(robot_type, names, f"{folder}/meta/info.json"), robot_type
        if isinstance(source, DemoSource):
            return load_robot(source.robot), None
        reference = getattr(args, "reference", None)
        name = artifact_robot(reference) if isinstance(reference, Path) else None
        return load_robot(name or DEFAULT_ROBOT), None


def dataset_robot(folder: Path) -> tuple[str | None, list[str]]:
    """A dataset folder's info.json robot_type and action names (v3 lists them; v2 may nest them under
    "motors"); (None, []) when the folder does not say (its own checks report a broken dataset later)."""
    try:
        info = json.loads((folder / "meta" / "info.json").read_text())
        names = info["features"]["action"]["names"]
    except (OSError, ValueError, KeyError, TypeError):
        return None, []
    if isinstance(names, dict):
        names = next(iter(names.values()), [])
    robot_type = info.get("robot_type")
    return (str(robot_type) if robot_type else None), [str(name) for name in names or []]


def artifact_robot(path: Path) -> str | None:
    """The robot an .npz artifact says it was made for, when it is one and says so (load_artifact checks the rest)."""
    if path.suffix != ".npz" or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
        name = meta.get("robot")
        return name if isinstance(name, str) and name in available_robots() else None
    except Exception:  # an unreadable artifact is reported by load_artifact, with its path
        return None


class CalibrateArgs(ArgGroup):
    """--calibrate, on the commands that run the model -> whether this run measures its own calibration."""

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--calibrate",
            action="store_true",
            help="measure the reference's benign noise floor on these inputs (bfloat16, another thread count, "
            "another batch, TF32 on CUDA) and gate at a multiple of it too (configs/calibration.yaml)",
        )

    def parse(self, args: argparse.Namespace, parsed: Parsed) -> bool:
        return bool(args.calibrate)


class GateArgs(ArgGroup):
    """--pos-tol/--rot-tol/--stat/--rot-metric/--min-cosine/--max-joint-error (configs/thresholds.yaml), and the
    calibrated gate: --gate and --calibration FILE -> a GateConfig."""

    depends_on = (RobotArgs,)
    optional = (CalibrateArgs,)

    def __init__(self, choose_gate: bool = True):
        self.choose_gate = choose_gate  # False: the command judges both gates itself (selftest)

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("gate (defaults from configs/thresholds.yaml)")
        group.add_argument(
            "--pos-tol", type=non_negative_float, metavar="M", help="position ATE bound in metres (default 0.03)"
        )
        group.add_argument(
            "--rot-tol", type=non_negative_float, metavar="RAD", help="orientation ATE bound in radians (default 0.2)"
        )
        group.add_argument("--stat", choices=GATEABLE_STATISTICS, help="statistic the gate compares (default rmse)")
        group.add_argument(
            "--rot-metric",
            choices=ROTATION_METRICS,
            help="orientation error the gate compares: geodesic (the rotation angle) or rpy (the 2-norm of the "
            "wrapped roll-pitch-yaw difference, the Ascend guide's); both are reported (default geodesic)",
        )
        group.add_argument(
            "--min-cosine",
            type=cosine,
            metavar="C",
            help="also gate the action chunks' cosine similarity, e.g. 0.99 (default off)",
        )
        group.add_argument(
            "--max-joint-error",
            type=non_negative_float,
            metavar="DEG",
            help="also gate every joint's largest absolute error in degrees (default off)",
        )
        group.add_argument(
            "--min-step-cosine",
            type=cosine,
            metavar="C",
            help="also gate the smallest per-step cosine similarity of the actions, e.g. 0.99 (the Ascend pi0.5 "
            "recipe's criterion) (default off)",
        )
        group.add_argument(
            "--max-abs-error",
            type=non_negative_float,
            metavar="X",
            help="also gate the largest absolute error of the actions, in the artifacts' units (default off)",
        )
        group.add_argument(
            "--mean-abs-error",
            type=non_negative_float,
            metavar="X",
            help="also gate the mean absolute error of the actions, in the artifacts' units (default off)",
        )
        group.add_argument(
            "--allclose",
            type=allclose_tolerances,
            metavar="ATOL,RTOL",
            help="also gate numpy's allclose of the actions (|dut - ref| <= atol + rtol |ref|), e.g. 1e-3,1e-3 "
            "(default off)",
        )
        group.add_argument(
            "--no-gripper-check",
            action="store_true",
            help="do not gate on each gripper's open/closed state agreeing step by step (on by default for robots "
            "whose config names a gripper threshold)",
        )
        if self.choose_gate:
            group.add_argument(
                "--gate",
                choices=(*GATE_MODES, *OLD_GATE_MODES),
                default="both",
                help="which bounds decide the exit code: fixed (configs/thresholds.yaml), calibrated (from the "
                "reference's noise floor), or both reported with the fixed ones deciding",
            )
        group.add_argument(
            "--calibration", type=Path, metavar="FILE", help="a calibration.json saved by an earlier --calibrate run"
        )

    def parse(self, args: argparse.Namespace, parsed: Parsed) -> GateConfig:
        from verify_ate.verify.compare.calibration import Calibration, gate_mode

        calibrate = parsed.get(CalibrateArgs, False)
        if calibrate and args.calibration is not None:
            raise InputError("--calibrate measures a calibration and --calibration FILE reads one: pass one of them")
        mode = gate_mode(getattr(args, "gate", "both"))
        if mode == "calibrated" and args.calibration is None and not calibrate:
            where = "--calibrate or --calibration FILE" if CalibrateArgs in parsed else "--calibration FILE"
            raise InputError(f"--gate calibrated needs a calibration: add {where}")
        calibration = Calibration.load(args.calibration) if args.calibration is not None else None
        gate = GateConfig.from_file(
            position_tolerance_m=args.pos_tol,
            orientation_tolerance_rad=args.rot_tol,
            statistic=args.stat,
            rotation_metric=args.rot_metric,
            min_cosine=args.min_cosine,
            max_joint_error_deg=args.max_joint_error,
            min_step_cosine=args.min_step_cosine,
            max_abs_error=args.max_abs_error,
            mean_abs_error=args.mean_abs_error,
            allclose=args.allclose,
        )
        if args.no_gripper_check:
            gate = replace(gate, gripper_check=False)
        return replace(gate, mode=mode, calibration=calibration)


@dataclass(frozen=True)
class ComparedArtifacts:
    reference: Path
    under_test: Path
    units: str | None  # of bare .npy inputs
    accept: frozenset[str]  # the input hashes the user says may differ (INPUT_HASHES' names)


class CompareArgs(ArgGroup):
    """The two artifacts of `compare`, and which of their inputs may differ (--force, --converted-checkpoint)."""

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("reference", type=Path, help="REF artifact (.npz, or bare .npy with --units)")
        parser.add_argument("under_test", type=Path, help="DUT artifact (.npz, or bare .npy with --units)")
        parser.add_argument(
            "--units",
            choices=ARTIFACT_UNITS,
            help="units of bare .npy inputs (needed for .npy files only; default none): joint angles in deg or rad, "
            "lerobot's normalized range (with --robot-calibration), or end-effector pose actions",
        )
        accept = parser.add_mutually_exclusive_group()
        accept.add_argument(
            "--converted-checkpoint",
            action="store_true",
            help="the device under test ran a conversion of the reference's checkpoint (another precision or "
            "layout): compare although the checkpoint hashes differ, and say so in every output",
        )
        accept.add_argument(
            "--force",
            action="store_true",
            help="compare even if the checkpoint, noise or observation hashes differ; the outputs say FORCED "
            "and what differed",
        )

    def parse(self, args: argparse.Namespace, parsed: Parsed) -> ComparedArtifacts:
        accept: frozenset[str] = frozenset()
        if args.force:
            accept = frozenset(INPUT_HASHES.values())
        elif args.converted_checkpoint:
            accept = frozenset({"checkpoint"})
        return ComparedArtifacts(args.reference, args.under_test, args.units, accept)


# ---------------------------------------------------------------- outputs


class OutputArgs(ArgGroup):
    """--out/--json/--junit/--quiet -> OutputPaths. Under --demo, --out defaults to `demo_out`."""

    optional = (ModelArgs,)

    def __init__(self, demo_out: Path | None = None):
        self.demo_out = demo_out

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("outputs")
        where = f"; default {self.demo_out} under --demo, else none" if self.demo_out is not None else "; default none"
        group.add_argument(
            "--out",
            type=Path,
            metavar="DIR",
            help=f"report folder (index.html, plots, summary.json, summary.md, junit.xml{where})",
        )
        group.add_argument("--json", type=Path, metavar="FILE", help="write the JSON summary here too (default none)")
        group.add_argument(
            "--junit", type=Path, metavar="FILE", help="write JUnit XML here too, one testcase per check (default none)"
        )
        group.add_argument("--quiet", action="store_true", help="no progress output on stderr")

    def parse(self, args: argparse.Namespace, parsed: Parsed) -> OutputPaths:
        out = args.out
        if out is None and isinstance(parsed.get(ModelArgs), DemoSource):
            out = self.demo_out
        outputs = OutputPaths(out, args.json, args.junit)
        outputs.check()
        return outputs


class TraceArgs(ArgGroup):
    """--trace/--trace-on-fail/--trace-dump/--trace-tol (defaults in configs/trace.yaml) -> a TraceRequest."""

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
            help="also save every traced tensor of both sides (safetensors) under DIR (default none)",
        )
        group.add_argument(
            "--trace-tol",
            type=positive_float,
            metavar="REL",
            help="relative error ||ref-dut||/||ref|| above which a module has diverged (default 1e-2)",
        )

    def parse(self, args: argparse.Namespace, parsed: Parsed) -> TraceRequest:
        return TraceRequest(args.trace, args.trace_on_fail, args.trace_dump, args.trace_tol)


# ---------------------------------------------------------------- closed loop


class RolloutArgs(ArgGroup):
    """--env/--episodes/--seed/--n-action-steps/--max-steps/--noise (defaults in configs/rollout.yaml) -> a
    RolloutRequest."""

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        from verify_ate.verify.envs.base import rollout_config
        from verify_ate.verify.envs.factory import environment_names

        defaults = rollout_config()
        group = parser.add_argument_group("closed loop (defaults from configs/rollout.yaml)")
        group.add_argument(
            "--env",
            choices=environment_names(),
            default="demo",
            help="the environment both sides drive: demo (the demo robot's kinematic world, offline) or one of "
            "lerobot's environments (lerobot.envs; its gym package installed)",
        )
        group.add_argument(
            "--episodes", type=positive_int, default=int(defaults["episodes"]), metavar="N", help="paired episodes"
        )
        group.add_argument(
            "--seed",
            type=non_negative_int,
            default=int(defaults["seed"]),
            metavar="S",
            help="episode i resets both environments with seed S + i",
        )
        group.add_argument(
            "--n-action-steps",
            type=positive_int,
            default=int(defaults["n_action_steps"]),
            metavar="K",
            help="actions executed from each predicted chunk before the next prediction (capped at the chunk)",
        )
        group.add_argument(
            "--max-steps", type=positive_int, metavar="N", help="steps per episode (default: the environment's limit)"
        )
        group.add_argument(
            "--noise",
            type=Path,
            metavar="FILE",
            help="fixed-noise file: chunk 0 of every episode takes it, later chunks values derived from it "
            "(default: seed 0)",
        )

    def parse(self, args: argparse.Namespace, parsed: Parsed) -> Any:
        from verify_ate.verify.commands.rollout import RolloutRequest
        from verify_ate.verify.run.rollout import RolloutPlan

        plan = RolloutPlan(args.env, args.episodes, args.seed, args.n_action_steps, args.max_steps)
        return RolloutRequest(plan, args.noise)


class RolloutRobotArgs(RobotArgs):
    """--robot/--robot-units/--robot-calibration of `rollout`: the demo world's robot (whose demo it is); lerobot's
    environments bring their own robot model or none (configs/rollout.yaml), so there it is None and may not be
    named."""

    def parse(self, args: argparse.Namespace, parsed: Parsed) -> RobotModel | None:  # type: ignore[override]
        if args.env == "demo":
            return super().parse(args, parsed)
        if args.robot or args.robot_units or args.robot_calibration:
            raise InputError(
                f"--robot chooses the demo world's robot; --env {args.env} brings its own robot model or none "
                "(configs/rollout.yaml)"
            )
        return None


class ClosedLoopGateArgs(ArgGroup):
    """--divergence-bound/--divergence-stat/--max-divergence/--max-disagreement/--min-p-value (configs/
    thresholds.yaml `rollout:`) -> a ClosedLoopGate."""

    def add_to_parser(self, parser: argparse.ArgumentParser) -> None:
        from verify_ate.verify.compare.closed_loop import DIVERGENCE_STATISTICS

        group = parser.add_argument_group("closed-loop gate (defaults from configs/thresholds.yaml, rollout:)")
        group.add_argument(
            "--divergence-bound",
            type=non_negative_float,
            metavar="D",
            help="distance over which two paired rollouts have diverged, m (or the environment state's units) "
            "(default 0.03)",
        )
        group.add_argument(
            "--divergence-stat",
            choices=DIVERGENCE_STATISTICS,
            help="per-episode statistic --max-divergence compares: the final step's, the max or the mean over the "
            "episode's steps (default final)",
        )
        group.add_argument(
            "--max-divergence",
            type=non_negative_float,
            metavar="D",
            help="gate: every episode's divergence statistic at most D (default off)",
        )
        group.add_argument(
            "--max-disagreement",
            type=_fraction,
            metavar="F",
            help="gate: the share of episodes whose outcome differs between the sides at most F, 0..1 (default off)",
        )
        group.add_argument(
            "--min-p-value",
            type=_fraction,
            metavar="P",
            help="gate: fail when McNemar's exact p-value is below P, i.e. the success rates differ (default off)",
        )

    def parse(self, args: argparse.Namespace, parsed: Parsed) -> Any:
        from verify_ate.verify.compare.closed_loop import ClosedLoopGate

        try:
            return ClosedLoopGate.from_file(
                divergence_bound=args.divergence_bound,
                divergence_statistic=args.divergence_stat,
                max_divergence=args.max_divergence,
                max_disagreement=args.max_disagreement,
                min_p_value=args.min_p_value,
            )
        except ValueError as error:
            raise InputError(str(error)) from None


def _fraction(text: str) -> float:
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text}: a fraction between 0 and 1")
    return value
