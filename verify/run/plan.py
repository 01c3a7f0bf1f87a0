"""What a sweep covers: episodes x frames x noise seeds, checked against the dataset, cut into batches.

A sweep is a list of units (episode, frame, noise seed), ordered episode, then frame, then seed,
cut into batches of `batch_size` consecutive units; each batch is ONE forward pass of pi0 (frames
stacked, noise row i for unit i). Planning reads only the dataset's metadata, never decodes a
frame, and its errors quote the values they refuse (the command line adds the flag's name).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from verify_ate.noise import FixedNoise, check_noise_shape, make_noise
from verify_ate.verify.errors import InputError

# ---------------------------------------------------------------- what to sweep


def parse_index_list(text: str, what: str = "index list") -> list[int]:
    """`0,3,5-9` -> [0, 3, 5, 6, 7, 8, 9] (order kept, duplicates dropped); errors quote `text` as `what`."""
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
    def parse(cls, text: str) -> FrameRange:
        parts = str(text).split(":")
        if len(parts) not in (2, 3):
            raise InputError(
                f"frame range {text!r}: expected START:STOP or START:STOP:STEP (e.g. 0:50:5, 10: for 10 to the end)"
            )
        try:
            start = int(parts[0]) if parts[0].strip() else 0
            stop = int(parts[1]) if parts[1].strip() else None
            step = int(parts[2]) if len(parts) == 3 and parts[2].strip() else 1
        except ValueError:
            raise InputError(f"frame range {text!r}: START, STOP and STEP must be integers") from None
        if start < 0 or (stop is not None and stop <= start) or step < 1:
            raise InputError(f"frame range {text!r}: need 0 <= START < STOP and STEP >= 1")
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


def plan_sweep(
    dataset: Path, episodes: list[int] | None, frame_range: FrameRange, seeds: list[int] | None, batch_size: int
) -> SweepPlan:
    """Checks the episodes and frames against the dataset's metadata (no decoding); clips STOP per episode."""
    from verify_ate.verify.data.observation import episode_row, inspect_dataset

    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    layout = inspect_dataset(dataset)
    total = layout.total_episodes
    if episodes is None:
        episodes = list(range(total))
    outside = [e for e in episodes if e >= total]
    if outside:
        raise InputError(
            f"{layout.root}: episode {outside[0]} out of range, the dataset has {total} episodes (0..{total - 1})"
        )
    notes, frames_per_episode, units = [], {}, []
    for episode in episodes:
        length = int(episode_row(layout, episode)["length"])
        frames, clipped = frame_range.within(length)
        if clipped:
            notes.append(
                f"episode {episode}: frame range {frame_range} clipped to its {length} frames ({len(frames)} frames)"
            )
        if not frames:
            notes.append(f"episode {episode}: no frame in frame range {frame_range} (it has {length} frames); skipped")
            continue
        frames_per_episode[episode] = frames
        for frame in frames:
            for seed in seeds if seeds is not None else [None]:
                units.append(SweepUnit(len(units), episode, frame, seed))
    if not units:
        raise InputError(f"{layout.root}: frame range {frame_range} selects no frame in episodes {episodes}")
    return SweepPlan(
        layout.root,
        tuple(units),
        batch_size,
        tuple(frames_per_episode),
        frame_range,
        None if seeds is None else tuple(seeds),
        frames_per_episode,
        tuple(notes),
    )


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
            check_noise_shape(self.fixed.shape, shape, self.path)
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
            return {
                "file": self.path,
                "seed": self.fixed.seed,
                "generator": self.fixed.generator,
                "shape": list(self.fixed.shape),
            }
        return {
            "seeds": list(self.seeds),
            "generator": self.for_seed(self.seeds[0], shape).generator,
            "shape": list(shape),
        }


@dataclass(frozen=True)
class SweepSelection:
    """What the user asked to sweep, before it is checked against a dataset."""

    episodes: tuple[int, ...] | None = None  # None: every episode
    frame_range: FrameRange = FrameRange()
    seeds: tuple[int, ...] | None = (0,)  # one noise draw per seed; None: the fixed noise file
    noise: Path | None = None  # one fixed-noise file for every frame (excludes seeds)
    batch_size: int = 8

    def __post_init__(self) -> None:
        if (self.seeds is None) == (self.noise is None):
            raise InputError(
                "give noise seeds or one fixed noise file, not both: seeds draw noise per frame, a file fixes one draw"
            )

    def noise_source(self) -> NoiseSource:
        from verify_ate.noise import load_noise

        if self.noise is not None:
            return NoiseSource(fixed=load_noise(self.noise), path=str(self.noise))
        assert self.seeds is not None
        return NoiseSource(seeds=list(self.seeds))
