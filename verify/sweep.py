"""Sweeps: many dataset frames x noise draws through both devices, batched, with per-frame ATE.

A sweep is a list of units (episode, frame, noise seed), ordered episode, then frame, then seed,
cut into batches of `batch_size` consecutive units; each batch is ONE forward pass of pi0 (frames
stacked, noise row i for unit i). The reference side runs all its batches and releases its model,
then the device under test runs the same batches: the two models never sit in memory together, and
between the passes only the action arrays are kept. Frames are decoded per batch (never the whole
sweep in memory) on both passes, and their hashes must agree.

The pooled statistics are the comparator's own (verify/compare.py) over every step of every unit,
so `n_steps` counts all of them. Per unit (one action chunk) the sweep also reports position and
orientation rmse/max and a pass flag, and can gate on a per-frame worst case (`frame_stat`):

  per-frame gate (frame_stat = S): for every unit, statistic S of its own T per-step errors must be
  within the same bound as the pooled gate (position <= pos-tol, orientation <= rot-tol); the gate
  check's value is the worst unit's S. A unit's `pass` column uses S when given, else the pooled
  statistic, and is false for non-finite actions.
"""
from __future__ import annotations

import datetime
import hashlib
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from kinematics import RobotModel
from noise import FixedNoise, make_noise
from verify.artifact import SCHEMA, TrajectoryArtifact
from verify.errors import InputError
from verify.gate import GateCheck, GateConfig, GateResult

ROW_COLUMNS = ("episode", "frame", "seed", "position_rmse", "position_max", "orientation_rmse", "orientation_max", "finite", "pass")


# ---------------------------------------------------------------- what to sweep


def parse_index_list(text: str, what: str) -> list[int]:
    """`0,3,5-9` -> [0, 3, 5, 6, 7, 8, 9] (order kept, duplicates dropped)."""
    values: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            raise InputError(f"{what} {text!r}: empty item (use e.g. 0,3,5-9)")
        try:
            if "-" in part[1:]:
                low, high = (int(p) for p in part.split("-", 1))
                if high < low:
                    raise InputError(f"{what} {text!r}: range {part} runs backwards")
                values.extend(range(low, high + 1))
            else:
                values.append(int(part))
        except ValueError:
            raise InputError(f"{what} {text!r}: {part!r} is not an integer or a range like 5-9") from None
    if any(v < 0 for v in values):
        raise InputError(f"{what} {text!r}: values must be >= 0")
    return list(dict.fromkeys(values))


@dataclass(frozen=True)
class FrameRange:
    """START:STOP[:STEP] within each episode; STOP None = to the episode's end."""

    start: int = 0
    stop: int | None = None
    step: int = 1

    @classmethod
    def parse(cls, text: str) -> "FrameRange":
        parts = str(text).split(":")
        if len(parts) not in (2, 3):
            raise InputError(f"--frames {text!r}: expected START:STOP or START:STOP:STEP (e.g. 0:50:5, 10: for 10 to the end)")
        try:
            start = int(parts[0]) if parts[0].strip() else 0
            stop = int(parts[1]) if parts[1].strip() else None
            step = int(parts[2]) if len(parts) == 3 and parts[2].strip() else 1
        except ValueError:
            raise InputError(f"--frames {text!r}: START, STOP and STEP must be integers") from None
        if start < 0 or (stop is not None and stop <= start) or step < 1:
            raise InputError(f"--frames {text!r}: need 0 <= START < STOP and STEP >= 1")
        return cls(start, stop, step)

    def __str__(self) -> str:
        return f"{self.start}:{'' if self.stop is None else self.stop}:{self.step}"

    def within(self, length: int) -> tuple[list[int], bool]:
        """The frames of an episode of `length` frames, and whether STOP had to be clipped to it."""
        stop = length if self.stop is None else min(self.stop, length)
        return list(range(self.start, stop, self.step)), self.stop is not None and self.stop > length


@dataclass(frozen=True)
class SweepUnit:
    index: int
    episode: int
    frame: int
    seed: int | None  # None: the one fixed noise file


