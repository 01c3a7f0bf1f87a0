"""Running a sweep (planned in verify/run/plan.py) through both devices, with per-frame ATE.

Each batch of the plan is ONE forward pass of pi0. The reference side runs all its batches and releases its model,
then the device under test runs the same batches: the two models never sit in memory together, and
between the passes only the action arrays are kept. Frames are decoded per batch (never the whole
sweep in memory) on both passes, and their hashes must agree.

The pooled statistics are the comparator's own (verify/compare/) over every step of every unit,
so `n_steps` counts all of them. Per unit (one action chunk) the sweep also reports position and
orientation rmse/max and a pass flag, and can gate on a per-frame worst case (`frame_stat`):

  per-frame gate (frame_stat = S): for every unit, statistic S of its own T per-step errors must be
  within the same bound as the pooled gate (position <= pos-tol, orientation <= rot-tol); the gate
  check's value is the worst unit's S. A unit's `pass` column uses S when given, else the pooled
  statistic, and is false for non-finite actions.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from verify_ate.kinematics import RobotModel
from verify_ate.verify.compare.artifact import TrajectoryArtifact
from verify_ate.verify.compare.gate import GateCheck, GateConfig, GateResult
from verify_ate.verify.compare.metrics import SERIES_UNITS, statistic
from verify_ate.verify.errors import InputError
from verify_ate.verify.run.plan import NoiseSource, SweepPlan, SweepUnit
from verify_ate.verify.run.sides import (
    LOAD_STEPS,
    SideConfig,
    artifact_meta,
    check_action_width,
    load_runner,
    policy_name,
    runner_facts,
)
from verify_ate.verify.run.trace.config import TraceRequest
from verify_ate.verify.run.trace.result import TraceResult

if TYPE_CHECKING:
    from verify_ate.verify.model.seeded import SeededCheckpoint

ROW_COLUMNS = (
    "episode",
    "frame",
    "seed",
    "position_rmse",
    "position_max",
    "orientation_rmse",
    "orientation_max",
    "finite",
    "pass",
)


# ---------------------------------------------------------------- frames


class FrameLoader:
    """Decodes the frames of one batch at a time (lerobot LeRobotDataset, PyAV), with their hashes."""

    def __init__(self, dataset: Path):
        self.dataset = dataset
        self.seconds = 0.0

    def load(self, units: list[SweepUnit]) -> tuple[list[dict], list[str]]:
        from verify_ate.verify.data.observation import load_frames, observation_sha256

        started = time.perf_counter()
        by_episode: dict[int, list[int]] = {}
        for unit in units:
            by_episode.setdefault(unit.episode, [])
            if unit.frame not in by_episode[unit.episode]:
                by_episode[unit.episode].append(unit.frame)
        items, hashes = {}, {}
        for episode, frames in by_episode.items():
            loaded = load_frames(self.dataset, episode, sorted(frames))
            for frame, item in zip(sorted(frames), loaded.frames, strict=True):
                items[(episode, frame)] = item
                hashes[(episode, frame)] = observation_sha256([item])
        self.seconds += time.perf_counter() - started
        keys = [(unit.episode, unit.frame) for unit in units]
        return [items[key] for key in keys], [hashes[key] for key in keys]


# ---------------------------------------------------------------- one side


@dataclass
class SidePass:
    """What one side's pass over its batches leaves behind: action arrays and a few facts."""

    actions: dict[int, np.ndarray]  # unit index -> [T, J] float32
    observation_hashes: dict[int, str]
    predict_seconds: float
    load_seconds: float
    noise_shape: tuple[int, ...]
    facts: dict  # device_info, num_inference_steps, processors
    latency: dict | None = None


def side_pass_steps(side: SideConfig, n_batches: int, measure_latency: bool) -> int:
    """Progress steps `run_side_pass` takes: loading, one per batch, and timing when asked."""
    return LOAD_STEPS + n_batches + (1 if measure_latency and side.iters > 0 else 0)


