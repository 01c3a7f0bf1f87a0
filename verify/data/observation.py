"""Observations from a local LeRobot dataset, read through lerobot's own LeRobotDataset.

The same frames (the same bytes) go to the reference device and to the device under test; their
hash goes into both artifacts so that `compare` can refuse two runs that saw different inputs.

Everything is checked on disk before lerobot is asked: lerobot treats a missing local file as
"download it from the hub", which on these machines means a long network error instead of a
one-line message naming the file.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import packaging.version
import pyarrow.parquet as pq

from verify_ate.verify.errors import InputError

READABLE_MAJOR = 3  # lerobot 0.6.1 reads codebase_version v3.x
# torchcodec needs a system FFmpeg and lerobot then falls back to PyAV with a long traceback
# (seen on machines without FFmpeg); PyAV ships its own FFmpeg, so ask for it directly.
VIDEO_BACKEND = "pyav"
INFO_FILE = Path("meta") / "info.json"
# Where an episode's frames lie in each camera's video file (meta/episodes columns, v3.0).
VIDEO_COLUMNS = ("chunk_index", "file_index", "from_timestamp", "to_timestamp")


@dataclass(frozen=True)
class DatasetLayout:
    """What info.json says about a v3.x dataset folder, checked against the files present."""

    root: Path
    info: dict
    repo_id: str

    @property
    def total_episodes(self) -> int:
        return int(self.info.get("total_episodes", 0))

    @property
    def video_keys(self) -> list[str]:
        return [k for k, f in self.info.get("features", {}).items() if f.get("dtype") == "video"]


@dataclass
class ObservationSet:
    """Dataset items (lerobot's dicts of tensors) of some frames of one episode, with their provenance."""

    frames: list[dict]
    sha256: str  # observation_sha256(frames)
    stats: dict | None  # meta/stats.json as lerobot loads it (normalisation when a checkpoint has no processors)
    description: dict  # dataset, repo_id, codebase_version, robot_type, fps, episode, episode_length, frames, task
    features: dict  # info.json "features"

    @property
    def task(self) -> str:
        return self.description["task"]


# ── the folder ────────────────────────────────────────────────────────────────────────────────────


def inspect_dataset(dataset_dir: str | Path) -> DatasetLayout:
    """Checks that `dataset_dir` is a LeRobot dataset lerobot 0.6.1 can read here; InputError if not."""
    root = Path(dataset_dir).expanduser()
    if not root.exists():
        raise InputError(f"{root}: dataset folder does not exist")
    if not root.is_dir():
        raise InputError(f"{root}: not a folder (a LeRobot dataset is a folder with meta/, data/, videos/)")
    root = root.resolve()
    info_path = root / INFO_FILE
    if not info_path.is_file():
        raise InputError(f"{root}: not a LeRobot dataset (no {INFO_FILE})")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{info_path}: unreadable info.json ({error})") from None
    if not isinstance(info, dict):
        raise InputError(f"{info_path}: info.json must hold a JSON object")
    repo_id = str(info.get("repo_id") or f"local/{root.name}")
    _check_version(root, info, repo_id)
    for key in ("features", "total_episodes", "data_path"):
        if key not in info:
            raise InputError(f"{info_path}: info.json has no {key!r}")
    for required in (Path("meta") / "tasks.parquet", Path("meta") / "episodes", Path("data")):
        if not (root / required).exists():
            raise InputError(f"{root}: incomplete LeRobot v3.0 dataset, {required} is missing")
    return DatasetLayout(root=root, info=info, repo_id=repo_id)


def conversion_command(root: Path, repo_id: str) -> str:
    """The command that makes a v2.0/v2.1 dataset into a v3.0 one beside it (verify/data/legacy_dataset.py)."""
    target = root.with_name(f"{root.name}_v30")
    return f"verify-ate import dataset {shlex.quote(str(root))} --out {shlex.quote(str(target))}"


def _check_version(root: Path, info: dict, repo_id: str) -> None:
    raw = info.get("codebase_version")
    if raw is None:
        raise InputError(f"{root / INFO_FILE}: no codebase_version; not a LeRobot dataset lerobot 0.6.1 can read")
    try:
        version = packaging.version.parse(str(raw).lstrip("v"))
    except packaging.version.InvalidVersion:
        raise InputError(f"{root / INFO_FILE}: codebase_version {raw!r} is not a version") from None
    if version.major == READABLE_MAJOR:
        return
    if version.major > READABLE_MAJOR:
        raise InputError(
            f"{root}: LeRobot dataset format {raw} is newer than lerobot 0.6.1 reads (v3.0); upgrade lerobot"
        )
    if (version.major, version.minor) in ((2, 0), (2, 1)):
        raise InputError(
            f"{root}: LeRobot dataset format {raw}, lerobot 0.6.1 reads only v3.0; convert it in this process with: "
            f"{conversion_command(root, repo_id)} (the main form, run and sweep do it on their own)"
        )
    raise InputError(
        f"{root}: LeRobot dataset format {raw} is too old for lerobot 0.6.1, which converts only from v2.1"
    )


def _episodes_table(layout: DatasetLayout, columns: list[str]):
    try:
        return pq.read_table(layout.root / "meta" / "episodes", columns=columns)
    except (OSError, KeyError, ValueError) as error:  # pyarrow's errors subclass these
        raise InputError(f"{layout.root / 'meta' / 'episodes'}: unreadable episode metadata ({error})") from None


def _check_episode(layout: DatasetLayout, episode: int) -> None:
    if isinstance(episode, bool) or not isinstance(episode, (int, np.integer)):
        raise InputError(f"{layout.root}: episode must be an integer, not {episode!r}")
    total = layout.total_episodes
    if not 0 <= episode < total:
        raise InputError(
            f"{layout.root}: episode {episode} out of range, the dataset has {total} episodes (0..{total - 1})"
        )


def episode_row(layout: DatasetLayout, episode: int) -> dict:
    """The meta/episodes row of one episode (length, data and video file indices)."""
    _check_episode(layout, episode)
    columns = ["episode_index", "length", "data/chunk_index", "data/file_index"]
    columns += [f"videos/{key}/{part}" for key in layout.video_keys for part in VIDEO_COLUMNS]
    table = _episodes_table(layout, columns).to_pylist()
    rows = [row for row in table if row["episode_index"] == episode]
    if len(rows) != 1:
        raise InputError(f"{layout.root}: meta/episodes has {len(rows)} rows for episode {episode}, expected 1")
    return rows[0]


def _video_file(layout: DatasetLayout, row: dict, key: str) -> str:
    """The video file (relative to the dataset) holding camera `key` of the episode in `row`."""
    return layout.info["video_path"].format(
        video_key=key, chunk_index=row[f"videos/{key}/chunk_index"], file_index=row[f"videos/{key}/file_index"]
    )


def _check_episode_files(layout: DatasetLayout, row: dict) -> None:
    """The data and video files the episode needs, as info.json's path templates name them."""
    needed = [layout.info["data_path"].format(chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])]
    needed += [_video_file(layout, row, key) for key in layout.video_keys]
    for relative in needed:
        if not (layout.root / relative).is_file():
            raise InputError(f"{layout.root}: episode {row['episode_index']} needs {relative}, which is missing")


