"""Paired closed-loop rollouts: the reference and the device under test each drive their own copy of one
environment from the same seed, in lock step.

Every chunk, both policies are asked at the same step index, each on its own observation, with the same noise
(`chunk_noise`), and each executes `n_action_steps` of its chunk before the next prediction. A side whose episode
ended (the environment said done) holds its last state until the other side's ends too or the step limit is
reached. Both models stay loaded for the whole run (one chunk each, alternately).
"""

from __future__ import annotations

import contextlib
import datetime
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from verify_ate.noise import FixedNoise, derived_noise
from verify_ate.verify.compare.rollout_artifact import ROLLOUT_SCHEMA, RolloutArtifact
from verify_ate.verify.envs.base import EnvStep, RolloutEnvironment
from verify_ate.verify.errors import InputError
from verify_ate.verify.run.distributed import Group
from verify_ate.verify.run.sides import SideConfig, check_policy_noise, default_noise, load_runner, runner_facts


@dataclass(frozen=True)
class RolloutPlan:
    """What a paired rollout runs: `episodes` episodes, episode i reset with `seed + i`, `n_action_steps` executed
    per chunk, at most `max_steps` steps (None: the environment's own limit)."""

    environment: str
    episodes: int
    seed: int
    n_action_steps: int
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.seed < 0 or self.n_action_steps < 1:
            raise InputError(
                f"rollout: need episodes >= 1, seed >= 0 and n_action_steps >= 1 (got {self.episodes}, {self.seed}, "
                f"{self.n_action_steps})"
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise InputError(f"--max-steps {self.max_steps}: must be >= 1")

    @property
    def seeds(self) -> list[int]:
        return [self.seed + episode for episode in range(self.episodes)]


def chunk_noise(noise: FixedNoise, episode_seed: int, chunk: int) -> FixedNoise:
    """The noise of chunk `chunk` of the episode reset with `episode_seed`: the file's own values for the first
    chunk (so a rollout's first prediction is the open-loop check's), then values derived from the file's hash,
    the episode's seed and the chunk's index (noise.derived_noise), the same on every device."""
    return noise if chunk == 0 else derived_noise(noise, episode_seed, chunk)


@dataclass
class _Episode:
    """One side's record of one episode, grown step by step."""

    states: list[np.ndarray]
    images: list[np.ndarray]
    actions: list[np.ndarray] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    done: list[bool] = field(default_factory=list)
    success: bool = False
    steps: int = 0
    ended: bool = False
    current: EnvStep | None = None

    @classmethod
    def starting(cls, first: EnvStep) -> _Episode:
        return cls([first.state], [first.image], current=first)

    def record(self, action: np.ndarray, result: EnvStep) -> None:
        self.actions.append(np.asarray(action, dtype=np.float32))
        self.states.append(result.state)
        self.images.append(result.image)
        self.rewards.append(float(result.reward))
        self.done.append(bool(result.done))
        self.success = self.success or bool(result.success)
        self.steps += 1
        self.ended = bool(result.done)
        self.current = result

    def refuse(self, action: np.ndarray) -> None:
        """A non-finite action: recorded as it came, never sent to the environment; the episode ends there, a
        failure, holding its last state (a robot's controller would stop)."""
        self.actions.append(np.asarray(action, dtype=np.float32))
        self.states.append(self.states[-1])
        self.images.append(self.images[-1])
        self.rewards.append(0.0)
        self.done.append(True)
        self.success = False
        self.steps += 1
        self.ended = True

    def hold(self) -> None:
        """An ended episode's row for a step the other side still takes: the last state, no reward."""
        self.actions.append(self.actions[-1])  # an episode only ends on a step, so it has one
        self.states.append(self.states[-1])
        self.images.append(self.images[-1])
        self.rewards.append(0.0)
        self.done.append(True)


@dataclass
class Timings:
    """Seconds spent per side in the policy, and in the environments' physics and rendering."""

    policy_s: list[float] = field(default_factory=list)  # per side
    environment_s: dict[str, float] = field(default_factory=dict)
    episodes: int = 0
    wall_s: float = 0.0

    def as_dict(self) -> dict:
        return {
            "policy_s": list(self.policy_s),
            "environment_s": dict(self.environment_s),
            "episodes": self.episodes,
            "wall_s": self.wall_s,
            "episodes_per_minute": 60.0 * self.episodes / self.wall_s if self.wall_s > 0 else None,
        }


def rollouts_steps(plan: RolloutPlan, sides: int = 2, group: Group | None = None) -> int:
    """Progress steps `rollouts` takes on this rank: loading each side, then one per episode it runs."""
    from verify_ate.verify.run.distributed import batches_of_rank

    group = group or Group()
    return sides + len(batches_of_rank(plan.episodes, group.rank, group.world_size))


def rollouts(
    sides: tuple[SideConfig, ...],
    checkpoint: Any,
    dataset_stats: dict | None,
    make_env: Callable[[], RolloutEnvironment],
    plan: RolloutPlan,
    noise: FixedNoise | None,
    checkpoint_sha256: str,
    progress=None,
    extra_meta: dict | None = None,
    group: Group | None = None,
) -> tuple[RolloutArtifact, ...]:
    """Run the plan's episodes on every side (the reference and the device under test, or one side of a
    two-machine run) in lock step; returns one artifact per side, in the sides' order.

    Under torchrun (`group`), episode i runs on rank i mod world_size, each rank on its own device, and rank 0
    gathers every episode's rows in episode order (the bytes unchanged): the artifacts equal a single-process
    run's where the devices compute alike. Ranks other than 0 get artifacts of their own episodes only."""
    from verify_ate.verify.model.devices import device_description
    from verify_ate.verify.run.distributed import batches_of_rank, rank_device

    group = group or Group()
    step = progress.step if progress is not None else (lambda message: None)
    timings = Timings(policy_s=[0.0] * len(sides))
    mine = batches_of_rank(plan.episodes, group.rank, group.world_size)
    probe = make_env()  # what the environment is, and the shapes of its rows, before any episode
    try:
        probe_step = probe.reset(plan.seed)
        fingerprint = {**probe.fingerprint(), **environment_facts(probe)}
        max_steps = plan.max_steps or probe.max_steps
    finally:
        probe.close()
    with contextlib.ExitStack() as stack:
        runners = []
        for side in sides:
            device = rank_device(side.device, group.local_rank, group.world_size)
            step(f"loading the policy on {side.label}")
            runners.append(
                stack.enter_context(load_runner(side, checkpoint, dataset_stats, device=device, progress=progress))
            )
        noise = noise or default_noise(runners[0].expected_noise_shape)
        for runner in runners:
            check_policy_noise(runner.adapter, noise, runner.expected_noise_shape, None)
        n_action_steps = min(plan.n_action_steps, runners[0].chunk_size)
        fingerprint.update(policy_input_hashes(checkpoint, runners[0], dataset_stats))
        started = time.perf_counter()
        local: list[dict[int, _Episode]] = [{} for _ in sides]
        for index in mine:
            seed = plan.seeds[index]
            step(f"episode {index + 1}/{plan.episodes} (seed {seed}) on {' and '.join(side.label for side in sides)}")
            pair = _run_episode(runners, make_env, seed, max_steps, n_action_steps, noise, timings)
            for side_index, episode in enumerate(pair):
                local[side_index][index] = episode
        timings.episodes = len(mine)
        timings.wall_s = time.perf_counter() - started
        timings = _gathered_timings(timings, group)
        shapes = _row_shapes(probe_step, runners[0].action_dim, max_steps)
        owners = [batches_of_rank(plan.episodes, rank, group.world_size) for rank in range(group.world_size)]
        artifacts = []
        for side_index, (side, runner) in enumerate(zip(sides, runners, strict=True)):
            meta = rollout_meta(
                side,
                runner_facts(runner, device_description(runner.device)),
                environment=fingerprint,
                plan=plan,
                n_action_steps=n_action_steps,
                noise=noise,
                checkpoint=checkpoint,
                checkpoint_sha256=checkpoint_sha256,
                timings=timings.as_dict(),
                extra={**(extra_meta or {}), **({"ranks": group.world_size} if group.distributed else {})},
            )
            artifact = _artifact(local[side_index], shapes, owners, group, meta)
            artifact.tool_poses = tool_poses(artifact.states, probe.robot)
            artifacts.append(artifact)
    return tuple(artifacts)


def tool_poses(states: np.ndarray, robot: Any) -> np.ndarray:
    """[E, S + 1, arms, 4, 4]: every arm's tool pose at every recorded state (arms = 0 without a robot model)."""
    if robot is None:
        return np.zeros((*states.shape[:2], 0, 4, 4))
    from verify_ate.kinematics import arm_poses

    poses = arm_poses(robot, states, units=robot.dataset_units)
    return np.stack([pose.matrix() for pose in poses.values()], axis=2)


def _row_shapes(first: EnvStep, action_dim: int, max_steps: int) -> dict[str, tuple[tuple[int, ...], Any]]:
    """Each artifact array's per-episode shape and dtype (every episode holds `max_steps` steps)."""
    return {
        "states": ((max_steps + 1, *np.shape(first.state)), np.float64),
        "actions": ((max_steps, action_dim), np.float32),
        "rewards": ((max_steps,), np.float64),
        "done": ((max_steps,), np.bool_),
        "success": ((), np.bool_),
        "steps": ((), np.int64),
        "images": ((max_steps + 1, *np.shape(first.image)), np.uint8),
    }


def _gathered_timings(timings: Timings, group: Group) -> Timings:
    """Every rank's seconds summed (wall time: the slowest rank's)."""
    if not group.distributed:
        return timings
    names = sorted(timings.environment_s)
    row = np.array([*timings.policy_s, *(timings.environment_s[n] for n in names), timings.episodes, timings.wall_s])
    rows = group.gather_control(row.astype(np.float64))
    total = rows.sum(axis=0)
    sides = len(timings.policy_s)
    return Timings(
        policy_s=[float(v) for v in total[:sides]],
        environment_s={name: float(total[sides + i]) for i, name in enumerate(names)},
        episodes=int(total[-2]),
        wall_s=float(rows[:, -1].max()),
    )


def policy_input_hashes(checkpoint: Any, runner, dataset_stats: dict | None) -> dict:
    """What turns an observation into the model's input besides the environment, hashed for the fingerprint: the
    tokenizer files and the processor pipelines of the checkpoint (or, for pipelines built from a dataset's
    statistics, those statistics), and the decoder of video frames (none: a rollout's frames are rendered)."""
    import hashlib
    import json

    def files_sha256(patterns: tuple[str, ...]) -> str | None:
        if not isinstance(checkpoint, Path):
            return None
        files = sorted({path for pattern in patterns for path in checkpoint.glob(pattern) if path.is_file()})
        if not files:
            return None
        digest = hashlib.sha256()
        for path in files:
            digest.update(path.name.encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()

    processors = files_sha256(("policy_preprocessor*", "policy_postprocessor*"))
    if runner.processor_source == "dataset_stats" or processors is None:
        plain = json.dumps(
            dataset_stats or {}, sort_keys=True, default=lambda v: getattr(v, "tolist", lambda: str(v))()
        )
        processors = "stats:" + hashlib.sha256(plain.encode()).hexdigest()
    return {
        "tokenizer_sha256": files_sha256(("tokenizer*", "special_tokens_map.json", "*.model")),
        "processors_sha256": processors,
        "video_decoder": "none (frames rendered in memory)",
    }


def environment_facts(env: RolloutEnvironment) -> dict:
    """What `compare` needs to measure divergence: the robot model of the state (joint names and units), or the
    unit of the environment's own state."""
    robot = env.robot
    if robot is None:
        return {"robot": None, "state_unit": env.state_unit, "task": env.task}
    return {
        "robot": robot.name,
        "units": robot.dataset_units,
        "joint_names": list(robot.dataset_joint_names),
        "task": env.task,
    }


def timings_of(env: RolloutEnvironment, timings: Timings) -> None:
    for name, seconds in env.timings.items():
        timings.environment_s[name] = timings.environment_s.get(name, 0.0) + seconds


def _run_episode(
    runners, make_env, seed: int, max_steps: int, n_action_steps: int, noise, timings: Timings
) -> list[_Episode]:
    envs = [make_env() for _ in runners]
    try:
        pair = [_Episode.starting(env.reset(seed)) for env in envs]
        taken, chunk = 0, 0
        while taken < max_steps and not all(episode.ended for episode in pair):
            count = min(n_action_steps, max_steps - taken)
            this_noise = chunk_noise(noise, seed, chunk)
            chunks: list[np.ndarray | None] = []
            for side_index, (runner, episode) in enumerate(zip(runners, pair, strict=True)):
                if episode.ended:
                    chunks.append(None)
                    continue
                assert episode.current is not None
                began = time.perf_counter()
                chunks.append(runner.predict([episode.current.frame], this_noise)[0])
                timings.policy_s[side_index] += time.perf_counter() - began
            for offset in range(count):
                for env, episode, actions in zip(envs, pair, chunks, strict=True):
                    if episode.ended or actions is None:
                        episode.hold()
                    elif not np.all(np.isfinite(actions[offset])):
                        episode.refuse(actions[offset])
                    else:
                        episode.record(actions[offset], env.step(actions[offset]))
            taken += count
            chunk += 1
        for episode in pair:  # every episode's record spans the step limit: ended ones hold their last state
            while len(episode.done) < max_steps:
                episode.hold()
    finally:
        for env in envs:
            timings_of(env, timings)
            env.close()
    return pair


def _artifact(
    local: dict[int, _Episode], shapes: dict, owners: list[list[int]], group: Group, meta: dict
) -> RolloutArtifact:
    """One side's artifact: this rank's episodes (all of them outside torchrun), gathered onto rank 0."""
    rows: dict[str, dict[int, np.ndarray]] = {name: {} for name in shapes}
    for index, episode in local.items():
        rows["states"][index] = np.stack(episode.states)
        rows["actions"][index] = np.stack(episode.actions)
        rows["rewards"][index] = np.asarray(episode.rewards)
        rows["done"][index] = np.asarray(episode.done)
        rows["success"][index] = np.asarray(episode.success)
        rows["steps"][index] = np.asarray(episode.steps)
        rows["images"][index] = np.stack(episode.images)
    if group.distributed:
        arrays = {
            name: group.gather_rows(rows[name], owners, shape, dtype, control=True)
            for name, (shape, dtype) in shapes.items()
        }
    else:
        order = sorted(local)
        arrays = {
            name: np.stack([rows[name][index] for index in order]).astype(dtype) for name, (_, dtype) in shapes.items()
        }
    return RolloutArtifact(**arrays, tool_poses=np.zeros((*arrays["states"].shape[:2], 0, 4, 4)), meta=meta)


def rollout_meta(
    side: SideConfig,
    facts: dict,
    *,
    environment: dict,
    plan: RolloutPlan,
    n_action_steps: int,
    noise: FixedNoise,
    checkpoint: Any,
    checkpoint_sha256: str,
    timings: dict,
    extra: dict,
) -> dict:
    """The one builder of a rollout artifact's `meta`."""
    from verify_ate.verify.model.devices import runtime_versions

    return {
        "schema": ROLLOUT_SCHEMA,
        "policy": facts.get("policy"),
        "device": side.device,
        "device_info": facts["device_info"],
        "dtype": side.dtype,
        "variants": list(side.variants),
        "faults": list(side.faults),
        "num_inference_steps": facts["num_inference_steps"],
        "processors": facts["processors"],
        "environment": environment,
        "seeds": plan.seeds,
        "n_action_steps": n_action_steps,
        "max_steps": plan.max_steps,
        "noise_sha256": noise.sha256,
        "noise": {"seed": noise.seed, "generator": noise.generator, "shape": list(noise.shape)},
        "chunk_noise": "chunk 0: the noise file; chunk k > 0: noise.derived_noise(file, episode seed, k)",
        "checkpoint": str(checkpoint) if isinstance(checkpoint, (str, Path)) else repr(checkpoint),
        "checkpoint_sha256": checkpoint_sha256,
        "timings": timings,
        "versions": runtime_versions(),
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["verify-ate", *sys.argv[1:]]),
        **extra,
    }