@dataclass(frozen=True)
class SweepPlan:
    dataset: Path
    units: tuple[SweepUnit, ...]
    batch_size: int
    episodes: tuple[int, ...]
    frame_range: FrameRange
    seeds: tuple[int, ...] | None
    frames_per_episode: dict  # episode -> list of frames
    notes: tuple[str, ...] = ()

    @property
    def batches(self) -> list[list[int]]:
        indices = [unit.index for unit in self.units]
        return [indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size)]

    @property
    def n_frames(self) -> int:
        return sum(len(frames) for frames in self.frames_per_episode.values())

    def description(self) -> dict:
        return {
            "episodes": list(self.episodes),
            "frames": str(self.frame_range),
            "frames_per_episode": {str(e): len(f) for e, f in self.frames_per_episode.items()},
            "seeds": None if self.seeds is None else list(self.seeds),
            "batch_size": self.batch_size,
            "n_frames": self.n_frames,
            "n_units": len(self.units),
            "n_batches": len(self.batches),
            "notes": list(self.notes),
        }


def plan_sweep(dataset: Path, episodes: list[int] | None, frame_range: FrameRange, seeds: list[int] | None, batch_size: int) -> SweepPlan:
    """Checks the episodes and frames against the dataset's metadata (no decoding); clips STOP per episode."""
    from verify.observation import episode_row, inspect_dataset

    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    layout = inspect_dataset(dataset)
    total = layout.total_episodes
    if episodes is None:
        episodes = list(range(total))
    outside = [e for e in episodes if e >= total]
    if outside:
        raise InputError(f"{layout.root}: episode {outside[0]} out of range, the dataset has {total} episodes (0..{total - 1})")
    notes, frames_per_episode, units = [], {}, []
    for episode in episodes:
        length = int(episode_row(layout, episode)["length"])
        frames, clipped = frame_range.within(length)
        if clipped:
            notes.append(f"episode {episode}: --frames {frame_range} clipped to its {length} frames ({len(frames)} frames)")
        if not frames:
            notes.append(f"episode {episode}: no frame in --frames {frame_range} (it has {length} frames); skipped")
            continue
        frames_per_episode[episode] = frames
        for frame in frames:
            for seed in (seeds if seeds is not None else [None]):
                units.append(SweepUnit(len(units), episode, frame, seed))
    if not units:
        raise InputError(f"{layout.root}: --frames {frame_range} selects no frame in episodes {episodes}")
    return SweepPlan(layout.root, tuple(units), batch_size, tuple(frames_per_episode), frame_range,
                     None if seeds is None else tuple(seeds), frames_per_episode, tuple(notes))


# ---------------------------------------------------------------- noise


class NoiseSource:
    """Noise rows for units: make_noise(seed, policy shape) per seed, or one fixed draw for all."""

    def __init__(self, seeds: list[int] | None = None, fixed: FixedNoise | None = None, path: str | None = None):
        if (seeds is None) == (fixed is None):
            raise ValueError("give seeds or one fixed noise, not both")
        self.seeds = seeds
        self.fixed = fixed
        self.path = path
        self._made: dict[int, FixedNoise] = {}

    def for_seed(self, seed: int | None, shape: tuple[int, ...]) -> FixedNoise:
        if seed is None:
            if self.fixed.shape != tuple(shape):
                raise InputError(
                    f"{self.path or 'noise'}: noise shape {list(self.fixed.shape)} does not fit the policy, which needs "
                    f"{list(shape)} (make one with: verify-ate noise make --seed 0 --shape {','.join(map(str, shape))} --out FILE)"
                )
            return self.fixed
        key = (seed, tuple(shape))
        if key not in self._made:
            self._made[key] = make_noise(seed, tuple(shape), created_by="verify-ate sweep")
        return self._made[key]

    def rows(self, units: list[SweepUnit], shape: tuple[int, ...]) -> np.ndarray:
        """[len(units), T, D] float32: unit i gets its seed's draw."""
        return np.concatenate([self.for_seed(unit.seed, shape).values for unit in units], axis=0)

    def sha256(self, shape: tuple[int, ...]) -> str:
        """The noise file's sha256, or for seeds: sha256 of the draws' sha256s in seed order."""
        if self.fixed is not None:
            return self.fixed.sha256
        digest = hashlib.sha256()
        for seed in self.seeds:
            digest.update(self.for_seed(seed, shape).sha256.encode())
        return digest.hexdigest()

    def description(self, shape: tuple[int, ...]) -> dict:
        if self.fixed is not None:
            return {"file": self.path, "seed": self.fixed.seed, "generator": self.fixed.generator, "shape": list(self.fixed.shape)}
        return {"seeds": list(self.seeds), "generator": self.for_seed(self.seeds[0], shape).generator, "shape": list(shape)}


