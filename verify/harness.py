"""The harness: one side = one checkpoint on one device and dtype, fed a given observation and noise.

Runners produce trajectory artifacts; the comparator (verify/compare.py) judges two of them. Sides
run one after the other and each releases its model before the next loads, so two models never
sit in memory together when the reference and the device under test share a host.
"""
from __future__ import annotations

import datetime
import sys
from dataclasses import dataclass, field
from pathlib import Path

from kinematics import RobotModel
from noise import FixedNoise, make_noise
from verify.artifact import SCHEMA, TrajectoryArtifact
from verify.errors import InputError
from verify.observation import ObservationSet


@dataclass(frozen=True)
class SideConfig:
    """Everything one side of a comparison needs."""

    device: str  # spec as the user wrote it: cpu, cuda:1, npu:0
    dtype: str = "float32"
    iters: int = 5  # latency samples (0: not measured)
    warmup: int = 1
    num_inference_steps: int | None = None

    @property
    def label(self) -> str:
        return f"{self.device} {self.dtype}"


@dataclass(frozen=True)
class RunInputs:
    """What both sides share: the same checkpoint, observation bytes and noise values."""

    checkpoint: Path
    observations: ObservationSet
    noise: FixedNoise | None  # None: seed 0 of the policy's own shape, made once and then shared
    noise_source: str | None  # the noise file's path, for messages
    robot: RobotModel
    extra_meta: dict = field(default_factory=dict)


def run_side(side: SideConfig, inputs: RunInputs, progress=None) -> tuple[TrajectoryArtifact, FixedNoise]:
    """Load, predict, time, release. Returns the artifact and the noise it actually received."""
    from verify.devices import device_description, resolve_device
    from verify.pi0_runner import Pi0Runner, checkpoint_sha256, runtime_versions

    device = resolve_device(side.device)
    step = progress.step if progress is not None else (lambda message: None)
    step(f"loading pi0 on {side.label}")
    with Pi0Runner(inputs.checkpoint, device=str(device), dtype=side.dtype, dataset_stats=inputs.observations.stats,
                   num_inference_steps=side.num_inference_steps) as runner:
        noise = inputs.noise or make_noise(0, runner.expected_noise_shape, created_by="verify-ate (default seed 0)")
        _check_noise_fits(noise, runner.expected_noise_shape, inputs.noise_source)
        check_action_names(inputs.observations, inputs.robot)
        _check_action_width(inputs, runner)
        step(f"predicting on {side.label}")
        actions = runner.predict(inputs.observations.frames, noise)
        latency = None
        if side.iters > 0:
            step(f"timing {side.iters} calls on {side.label} after {side.warmup} warm-up")
            latency = runner.measure_latency(inputs.observations.frames, noise, warmup=side.warmup, iters=side.iters)
        meta = {
            "schema": SCHEMA,
            "robot": inputs.robot.name,
            "joint_names": list(inputs.robot.dataset_joint_names),
            "units": inputs.robot.dataset_units,
            "device": side.device,
            "device_info": device_description(device),
            "dtype": side.dtype,
            "noise_sha256": noise.sha256,
            "noise": {"seed": noise.seed, "generator": noise.generator, "shape": list(noise.shape)},
            "observation_sha256": inputs.observations.sha256,
            "observation": inputs.observations.description,
            "checkpoint": str(inputs.checkpoint),
            "checkpoint_sha256": checkpoint_sha256(inputs.checkpoint),
            "num_inference_steps": int(runner.config.num_inference_steps),
            "processors": runner.processor_source,
            "versions": runtime_versions(),
            "latency_ms": latency,
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["verify-ate", *sys.argv[1:]]),
            **inputs.extra_meta,
        }
    return TrajectoryArtifact(actions, meta), noise


def _check_noise_fits(noise: FixedNoise, expected: tuple[int, ...], source: str | None) -> None:
    if noise.shape != tuple(expected):
        raise InputError(
            f"{source or 'noise'}: noise shape {list(noise.shape)} does not fit the policy, which needs {list(expected)} "
            f"(make one with: verify-ate noise make --seed 0 --shape {','.join(map(str, expected))} --out FILE)"
        )


def check_action_names(observations: ObservationSet, robot: RobotModel) -> None:
    """The dataset's action names must be the robot config's joints, in order."""
    names = (observations.features.get("action") or {}).get("names")
    if isinstance(names, dict):  # some lerobot datasets nest names under "motors"
        names = next(iter(names.values()), None)
    if names and list(names) != list(robot.dataset_joint_names):
        raise InputError(
            f"{observations.description['dataset']}: action names {list(names)} are not robot "
            f"{robot.name}'s {list(robot.dataset_joint_names)} (pass --robot)"
        )


def _check_action_width(inputs: RunInputs, runner) -> None:
    if runner.action_dim != len(inputs.robot.dataset_joint_names):
        raise InputError(
            f"{inputs.checkpoint}: the policy outputs {runner.action_dim} action values, robot {inputs.robot.name} has "
            f"{len(inputs.robot.dataset_joint_names)} joints"
        )