# ── observations ──────────────────────────────────────────────────────────────────────────────────


def _update(digest, data: bytes) -> None:
    """Length-prefixed, so that no two different sequences of fields hash alike."""
    digest.update(len(data).to_bytes(8, "little"))
    digest.update(data)


def observation_sha256(frames: Sequence[dict]) -> str:
    """SHA-256 over every observation.* tensor (key, dtype, shape, bytes; keys sorted) and the task
    string of each frame, in frame order. Metadata (indices, timestamps, action) is left out: two
    runs that fed the policy the same inputs hash alike."""
    import torch

    digest = hashlib.sha256()
    for item in frames:
        for key in sorted(k for k in item if k.startswith("observation.")):
            value = item[key]
            if isinstance(value, torch.Tensor):
                array = value.detach().cpu().contiguous().numpy()
            else:
                array = np.ascontiguousarray(value)
            _update(digest, key.encode())
            _update(digest, str(array.dtype).encode())
            _update(digest, json.dumps(list(array.shape)).encode())
            _update(digest, array.tobytes())
        _update(digest, b"task")
        _update(digest, str(item.get("task", "")).encode("utf-8"))
    return digest.hexdigest()


def load_frames(dataset_dir: str | Path, episode: int, frames: Sequence[int]) -> ObservationSet:
    """Frames (indices within the episode) of one episode, decoded by lerobot with PyAV."""
    layout = inspect_dataset(dataset_dir)
    row = episode_row(layout, episode)
    length = int(row["length"])
    frames = list(frames)
    if not frames:
        raise InputError(f"{layout.root}: no frames asked for")
    for frame in frames:
        if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or not 0 <= frame < length:
            raise InputError(
                f"{layout.root}: frame {frame!r} out of range, episode {episode} has {length} frames (0..{length - 1})"
            )
    _check_episode_files(layout, row)

    try:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        dataset = LeRobotDataset(layout.repo_id, root=layout.root, episodes=[int(episode)], video_backend=VIDEO_BACKEND)
        # The dataset holds this episode only; find each frame's row by its frame_index.
        frame_indices = dataset.hf_dataset.data.column("frame_index").to_numpy()
        position = {int(f): i for i, f in enumerate(frame_indices)}
        items = [dataset[position[int(frame)]] for frame in frames]
    except InputError:
        raise
    except Exception as error:  # a corrupt file surfaces in many library types: find which file it is
        first_line = (str(error).strip().splitlines() or [""])[0]
        broken = _broken_video(layout, row)
        if broken is not None:
            raise InputError(broken) from None
        raise InputError(
            f"{layout.root}: lerobot could not read episode {episode} ({type(error).__name__}: {first_line})"
        ) from None

    for frame, item in zip(frames, items, strict=True):
        if int(item["episode_index"]) != episode or int(item["frame_index"]) != frame:
            raise InputError(
                f"{layout.root}: asked for episode {episode} frame {frame}, lerobot returned "
                f"episode {int(item['episode_index'])} frame {int(item['frame_index'])}"
            )
    tasks = list(dict.fromkeys(str(item.get("task", "")) for item in items))
    description = {
        "dataset": str(layout.root),
        "repo_id": layout.repo_id,
        "codebase_version": layout.info.get("codebase_version"),
        "robot_type": layout.info.get("robot_type"),
        "fps": layout.info.get("fps"),
        "episode": int(episode),
        "episode_length": length,
        "frames": [int(f) for f in frames],
        "task": tasks[0] if len(tasks) == 1 else " | ".join(tasks),
    }
    return ObservationSet(
        frames=items,
        sha256=observation_sha256(items),
        stats=dataset.meta.stats,
        description=description,
        features=dict(dataset.meta.features),
    )


