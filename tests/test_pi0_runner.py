"""The pi0 runner on lerobot's real PI0Policy: a tiny seeded checkpoint, CPU, real files on disk."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("lerobot.policies.pi0")
torch = pytest.importorskip("torch")

from verify_ate.noise import NoiseFileError, load_noise, make_noise, save_noise
from verify_ate.verify.errors import InputError
from verify_ate.verify.model.architecture import ARCHITECTURE_FILE
from verify_ate.verify.model.checkpoint import checkpoint_sha256
from verify_ate.verify.model.devices import runtime_versions
from verify_ate.verify.model.runner import Pi0Runner
from verify_ate.verify.model.tiny import (
    build_tiny_checkpoint,
    build_tiny_policy,
    ensure_tiny_checkpoint,
    load_tiny_profile,
)

pytestmark = pytest.mark.slow

# Koch joint angles in degrees: hand-made statistics of the kind meta/stats.json holds.
STATE_MEAN = [0.0, 120.0, 150.0, 60.0, 0.0, 20.0]
STATE_STD = [25.0, 30.0, 30.0, 20.0, 40.0, 10.0]
STATS = {
    "observation.state": {"mean": STATE_MEAN, "std": STATE_STD, "min": [-90.0] * 6, "max": [180.0] * 6},
    "action": {"mean": STATE_MEAN, "std": STATE_STD, "min": [-90.0] * 6, "max": [180.0] * 6},
    "observation.images.laptop": {"mean": [[[0.5]]] * 3, "std": [[[0.25]]] * 3},
    "observation.images.phone": {"mean": [[[0.5]]] * 3, "std": [[[0.25]]] * 3},
}
NOISE_SHAPE = (1, 50, 32)


def make_frames(count: int, seed: int = 0) -> list[dict]:
    """Items shaped like LeRobotDataset's: small camera images in [0, 1], state in degrees, a task."""
    generator = torch.Generator().manual_seed(seed)
    frames = []
    for index in range(count):
        frames.append(
            {
                "observation.images.laptop": torch.rand(3, 48, 64, generator=generator),
                "observation.images.phone": torch.rand(3, 48, 64, generator=generator),
                "observation.state": torch.tensor(STATE_MEAN)
                + torch.randn(6, generator=generator) * torch.tensor(STATE_STD),
                "action": torch.zeros(6),
                "task": "pick up the cube and place it in the box" if index % 2 == 0 else "push the cube left",
                "frame_index": torch.tensor(index),
            }
        )
    return frames


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    # On this 2-core machine, with other test processes running, torch's two OpenMP threads
    # oversubscribe the cores and a tiny forward slows 10-20x; one thread is steady (same numbers
    # for every test in the module: the bit-identity checks compare runs of the same setting).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return ensure_tiny_checkpoint(tmp_path_factory.mktemp("pi0_cache"), STATS, seed=0)


@pytest.fixture(scope="module")
def runner(checkpoint):
    runner = Pi0Runner(checkpoint, device="cpu", dtype="float32")
    yield runner
    runner.release()


@pytest.fixture(scope="module")
def frames():
    return make_frames(3)


@pytest.fixture(scope="module")
def noise():
    return make_noise(0, NOISE_SHAPE)


@pytest.fixture(scope="module")
def actions(runner, frames, noise):
    return runner.predict(frames, noise)


def copy_checkpoint(checkpoint, target, drop=()):
    shutil.copytree(checkpoint, target)
    for name in drop:
        (target / name).unlink()
    return target


# ---------------------------------------------------------------- the checkpoint folder


def test_checkpoint_folder_is_a_lerobot_checkpoint(checkpoint):
    names = {path.name for path in checkpoint.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "policy_preprocessor.json",
        "policy_postprocessor.json",
        "tokenizer.json",
        "tokenizer_config.json",
        ARCHITECTURE_FILE,
    } <= names
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["type"] == "pi0"
    assert config["chunk_size"] == 50
    assert config["max_action_dim"] == 32
    assert config["paligemma_variant"] == "gemma_2b"
    assert config["action_expert_variant"] == "gemma_300m"
    assert not [path for path in checkpoint.parent.iterdir() if path.name.endswith(".partial")]


def test_ensure_reuses_and_rebuild_is_byte_identical(checkpoint, tmp_path):
    assert ensure_tiny_checkpoint(checkpoint.parent, STATS, seed=0) == checkpoint
    rebuilt = build_tiny_checkpoint(tmp_path / "again", STATS, seed=0)
    assert checkpoint_sha256(rebuilt) == checkpoint_sha256(checkpoint)
    with pytest.raises(InputError, match="already exists"):
        build_tiny_checkpoint(tmp_path / "again", STATS, seed=0)


