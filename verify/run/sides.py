"""One side of a comparison: one checkpoint on one device and dtype, fed a given observation and noise.

Runners produce trajectory artifacts; the comparator (verify/compare/) judges two of them. Sides
run one after the other and each releases its model before the next loads, so two models never
sit in memory together when the reference and the device under test share a host.

The checks every side makes of its inputs (action names and width) and the artifact meta every
side writes live here, once, for the one-shot form and the sweep alike.
"""

from __future__ import annotations

import datetime
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from verify_ate.kinematics import RobotModel
from verify_ate.kinematics.robot import check_recorded_range
from verify_ate.noise import FixedNoise, NoiseFileError, check_noise_shape, make_noise
from verify_ate.verify.compare.artifact import SCHEMA, TrajectoryArtifact
from verify_ate.verify.errors import InputError

if TYPE_CHECKING:  # the dataset reader needs pyarrow and the runner torch, which the model-free commands do without
    from verify_ate.verify.data.observation import ObservationSet
    from verify_ate.verify.model.runner import RunnerBase
    from verify_ate.verify.model.seeded import SeededCheckpoint


LOAD_STEPS = 1  # progress steps loading a model takes


@dataclass(frozen=True)
class SideConfig:
    """Everything one side of a comparison needs besides its inputs."""

    device: str  # spec as the user wrote it: cpu, cuda:1, npu:0
    dtype: str = "float32"
    iters: int = 5  # latency samples (0: not measured)
    warmup: int = 1
    num_inference_steps: int | None = None
    variants: tuple[str, ...] = ()  # rewrites of pi0 on this side only (verify/model/rewrites.py)
    faults: tuple[str, ...] = ()  # porting bugs injected on this side (the device under test's)

    @property
    def label(self) -> str:
        label = f"{self.device} {self.dtype}"
        if self.variants:
            label += f" +{'+'.join(self.variants)}"
        if self.faults:
            label += f" !{'!'.join(self.faults)}"
        return label


@dataclass(frozen=True)
class RunInputs:
    """What both sides share: the same checkpoint, observation bytes and noise values."""

    checkpoint: Path | SeededCheckpoint
    checkpoint_sha256: str  # hashed once per run, before any model is loaded
    observations: ObservationSet
    noise: FixedNoise | None  # None: seed 0 of the policy's own shape, made once and then shared
    noise_source: str | None  # the noise file's path, for messages
    robot: RobotModel  # (None only in a rollout's inputs, whose environment has no robot model)
    extra_meta: dict = field(default_factory=dict)


def load_runner(
    side: SideConfig,
    checkpoint: Path | SeededCheckpoint,
    dataset_stats: dict | None,
    device: str | None = None,
    progress=None,
) -> RunnerBase:
    """This side's policy (the checkpoint's type) on its device (or on `device`, a rank's own one); use it as a
    context to release it.
    `progress` shows the bytes of weights read."""
    from verify_ate.verify.model.devices import resolve_device
    from verify_ate.verify.model.runners import runner_for

    runner = runner_for(
        checkpoint,
        device=str(resolve_device(device or side.device)),
        dtype=side.dtype,
        dataset_stats=dataset_stats,
        num_inference_steps=side.num_inference_steps,
        on_bytes=progress.bytes_done if progress is not None else None,
    )
    if side.variants or side.faults:
        try:
            runner.rewrite(side.variants, side.faults)
        except BaseException:
            runner.release()
            raise
    return runner


def run_side_steps(side: SideConfig) -> int:
    """Progress steps `run_side` takes: loading, predicting, and timing when asked."""
    return LOAD_STEPS + 1 + (1 if side.iters > 0 else 0)


