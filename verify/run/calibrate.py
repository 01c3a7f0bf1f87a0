"""Measure a calibration: the reference against itself under benign changes, on the run's own inputs.

Each change keeps the model, the observation and the noise, and changes only how the arithmetic is
done: another precision (bfloat16 for a float32 reference, float32 for a bfloat16 one), another CPU
thread count, the frame inside a batch of other frames, TF32 matmuls on a CUDA float32 reference.
What each moves the robot is a floor no port can be asked to beat; configs/calibration.yaml turns the
largest into bounds (verify/compare/calibration.py).
"""

from __future__ import annotations

import contextlib
import datetime
from dataclasses import replace

import numpy as np

from verify_ate.noise import FixedNoise
from verify_ate.verify.compare.calibration import Calibration, benign_floor, calibration_from_floors, fixed_ceiling
from verify_ate.verify.compare.gate import GateConfig
from verify_ate.verify.run.sides import RunInputs, SideConfig, load_runner

BATCH_NEIGHBOURS = 3  # other frames of the episode the calibrated frame is batched with
STEPS = 2  # progress steps a calibration takes: the reference's own floors, then the other precision


def measure_calibration(
    reference: SideConfig, inputs: RunInputs, noise: FixedNoise, gate: GateConfig, progress=None, runner=None
) -> Calibration:
    """The floors of `reference` on `inputs` and `noise` (the first frame of the observations). `runner`: the
    reference's model when it is loaded already (the self-test's), else it is loaded here. Takes STEPS
    progress steps."""
    step = progress.step if progress is not None else (lambda message: None)
    frames = inputs.observations.frames[:1]
    stats = inputs.observations.stats
    changed: dict[str, np.ndarray] = {}
    step(f"calibrating: the noise floor of {reference.label}")
    loaded = load_runner(reference, inputs.checkpoint, stats) if runner is None else contextlib.nullcontext(runner)
    with loaded as runner:
        base = runner.predict(frames, noise)
        if runner.device.type == "cpu":
            with _threads(runner):
                changed["threads"] = runner.predict(frames, noise)
        neighbours = _neighbour_frames(inputs)
        if neighbours:
            changed["batch"] = runner.predict([*frames, *neighbours], noise)[:1]
        if runner.device.type == "cuda" and reference.dtype == "float32":
            with _tf32():
                changed["tf32"] = runner.predict(frames, noise)
    other_dtype = "bfloat16" if reference.dtype == "float32" else "float32"
    step(f"calibrating: {reference.label} in {other_dtype}")
    with load_runner(replace(reference, dtype=other_dtype), inputs.checkpoint, stats) as runner:
        changed[other_dtype] = runner.predict(frames, noise)
    units = inputs.robot.dataset_units
    floors = {name: benign_floor(inputs.robot, units, base, actions) for name, actions in changed.items()}
    provenance = {
        "reference": reference.label,
        "checkpoint_sha256": inputs.checkpoint_sha256,
        "observation_sha256": inputs.observations.sha256,
        "noise_sha256": noise.sha256,
        "observation": {key: inputs.observations.description.get(key) for key in ("dataset", "episode", "frames")},
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    ceiling = fixed_ceiling(gate.position_tolerance_m, gate.orientation_tolerance_rad)
    return calibration_from_floors(floors, ceiling, provenance)


@contextlib.contextmanager
def _threads(runner):
    """Another CPU thread count for the duration (1 when there are several, else 2)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1 if before > 1 else 2)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _tf32():
    import torch

    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def _neighbour_frames(inputs: RunInputs) -> list[dict]:
    """Up to BATCH_NEIGHBOURS other frames of the same episode, spread over it."""
    from verify_ate.verify.data.observation import load_frames

    description = inputs.observations.description
    length = int(description.get("episode_length") or 0)
    frame = int(description["frames"][0])
    if length < 2:
        return []
    others = sorted(
        {(frame + k * max(1, length // (BATCH_NEIGHBOURS + 1))) % length for k in range(1, BATCH_NEIGHBOURS + 1)}
        - {frame}
    )
    if not others:
        return []
    return load_frames(description["dataset"], int(description["episode"]), others).frames
