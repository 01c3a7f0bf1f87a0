"""LeRobot datasets in the v2.0 and v2.1 formats (as `danaaubakirova/koch_test` comes from the hub) made into
v3.0 folders that lerobot 0.6.1 reads, in this process, with one lerobot installed.

v2.0 -> v2.1 is done here: v2.1 adds per-episode statistics (`meta/episodes_stats.jsonl`), computed
from the episode's data with lerobot's own `compute_episode_stats` and, for the cameras, from the
episode's decoded video frames (PyAV) the way lerobot computes image statistics. Older layouts are
normalised on the way: a camera's `video_info` becomes `info`, names under `{"motors": [...]}`
become a list. v2.1 -> v3.0 is lerobot 0.6.1's own converter (its data, video, task, episode and
info steps), run on a staging folder whose data and videos are links to the source: the source
is never modified. The result is staged beside `out` and renamed into place whole.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from verify_ate.verify.errors import InputError

INFO = Path("meta") / "info.json"
IMPORTABLE = ("v2.0", "v2.1")


def dataset_version(root: Path) -> str:
    path = root / INFO
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["codebase_version"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"{path}: not a readable LeRobot dataset description ({error})") from None


def content_key(root: Path) -> str:
    """16 hex digits that change when the dataset does: its meta files' bytes, and the relative path and
    size of every data and video file (the videos are not read: a multi-GB dataset keys in milliseconds)."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        digest.update(relative.encode("utf-8") + path.stat().st_size.to_bytes(8, "little"))
        if relative.startswith("meta/"):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def import_dataset(source: Path, out: Path) -> Path:
    """`source` (LeRobot v2.0 or v2.1) as a v3.0 dataset folder at `out` (refused if it exists)."""
    if out.exists():
        raise InputError(f"{out}: already exists; refusing to overwrite a dataset folder")
    version = dataset_version(source)
    if version.startswith("v3"):
        raise InputError(f"{source / INFO}: already LeRobot {version}, which lerobot 0.6.1 reads as it is")
    if version not in IMPORTABLE:
        raise InputError(
            f"{source / INFO}: LeRobot format {version} cannot be imported (v2.0 and v2.1 can; convert a v1.x "
            "dataset with the lerobot release of its time first)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        old = staging / "v21"
        _link_layout(source, old)
        info = _normalised_info(json.loads((source / INFO).read_text(encoding="utf-8")))
        if version == "v2.0":
            _write_episode_stats(old, info)
            info["codebase_version"] = "v2.1"
        (old / INFO).write_text(json.dumps(info, indent=4), encoding="utf-8")
        new = staging / "v30"
        from verify_ate.verify.upstream.dataset_v21 import convert_v21_to_v30

        convert_v21_to_v30(old, new, source)
        new.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _link_layout(source: Path, target: Path) -> None:
    """A folder laid out like `source`: its own copy of meta/, links to the (large) data and videos."""
    target.mkdir()
    shutil.copytree(source / "meta", target / "meta")
    for name in ("data", "videos", "images"):
        if (source / name).is_dir():
            (target / name).symlink_to((source / name).resolve(), target_is_directory=True)


def _normalised_info(info: dict) -> dict:
    """v2.0's variants in the form lerobot's v2.1 -> v3.0 converter expects."""
    for feature in info.get("features", {}).values():
        if "video_info" in feature and "info" not in feature:
            feature["info"] = feature.pop("video_info")
        names = feature.get("names")
        if isinstance(names, dict) and len(names) == 1:
            feature["names"] = list(next(iter(names.values())))
    return info


def _write_episode_stats(root: Path, info: dict) -> None:
    """meta/episodes_stats.jsonl (v2.1) computed from each episode's data and video frames."""
    import pyarrow.parquet as pq
    from lerobot.datasets.compute_stats import compute_episode_stats

    features = info["features"]
    chunks_size = int(info.get("chunks_size", 1000))
    episodes = [json.loads(line) for line in (root / "meta" / "episodes.jsonl").read_text().splitlines() if line]
    lines = []
    for episode in sorted(episodes, key=lambda item: item["episode_index"]):
        index = int(episode["episode_index"])
        chunk = index // chunks_size
        data_path = root / info["data_path"].format(episode_chunk=chunk, episode_index=index)
        try:
            table = pq.read_table(data_path)
        except (OSError, ValueError) as error:
            raise InputError(f"{data_path}: cannot read episode {index} ({error})") from None
        data = {}
        for key, feature in features.items():
            if feature["dtype"] in ("video", "image", "string"):
                continue
            if key in table.column_names:
                column = table.column(key).to_pylist()
                data[key] = np.asarray(column, dtype=np.float64 if feature["dtype"].startswith("float") else None)
        stats = compute_episode_stats(data, features)
        for key, feature in features.items():
            if feature["dtype"] == "video":
                video = root / info["video_path"].format(episode_chunk=chunk, video_key=key, episode_index=index)
                stats[key] = _video_stats(video)
        lines.append(json.dumps({"episode_index": index, "stats": _plain(stats)}))
    (root / "meta" / "episodes_stats.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _video_stats(path: Path) -> dict:
    """Per-channel statistics of a video's frames in [0, 1], shaped [3, 1, 1] as lerobot keeps image stats."""
    import av
    from lerobot.datasets.compute_stats import get_feature_stats, sample_indices

    try:
        with av.open(str(path)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    except Exception as error:  # PyAV raises its own types for every kind of damage
        raise InputError(f"{path}: corrupt video ({error})") from None
    if not frames:
        raise InputError(f"{path}: the video holds no frame")
    sampled = np.stack([frames[i] for i in sample_indices(len(frames))]).transpose(0, 3, 1, 2)
    stats = get_feature_stats(sampled, axis=(0, 2, 3), keepdims=True)
    return {key: value if key == "count" else np.squeeze(value / 255.0, axis=0) for key, value in stats.items()}


def _plain(stats: dict) -> dict:
    return {key: {name: np.asarray(value).tolist() for name, value in values.items()} for key, values in stats.items()}