def run_side(side: SideConfig, inputs: RunInputs, progress=None) -> tuple[TrajectoryArtifact, FixedNoise]:
    """Load, predict, time, release. Returns the artifact and the noise it actually received."""
    step = progress.step if progress is not None else (lambda message: None)
    step(f"loading {policy_name(inputs.checkpoint)} on {side.label}")
    with load_runner(side, inputs.checkpoint, inputs.observations.stats, progress=progress) as runner:
        noise = inputs.noise or default_noise(runner.expected_noise_shape)
        check_policy_noise(runner.adapter, noise, runner.expected_noise_shape, inputs.noise_source)
        dataset_action_names(
            inputs.observations.features,
            str(inputs.observations.description["dataset"]),
            inputs.robot,
            inputs.observations.stats,
        )
        check_action_width(runner.action_dim, inputs.checkpoint, inputs.robot)
        step(f"predicting on {side.label}")
        actions = runner.predict(inputs.observations.frames, noise)
        latency = None
        if side.iters > 0:
            step(f"timing {side.iters} calls on {side.label} after {side.warmup} warm-up")
            latency = runner.measure_latency(inputs.observations.frames, noise, warmup=side.warmup, iters=side.iters)
        artifact = side_artifact(side, inputs, runner, actions, noise, latency)
    return artifact, noise


def policy_name(checkpoint: Path | SeededCheckpoint) -> str:
    """The checkpoint's lerobot policy type (config.json `type`), for messages."""
    from verify_ate.verify.model.policies import checkpoint_adapter

    return checkpoint_adapter(checkpoint).name


def check_policy_noise(adapter, noise: FixedNoise, expected: tuple[int, ...], source: str | None) -> None:
    """The noise must fit the policy; a policy that draws nothing at inference refuses a noise file with values."""
    if not adapter.takes_noise and noise.values.size:
        raise NoiseFileError(
            f"{source or 'noise'}: policy {adapter.name} is deterministic at inference and takes no noise "
            f"({adapter.randomness.removeprefix('none: ').split(';')[0]}); drop --noise"
        )
    check_noise_shape(noise.shape, expected, source)


def default_noise(shape: tuple[int, ...]) -> FixedNoise:
    """The noise of a run given no noise file: seed 0 of the policy's shape, made once and then shared."""
    return make_noise(0, shape, created_by="verify-ate (default seed 0)")


def side_artifact(
    side: SideConfig, inputs: RunInputs, runner, actions, noise: FixedNoise, latency: dict | None = None
) -> TrajectoryArtifact:
    """One side's predicted actions [N, T, J] on `inputs` with `noise`, and the meta every side writes."""
    from verify_ate.verify.model.devices import device_description

    observations = inputs.observations
    meta = artifact_meta(
        side,
        inputs.robot,
        runner_facts(runner, device_description(runner.device)),
        checkpoint=inputs.checkpoint,
        checkpoint_sha256=inputs.checkpoint_sha256,
        noise_sha256=noise.sha256,
        noise_description={"seed": noise.seed, "generator": noise.generator, "shape": list(noise.shape)},
        observation_sha256=observations.sha256,
        observation_description=observations.description,
        latency=latency,
        extra=inputs.extra_meta,
        joint_names=dataset_action_names(observations.features, str(observations.description["dataset"]), inputs.robot),
    )
    return TrajectoryArtifact(actions, meta)


def runner_facts(runner, device_info: dict) -> dict:
    """What the provenance says about a loaded model: the device, its step count and processors, and
    what loading and running it cost (seconds, parameters and bytes, peak host and device memory so far)."""
    return {
        "device_info": device_info,
        "policy": runner.adapter.name,
        "num_inference_steps": runner.num_inference_steps,
        "processors": runner.processor_source,
        "load": {**runner.load_report.as_dict(), **runner.memory.read()},
    }