# ---------------------------------------------------------------- frames


class FrameLoader:
    """Decodes the frames of one batch at a time (lerobot LeRobotDataset, PyAV), with their hashes."""

    def __init__(self, dataset: Path):
        self.dataset = dataset
        self.seconds = 0.0

    def load(self, units: list[SweepUnit]) -> tuple[list[dict], list[str]]:
        from verify.observation import load_frames, observation_sha256

        started = time.perf_counter()
        by_episode: dict[int, list[int]] = {}
        for unit in units:
            by_episode.setdefault(unit.episode, [])
            if unit.frame not in by_episode[unit.episode]:
                by_episode[unit.episode].append(unit.frame)
        items, hashes = {}, {}
        for episode, frames in by_episode.items():
            loaded = load_frames(self.dataset, episode, sorted(frames))
            for frame, item in zip(sorted(frames), loaded.frames):
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


def run_side_pass(side, checkpoint: Path, plan: SweepPlan, batch_ids: list[int], noise: NoiseSource, dataset_stats,
                  robot: RobotModel, progress=None, device: str | None = None, measure_latency: bool = False) -> SidePass:
    """Load this side's pi0, run the given batches (one forward pass each), release it."""
    from verify.devices import device_description, resolve_device, synchronize
    from verify.pi0_runner import Pi0Runner

    step = progress.step if progress is not None else (lambda message: None)
    torch_device = resolve_device(device or side.device)
    loader = FrameLoader(plan.dataset)
    actions, hashes, predict_seconds, latency = {}, {}, 0.0, None
    step(f"loading pi0 on {side.label}")
    with Pi0Runner(checkpoint, device=str(torch_device), dtype=side.dtype, dataset_stats=dataset_stats,
                   num_inference_steps=side.num_inference_steps) as runner:
        shape = runner.expected_noise_shape
        if runner.action_dim != len(robot.dataset_joint_names):
            raise InputError(f"{checkpoint}: the policy outputs {runner.action_dim} action values, robot {robot.name} has "
                             f"{len(robot.dataset_joint_names)} joints")
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
            for unit, chunk, digest in zip(units, predicted, frame_hashes):
                actions[unit.index] = chunk
                hashes[unit.index] = digest
            if measure_latency and count == 0 and side.iters > 0:
                step(f"timing {side.iters} calls of a {len(units)}-frame batch on {side.label}")
                latency = runner.measure_latency(frames, rows, warmup=side.warmup, iters=side.iters)
        facts = {
            "device_info": device_description(torch_device),
            "num_inference_steps": int(runner.config.num_inference_steps),
            "processors": runner.processor_source,
        }
    return SidePass(actions, hashes, predict_seconds, loader.seconds, tuple(shape), facts, latency)


# ---------------------------------------------------------------- per-frame statistics