def test_seed_changes_the_weights():
    profile = load_tiny_profile()
    first = build_tiny_policy(profile, seed=0).state_dict()
    second = build_tiny_policy(profile, seed=1).state_dict()
    name = "model.action_out_proj.weight"
    assert first[name].shape == second[name].shape
    assert not torch.equal(first[name], second[name])


def test_checkpoint_sha256_tracks_file_contents(checkpoint, tmp_path):
    copy = copy_checkpoint(checkpoint, tmp_path / "copy")
    assert checkpoint_sha256(copy) == checkpoint_sha256(checkpoint)
    config = json.loads((copy / "config.json").read_text())
    config["num_inference_steps"] = 3
    (copy / "config.json").write_text(json.dumps(config))
    assert checkpoint_sha256(copy) != checkpoint_sha256(checkpoint)


# ---------------------------------------------------------------- predictions


def test_predict_shape_dtype_and_units(runner, actions, frames):
    assert runner.expected_noise_shape == NOISE_SHAPE
    assert runner.processor_source == "checkpoint"
    assert actions.shape == (len(frames), 50, 6)
    assert actions.dtype == np.float32
    assert np.all(np.isfinite(actions))
    # Unnormalised into dataset units: the random model's output stays within a few dataset
    # standard deviations of the dataset mean (degrees), nowhere near normalised (~N(0, 1)) values.
    z = (actions - np.array(STATE_MEAN)) / np.array(STATE_STD)
    assert np.max(np.abs(z)) < 8.0
    assert abs(float(np.mean(actions[..., 1])) - STATE_MEAN[1]) < 2 * STATE_STD[1]
    assert np.std(actions) > 1.0


def test_same_noise_same_frames_is_bit_identical(runner, actions, frames, noise):
    assert np.array_equal(runner.predict(frames, noise), actions)


def test_one_batch_equals_frame_by_frame(runner, actions, frames, noise):
    # [1, 50, 32] noise is repeated over the batch: each frame sees the same values as when alone.
    for index, frame in enumerate(frames):
        alone = runner.predict([frame], noise)
        np.testing.assert_allclose(alone[0], actions[index], atol=1e-3)


def test_per_frame_noise_rows(runner, actions, frames, noise):
    per_frame = np.repeat(noise.values, len(frames), axis=0)
    assert np.array_equal(runner.predict(frames, per_frame), actions)
    per_frame[1] = make_noise(7, NOISE_SHAPE).values[0]
    mixed = runner.predict(frames, per_frame)
    assert np.array_equal(mixed[0], actions[0])
    assert not np.array_equal(mixed[1], actions[1])


def test_different_noise_gives_different_actions(runner, actions, frames):
    other = runner.predict(frames, make_noise(1, NOISE_SHAPE))
    assert np.all(np.isfinite(other))
    assert np.max(np.abs(other - actions)) > 1e-2


def test_bfloat16_is_finite_and_differs(checkpoint, actions, frames, noise):
    with Pi0Runner(checkpoint, device="cpu", dtype="bfloat16") as bf16:
        assert bf16.config.dtype == "bfloat16"
        layer = bf16.policy.model.paligemma_with_expert.paligemma.model.language_model.layers[0]
        assert layer.self_attn.q_proj.weight.dtype == torch.bfloat16
        low = bf16.predict(frames, noise)
    assert low.shape == actions.shape
    assert np.all(np.isfinite(low))
    difference = np.max(np.abs(low - actions))
    assert 0.0 < difference < 50.0


def test_num_inference_steps_override(checkpoint, actions, frames, noise):
    with Pi0Runner(checkpoint, num_inference_steps=2) as short:
        assert short.config.num_inference_steps == 2
        assert not np.array_equal(short.predict(frames, noise), actions)


# ---------------------------------------------------------------- noise that does not fit


def test_noise_file_of_wrong_shape_names_the_file(runner, frames, tmp_path):
    path = save_noise(make_noise(0, (1, 50, 16)), tmp_path / "narrow.safetensors")
    with pytest.raises(NoiseFileError, match="narrow.safetensors.*1, 50, 32"):
        load_noise(path, expected_shape=runner.expected_noise_shape)
    with pytest.raises(NoiseFileError, match="narrow.safetensors"):
        runner.predict(frames, path)


def test_noise_file_path_gives_same_actions(runner, actions, frames, noise, tmp_path):
    path = save_noise(noise, tmp_path / "seed0.safetensors")
    assert np.array_equal(runner.predict(frames, load_noise(path, expected_shape=runner.expected_noise_shape)), actions)


@pytest.mark.parametrize("shape", [(2, 50, 32), (1, 10, 32), (50, 32), (1, 50, 6)])
def test_noise_array_of_wrong_shape_is_refused(runner, frames, shape):
    with pytest.raises(NoiseFileError, match="does not fit"):
        runner.predict(frames, np.zeros(shape, dtype=np.float32))