def artifact_meta(
    side: SideConfig,
    robot: RobotModel,
    facts: dict,
    *,
    checkpoint: Path | SeededCheckpoint,
    checkpoint_sha256: str,
    noise_sha256: str,
    noise_description: dict,
    observation_sha256: str,
    observation_description: dict,
    latency: dict | None,
    extra: dict,
    joint_names: list[str] | None = None,
) -> dict:
    """The one builder of a trajectory artifact's `meta` (the keys the file contract requires and more)."""
    from verify_ate.verify.model.devices import runtime_versions

    return {
        "schema": SCHEMA,
        "robot": robot.name,
        "joint_names": list(joint_names or robot.dataset_joint_names),  # as the dataset gives them
        "units": robot.dataset_units,
        "robot_model": robot.describe(),
        **({"robot_calibration": robot.calibration} if robot.calibration else {}),
        "device": side.device,
        "device_info": facts["device_info"],
        "dtype": side.dtype,
        "noise_sha256": noise_sha256,
        "noise": noise_description,
        "observation_sha256": observation_sha256,
        "observation": observation_description,
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": checkpoint_sha256,
        "policy": facts.get("policy", "pi0"),
        "num_inference_steps": facts["num_inference_steps"],
        "variants": list(side.variants),
        "faults": list(side.faults),
        "processors": facts["processors"],
        "load": facts["load"],
        "versions": runtime_versions(),
        "latency_ms": latency,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["verify-ate", *sys.argv[1:]]),
        **extra,
    }


def dataset_action_names(features: dict, dataset: str, robot: RobotModel, stats: dict | None = None) -> list[str]:
    """The dataset's action names as it gives them (info.json `features`, a list or nested under
    "motors"), which must be the robot config's joints in order, possibly behind an arm prefix
    (v2-era Koch recordings say main_shoulder_pan...). The robot's own names when the dataset has none.
    With the dataset's `stats`, the recorded action range must be angles in the robot's units."""
    if robot.dataset_units == "normalized" and not robot.calibration:
        raise InputError(
            f"{dataset}: robot {robot.name}'s joints are recorded in lerobot's normalised range (-100..100); give "
            "the arm's calibration JSON with --robot-calibration FILE (or --robot-units deg if it was recorded "
            "with use_degrees=True)"
        )
    action_stats = (stats or {}).get("action") or {}
    if "min" in action_stats and "max" in action_stats:
        low, high = (np.asarray(action_stats[key], dtype=np.float64).ravel() for key in ("min", "max"))
        if low.shape == high.shape == (len(robot.dataset_joint_names),):
            check_recorded_range(
                robot, low, high, robot.dataset_units, f"{dataset} (action min/max in meta/stats.json)"
            )
    names = (features.get("action") or {}).get("names")
    if isinstance(names, dict):  # some lerobot datasets nest names under "motors"
        names = next(iter(names.values()), None)
    if not names:
        return list(robot.dataset_joint_names)
    if robot.dataset_name_prefix(names) is None:
        raise InputError(
            f"{Path(dataset) / 'meta' / 'info.json'}: action names {list(names)} are not robot "
            f"{robot.name}'s {list(robot.dataset_joint_names)}, even behind an arm prefix (pass --robot)"
        )
    return [str(name) for name in names]


def check_cameras(features: dict, dataset: str, checkpoint: Path | SeededCheckpoint) -> None:
    """Every camera the checkpoint's policy reads must be in the dataset (info.json `features`); checked
    from the config, before any model is loaded."""
    from verify_ate.verify.model.runner import policy_config_of

    cameras = list(policy_config_of(checkpoint).image_features)
    missing = [camera for camera in cameras if camera not in features]
    if missing:
        have = sorted(key for key, feature in features.items() if feature.get("dtype") in ("video", "image"))
        raise InputError(
            f"{Path(dataset) / 'meta' / 'info.json'}: no camera {missing[0]!r}, which the checkpoint "
            f"{checkpoint} expects (the dataset has {', '.join(have) or 'no camera'})"
        )


def check_action_width(action_dim: int, checkpoint: Path, robot: RobotModel) -> None:
    """The policy must output one value per robot joint."""
    if action_dim != len(robot.dataset_joint_names):
        raise InputError(
            f"{checkpoint}: the policy outputs {action_dim} action values, robot {robot.name} has "
            f"{len(robot.dataset_joint_names)} joints"
        )