def row_statistic(errors: np.ndarray, statistic: str) -> np.ndarray:
    """`statistic` of each row of errors [U, T], as verify.metrics.ErrorStatistics computes it; NaN
    for a row holding any non-finite value."""
    e = np.asarray(errors, dtype=np.float64)
    if statistic == "rmse":
        values = np.sqrt(np.mean(e * e, axis=1))
    elif statistic == "mean":
        values = np.mean(e, axis=1)
    elif statistic == "median":
        values = np.median(e, axis=1)
    elif statistic == "max":
        values = np.max(e, axis=1)
    elif statistic == "p95":
        values = np.percentile(e, 95, axis=1)
    else:
        raise ValueError(f"unknown statistic {statistic!r}")
    return np.where(np.all(np.isfinite(e), axis=1), values, np.nan)


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
                "episode": int(self.episode[i]), "frame": int(self.frame[i]), "seed": self.seed[i],
                "position_rmse": float(self.position_rmse[i]), "position_max": float(self.position_max[i]),
                "orientation_rmse": float(self.orientation_rmse[i]), "orientation_max": float(self.orientation_max[i]),
                "finite": bool(self.finite[i]), "pass": bool(self.passed[i]),
            }
            for i in range(len(self.episode))
        ]

    def worst(self, count: int) -> list[int]:
        """Unit indices of the `count` worst units (largest share of a bound first; ties by index)."""
        order = np.lexsort((np.arange(len(self.score)), -self.score))
        return [int(i) for i in order[:count]]


def frame_table(plan: SweepPlan, position_errors: np.ndarray, orientation_errors: np.ndarray, finite_units: np.ndarray,
                config: GateConfig, frame_stat: str | None) -> FrameTable:
    statistic = frame_stat or config.statistic
    position_stat = row_statistic(position_errors, statistic)
    orientation_stat = row_statistic(orientation_errors, statistic)
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = np.maximum(_share(position_stat, config.position_tolerance_m), _share(orientation_stat, config.orientation_tolerance_rad))
    score = np.where(np.isnan(shares) | ~finite_units, np.inf, shares)
    passed = finite_units & (position_stat <= config.position_tolerance_m) & (orientation_stat <= config.orientation_tolerance_rad)
    return FrameTable(
        episode=np.array([u.episode for u in plan.units]), frame=np.array([u.frame for u in plan.units]),
        seed=[u.seed for u in plan.units],
        position_rmse=row_statistic(position_errors, "rmse"), position_max=row_statistic(position_errors, "max"),
        orientation_rmse=row_statistic(orientation_errors, "rmse"), orientation_max=row_statistic(orientation_errors, "max"),
        finite=finite_units, passed=passed, statistic=statistic, position_stat=position_stat, orientation_stat=orientation_stat,
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
    for name, values, bound, unit_symbol in (("position", table.position_stat, config.position_tolerance_m, "m"),
                                            ("orientation", table.orientation_stat, config.orientation_tolerance_rad, "rad")):
        bad = ~(values <= bound)  # NaN counts as over
        worst_index = int(np.argmax(np.where(np.isnan(values), np.inf, values)))
        worst = float(values[worst_index])
        passed = not bool(bad.any())
        value_text = "non-finite" if not math.isfinite(worst) else f"{worst:.6g} {unit_symbol}"
        message = (f"per-frame {name} {table.statistic}: worst {value_text} ({unit_name(plan, worst_index)}) "
                   f"{'within' if passed else 'OVER'} bound {bound:g} {unit_symbol}; {int(bad.sum())} of {len(values)} frames over")
        checks.append(GateCheck(f"per-frame {name}", passed, worst, bound, unit_symbol, table.statistic, message))
    return tuple(checks)


# ---------------------------------------------------------------- the whole sweep


@dataclass
class SweepRequest:
    checkpoint: Path
    plan: SweepPlan
    sides: tuple  # (reference SideConfig, under-test SideConfig)
    noise: NoiseSource
    robot: RobotModel
    gate: GateConfig
    dataset_stats: dict | None
    dataset_info: dict  # dataset, repo_id, robot_type, fps, task
    frame_stat: str | None = None
    extra_meta: dict = field(default_factory=dict)


@dataclass
class SweepOutcome:
    """Rank 0's view after the sweep: the comparison (pooled + per-frame gate) and the per-frame table."""

    result: object  # verify.compare.ComparisonResult, gate extended with the per-frame checks
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
            "frame_stat": self.table.statistic if any(c.name.startswith("per-frame") for c in self.result.gate.checks) else None,
            "unit_statistic": self.table.statistic,
            "frames_passed": int(np.sum(self.table.passed)),
            "frames_failed": int(np.sum(~self.table.passed)),
            "worst": [{"unit": i, **rows[i]} for i in worst],
            "world_size": self.world_size,
            "timing": self.timing,
            "rows_csv": "frames.csv",
            "rows_parquet": "frames.parquet",
        }
        return summary