def run_side_pass(
    side: SideConfig,
    checkpoint: Path,
    plan: SweepPlan,
    batch_ids: list[int],
    noise: NoiseSource,
    dataset_stats,
    robot: RobotModel,
    progress=None,
    device: str | None = None,
    measure_latency: bool = False,
) -> SidePass:
    """Load this side's pi0, run the given batches (one forward pass each), release it. Takes
    `side_pass_steps(side, len(batch_ids), measure_latency)` progress steps."""
    from verify_ate.verify.model.devices import device_description, synchronize

    step = progress.step if progress is not None else (lambda message: None)
    loader = FrameLoader(plan.dataset)
    actions, hashes, predict_seconds, latency = {}, {}, 0.0, None
    step(f"loading {policy_name(checkpoint)} on {side.label}")
    with load_runner(side, checkpoint, dataset_stats, device, progress) as runner:
        torch_device = runner.device
        shape = runner.expected_noise_shape
        check_action_width(runner.action_dim, checkpoint, robot)
        noise.rows([plan.units[0]], shape)  # a fixed noise file that does not fit fails before any batch runs
        batches = plan.batches
        for count, batch_id in enumerate(batch_ids):
            units = [plan.units[i] for i in batches[batch_id]]
            step(f"{side.label}: batch {count + 1}/{len(batch_ids)} ({len(units)} frames)")
            frames, frame_hashes = loader.load(units)
            rows = noise.rows(units, shape)
            synchronize(torch_device)
            started = time.perf_counter()
            predicted = runner.predict(frames, rows)
            synchronize(torch_device)
            predict_seconds += time.perf_counter() - started
            for unit, chunk, digest in zip(units, predicted, frame_hashes, strict=True):
                actions[unit.index] = chunk
                hashes[unit.index] = digest
            if measure_latency and count == 0 and side.iters > 0:
                # One inference (one frame), as the one-shot form times it; the passes time the batches.
                step(f"timing {side.iters} calls of one inference on {side.label}")
                latency = runner.measure_latency(frames[:1], rows[:1], warmup=side.warmup, iters=side.iters)
        facts = runner_facts(runner, device_description(torch_device))
    return SidePass(actions, hashes, predict_seconds, loader.seconds, tuple(shape), facts, latency)


# ---------------------------------------------------------------- per-frame statistics


@dataclass
class FrameTable:
    """One row per unit: the CSV/Parquet columns, plus the ranking statistic."""

    episode: np.ndarray
    frame: np.ndarray
    seed: list  # int or None
    position_rmse: np.ndarray
    position_max: np.ndarray
    orientation_rmse: np.ndarray
    orientation_max: np.ndarray
    finite: np.ndarray
    passed: np.ndarray
    statistic: str  # the statistic `passed` and the ranking use
    position_stat: np.ndarray
    orientation_stat: np.ndarray
    score: np.ndarray  # max of stat / bound over position and orientation (inf when non-finite)

    def rows(self) -> list[dict]:
        return [
            {
                "episode": int(self.episode[i]),
                "frame": int(self.frame[i]),
                "seed": self.seed[i],
                "position_rmse": float(self.position_rmse[i]),
                "position_max": float(self.position_max[i]),
                "orientation_rmse": float(self.orientation_rmse[i]),
                "orientation_max": float(self.orientation_max[i]),
                "finite": bool(self.finite[i]),
                "pass": bool(self.passed[i]),
            }
            for i in range(len(self.episode))
        ]

    def worst(self, count: int) -> list[int]:
        """Unit indices of the `count` worst units (largest share of a bound first; ties by index)."""
        order = np.lexsort((np.arange(len(self.score)), -self.score))
        return [int(i) for i in order[:count]]