# ---------------------------------------------------------------- checkpoint problems


def test_checkpoint_without_tokenizer_is_a_clear_error(checkpoint, tmp_path):
    broken = copy_checkpoint(checkpoint, tmp_path / "no_tok", drop=("tokenizer.json", "tokenizer_config.json"))
    with pytest.raises(InputError, match=r"no_tok: no tokenizer"):
        Pi0Runner(broken)


def test_processors_built_from_dataset_stats_when_not_saved(checkpoint, actions, frames, noise, tmp_path):
    bare = copy_checkpoint(
        checkpoint,
        tmp_path / "bare",
        drop=[path.name for path in checkpoint.iterdir() if path.name.startswith("policy_")],
    )
    with pytest.raises(InputError, match="no dataset statistics"):
        Pi0Runner(bare)
    with Pi0Runner(bare, dataset_stats=STATS) as from_stats:
        assert from_stats.processor_source == "dataset_stats"
        assert np.array_equal(from_stats.predict(frames, noise), actions)


def test_legacy_checkpoint_with_normalization_buffers(checkpoint, actions, frames, noise, tmp_path):
    from safetensors.torch import load_file, save_file

    legacy = copy_checkpoint(
        checkpoint,
        tmp_path / "legacy",
        drop=[path.name for path in checkpoint.iterdir() if path.name.startswith("policy_")],
    )
    weights = load_file(str(legacy / "model.safetensors"))
    for prefix, feature in (
        ("normalize_inputs.buffer_", "observation_state"),
        ("unnormalize_outputs.buffer_", "action"),
    ):
        weights[f"{prefix}{feature}.mean"] = torch.tensor(STATE_MEAN)
        weights[f"{prefix}{feature}.std"] = torch.tensor(STATE_STD)
    save_file(weights, str(legacy / "model.safetensors"), metadata={"format": "pt"})
    with Pi0Runner(legacy) as old:
        assert old.processor_source == "dataset_stats"
        assert np.array_equal(old.predict(frames, noise), actions)


def test_weights_missing_a_tensor_are_refused(checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = copy_checkpoint(checkpoint, tmp_path / "short")
    weights = load_file(str(broken / "model.safetensors"))
    del weights["model.action_out_proj.weight"]
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(InputError, match="model.safetensors: weights do not fit.*action_out_proj"):
        Pi0Runner(broken)


def test_weights_of_another_size_are_refused(checkpoint, tmp_path):
    broken = copy_checkpoint(checkpoint, tmp_path / "resized")
    architecture = json.loads((broken / ARCHITECTURE_FILE).read_text())
    architecture["vocab_size"] += 16
    (broken / ARCHITECTURE_FILE).write_text(json.dumps(architecture))
    with pytest.raises(
        InputError,
        match=r"tensors do not fit the model built from config.json \(e.g. .*: file \[288, 64\], model \[304, 64\]",
    ):
        Pi0Runner(broken)


def test_config_from_an_unknown_lerobot_is_refused(checkpoint, tmp_path):
    old = copy_checkpoint(checkpoint, tmp_path / "old_config")
    config = json.loads((old / "config.json").read_text())
    config["proj_width"] = 1024  # a pi0 field of lerobot < 0.4
    (old / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="config.json: lerobot .* cannot parse"):
        Pi0Runner(old)


def test_frames_missing_a_camera_are_refused(runner, noise):
    frame = make_frames(1)[0]
    del frame["observation.images.phone"]
    with pytest.raises(InputError, match="observation.images.phone"):
        runner.predict([frame], noise)


# ---------------------------------------------------------------- timing, release, provenance


def test_measure_latency_reports_parts(runner, frames, noise):
    report = runner.measure_latency(frames[:1], noise, warmup=1, iters=2)
    assert report["iters"] == 2
    assert report["warmup"] == 1
    assert report["timer"] == "perf_counter"
    for part in ("", "model_", "preprocess_", "postprocess_"):
        assert report[f"{part}median_ms"] > 0
        assert report[f"{part}p90_ms"] >= report[f"{part}median_ms"]
    assert report["model_median_ms"] < report["median_ms"]


def test_release_drops_the_model(checkpoint, frames, noise):
    runner = Pi0Runner(checkpoint)
    runner.release()
    assert not hasattr(runner, "policy")
    with pytest.raises(RuntimeError, match="released"):
        runner.predict(frames, noise)


def test_runtime_versions():
    versions = runtime_versions()
    assert {"python", "torch", "torch_npu", "lerobot", "transformers", "cuda", "cann"} <= set(versions)
    assert versions["lerobot"] == "0.6.1"
