"""LeRobot v2.0 datasets, as `danaaubakirova/koch_test` comes from the hub, made into v3.0 in this process:
by `verify-ate import dataset`, and on their own by the main form and `run`.

The v2.0 dataset is written here from the demo dataset, following koch_test's public layout: one parquet
per episode and one video per episode and camera (one camera in av1, the other in h264), meta/info.json
of codebase_version v2.0 with the v2-era `main_` joint names (a list for action, under "motors" for the
state) and `video_info` for one camera, `info` for the other, meta/episodes.jsonl and tasks.jsonl.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, tiny_checkpoint

pytestmark = pytest.mark.slow


def make_v20(demo: Path, target: Path, prefix: str = "main_") -> Path:
    """The demo dataset (LeRobot v3.0) rewritten in the v2.0 layout of danaaubakirova/koch_test: one parquet
    and one video per episode and camera (laptop in av1, phone in h264), meta/*.jsonl, the arm's joint names
    with the `main_` prefix (action as a list, observation.state under "motors"), `video_info` for one camera
    and `info` for the other."""
    import av
    import pyarrow as pa
    import pyarrow.parquet as pq

    info3 = json.loads((demo / "meta" / "info.json").read_text())
    table = pq.read_table(demo / "data" / "chunk-000" / "file-000.parquet")
    episodes3 = pq.read_table(demo / "meta" / "episodes").to_pylist()
    tasks = pq.read_table(demo / "meta" / "tasks.parquet").to_pandas()
    fps = int(info3["fps"])
    cameras = [k for k, f in info3["features"].items() if f["dtype"] == "video"]
    codecs = {cameras[0]: "libsvtav1", cameras[1]: "libx264"}
    (target / "meta").mkdir(parents=True)
    episodes_lines = []
    total = 0
    for row in episodes3:
        index = int(row["episode_index"])
        frames = table.filter(pa.compute.equal(table["episode_index"], index))
        keep = [
            c
            for c in frames.column_names
            if c in ("action", "observation.state", "timestamp", "frame_index", "episode_index", "index", "task_index")
        ]
        path = target / "data" / "chunk-000" / f"episode_{index:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(frames.select(keep), path)
        length = frames.num_rows
        total += length
        task = str(tasks.index[0]) if "task" not in tasks.columns else str(tasks["task"].iloc[0])
        episodes_lines.append(json.dumps({"episode_index": index, "tasks": [task], "length": length}))
        for camera in cameras:
            source = demo / info3["video_path"].format(
                video_key=camera,
                chunk_index=row[f"videos/{camera}/chunk_index"],
                file_index=row[f"videos/{camera}/file_index"],
            )
            start, stop = row[f"videos/{camera}/from_timestamp"], row[f"videos/{camera}/to_timestamp"]
            with av.open(str(source)) as container:
                images = [
                    f.to_ndarray(format="rgb24")
                    for f in container.decode(video=0)
                    if start - 0.5 / fps <= f.time < stop - 0.5 / fps
                ]
            video = target / "videos" / "chunk-000" / camera / f"episode_{index:06d}.mp4"
            video.parent.mkdir(parents=True, exist_ok=True)
            with av.open(str(video), "w") as out:
                stream = out.add_stream(codecs[camera], rate=fps)
                stream.width, stream.height, stream.pix_fmt = images[0].shape[1], images[0].shape[0], "yuv420p"
                for image in images:
                    for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                        out.mux(packet)
                for packet in stream.encode():
                    out.mux(packet)
    names = [f"{prefix}{n}" for n in info3["features"]["action"]["names"]]
    features = {}
    for key, feature in info3["features"].items():
        if key not in (
            "action",
            "observation.state",
            "timestamp",
            "frame_index",
            "episode_index",
            "index",
            "task_index",
            *cameras,
        ):
            continue
        feature = dict(feature)
        if key == "action":
            feature["names"] = names
        elif key == "observation.state":
            feature["names"] = {"motors": names}
        elif key in cameras:
            video_info = feature.pop("info")
            video_info["video.codec"] = "av1" if codecs[key] == "libsvtav1" else "h264"
            feature["video_info" if key == cameras[0] else "info"] = video_info
        feature.pop("fps", None)
        features[key] = feature
    info = {
        "codebase_version": "v2.0",
        "robot_type": "koch",
        "fps": fps,
        "total_episodes": len(episodes3),
        "total_frames": total,
        "total_tasks": 1,
        "total_videos": len(episodes3) * len(cameras),
        "total_chunks": 1,
        "chunks_size": 1000,
        "splits": {"train": f"0:{len(episodes3)}"},
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": features,
    }
    (target / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    (target / "meta" / "episodes.jsonl").write_text("\n".join(episodes_lines) + "\n")
    task = json.loads(episodes_lines[0])["tasks"][0]
    (target / "meta" / "tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": task}) + "\n")
    stats3 = json.loads((demo / "meta" / "stats.json").read_text())
    (target / "meta" / "stats.json").write_text(json.dumps({k: v for k, v in stats3.items() if k in features}))
    return target


@pytest.fixture(scope="module")
def v20(demo_dataset, tmp_path_factory):
    return make_v20(demo_dataset, tmp_path_factory.mktemp("v20") / "koch_test")


def test_import_dataset_makes_a_v30_dataset_that_runs_and_matches_the_original(v20, demo_cache, demo_dataset, tmp_path):
    from verify_ate.verify.data.observation import load_frames

    before = sorted((p.relative_to(v20), p.stat().st_size) for p in v20.rglob("*") if p.is_file())
    out = tmp_path / "koch_test_v30"
    result = run_cli("import", "dataset", v20, "--out", out)
    assert result.returncode == 0, result.stderr
    assert sorted((p.relative_to(v20), p.stat().st_size) for p in v20.rglob("*") if p.is_file()) == before  # untouched
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert info["total_episodes"] == 2
    frames = load_frames(out, 1, [5])
    assert frames.features["action"]["names"][0] == "main_shoulder_pan"
    original = load_frames(demo_dataset, 1, [5])
    assert np.allclose(frames.frames[0]["observation.state"], original.frames[0]["observation.state"])
    # Re-encoded videos differ by compression only: the tiny pi0 on both datasets passes the gate.
    checkpoint = tiny_checkpoint(demo_cache)
    for name, dataset in (("original", demo_dataset), ("imported", out)):
        side = run_cli(
            "run",
            "--checkpoint",
            checkpoint,
            "--dataset",
            dataset,
            "--episode",
            "1",
            "--frame",
            "5",
            "--iters",
            "0",
            "--quiet",
            "--save",
            tmp_path / f"{name}.npz",
        )
        assert side.returncode == 0, side.stderr
    gate = run_cli("compare", tmp_path / "original.npz", tmp_path / "imported.npz", "--force")
    assert gate.returncode == 0, gate.stdout


def test_the_main_form_converts_an_old_dataset_on_its_own_once(v20, demo_cache, tmp_path):
    checkpoint = tiny_checkpoint(demo_cache)
    env = {"VERIFY_ATE_CACHE": str(tmp_path / "cache")}
    for expected in ("converted to v3.0", "made earlier"):
        result = run_cli(
            "--checkpoint",
            checkpoint,
            "--dataset",
            v20,
            "--dut",
            "cpu",
            "--iters",
            "0",
            "--quiet",
            "--json",
            tmp_path / "s.json",
            env=env,
        )
        assert result.returncode == 0, result.stderr
        assert expected in result.stderr
    assert len(list((tmp_path / "cache" / "imported").iterdir())) == 1


def test_datasets_that_cannot_be_imported_are_exit_2_naming_the_file(v20, demo_dataset, tmp_path):
    import shutil

    v1 = tmp_path / "v1"
    shutil.copytree(v20, v1)
    info = json.loads((v1 / "meta" / "info.json").read_text())
    (v1 / "meta" / "info.json").write_text(json.dumps({**info, "codebase_version": "v1.6"}))
    for source, named in ((v1, "v1.6"), (demo_dataset, "already LeRobot v3.0")):
        result = run_cli("import", "dataset", source, "--out", tmp_path / "out")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, result.stderr
        assert len(lines) == 1, result.stderr
        assert named in lines[0], result.stderr
        assert "info.json" in lines[0], result.stderr
        assert not (tmp_path / "out").exists()


def test_the_whole_chain_from_the_hub_formats(v20, demo_cache, demo_dataset, tmp_path):
    """The Ascend guide's inputs as they come: import dataset, import checkpoint --dataset, one-shot, PASS;
    and the same old folders given to the one-shot straight away."""
    from test_legacy_checkpoint import make_legacy

    from verify_ate.verify.data.observation import load_frames

    tiny = tiny_checkpoint(demo_cache)
    old = make_legacy(tiny, load_frames(demo_dataset, 0, [0]).stats, tmp_path / "pi0_model")
    dataset = tmp_path / "koch_test_v30"
    assert run_cli("import", "dataset", v20, "--out", dataset).returncode == 0
    checkpoint = tmp_path / "pi0_model_v06"
    made = run_cli("import", "checkpoint", old, "--out", checkpoint, "--dataset", dataset)
    assert made.returncode == 0, made.stderr
    chained = run_cli(
        "--checkpoint",
        checkpoint,
        "--dataset",
        dataset,
        "--episode",
        "1",
        "--dut",
        "cpu",
        "--dut-dtype",
        "bfloat16",
        "--iters",
        "0",
        "--quiet",
    )
    assert chained.returncode == 0, chained.stdout + chained.stderr
    assert chained.stdout.startswith("PASS"), chained.stdout + chained.stderr
    straight = run_cli(
        "--checkpoint",
        old,
        "--dataset",
        v20,
        "--episode",
        "1",
        "--dut",
        "cpu",
        "--dut-dtype",
        "bfloat16",
        "--iters",
        "0",
        "--quiet",
        env={"VERIFY_ATE_CACHE": str(tmp_path / "cache")},
    )
    assert straight.returncode == 0, straight.stdout + straight.stderr
    assert straight.stdout.startswith("PASS"), straight.stdout + straight.stderr
    assert "old-format pi0 checkpoint" in straight.stderr
    assert "converted to v3.0" in straight.stderr
