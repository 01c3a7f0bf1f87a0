"""Every broken input, through every command that reads it: exit 2, exactly one line on stderr naming the
offending file and the problem, no traceback, nothing written.

Real files (copies of the demo's checkpoint and dataset, broken the way disks and downloads break
them) and the real command line through its entry point. One row per (case, command).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import koch_actions, make_artifact, run_cli, tiny_checkpoint

pytestmark = pytest.mark.slow

# ---------------------------------------------------------------- broken checkpoints


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _config(folder: Path, **changes) -> None:
    document = json.loads((folder / "config.json").read_text())
    document.update(changes)
    (folder / "config.json").write_text(json.dumps(document))


def _shards(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    names = sorted(tensors)
    weight_map = {}
    for index in range(3):
        shard = f"model-{index + 1:05d}-of-00003.safetensors"
        save_file({name: tensors[name].contiguous() for name in names[index::3]}, str(folder / shard))
        weight_map.update(dict.fromkeys(names[index::3], shard))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "model.safetensors").unlink()


def _shard_missing(folder: Path) -> None:
    _shards(folder)
    (folder / "model-00002-of-00003.safetensors").unlink()


def _shard_inconsistent(folder: Path) -> None:
    _shards(folder)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    tensor, holder = next(iter(index["weight_map"].items()))
    index["weight_map"][tensor] = next(name for name in sorted(set(index["weight_map"].values())) if name != holder)
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


def _other_shape(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    tensors["model.action_time_mlp_in.weight"] = tensors["model.action_time_mlp_in.weight"].T.contiguous()
    save_file(tensors, str(folder / "model.safetensors"))


def _stats_missing(folder: Path) -> None:
    next(folder.glob("policy_preprocessor_step_*_normalizer_processor.safetensors")).unlink()


CHECKPOINT_CASES = {
    # case: (how to break a copy, text the one error line must contain)
    "weights truncated": (lambda f: _truncate(f / "model.safetensors", 0.5), "model.safetensors"),
    "weights zero bytes": (lambda f: _truncate(f / "model.safetensors", 0.0), "model.safetensors"),
    "shard missing": (_shard_missing, "model-00002-of-00003.safetensors"),
    "shard inconsistent with the index": (_shard_inconsistent, "-of-00003.safetensors"),
    "config.json garbage": (lambda f: (f / "config.json").write_text("{ not json"), "config.json"),
    "config.json of another policy": (lambda f: _config(f, type="act"), "config.json"),
    "tokenizer missing": (lambda f: (f / "tokenizer.json").unlink(), "tokenizer"),
    "tokenizer corrupt": (lambda f: (f / "tokenizer.json").write_text("{ garbage"), "tokenizer.json"),
    "processor statistics missing": (_stats_missing, "normalizer_processor.safetensors"),
    "weights of another shape": (_other_shape, "model.safetensors"),
}

# ---------------------------------------------------------------- broken datasets

LAPTOP_VIDEO = Path("videos/observation.images.laptop/chunk-000/file-000.mp4")


def _corrupt_video(folder: Path) -> None:
    path = folder / LAPTOP_VIDEO
    data = bytearray(path.read_bytes())
    data[len(data) // 4 :] = bytes(len(data) - len(data) // 4)  # everything after the header zeroed
    path.write_bytes(bytes(data))


def _info(folder: Path, change) -> None:
    path = folder / "meta" / "info.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def _drop_camera(document: dict) -> None:
    del document["features"]["observation.images.phone"]


DATASET_CASES = {
    "video truncated": (lambda f: _truncate(f / LAPTOP_VIDEO, 0.1), str(LAPTOP_VIDEO), True),
    "video corrupt": (_corrupt_video, str(LAPTOP_VIDEO), True),
    "data parquet missing": (lambda f: (f / "data/chunk-000/file-000.parquet").unlink(), "file-000.parquet", False),
    "info.json of an unknown version": (
        lambda f: _info(f, lambda d: d.update(codebase_version="v9.0")),
        "info.json",
        False,
    ),
    "info.json without features": (lambda f: _info(f, lambda d: d.pop("features")), "info.json", False),
    "camera the checkpoint expects is missing": (lambda f: _info(f, _drop_camera), "info.json", True),
}
# case: (one-frame selection, sweep selection, text the line must contain), on a healthy dataset
SELECTION_CASES = {
    "episode out of range": (("--episode", "99"), ("--episodes", "99"), "episode 99 out of range"),
    "frame out of range": (("--frame", "9999"), ("--frames", "9999:10000"), "9999"),
}


@pytest.fixture(scope="module")
def broken(tmp_path_factory, demo_cache, demo_dataset):
    """Every broken checkpoint and dataset of the matrix, made once."""
    root = tmp_path_factory.mktemp("broken")
    checkpoint = tiny_checkpoint(demo_cache)
    made = {"checkpoint": checkpoint, "dataset": demo_dataset}
    for case, (breaker, _) in CHECKPOINT_CASES.items():
        target = root / ("ck-" + case.replace(" ", "_"))
        shutil.copytree(checkpoint, target)
        breaker(target)
        made[case] = target
    for case, (breaker, _, _) in DATASET_CASES.items():
        target = root / ("ds-" + case.replace(" ", "_"))
        shutil.copytree(demo_dataset, target)
        breaker(target)
        made[case] = target
    return made


def _model_commands(checkpoint, dataset, out: Path, selection=("--episode", "0"), sweep_selection=("--frames", "0:2")):
    outputs = ("--out", out / "report", "--json", out / "s.json", "--junit", out / "j.xml")
    common = ("--checkpoint", checkpoint, "--dataset", dataset, "--quiet", "--iters", "0")
    return {
        "main form": (*common, "--dut", "cpu", *selection, *outputs),
        "run": ("run", *common, *selection, "--save", out / "side.npz"),
        "sweep": ("sweep", *common, "--dut", "cpu", *sweep_selection, *outputs),
    }


def assert_refused(result, named: str, out: Path) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert named in lines[0], lines[0]
    assert "Traceback" not in result.stderr, lines[0]
    assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())


# ---------------------------------------------------------------- broken noise files and artifacts


@pytest.fixture(scope="module")
def bad_noise(tmp_path_factory):
    from safetensors.numpy import save_file

    root = tmp_path_factory.mktemp("noise")
    values = np.random.default_rng(0).standard_normal((1, 50, 32)).astype(np.float32)
    nan = values.copy()
    nan[0, 3, 4] = np.nan
    inf = values.copy()
    inf[0, 7, 1] = np.inf
    files = {
        "NaN": (root / "nan.safetensors", nan),
        "Inf": (root / "inf.safetensors", inf),
        "float64": (root / "f64.safetensors", values.astype(np.float64)),
    }
    for path, array in files.values():
        save_file({"noise": array}, str(path))
    truncated = root / "truncated.safetensors"
    save_file({"noise": values}, str(truncated))
    _truncate(truncated, 0.5)
    np.save(root / "nan.npy", nan)
    return {**{name: path for name, (path, _) in files.items()}, "truncated": truncated, "nan npy": root / "nan.npy"}


NOISE_NAMED = {"NaN": "non-finite", "Inf": "non-finite", "float64": "float64", "truncated": "safetensors"}


@pytest.mark.parametrize("command", ["noise show", "main form", "run", "sweep"])
@pytest.mark.parametrize("case", list(NOISE_NAMED))
def test_broken_noise_file(refusals, case, command):
    check_row(refusals, ("noise", case, command))


# ---------------------------------------------------------------- the rows, run two at a time


def _rows(broken: dict, bad_noise: dict, root: Path) -> dict:
    """(table, case, command) -> (argv, output folder, text the one line must name, path it must name)."""
    rows = {}
    for case, (_, named) in CHECKPOINT_CASES.items():
        for command in ("main form", "run", "sweep"):
            out = root / f"ck{len(rows)}"
            argv = _model_commands(broken[case], broken["dataset"], out)[command]
            rows["checkpoint", case, command] = (argv, out, named, broken[case])
    for case, (_, named, needs_model) in DATASET_CASES.items():
        for command in ("main form", "run", "sweep", "fk"):
            out = root / f"ds{len(rows)}"
            if command == "fk":
                if needs_model:
                    continue  # fk reads the joints from the parquet data, never the videos or the cameras
                argv = ("fk", "--dataset", broken[case], "--episode", "0", "--output", out / "poses.csv")
            else:  # frame 50 of episode 0 lies past what the damaged videos still hold
                argv = _model_commands(
                    broken["checkpoint"], broken[case], out, ("--frame", "50"), ("--frames", "48:52")
                )
                argv = argv[command]
            rows["dataset", case, command] = (argv, out, named, broken[case])
    for case, (one, many, named) in SELECTION_CASES.items():
        for command in ("main form", "run", "sweep", "fk"):
            out = root / f"sel{len(rows)}"
            if command == "fk":
                if case != "episode out of range":
                    continue  # fk takes a whole episode
                argv = ("fk", "--dataset", broken["dataset"], "--episode", "99", "--output", out / "poses.csv")
            else:
                argv = _model_commands(broken["checkpoint"], broken["dataset"], out, one, many)[command]
            rows["selection", case, command] = (argv, out, named, broken["dataset"])
    for case, named in NOISE_NAMED.items():
        noise = bad_noise[case]
        for command in ("noise show", "main form", "run", "sweep"):
            out = root / f"noise{len(rows)}"
            if command == "noise show":
                argv = ("noise", "show", noise)
            else:
                argv = _model_commands(broken["checkpoint"], broken["dataset"], out)[command] + ("--noise", noise)
            rows["noise", case, command] = (argv, out, named, noise)
    return rows


@pytest.fixture(scope="module")
def refusals(broken, bad_noise, tmp_path_factory):
    """Every row's result, each a run of the command line's entry point in this process (a refusal comes
    before any model is built, so a row costs tens of milliseconds)."""
    rows = _rows(broken, bad_noise, tmp_path_factory.mktemp("matrix"))
    return {key: (run_cli(*argv), *rest) for key, (argv, *rest) in rows.items()}


def check_row(refusals: dict, key: tuple) -> None:
    if key not in refusals:
        pytest.skip("this command does not read that input")
    result, out, named, path = refusals[key]
    assert_refused(result, named, out)
    assert str(path) in result.stderr


@pytest.mark.parametrize("command", ["main form", "run", "sweep"])
@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_broken_checkpoint(refusals, case, command):
    check_row(refusals, ("checkpoint", case, command))


@pytest.mark.parametrize("command", ["main form", "run", "sweep", "fk"])
@pytest.mark.parametrize("case", list(DATASET_CASES))
def test_broken_dataset(refusals, case, command):
    check_row(refusals, ("dataset", case, command))


@pytest.mark.parametrize("command", ["main form", "run", "sweep", "fk"])
@pytest.mark.parametrize("case", list(SELECTION_CASES))
def test_selection_outside_the_dataset(refusals, case, command):
    check_row(refusals, ("selection", case, command))


def test_non_finite_noise_is_refused_at_import(bad_noise, tmp_path):
    result = run_cli("noise", "import", bad_noise["nan npy"], "--out", tmp_path / "out" / "n.safetensors")
    assert_refused(result, str(bad_noise["nan npy"]), tmp_path / "out")
    assert "non-finite" in result.stderr


@pytest.mark.parametrize("case", ["truncated", "not a zip", "pickled", "NaN meta"])
def test_broken_artifact(tmp_path, rng, case):
    from verify_ate.verify.compare.artifact import save_artifact

    good = save_artifact(make_artifact(koch_actions(rng)), tmp_path / "ref.npz")
    bad = tmp_path / "dut.npz"
    if case == "truncated":
        bad.write_bytes(good.read_bytes()[:200])
    elif case == "not a zip":
        bad.write_bytes(b"definitely not a zip archive")
    elif case == "pickled":
        np.savez(bad, actions=np.zeros((1, 50, 6)), meta=np.array([{"a": 1}], dtype=object))
    else:
        np.savez(bad, actions=np.zeros((1, 50, 6)), meta=np.array("{ not json"))
    out = tmp_path / "out"
    result = run_cli("compare", good, bad, "--out", out / "r", "--json", out / "s.json", "--junit", out / "j.xml")
    assert_refused(result, str(bad), out)