def _side_meta(side, request: SweepRequest, side_pass: SidePass, observation_sha: str, latency, ranks: list[str], info: dict) -> dict:
    from verify.pi0_runner import checkpoint_sha256, runtime_versions

    plan, shape = request.plan, side_pass.noise_shape
    return {
        "schema": SCHEMA,
        "robot": request.robot.name,
        "joint_names": list(request.robot.dataset_joint_names),
        "units": request.robot.dataset_units,
        "device": side.device,
        "device_info": info,
        "dtype": side.dtype,
        "noise_sha256": request.noise.sha256(shape),
        "noise": request.noise.description(shape),
        "observation_sha256": observation_sha,
        "observation": {**request.dataset_info, "episodes": list(plan.episodes), "frames": str(plan.frame_range),
                        "n_frames": plan.n_frames},
        "checkpoint": str(request.checkpoint),
        "checkpoint_sha256": checkpoint_sha256(request.checkpoint),
        "num_inference_steps": side_pass.facts["num_inference_steps"],
        "processors": side_pass.facts["processors"],
        "versions": runtime_versions(),
        "latency_ms": latency,
        "ranks": ranks,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["verify-ate", *sys.argv[1:]]),
        **request.extra_meta,
    }


def _combined_observation_sha(plan: SweepPlan, digests: np.ndarray) -> str:
    """sha256 over (episode, frame, the frame's observation sha256) of every unit, in unit order."""
    digest = hashlib.sha256()
    for unit, row in zip(plan.units, digests):
        digest.update(f"{unit.episode}:{unit.frame}:".encode() + bytes(row.astype(np.uint8)))
    return digest.hexdigest()


