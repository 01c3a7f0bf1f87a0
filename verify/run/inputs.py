"""Where a run's model and data come from, and the inputs every side of a one-frame run shares.

Three parts, one job each:
- `ImportCache`: the folder where old-format inputs are made current once (a LeRobot v2.x dataset, a
  pre-0.4 lerobot pi0 checkpoint) and where checkpoint hashes are remembered;
- `UserSource`: a user's checkpoint and dataset folders, checked, and imported through the cache when old;
- `DemoSource`: the embedded demo, a dataset written by lerobot and the tiny pi0 trained on it (or the
  full-size seeded pi0), made on first use under the cache.
Both sources answer the same questions (`ModelSource`), so the commands never ask which one they have.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from verify_ate.kinematics import RobotModel, load_robot
from verify_ate.verify.errors import InputError
from verify_ate.verify.run.sides import RunInputs, check_cameras, default_noise

if TYPE_CHECKING:  # the model packages load torch, which the model-free commands do without
    from verify_ate.verify.model.seeded import SeededCheckpoint

HASH_CACHE_FILE = "checkpoint_hashes.json"
IMPORTED_FOLDER = "imported"  # old-format inputs imported into the cache
MODEL_SIZES = ("tiny", "full")
DEMO_NOTE = {
    "tiny": "demo: tiny pi0 TRAINED on a generated Koch-like dataset (seeded, {steps} steps); its numbers show the "
    "tool works, they say nothing about the Koch pi0 checkpoint",
    "full": "demo: full-size pi0 with RANDOM weights (seeded) on a generated Koch-like dataset; its numbers show "
    "the tool works, they say nothing about the Koch pi0 checkpoint",
}


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

        if progress is not None:
            progress.step(f"checking {self.checkpoint} and {self.dataset}")
        check_checkpoint_folder(self.checkpoint)
        return self.cache.dataset(self.dataset, progress)

    def checkpoint_folder(
        self, dataset_stats: dict | None, progress: Any = None, build_device: str = "cpu"
    ) -> Path | SeededCheckpoint:
        return self.cache.checkpoint(self.checkpoint, self.dataset, progress)


# ---------------------------------------------------------------- the embedded demo


@dataclass(frozen=True)
class DemoSource:
    """The demo: a generated Koch-like dataset written by lerobot, and the tiny pi0 trained on it (committed,
    or trained into the cache on first use), or the full-size pi0 with seeded weights made on each side's
    own device; with `save_checkpoint`, that model is written there first and run from there."""

    cache_dir: Path | None = None
    size: str = "tiny"  # "tiny" (the trained checkpoint) or "full" (lerobot's real sizes, seeded)
    save_checkpoint: Path | None = None
    num_inference_steps: int | None = None

    def __post_init__(self) -> None:
        if self.size not in MODEL_SIZES:
            raise InputError(f"model size {self.size!r}: one of {', '.join(MODEL_SIZES)}")

    @property
    def note(self) -> str:
        if self.size == "full":
            return DEMO_NOTE["full"]
        from verify_ate.verify.model.training import load_recipe

        return DEMO_NOTE["tiny"].format(steps=load_recipe().steps)

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
        return ensure_demo_dataset(self.cache.folder)

    def checkpoint_folder(
        self, dataset_stats: dict | None, progress: Any = None, build_device: str = "cpu"
    ) -> Path | SeededCheckpoint:
        if self.size == "full":
            return self._full_size(dataset_stats, progress, build_device)
        from verify_ate.verify.data.demo_dataset import ensure_demo_dataset, load_demo_profile, profile_cache_key
        from verify_ate.verify.data.observation import load_chunk_frames
        from verify_ate.verify.model.training import ensure_trained_checkpoint

        dataset = ensure_demo_dataset(self.cache.folder)  # made by dataset_folder already: this only finds it
        demo = load_demo_profile()
        tiny = ensure_trained_checkpoint(
            self.cache.folder / "checkpoints",
            lambda chunk_size: load_chunk_frames(dataset, chunk_size),
            dataset_stats or {},
            profile_cache_key(demo),
            evaluate=lambda folder: demo_tracking_error(folder, dataset, load_robot(demo.robot)),
            progress=progress,
        )
        if self.save_checkpoint is None:
            return tiny
        if self.save_checkpoint.exists():
            raise InputError(f"{self.save_checkpoint}: already exists; refusing to overwrite a checkpoint folder")
        shutil.copytree(tiny, self.save_checkpoint)
        return self.save_checkpoint

    def _full_size(self, dataset_stats: dict | None, progress: Any, build_device: str) -> Path | SeededCheckpoint:
        from verify_ate.verify.model.seeded import SeededCheckpoint, save_seeded_checkpoint
        from verify_ate.verify.model.tiny import load_full_profile

        recipe = SeededCheckpoint(load_full_profile(), seed=0, dataset_stats=dataset_stats or {})
        if self.save_checkpoint is None:
            return recipe
        from verify_ate.verify.model.devices import resolve_device

        if progress is not None:
            progress.step(f"making the full-size seeded pi0 on {build_device} and writing {self.save_checkpoint}")
        return save_seeded_checkpoint(recipe, self.save_checkpoint, resolve_device(build_device), progress)


# ---------------------------------------------------------------- one frame's shared inputs


def prepare_inputs_steps(source: ModelSource) -> int:
    """Progress steps `prepare_inputs` takes."""
    return DATASET_STEPS + 1 + source.checkpoint_steps


def prepare_inputs(
    source: ModelSource,
    robot: RobotModel,
    episode: int,
    frame: int,
    noise_path: Path | None,
    progress: Any = None,
    build_device: str = "cpu",
) -> RunInputs:
    """Observation, noise and checkpoint (with its hash) shared by every side of a one-frame run.
    `build_device`: where a demo model that is saved first is made (the reference side's device).
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
    `dataset`: the tool centre point's distance (m) through `robot`'s forward kinematics, with a run's
    default noise (seed 0). Steps past an episode's end, where lerobot repeats the last action
    (`action_is_pad`), are left out of mean and max, and counted as lerobot pads them in the *_with_padding
    figures."""
    import numpy as np

    from verify_ate.kinematics import dataset_forward_kinematics
    from verify_ate.verify.compare.metrics import position_errors
    from verify_ate.verify.data.observation import load_chunk_frames
    from verify_ate.verify.model.runner import Pi0Runner

    with Pi0Runner(checkpoint) as runner:
        frames = load_chunk_frames(dataset, runner.expected_noise_shape[1])
        noise = default_noise(runner.expected_noise_shape)
        predicted = runner.predict(frames, noise)
    recorded = np.stack([np.asarray(frame["action"]) for frame in frames])  # [N, chunk, A]
    padded = np.stack([np.asarray(frame["action_is_pad"]) for frame in frames])  # [N, chunk]
    distance = position_errors(
        dataset_forward_kinematics(robot, recorded), dataset_forward_kinematics(robot, predicted)
    )  # [N, chunk]
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
    }