def load_chunk_frames(dataset_dir: str | Path, chunk_size: int) -> list[dict]:
    """Every frame of a dataset, decoded once by lerobot, each with the action chunk that starts at it.

    Items as LeRobotDataset gives them: cameras [3, H, W] float in [0, 1], observation.state [S],
    task, and `action` [chunk_size, A] with `action_is_pad` [chunk_size] (True past the episode's
    end, where lerobot repeats the episode's last action).
    """
    layout = inspect_dataset(dataset_dir)
    try:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        fps = float(layout.info["fps"])
        chunk = {"action": [step / fps for step in range(chunk_size)]}
        dataset = LeRobotDataset(layout.repo_id, root=layout.root, delta_timestamps=chunk, video_backend=VIDEO_BACKEND)
        return [dataset[index] for index in range(len(dataset))]
    except Exception as error:  # a corrupt file surfaces in many library types
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise InputError(
            f"{layout.root}: lerobot could not read the dataset's frames and chunks ({type(error).__name__}: "
            f"{first_line})"
        ) from None


def _broken_video(layout: DatasetLayout, row: dict) -> str | None:
    """'FILE: problem' for the first of the episode's video files that does not decode to every frame of
    the episode (lerobot's decoder says only that a timestamp was not found), else None."""
    import av

    fps = float(layout.info.get("fps") or 0)
    for key in layout.video_keys:
        path = layout.root / _video_file(layout, row, key)
        start, stop = float(row[f"videos/{key}/from_timestamp"]), float(row[f"videos/{key}/to_timestamp"])
        expected = round((stop - start) * fps) if fps else None
        decoded = 0
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                for frame in container.decode(stream):
                    if frame.time is None or frame.time >= stop - 0.5 / max(fps, 1):
                        break
                    if frame.time >= start - 0.5 / max(fps, 1):
                        decoded += 1
        except Exception as error:  # PyAV raises its own error types for every kind of damage
            first_line = (str(error).strip().splitlines() or [""])[0]
            return f"{path}: corrupt video, camera {key} of episode {row['episode_index']} ({first_line})"
        if expected is not None and decoded < expected:
            return (
                f"{path}: truncated or corrupt video: camera {key} of episode {row['episode_index']} decodes to "
                f"{decoded} of its {expected} frames"
            )
    return None


