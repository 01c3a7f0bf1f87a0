"""Where a run's model and data come from: a user's checkpoint and dataset, or the embedded demo."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kinematics import RobotModel
from verify.errors import InputError
from verify.run.sides import RunInputs

DEMO_NOTE = (
    "demo: tiny pi0 with RANDOM weights (seeded) on a generated Koch-like dataset; its numbers show the tool "
    "works, they say nothing about the Koch pi0 checkpoint"
)


@dataclass(frozen=True)
class ModelSource:
    """A checkpoint folder and a dataset folder, or `demo` (both made and cached under `cache_dir`)."""

    checkpoint: Path | None = None
    dataset: Path | None = None
    demo: bool = False
    cache_dir: Path | None = None  # None: the demo's default cache (~/.cache/verify-ate or $VERIFY_ATE_CACHE)
    num_inference_steps: int | None = None  # overrides the checkpoint's flow-matching step count

    @property
    def extra_meta(self) -> dict:
        """What every artifact of this source records beyond the contract (the demo says what it is)."""
        return {"demo": True, "note": DEMO_NOTE} if self.demo else {}

    def dataset_folder(self, progress=None) -> Path:
        """The dataset of this run (after checking the source is complete); under `demo`, written by lerobot
        on first use. Checked here, not at parse time, so that a missing device is reported first (exit 3)."""
        if self.demo and (self.checkpoint or self.dataset):
            raise InputError("--demo brings its own checkpoint and dataset; drop --checkpoint/--dataset or --demo")
        if not self.demo:
            missing = [
                flag
                for flag, value in (("--checkpoint", self.checkpoint), ("--dataset", self.dataset))
                if value is None
            ]
            if missing:
                raise InputError(f"{' and '.join(missing)} required (or --demo for the embedded default)")
            assert self.checkpoint is not None and self.dataset is not None
            if not self.checkpoint.is_dir():
                raise InputError(f"{self.checkpoint}: checkpoint folder not found")
            return self.dataset
        from verify.data.demo_dataset import default_cache_dir, ensure_demo_dataset

        _step(progress, "preparing the demo dataset (written by lerobot on first use)")
        return ensure_demo_dataset(self.cache_dir or default_cache_dir())

    def checkpoint_folder(self, dataset_stats: dict | None, progress=None) -> Path:
        """The checkpoint of this run; under `demo`, the tiny random-weight one built for these statistics."""
        if not self.demo:
            assert self.checkpoint is not None
            return self.checkpoint
        from verify.data.demo_dataset import default_cache_dir
        from verify.model.tiny import ensure_tiny_checkpoint

        _step(progress, "preparing the tiny random-weight pi0 checkpoint")
        return ensure_tiny_checkpoint(
            Path(self.cache_dir or default_cache_dir()) / "checkpoints", dataset_stats, seed=0
        )


def prepare_inputs(
    source: ModelSource, robot: RobotModel, episode: int, frame: int, noise_path: Path | None, progress=None
) -> RunInputs:
    """Observation, noise and checkpoint (with its hash) shared by every side of a one-frame run."""
    from noise import load_noise
    from verify.data.observation import load_frames
    from verify.model.checkpoint import checkpoint_sha256

    dataset = source.dataset_folder(progress)
    if not source.demo:
        _step(progress, f"reading episode {episode} frame {frame} of {dataset}")
    observations = load_frames(dataset, episode, [frame])
    checkpoint = source.checkpoint_folder(observations.stats, progress)
    noise = load_noise(noise_path) if noise_path is not None else None
    return RunInputs(
        checkpoint,
        checkpoint_sha256(checkpoint),
        observations,
        noise,
        str(noise_path) if noise_path else None,
        robot,
        source.extra_meta,
    )


def _step(progress, message: str) -> None:
    if progress is not None:
        progress.step(message)