def frame_table(
    plan: SweepPlan,
    position_errors: np.ndarray,
    orientation_errors: np.ndarray,
    finite_units: np.ndarray,
    config: GateConfig,
    frame_stat: str | None,
) -> FrameTable:
    unit_statistic = frame_stat or config.statistic
    position_stat = statistic(position_errors, unit_statistic, axis=1)
    orientation_stat = statistic(orientation_errors, unit_statistic, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = np.maximum(
            _share(position_stat, config.position_tolerance_m),
            _share(orientation_stat, config.orientation_tolerance_rad),
        )
    score = np.where(np.isnan(shares) | ~finite_units, np.inf, shares)
    passed = (
        finite_units
        & (position_stat <= config.position_tolerance_m)
        & (orientation_stat <= config.orientation_tolerance_rad)
    )
    return FrameTable(
        episode=np.array([u.episode for u in plan.units]),
        frame=np.array([u.frame for u in plan.units]),
        seed=[u.seed for u in plan.units],
        position_rmse=statistic(position_errors, "rmse", axis=1),
        position_max=statistic(position_errors, "max", axis=1),
        orientation_rmse=statistic(orientation_errors, "rmse", axis=1),
        orientation_max=statistic(orientation_errors, "max", axis=1),
        finite=finite_units,
        passed=passed,
        statistic=unit_statistic,
        position_stat=position_stat,
        orientation_stat=orientation_stat,
        score=score,
    )


def _share(values: np.ndarray, bound: float) -> np.ndarray:
    if bound > 0:
        return values / bound
    return np.where(values > 0, np.inf, 0.0)


def unit_name(plan: SweepPlan, index: int) -> str:
    unit = plan.units[index]
    seed = "" if unit.seed is None else f" seed {unit.seed}"
    return f"episode {unit.episode} frame {unit.frame}{seed}"


def frame_gate_checks(plan: SweepPlan, table: FrameTable, config: GateConfig) -> tuple[GateCheck, GateCheck]:
    """The per-frame worst-case checks: every unit's statistic within the bound."""
    checks = []
    for name, values, bound in (
        ("position", table.position_stat, config.position_tolerance_m),
        ("orientation", table.orientation_stat, config.orientation_tolerance_rad),
    ):
        unit_symbol = SERIES_UNITS[name]
        bad = ~(values <= bound)  # NaN counts as over
        worst_index = int(np.argmax(np.where(np.isnan(values), np.inf, values)))
        worst = float(values[worst_index])
        passed = not bool(bad.any())
        value_text = "non-finite" if not math.isfinite(worst) else f"{worst:.6g} {unit_symbol}"
        message = (
            f"per-frame {name} {table.statistic}: worst {value_text} ({unit_name(plan, worst_index)}) "
            f"{'within' if passed else 'OVER'} bound {bound:g} {unit_symbol}; {int(bad.sum())} of "
            f"{len(values)} chunks over"
        )
        checks.append(
            GateCheck(
                f"per-frame {name}",
                passed,
                worst,
                bound,
                unit_symbol,
                table.statistic,
                message,
                kind=name,
                per_frame=True,
            )
        )
    return tuple(checks)


# ---------------------------------------------------------------- the whole sweep


@dataclass
class SweepRequest:
    checkpoint: Path | SeededCheckpoint
    plan: SweepPlan
    checkpoint_sha256: str
    sides: tuple[SideConfig, SideConfig]  # (reference, under test)
    noise: NoiseSource
    robot: RobotModel
    gate: GateConfig
    dataset_stats: dict | None
    dataset_info: dict  # dataset, repo_id, robot_type, fps, task
    frame_stat: str | None = None
    extra_meta: dict = field(default_factory=dict)
    joint_names: list[str] | None = None  # the dataset's action names as it gives them


@dataclass
class SweepOutcome:
    """Rank 0's view after the sweep: the comparison (pooled + per-frame gate) and the per-frame table."""

    result: object  # verify_ate.verify.compare.ComparisonResult, gate extended with the per-frame checks
    table: FrameTable
    plan: SweepPlan
    timing: dict
    world_size: int
    batch_owner: list[int]  # rank of each batch

    @property
    def passed(self) -> bool:
        return self.result.passed

    def summary(self, worst_count: int = 5) -> dict:
        summary = self.result.summary()
        worst, rows = self.table.worst(worst_count), self.table.rows()
        summary["sweep"] = {
            **self.plan.description(),
            "dataset": str(self.plan.dataset),
            "frame_stat": self.table.statistic if any(c.per_frame for c in self.result.gate.checks) else None,
            "unit_statistic": self.table.statistic,
            "chunks_passed": int(np.sum(self.table.passed)),
            "chunks_failed": int(np.sum(~self.table.passed)),
            # one chunk per frame and seed: the names of one release ago said frames (CHANGELOG)
            "frames_passed": int(np.sum(self.table.passed)),
            "frames_failed": int(np.sum(~self.table.passed)),
            "worst": [{"unit": i, **rows[i]} for i in worst],
            "world_size": self.world_size,
            "timing": self.timing,
            "rows_csv": "frames.csv",
            "rows_parquet": "frames.parquet",
        }
        return summary


def _side_meta(
    side: SideConfig, request: SweepRequest, side_pass: SidePass, observation_sha: str, ranks: list[str]
) -> dict:
    plan, shape = request.plan, side_pass.noise_shape
    meta = artifact_meta(
        side,
        request.robot,
        side_pass.facts,
        checkpoint=request.checkpoint,
        checkpoint_sha256=request.checkpoint_sha256,
        noise_sha256=request.noise.sha256(shape),
        noise_description=request.noise.description(shape),
        observation_sha256=observation_sha,
        observation_description={
            **request.dataset_info,
            "episodes": list(plan.episodes),
            "frames": str(plan.frame_range),
            "n_frames": plan.n_frames,
        },
        latency=side_pass.latency,
        extra=request.extra_meta,
        joint_names=request.joint_names,
    )
    return {**meta, "ranks": ranks}


def _combined_observation_sha(plan: SweepPlan, digests: np.ndarray) -> str:
    """sha256 over (episode, frame, the frame's observation sha256) of every unit, in unit order."""
    digest = hashlib.sha256()
    for unit, row in zip(plan.units, digests, strict=True):
        digest.update(f"{unit.episode}:{unit.frame}:".encode() + bytes(row.astype(np.uint8)))
    return digest.hexdigest()


def run_sweep(request: SweepRequest, group, progress=None) -> SweepOutcome | None:
    """Both passes on this rank's batches, the gather, and (rank 0) the judgement. Other ranks get None."""
    passes = run_passes(request, group, progress)
    gathered = gather(request, group, passes)
    if gathered is None:
        return None
    if progress is not None:
        progress.step("comparing")
    return judge(request, gathered, passes, group.world_size)


def run_passes(request: SweepRequest, group, progress=None) -> tuple[SidePass, SidePass]:
    """The reference's pass, then the device under test's, over this rank's batches; a failure on any rank is
    agreed on by all, and so is a frame that decoded differently on the two passes. Takes
    `side_pass_steps` progress steps per side."""
    from verify_ate.verify.run.distributed import batches_of_rank, rank_device

    plan = request.plan
    my_batches = batches_of_rank(len(plan.batches), group.rank, group.world_size)
    passes = []
    for side in request.sides:
        side_pass, error = None, None
        try:
            side_pass = run_side_pass(
                side,
                request.checkpoint,
                plan,
                my_batches,
                request.noise,
                request.dataset_stats,
                request.robot,
                progress,
                device=rank_device(side.device, group.local_rank, group.world_size),
                measure_latency=group.is_main,
            )
        except Exception as caught:  # every rank must learn of it before anyone moves on
            error = caught
        group.agree(error)
        passes.append(side_pass)
        group.barrier()  # no rank loads the next side's model while another still holds this one
    reference, under_test = passes
    mismatch = [u for u in reference.actions if reference.observation_hashes[u] != under_test.observation_hashes[u]]
    error = None
    if mismatch:
        error = InputError(f"{plan.dataset}: {unit_name(plan, mismatch[0])} decoded differently on the two passes")
    group.agree(error)
    return reference, under_test


@dataclass
class Gathered:
    """Rank 0's view of every rank's results, in unit order."""

    reference_actions: np.ndarray  # [N, T, J]
    under_test_actions: np.ndarray
    digests: np.ndarray  # [N, 32] uint8: each unit's observation sha256
    seconds: np.ndarray  # [ranks, 5]: ref predict, ref decode, dut predict, dut decode, units
    rank_devices: list[list[str]]  # per rank: [reference device, device under test]
    batch_owner: list[int]  # rank of each batch


def gather(request: SweepRequest, group, passes: tuple[SidePass, SidePass]) -> Gathered | None:
    """Every rank's actions, observation hashes, timings and devices, collected on rank 0 (None elsewhere)."""
    from verify_ate.verify.run.distributed import batch_owners, rank_device

    plan = request.plan
    reference, under_test = passes
    owner = batch_owners(len(plan.batches), group.world_size)
    units_of_rank = [
        [u for b, batch in enumerate(plan.batches) if owner[b] == rank for u in batch]
        for rank in range(group.world_size)
    ]
    shape = next(iter(reference.actions.values())).shape if reference.actions else (0, 0)
    shape = tuple(int(v) for v in group.gather_control(np.array(shape, dtype=np.int64)).max(axis=0))
    ref_actions = group.gather_rows(reference.actions, units_of_rank, shape, np.float32)
    dut_actions = group.gather_rows(under_test.actions, units_of_rank, shape, np.float32)
    digests = {u: np.frombuffer(bytes.fromhex(h), dtype=np.uint8) for u, h in reference.observation_hashes.items()}
    all_digests = group.gather_rows(digests, units_of_rank, (32,), np.uint8, control=True)
    seconds = group.gather_control(
        np.array(
            [
                reference.predict_seconds,
                reference.load_seconds,
                under_test.predict_seconds,
                under_test.load_seconds,
                len(reference.actions),
            ],
            dtype=np.float64,
        )
    )
    mine = "|".join(rank_device(side.device, group.local_rank, group.world_size) for side in request.sides)
    devices = group.gather_control(np.frombuffer(mine.encode().ljust(64, b"\0")[:64], dtype=np.uint8))
    if not group.is_main:
        return None
    rank_devices = [bytes(row).rstrip(b"\0").decode().split("|") for row in devices]
    return Gathered(ref_actions, dut_actions, all_digests, seconds, rank_devices, owner)


def judge(
    request: SweepRequest, gathered: Gathered, passes: tuple[SidePass, SidePass], world_size: int
) -> SweepOutcome:
    """Both sides' artifacts over every unit, compared: the pooled gate, the per-frame table and its checks."""
    from verify_ate.verify.compare.comparator import compare

    plan = request.plan
    observation_sha = _combined_observation_sha(plan, gathered.digests)
    timing = _timing(gathered.seconds, len(plan.units), len(plan.batches))
    artifacts = []
    for index, (side, side_pass, actions) in enumerate(
        zip(request.sides, passes, (gathered.reference_actions, gathered.under_test_actions), strict=True)
    ):
        devices = [devices_of_rank[index] for devices_of_rank in gathered.rank_devices]
        meta = _side_meta(side, request, side_pass, observation_sha, devices)
        meta["throughput"] = timing["ref" if index == 0 else "dut"]
        artifacts.append(TrajectoryArtifact(actions, meta))
    result = compare(artifacts[0], artifacts[1], request.robot, request.gate)
    finite_units = np.all(np.isfinite(gathered.reference_actions), axis=(1, 2)) & np.all(
        np.isfinite(gathered.under_test_actions), axis=(1, 2)
    )
    # The table's pass column, its count and the worst frames follow the gate that decides the exit code.
    table = frame_table(
        plan,
        result.position.errors,
        result.gated_orientation.errors,
        finite_units,
        request.gate.deciding(),
        request.frame_stat,
    )
    if request.frame_stat is not None:
        result = replace(result, gate=GateResult(result.gate.checks + frame_gate_checks(plan, table, request.gate)))
        calibrated = request.gate.calibrated()
        if result.calibrated_gate is not None and calibrated is not None:
            checks = result.calibrated_gate.checks + frame_gate_checks(plan, table, calibrated)
            result = replace(result, calibrated_gate=GateResult(checks))
    return SweepOutcome(result, table, plan, timing, world_size, gathered.batch_owner)


def _timing(seconds: np.ndarray, n_units: int, n_batches: int) -> dict:
    """Throughput per side: chunks / the slowest rank's model time (ranks run concurrently), and the mean
    model time of one batch (one forward pass of up to batch-size frames, the first one's warm-up included)."""
    timing = {}
    for name, column in (("ref", 0), ("dut", 2)):
        slowest = float(np.max(seconds[:, column]))
        total = float(np.sum(seconds[:, column]))
        timing[name] = {
            "predict_seconds": slowest,
            "decode_seconds": float(np.max(seconds[:, column + 1])),
            "chunks_per_second": n_units / slowest if slowest > 0 else None,
            "frames_per_second": n_units / slowest if slowest > 0 else None,  # the old name (CHANGELOG)
            "batch_mean_ms": 1e3 * total / n_batches if n_batches else None,
            "per_rank_predict_seconds": [float(v) for v in seconds[:, column]],
        }
    return timing


def trace_worst_unit(request: SweepRequest, outcome: SweepOutcome, trace: TraceRequest, progress=None) -> TraceResult:
    """Trace the worst unit, inside the very batch the sweep ran it in (same frames, same noise rows)."""
    from verify_ate.verify.model.runner import noise_shape_of
    from verify_ate.verify.run.trace.divergence import trace_divergence

    plan = request.plan
    worst = outcome.table.worst(1)[0]
    batch = next(b for b in plan.batches if worst in b)
    units = [plan.units[i] for i in batch]
    frames, _ = FrameLoader(plan.dataset).load(units)
    steps = request.sides[0].num_inference_steps
    noise_rows = request.noise.rows(units, noise_shape_of(request.checkpoint, steps))
    return trace_divergence(
        request.checkpoint,
        frames,
        noise_rows,
        batch.index(worst),
        request.sides,
        request.dataset_stats,
        trace.config(),
        dump_dir=trace.dump_dir,
        progress=progress,
        compared_actions=(outcome.result.reference.actions[worst], outcome.result.under_test.actions[worst]),
        unit={
            "unit": worst,
            "name": unit_name(plan, worst),
            "why": "worst frame of the sweep",
            "batch_size": len(units),
        },
    )