@dataclass(frozen=True)
class RecordedChunk:
    """The actions the dataset recorded from one frame on: what a policy's chunk at that frame should follow."""

    actions: np.ndarray  # [T, J] in dataset units; past the episode's end, its last action repeated
    valid_steps: int  # how many of the T steps lie inside the episode
    episode: int
    frame: int


def recorded_action_chunk(dataset_dir: str | Path, episode: int, frame: int, horizon: int) -> RecordedChunk:
    """The recorded actions of `episode` at frames frame .. frame + horizon - 1, padded as lerobot pads a
    chunk past the episode's end (the last action repeated)."""
    path = episode_joint_path(dataset_dir, episode, "action")
    if not 0 <= frame < len(path):
        raise InputError(f"{dataset_dir}: frame {frame} out of range, episode {episode} has {len(path)} frames")
    indices = np.minimum(np.arange(frame, frame + horizon), len(path) - 1)
    return RecordedChunk(path[indices], min(horizon, len(path) - frame), int(episode), int(frame))


def episode_joint_path(dataset_dir: str | Path, episode: int, key: str = "observation.state") -> np.ndarray:
    """One episode's joint vectors [T, n] in frame order, read from the parquet data (no video decoding)."""
    layout = inspect_dataset(dataset_dir)
    row = episode_row(layout, episode)
    feature = layout.info["features"].get(key)
    if feature is None or feature.get("dtype") in ("video", "image") or len(feature.get("shape", [])) != 1:
        raise InputError(f"{layout.root}: no vector feature {key!r} (features: {', '.join(layout.info['features'])})")
    _check_episode_files(layout, row)
    data_file = layout.root / layout.info["data_path"].format(
        chunk_index=row["data/chunk_index"], file_index=row["data/file_index"]
    )
    try:
        table = pq.read_table(data_file, columns=["frame_index", key], filters=[("episode_index", "=", int(episode))])
    except (OSError, KeyError, ValueError) as error:
        raise InputError(f"{data_file}: cannot read {key!r} of episode {episode} ({error})") from None
    order = np.argsort(table.column("frame_index").to_numpy(), kind="stable")
    width = int(feature["shape"][0])
    values = table.column(key).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    if values.size != table.num_rows * width:
        raise InputError(f"{data_file}: {key!r} does not hold {width} values per frame")
    path = values.reshape(table.num_rows, width)[order]
    if path.shape[0] != int(row["length"]):
        raise InputError(f"{data_file}: episode {episode} has {path.shape[0]} rows, its metadata says {row['length']}")
    if not np.all(np.isfinite(path)):
        raise InputError(f"{data_file}: {key!r} of episode {episode} holds non-finite values")
    return path
