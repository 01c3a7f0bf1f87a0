"""Where a run's model and data come from: a user's checkpoint and dataset, or the embedded demo (and how
closely the demo's trained model follows the demo dataset's recorded motion)."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kinematics import RobotModel, load_robot
from verify.errors import InputError
from verify.run.sides import RunInputs, check_cameras, default_noise

if TYPE_CHECKING:  # the model packages load torch, which the model-free commands do without
    from verify.model.seeded import SeededCheckpoint

HASH_CACHE_FILE = "checkpoint_hashes.json"
IMPORTED_FOLDER = "imported"  # old-format checkpoints imported into the cache
MODEL_SIZES = ("tiny", "full")
DEMO_NOTE = {
    "tiny": "demo: tiny pi0 TRAINED on a generated Koch-like dataset (seeded, {steps} steps); its numbers show the "
    "tool works, they say nothing about the Koch pi0 checkpoint",
    "full": "demo: full-size pi0 with RANDOM weights (seeded) on a generated Koch-like dataset; its numbers show "
    "the tool works, they say nothing about the Koch pi0 checkpoint",
}


@dataclass(frozen=True)
class ModelSource:
    """A checkpoint folder and a dataset folder, or `demo` (both made and cached under `cache_dir`)."""

    checkpoint: Path | None = None
    dataset: Path | None = None
    demo: bool = False
    cache_dir: Path | None = None  # None: the demo's default cache (~/.cache/verify-ate or $VERIFY_ATE_CACHE)
    num_inference_steps: int | None = None  # overrides the checkpoint's flow-matching step count
    size: str = "tiny"  # the demo's model: "tiny" (cached checkpoint) or "full" (lerobot's real sizes, seeded)
    save_checkpoint: Path | None = None  # the demo's model is also written here, and run from there

    def __post_init__(self) -> None:
        if self.size not in MODEL_SIZES:
            raise InputError(f"--size {self.size!r}: one of {', '.join(MODEL_SIZES)}")
        if not self.demo and (self.size != "tiny" or self.save_checkpoint is not None):
            raise InputError("--size and --save-checkpoint choose and keep the demo's model: add --demo")
        if self.demo and (self.checkpoint or self.dataset):
            raise InputError("--demo brings its own checkpoint and dataset; drop --checkpoint/--dataset or --demo")

    @property
    def note(self) -> str:
        """What the demo's model is, for stderr and the report."""
        if self.size == "full":
            return DEMO_NOTE["full"]
        from verify.model.training import load_recipe

        return DEMO_NOTE["tiny"].format(steps=load_recipe().steps)

    @property
    def extra_meta(self) -> dict:
        """What every artifact of this source records beyond the contract (the demo says what it is)."""
        return {"demo": True, "note": self.note} if self.demo else {}

    def dataset_folder(self, progress=None) -> Path:
        """The dataset of this run (after checking the source is complete); under `demo`, written by lerobot
        on first use. Checked here, not at parse time, so that a missing device is reported first (exit 3)."""
        if not self.demo:
            missing = [
                flag
                for flag, value in (("--checkpoint", self.checkpoint), ("--dataset", self.dataset))
                if value is None
            ]
            if missing:
                raise InputError(f"{' and '.join(missing)} required (or --demo for the embedded default)")
            assert self.checkpoint is not None and self.dataset is not None
            from verify.model.checkpoint import check_checkpoint_folder

            check_checkpoint_folder(self.checkpoint)  # before any frame is decoded or model built
            return self._converted_if_old(self.dataset, progress)
        from verify.data.demo_dataset import ensure_demo_dataset

        _step(progress, "preparing the demo dataset (written by lerobot on first use)")
        return ensure_demo_dataset(self.cache)

    def checkpoint_sha256(self, checkpoint: Path | SeededCheckpoint) -> str:
        """The checkpoint's hash, computed once per run (streamed, before any model is loaded) and
        remembered in the cache folder while its files keep their paths, sizes and modification times."""
        from verify.model.checkpoint import checkpoint_sha256
        from verify.model.seeded import SeededCheckpoint

        if isinstance(checkpoint, SeededCheckpoint):
            return checkpoint.sha256
        return checkpoint_sha256(checkpoint, cache_file=self.cache / HASH_CACHE_FILE)

    @property
    def cache(self) -> Path:
        """The cache folder: `cache_dir`, else ~/.cache/verify-ate or $VERIFY_ATE_CACHE."""
        from verify.data.demo_dataset import default_cache_dir

        return Path(self.cache_dir or default_cache_dir())

    def _converted_if_old(self, dataset: Path, progress=None) -> Path:
        """A LeRobot v2.0/v2.1 dataset converted into the cache once (keyed by its content), else `dataset`."""
        from verify.data.legacy_dataset import IMPORTABLE, content_key, dataset_version, import_dataset

        if not (dataset / "meta" / "info.json").is_file() or dataset_version(dataset) not in IMPORTABLE:
            return dataset
        return self._cached_copy(
            dataset,
            content_key(dataset),
            lambda target: import_dataset(dataset, target),
            what=f"a LeRobot {dataset_version(dataset)} dataset",
            made="converted to v3.0 into",
            reused="using its v3.0 copy made earlier:",
            command="verify-ate import dataset",
            progress=progress,
        )

    def _imported_if_old(self, checkpoint: Path, progress=None) -> Path:
        """An old-format pi0 folder imported into the cache once (keyed by its content), else `checkpoint`."""
        from verify.model.legacy import import_checkpoint, is_legacy_checkpoint

        if not is_legacy_checkpoint(checkpoint):
            return checkpoint
        return self._cached_copy(
            checkpoint,
            self.checkpoint_sha256(checkpoint)[:16],
            lambda target: import_checkpoint(checkpoint, target, self.dataset),
            what="an old-format pi0 checkpoint (lerobot before 0.4)",
            made="imported into",
            reused="using its copy imported earlier:",
            command="verify-ate import checkpoint",
            progress=progress,
        )

    def _cached_copy(
        self, source: Path, key: str, convert, *, what: str, made: str, reused: str, command: str, progress=None
    ) -> Path:
        """`source` converted into <cache>/imported/<name>-<key> the first time, reused afterwards; each use
        is one note on stderr. Concurrent runs: the first to finish wins, the other uses its copy."""
        target = self.cache / IMPORTED_FOLDER / f"{source.name}-{key}"
        if target.is_dir():
            print(f"note: {source} is {what}; {reused} {target}", file=sys.stderr)
            return target
        _step(progress, f"converting {what}: {source}")
        try:
            convert(target)
        except InputError:
            if not target.is_dir():  # else another process finished the same conversion first
                raise
        print(f"note: {source} is {what}; {made} {target}, as `{command}` does", file=sys.stderr)
        return target

    def checkpoint_folder(
        self, dataset_stats: dict | None, progress=None, build_device: str = "cpu"
    ) -> Path | SeededCheckpoint:
        """The checkpoint of this run. Under `demo`: the tiny one trained on the demo dataset (committed, or
        trained into the cache on first use), or the full-size seeded random-weight
        recipe, which each side makes on its own device; with `save_checkpoint`, that model is written there
        first (made on `build_device`) and run from there."""
        if not self.demo:
            assert self.checkpoint is not None
            return self._imported_if_old(self.checkpoint, progress)
        if self.size == "full":
            from verify.model.seeded import SeededCheckpoint, save_seeded_checkpoint
            from verify.model.tiny import load_full_profile

            recipe = SeededCheckpoint(load_full_profile(), seed=0, dataset_stats=dataset_stats or {})
            if self.save_checkpoint is None:
                return recipe
            from verify.model.devices import resolve_device

            _step(progress, f"making the full-size seeded pi0 on {build_device} and writing {self.save_checkpoint}")
            return save_seeded_checkpoint(recipe, self.save_checkpoint, resolve_device(build_device), progress)
        from verify.data.demo_dataset import ensure_demo_dataset, load_demo_profile, profile_cache_key
        from verify.data.observation import load_chunk_frames
        from verify.model.training import ensure_trained_checkpoint

        dataset = ensure_demo_dataset(self.cache)  # made by dataset_folder already: this only finds it
        demo = load_demo_profile()
        tiny = ensure_trained_checkpoint(
            self.cache / "checkpoints",
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


def prepare_inputs(
    source: ModelSource,
    robot: RobotModel,
    episode: int,
    frame: int,
    noise_path: Path | None,
    progress=None,
    build_device: str = "cpu",
) -> RunInputs:
    """Observation, noise and checkpoint (with its hash) shared by every side of a one-frame run.
    `build_device`: where a demo model that is saved first is made (the reference side's device)."""
    from noise import load_noise
    from verify.data.observation import load_frames

    dataset = source.dataset_folder(progress)
    if not source.demo:
        _step(progress, f"reading episode {episode} frame {frame} of {dataset}")
    observations = load_frames(dataset, episode, [frame])
    checkpoint = source.checkpoint_folder(observations.stats, progress, build_device)
    check_cameras(observations.features, str(observations.description["dataset"]), checkpoint)
    noise = load_noise(noise_path) if noise_path is not None else None
    return RunInputs(
        checkpoint,
        source.checkpoint_sha256(checkpoint),
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

    from kinematics import dataset_forward_kinematics
    from verify.compare.metrics import position_errors
    from verify.data.observation import load_chunk_frames
    from verify.model.runner import Pi0Runner

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


def _step(progress, message: str) -> None:
    if progress is not None:
        progress.step(message)
