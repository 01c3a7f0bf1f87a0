"""Where a run's model and data come from, and the inputs every side of a one-frame run shares.

Three parts, one job each:
- `ImportCache`: the folder where old-format inputs are made current once (a LeRobot v2.x dataset, a
  pre-0.4 lerobot pi0 checkpoint) and where checkpoint hashes are remembered;
- `UserSource`: a user's checkpoint and dataset folders, checked, and imported through the cache when old;
- `DemoSource`: the embedded demo of one robot (`demo_robots()`: Koch v1.1 by default, SO-101, ALOHA), a
  dataset written by lerobot and the tiny pi0 trained on it (or the full-size seeded pi0), made on first use
  under the cache.
Both sources answer the same questions (`ModelSource`), so the commands never ask which one they have.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from verify_ate.kinematics import RobotModel, load_robot
from verify_ate.verify.configs import CONFIGS_DIR, read_yaml
from verify_ate.verify.errors import InputError
from verify_ate.verify.run.sides import RunInputs, check_cameras, default_noise

if TYPE_CHECKING:  # the model packages load torch, which the model-free commands do without
    from verify_ate.verify.data.demo_dataset import DemoProfile
    from verify_ate.verify.model.seeded import SeededCheckpoint
    from verify_ate.verify.model.training import TrainingRecipe

HASH_CACHE_FILE = "checkpoint_hashes.json"
IMPORTED_FOLDER = "imported"  # old-format inputs imported into the cache
MODEL_SIZES = ("tiny", "full")
DEMO_NOTE = {
    "tiny": "demo: tiny pi0 TRAINED on a generated {label}-like dataset (seeded, {steps} steps); its numbers show "
    "the tool works, they say nothing about the {label} pi0 checkpoint",
    "full": "demo: full-size pi0 with RANDOM weights (seeded) on a generated {label}-like dataset; its numbers "
    "show the tool works, they say nothing about the {label} pi0 checkpoint",
}
DEFAULT_DEMO_ROBOT = "koch_v1_1"
# configs/profiles/demo_dataset<suffix>.yaml names a demo's robot; demo_training<suffix>.yaml (when there is
# one, else demo_training.yaml) is its recipe, verify/model/demo_policy<suffix>/ its committed checkpoint.
DEMO_PROFILES_DIR = CONFIGS_DIR / "profiles"
DEMO_DATASET_STEM, DEMO_TRAINING_STEM, DEMO_POLICY_STEM = "demo_dataset", "demo_training", "demo_policy"


class ModelSource(Protocol):
    """What a run needs to know of where its checkpoint and dataset come from."""

    @property
    def num_inference_steps(self) -> int | None:
        """Overrides the checkpoint's flow-matching step count (None: the checkpoint's)."""

    @property
    def note(self) -> str | None:
        """A line for stderr and the report saying what the model is (the demo's), or None."""

    @property
    def extra_meta(self) -> dict:
        """What every artifact of this source records beyond the contract."""

    @property
    def cache(self) -> ImportCache:
        """Where this source's made and imported inputs are kept."""

    def dataset_folder(self, progress: Any = None) -> Path:
        """The dataset folder of this run, checked (or made); takes DATASET_STEPS progress steps."""

    def checkpoint_folder(
        self, dataset_stats: dict | None, progress: Any = None, build_device: str = "cpu"
    ) -> Path | SeededCheckpoint:
        """The checkpoint of this run; takes `checkpoint_steps` progress steps."""

    @property
    def checkpoint_steps(self) -> int:
        """Progress steps `checkpoint_folder` takes."""


DATASET_STEPS = 1  # every source's dataset_folder takes one step


# ---------------------------------------------------------------- the cache of imported inputs


@dataclass(frozen=True)
class ImportCache:
    """<folder>/imported/<name>-<key>: an old-format input made current once, keyed by its content, reused
    afterwards (each use is one note on stderr); <folder>/checkpoint_hashes.json: hashes already computed."""

    folder: Path

    @classmethod
    def at(cls, cache_dir: Path | None) -> ImportCache:
        """`cache_dir`, else ~/.cache/verify-ate or $VERIFY_ATE_CACHE."""
        from verify_ate.verify.cache import default_cache_dir

        return cls(Path(cache_dir or default_cache_dir()))

    def checkpoint_sha256(self, checkpoint: Path | SeededCheckpoint) -> str:
        """The checkpoint's hash, computed once per run (streamed, before any model is loaded) and remembered
        here while its files keep their paths, sizes and modification times."""
        from verify_ate.verify.model.checkpoint import checkpoint_sha256
        from verify_ate.verify.model.seeded import SeededCheckpoint

        if isinstance(checkpoint, SeededCheckpoint):
            return checkpoint.sha256
        return checkpoint_sha256(checkpoint, cache_file=self.folder / HASH_CACHE_FILE)

    def dataset(self, dataset: Path, progress: Any = None) -> Path:
        """A LeRobot v2.0/v2.1 dataset converted into the cache once, else `dataset` as it is."""
        from verify_ate.verify.data.legacy_dataset import IMPORTABLE, content_key, dataset_version, import_dataset

        if not (dataset / "meta" / "info.json").is_file() or dataset_version(dataset) not in IMPORTABLE:
            return dataset
        return self._copy(
            dataset,
            content_key(dataset),
            lambda target: import_dataset(dataset, target),
            what=f"a LeRobot {dataset_version(dataset)} dataset",
            made="converted to v3.0 into",
            reused="using its v3.0 copy made earlier:",
            command="verify-ate import dataset",
            progress=progress,
        )

    def checkpoint(self, checkpoint: Path, dataset: Path | None, progress: Any = None) -> Path:
        """An old-format pi0 folder imported into the cache once, else `checkpoint` as it is. `dataset` fills
        features an old config left empty."""
        from verify_ate.verify.model.legacy import import_checkpoint, is_legacy_checkpoint

        if not is_legacy_checkpoint(checkpoint):
            return checkpoint
        return self._copy(
            checkpoint,
            self.checkpoint_sha256(checkpoint)[:16],
            lambda target: import_checkpoint(checkpoint, target, dataset),
            what="an old-format pi0 checkpoint (lerobot before 0.4)",
            made="imported into",
            reused="using its copy imported earlier:",
            command="verify-ate import checkpoint",
            progress=progress,
        )

    def _copy(
        self,
        source: Path,
        key: str,
        convert: Callable[[Path], Any],
        *,
        what: str,
        made: str,
        reused: str,
        command: str,
        progress: Any,
    ) -> Path:
        """`source` converted into imported/<name>-<key> the first time, reused afterwards. Concurrent runs: the
        first to finish wins, the other uses its copy. The conversion shows within the current progress step."""
        target = self.folder / IMPORTED_FOLDER / f"{source.name}-{key}"
        if target.is_dir():
            print(f"note: {source} is {what}; {reused} {target}", file=sys.stderr)
            return target
        if progress is not None:
            progress.note(f"converting {what}: {source}")
        try:
            convert(target)
        except InputError:
            if not target.is_dir():  # else another process finished the same conversion first
                raise
        print(f"note: {source} is {what}; {made} {target}, as `{command}` does", file=sys.stderr)
        return target


# ---------------------------------------------------------------- a user's folders


@dataclass(frozen=True)
class UserSource:
    """A user's checkpoint folder and dataset folder."""

    checkpoint: Path
    dataset: Path
    cache_dir: Path | None = None  # None: the default cache
    num_inference_steps: int | None = None

    note = None
    checkpoint_steps = 0

    @property
    def extra_meta(self) -> dict:
        return {}  # a user's run records nothing beyond the contract

    @property
    def cache(self) -> ImportCache:
        return ImportCache.at(self.cache_dir)

    def dataset_folder(self, progress: Any = None) -> Path:
        """The dataset (a v2.x one converted into the cache), after the checkpoint folder passed its checks,
        before any frame is decoded or model built. Checked here, not at parse time, so that a missing device
        is reported first (exit 3)."""
        from verify_ate.verify.model.checkpoint import check_checkpoint_folder
        from verify_ate.verify.model.policies import checkpoint_adapter

        if progress is not None:
            progress.step(f"checking {self.checkpoint} and {self.dataset}")
        check_checkpoint_folder(self.checkpoint, checkpoint_adapter(self.checkpoint))
        return self.cache.dataset(self.dataset, progress)

    def checkpoint_folder(
        self, dataset_stats: dict | None, progress: Any = None, build_device: str = "cpu"
    ) -> Path | SeededCheckpoint:
        return self.cache.checkpoint(self.checkpoint, self.dataset, progress)


# ---------------------------------------------------------------- the embedded demo


@dataclass(frozen=True)
class DemoFiles:
    """One robot's demo: its dataset profile, its training recipe, and where its trained tiny pi0 is committed."""

    robot: str
    dataset_profile: Path
    recipe: Path
    suffix: str  # "" for the Koch demo, "_<robot>" for the others: demo_dataset<suffix>.yaml
    policy: str = "pi0"  # the policy trained on it (`--demo --policy`)

    @property
    def policy_suffix(self) -> str:
        return "" if self.policy == "pi0" else f"_{self.policy}"

    @property
    def committed(self) -> Path:
        """verify/model/demo_policy<suffix>[_<policy>]/ (a policy too large to commit is only ever cached)."""
        from verify_ate.verify.model.training import COMMITTED_POLICY

        return COMMITTED_POLICY.with_name(DEMO_POLICY_STEM + self.suffix + self.policy_suffix)

    def for_policy(self, policy: str) -> DemoFiles:
        """This robot's demo with `policy` trained on it: its recipe demo_training<suffix>_<policy>.yaml, else
        demo_training_<policy>.yaml (every policy but pi0 has one), else the robot's own."""
        if policy == "pi0":
            return self
        for name in (f"{DEMO_TRAINING_STEM}{self.suffix}_{policy}.yaml", f"{DEMO_TRAINING_STEM}_{policy}.yaml"):
            if (DEMO_PROFILES_DIR / name).is_file():
                return replace(self, policy=policy, recipe=DEMO_PROFILES_DIR / name)
        return replace(self, policy=policy)

    def profile(self) -> DemoProfile:
        from verify_ate.verify.data.demo_dataset import load_demo_profile

        return load_demo_profile(self.dataset_profile)

    def training_recipe(self) -> TrainingRecipe:
        from verify_ate.verify.model.training import load_recipe

        return load_recipe(self.recipe)

    def tiny_profile(self, profile: DemoProfile | None = None) -> dict:
        """configs/profiles/tiny_pi0.yaml (tiny_<policy>.yaml) with this demo dataset's cameras and widths
        (unchanged for Koch's)."""
        from verify_ate.verify.model.policies.tiny import load_policy_profile

        return _with_features(load_policy_profile(self.policy), profile or self.profile())

    def full_profile(self, profile: DemoProfile | None = None) -> dict:
        """configs/profiles/full_pi0.yaml with this demo dataset's cameras and widths (unchanged for Koch's)."""
        from verify_ate.verify.model.tiny import load_full_profile

        return _with_features(load_full_profile(), profile or self.profile())


def _with_features(pi0_profile: dict, demo: DemoProfile) -> dict:
    from verify_ate.verify.data.demo_dataset import policy_features

    features = policy_features(demo)
    return pi0_profile if pi0_profile.get("features") == features else {**pi0_profile, "features": features}


def demo_robots() -> dict[str, DemoFiles]:
    """Every robot with a demo, by robot name (configs/profiles/demo_dataset*.yaml), the default first."""
    demos: dict[str, DemoFiles] = {}
    for path in sorted(
        DEMO_PROFILES_DIR.glob(f"{DEMO_DATASET_STEM}*.yaml"), key=lambda p: (p.stem != DEMO_DATASET_STEM, p.stem)
    ):
        suffix = path.stem[len(DEMO_DATASET_STEM) :]
        if suffix and not suffix.startswith("_"):
            continue
        document = read_yaml(path, "demo dataset profile")
        robot = str(document.get("robot", "")) if isinstance(document, dict) else ""
        if not robot:
            raise InputError(f"{path}: invalid demo dataset profile: missing key 'robot'")
        recipe = DEMO_PROFILES_DIR / f"{DEMO_TRAINING_STEM}{suffix}.yaml"
        if not recipe.is_file():
            recipe = DEMO_PROFILES_DIR / f"{DEMO_TRAINING_STEM}.yaml"
        demos.setdefault(robot, DemoFiles(robot, path, recipe, suffix))
    return demos


def demo_files(robot: str, policy: str = "pi0") -> DemoFiles:
    """The demo of `robot` (a robot name, as --robot takes it) with `policy` trained on it; InputError naming the
    robots that have one, or the policies."""
    from verify_ate.verify.model.policies import supported_policies

    demos = demo_robots()
    if robot not in demos:
        raise InputError(f"robot {robot!r} has no demo (--demo --robot takes one of: {', '.join(demos)})")
    if policy not in supported_policies():
        raise InputError(f"--policy {policy!r}: not a supported policy (one of: {', '.join(supported_policies())})")
    return demos[robot].for_policy(policy)


@dataclass(frozen=True)
class DemoSource:
    """The demo of one robot: a generated dataset like that robot's recordings, written by lerobot, and the tiny
    pi0 trained on it (committed, or trained into the cache on first use), or the full-size pi0 with seeded
    weights made on each side's own device; with `save_checkpoint`, that model is written there first and run
    from there."""

    cache_dir: Path | None = None
    size: str = "tiny"  # "tiny" (the trained checkpoint) or "full" (lerobot's real sizes, seeded)
    save_checkpoint: Path | None = None
    num_inference_steps: int | None = None
    robot: str = DEFAULT_DEMO_ROBOT  # a robot with a demo (`demo_robots()`)
    policy: str = "pi0"  # the policy trained on its dataset (`--demo --policy`)

    def __post_init__(self) -> None:
        if self.size not in MODEL_SIZES:
            raise InputError(f"model size {self.size!r}: one of {', '.join(MODEL_SIZES)}")
        demo_files(self.robot, self.policy)  # refuses a robot without a demo, or an unknown policy, naming them
        if self.size == "full" and self.policy != "pi0":
            raise InputError(f"--size full: the full-size demo is pi0's; --policy {self.policy} runs its tiny one")

    @property
    def demo(self) -> DemoFiles:
        return demo_files(self.robot, self.policy)

    @property
    def note(self) -> str:
        label = self.demo.profile().label
        if self.size == "full":
            return DEMO_NOTE["full"].format(label=label)
        note = DEMO_NOTE["tiny"].format(label=label, steps=self.demo.training_recipe().steps)
        if self.policy == "pi0":
            return note
        from verify_ate.verify.model.policies import adapter_for

        return note.replace("pi0", adapter_for(self.policy).label)

    @property
    def extra_meta(self) -> dict:
        return {"demo": True, "note": self.note}

    @property
    def cache(self) -> ImportCache:
        return ImportCache.at(self.cache_dir)

    @property
    def checkpoint_steps(self) -> int:
        return 0 if self.size == "full" and self.save_checkpoint is None else 1

    def dataset_folder(self, progress: Any = None) -> Path:
        from verify_ate.verify.data.demo_dataset import ensure_demo_dataset

        if progress is not None:
            progress.step("preparing the demo dataset (written by lerobot on first use)")
        return ensure_demo_dataset(self.cache.folder, self.demo.profile())

    def checkpoint_folder(
        self, dataset_stats: dict | None, progress: Any = None, build_device: str = "cpu"
    ) -> Path | SeededCheckpoint:
        if self.size == "full":
            return self._full_size(dataset_stats, progress, build_device)
        from verify_ate.verify.data.demo_dataset import ensure_demo_dataset, profile_cache_key
        from verify_ate.verify.data.observation import load_chunk_frames
        from verify_ate.verify.model.training import ensure_trained_checkpoint

        files = self.demo
        demo = files.profile()
        dataset = ensure_demo_dataset(self.cache.folder, demo)  # made by dataset_folder already: this only finds it
        tiny = ensure_trained_checkpoint(
            self.cache.folder / "checkpoints",
            lambda chunk_size: load_chunk_frames(dataset, chunk_size),
            dataset_stats or {},
            profile_cache_key(demo),
            evaluate=lambda folder: demo_tracking_error(folder, dataset, load_robot(demo.robot)),
            progress=progress,
            recipe=files.training_recipe(),
            profile=files.tiny_profile(demo),
            committed=files.committed,
            policy_type=self.policy,
        )
        if self.save_checkpoint is None:
            return tiny
        if self.save_checkpoint.exists():
            raise InputError(f"{self.save_checkpoint}: already exists; refusing to overwrite a checkpoint folder")
        shutil.copytree(tiny, self.save_checkpoint)
        return self.save_checkpoint

    def _full_size(self, dataset_stats: dict | None, progress: Any, build_device: str) -> Path | SeededCheckpoint:
        from verify_ate.verify.model.seeded import SeededCheckpoint, save_seeded_checkpoint

        recipe = SeededCheckpoint(self.demo.full_profile(), seed=0, dataset_stats=dataset_stats or {})
        if self.save_checkpoint is None:
            return recipe
        from verify_ate.verify.model.devices import resolve_device

        if progress is not None:
            progress.step(f"making the full-size seeded pi0 on {build_device} and writing {self.save_checkpoint}")
        return save_seeded_checkpoint(recipe, self.save_checkpoint, resolve_device(build_device), progress)


def demo_source_for_robot(
    name: str,
    size: str = "tiny",
    cache_dir: Path | None = None,
    save_checkpoint: Path | None = None,
    num_inference_steps: int | None = None,
    policy: str = "pi0",
) -> DemoSource:
    """The demo of robot `name` (`--demo --robot NAME [--policy P]`): its dataset profile and its trained checkpoint,
    cached apart from every other robot's. InputError naming the robots with a demo when `name` has none."""
    return DemoSource(cache_dir, size, save_checkpoint, num_inference_steps, robot=name, policy=policy)


# ---------------------------------------------------------------- one frame's shared inputs


def prepare_inputs_steps(source: ModelSource) -> int:
    """Progress steps `prepare_inputs` takes."""
    return DATASET_STEPS + 1 + source.checkpoint_steps


def prepare_inputs(
    source: ModelSource,
    robot: RobotModel | None,
    episode: int,
    frame: int,
    noise_path: Path | None,
    progress: Any = None,
    build_device: str = "cpu",
) -> RunInputs:
    """Observation, noise and checkpoint (with its hash) shared by every side of a one-frame run.
    `build_device`: where a demo model that is saved first is made (the reference side's device). `robot`: None
    for a rollout in an environment without a robot model (its RunInputs then say none).
    Takes `prepare_inputs_steps(source)` progress steps."""
    from verify_ate.noise import load_noise
    from verify_ate.verify.data.observation import load_frames

    dataset = source.dataset_folder(progress)
    if progress is not None:
        progress.step(f"reading episode {episode} frame {frame} of {dataset}")
    observations = load_frames(dataset, episode, [frame])
    checkpoint = source.checkpoint_folder(observations.stats, progress, build_device)
    check_cameras(observations.features, str(observations.description["dataset"]), checkpoint)
    noise = load_noise(noise_path) if noise_path is not None else None
    return RunInputs(
        checkpoint,
        source.cache.checkpoint_sha256(checkpoint),
        observations,
        noise,
        str(noise_path) if noise_path else None,
        robot,
        source.extra_meta,
    )


def demo_tracking_error(checkpoint: Path, dataset: Path, robot: RobotModel) -> dict:
    """How closely a checkpoint's predicted action chunks follow the recorded ones, over every frame of
    `dataset`: the tool centre point's distance (m) through `robot`'s forward kinematics, every arm's (mean and
    max over all arms, and per arm under "arms"), with a run's default noise (seed 0). Steps past an episode's
    end, where lerobot repeats the last action (`action_is_pad`), are left out of mean and max, and counted as
    lerobot pads them in the *_with_padding figures."""
    import numpy as np

    from verify_ate.kinematics import arm_poses
    from verify_ate.verify.compare.metrics import position_errors
    from verify_ate.verify.data.observation import load_chunk_frames
    from verify_ate.verify.model.runners import runner_for

    with runner_for(checkpoint) as runner:
        frames = load_chunk_frames(dataset, runner.chunk_size)
        noise = default_noise(runner.expected_noise_shape)
        predicted = runner.predict(frames, noise)
    recorded = np.stack([np.asarray(frame["action"]) for frame in frames])  # [N, chunk, A]
    padded = np.stack([np.asarray(frame["action_is_pad"]) for frame in frames])  # [N, chunk]
    recorded_poses, predicted_poses = arm_poses(robot, recorded), arm_poses(robot, predicted)
    per_arm = {name: position_errors(recorded_poses[name], predicted_poses[name]) for name in recorded_poses}
    distance = np.stack(list(per_arm.values()), axis=-1)  # [N, chunk, arms]
    return {
        "mean_tcp_distance_m": float(distance[~padded].mean()),
        "max_tcp_distance_m": float(distance[~padded].max()),
        "mean_tcp_distance_with_padding_m": float(distance.mean()),
        "max_tcp_distance_with_padding_m": float(distance.max()),
        "frames": len(frames),
        "steps_scored": int((~padded).sum()),
        "padded_steps": int(padded.sum()),
        "noise_seed": noise.seed,
        "robot": robot.name,
        "arms": {
            name: {
                "mean_tcp_distance_m": float(errors[~padded].mean()),
                "max_tcp_distance_m": float(errors[~padded].max()),
            }
            for name, errors in per_arm.items()
        },
    }