def run_sweep(request: SweepRequest, group, progress=None) -> SweepOutcome | None:
    """Both passes on this rank's batches, the gather, and (rank 0) the comparison. Others get None."""
    from verify.compare import compare
    from verify.distributed import batches_of_rank, rank_device

    plan = request.plan
    n_batches = len(plan.batches)
    owner = [b % group.world_size for b in range(n_batches)]
    my_batches = batches_of_rank(n_batches, group.rank, group.world_size)
    owners = [[u for b in batches_of_rank(n_batches, r, group.world_size) for u in plan.batches[b]] for r in range(group.world_size)]
    passes = []
    for side in request.sides:
        side_pass, error = None, None
        try:
            device = rank_device(side.device, group.local_rank, group.world_size)
            side_pass = run_side_pass(side, request.checkpoint, plan, my_batches, request.noise, request.dataset_stats,
                                      request.robot, progress, device=device, measure_latency=group.is_main)
        except Exception as caught:  # noqa: BLE001 - every rank must learn of it before anyone moves on
            error = caught
        group.agree(error)
        passes.append(side_pass)
        group.barrier()  # no rank loads the next side's model while another still holds this one
    reference, under_test = passes
    mismatch = [u for u in reference.actions if reference.observation_hashes[u] != under_test.observation_hashes[u]]
    error = InputError(f"{plan.dataset}: {unit_name(plan, mismatch[0])} decoded differently on the two passes") if mismatch else None
    group.agree(error)

    shape = next(iter(reference.actions.values())).shape if reference.actions else (0, 0)
    shape = tuple(int(v) for v in group.gather_control(np.array(shape, dtype=np.int64)).max(axis=0))
    ref_actions = group.gather_rows(reference.actions, owners, shape, np.float32)
    dut_actions = group.gather_rows(under_test.actions, owners, shape, np.float32)
    digests = {u: np.frombuffer(bytes.fromhex(h), dtype=np.uint8) for u, h in reference.observation_hashes.items()}
    all_digests = group.gather_rows(digests, owners, (32,), np.uint8, control=True)
    seconds = group.gather_control(np.array([reference.predict_seconds, reference.load_seconds, under_test.predict_seconds,
                                             under_test.load_seconds, len(reference.actions)], dtype=np.float64))
    devices = group.gather_control(np.frombuffer(
        (rank_device(request.sides[0].device, group.local_rank, group.world_size) + "|" +
         rank_device(request.sides[1].device, group.local_rank, group.world_size)).encode().ljust(64, b"\0")[:64], dtype=np.uint8))
    if not group.is_main:
        return None

    if progress is not None:
        progress.step("comparing")
    rank_devices = [bytes(row).rstrip(b"\0").decode().split("|") for row in devices]
    observation_sha = _combined_observation_sha(plan, all_digests)
    timing = _timing(seconds, len(plan.units))
    artifacts = []
    for index, (side, side_pass, actions) in enumerate(zip(request.sides, passes, (ref_actions, dut_actions))):
        meta = _side_meta(side, request, side_pass, observation_sha, side_pass.latency,
                          [devices_of_rank[index] for devices_of_rank in rank_devices], side_pass.facts["device_info"])
        meta["throughput"] = timing["ref" if index == 0 else "dut"]
        artifacts.append(TrajectoryArtifact(actions, meta))
    result = compare(artifacts[0], artifacts[1], request.robot, request.gate)
    finite_units = np.all(np.isfinite(ref_actions), axis=(1, 2)) & np.all(np.isfinite(dut_actions), axis=(1, 2))
    table = frame_table(plan, result.position.errors, result.orientation.errors, finite_units, request.gate, request.frame_stat)
    if request.frame_stat is not None:
        result = replace(result, gate=GateResult(result.gate.checks + frame_gate_checks(plan, table, request.gate)))
    return SweepOutcome(result, table, plan, timing, group.world_size, owner)


def _timing(seconds: np.ndarray, n_units: int) -> dict:
    """Throughput per side: units / the slowest rank's model time (ranks run concurrently)."""
    timing = {}
    for name, column in (("ref", 0), ("dut", 2)):
        slowest = float(np.max(seconds[:, column]))
        timing[name] = {
            "predict_seconds": slowest,
            "decode_seconds": float(np.max(seconds[:, column + 1])),
            "frames_per_second": n_units / slowest if slowest > 0 else None,
            "per_rank_predict_seconds": [float(v) for v in seconds[:, column]],
        }
    return timing


# ---------------------------------------------------------------- rows on disk


def write_rows(table: FrameTable, csv_path: Path | None = None, parquet_path: Path | None = None) -> None:
    """The per-frame table as CSV and Parquet (each written atomically). Metres and radians."""
    import csv
    import io

    from reports.atomic import atomic_path, write_text

    rows = table.rows()
    if csv_path is not None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=ROW_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row[k] is None else (repr(row[k]) if isinstance(row[k], float) else row[k])) for k in ROW_COLUMNS})
        write_text(csv_path, buffer.getvalue())
    if parquet_path is not None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {
            "episode": pa.array(table.episode.astype(np.int64)),
            "frame": pa.array(table.frame.astype(np.int64)),
            "seed": pa.array(table.seed, type=pa.int64()),
            "position_rmse": pa.array(table.position_rmse), "position_max": pa.array(table.position_max),
            "orientation_rmse": pa.array(table.orientation_rmse), "orientation_max": pa.array(table.orientation_max),
            "finite": pa.array(table.finite.astype(bool)), "pass": pa.array(table.passed.astype(bool)),
        }
        arrow = pa.table(columns).replace_schema_metadata({"units": "position m, orientation rad", "statistic": table.statistic})
        with atomic_path(parquet_path) as temporary:
            pq.write_table(arrow, str(temporary))
