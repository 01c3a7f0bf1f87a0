"""Fixed-noise files: reproducible bytes, validation, import, and the `noise` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli
from safetensors.numpy import save_file

from verify_ate.noise import GENERATOR, NoiseFileError, gaussian, import_noise, load_noise, make_noise, save_noise

# Pinned so that a change of generator, NumPy's PCG64 stream or float rounding anywhere is caught.
SEED0_PI0_SHA256 = "22f33d5b47a549a1f1ae7371cca8d58be95f9696e2d793fb15fff3b5069d9bd6"


def test_seed_zero_gives_the_pinned_bytes():
    assert make_noise(0, (1, 50, 32)).sha256 == SEED0_PI0_SHA256


def test_same_seed_same_bytes_other_seed_other_bytes():
    assert gaussian(5, (1, 50, 32)).tobytes() == gaussian(5, (1, 50, 32)).tobytes()
    assert gaussian(5, (1, 50, 32)).tobytes() != gaussian(6, (1, 50, 32)).tobytes()


def test_values_are_standard_normal():
    values = gaussian(1, (4, 500, 32)).astype(np.float64)
    assert abs(values.mean()) < 0.02
    assert abs(values.std() - 1) < 0.02
    assert gaussian(1, (2, 3, 4)).dtype == np.float32


def test_save_load_round_trip_keeps_values_and_metadata(tmp_path):
    noise = make_noise(3, (1, 50, 32))
    path = save_noise(noise, tmp_path / "nested" / "n.safetensors")
    loaded = load_noise(path, expected_shape=(1, 50, 32))
    np.testing.assert_array_equal(loaded.values, noise.values)
    assert (loaded.seed, loaded.generator, loaded.sha256) == (3, GENERATOR, noise.sha256)
    assert [p.name for p in path.parent.iterdir()] == ["n.safetensors"]  # no temp file left


def test_wrong_shape_for_the_policy_is_refused(tmp_path):
    path = save_noise(make_noise(0, (1, 10, 32)), tmp_path / "short.safetensors")
    with pytest.raises(NoiseFileError, match=r"short.safetensors: noise shape \[1, 10, 32\] does not fit the policy"):
        load_noise(path, expected_shape=(1, 50, 32))


@pytest.mark.parametrize(
    "tensors, metadata, problem",
    [
        ({"noise": np.zeros((1, 50, 32), np.float64)}, {}, "dtype is float64"),
        ({"noise": np.zeros((50, 32), np.float32)}, {}, "must be \\[batch, chunk_size, action_dim\\]"),
        ({"noise": np.full((1, 50, 32), np.nan, np.float32)}, {}, "1600 non-finite"),
        ({"other": np.zeros((1, 50, 32), np.float32)}, {}, "no tensor named 'noise'"),
        ({"noise": np.zeros((1, 50, 32), np.float32)}, {"sha256": "0" * 64}, "does not match the recorded"),
    ],
)
def test_invalid_noise_files(tmp_path, tensors, metadata, problem):
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(NoiseFileError, match=problem):
        load_noise(path)


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(NoiseFileError, match="not found"):
        load_noise(tmp_path / "absent.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(NoiseFileError, match="garbage.safetensors: not a readable safetensors"):
        load_noise(garbage)


def test_import_from_npy_and_pt(tmp_path):
    torch = pytest.importorskip("torch")
    values = gaussian(9, (1, 50, 32))
    np.save(tmp_path / "n.npy", values)
    torch.save(torch.from_numpy(values[0].copy()), tmp_path / "n.pt")
    from_npy = import_noise(tmp_path / "n.npy")
    from_pt = import_noise(tmp_path / "n.pt")
    np.testing.assert_array_equal(from_npy.values, values)
    np.testing.assert_array_equal(from_pt.values, values)  # [T, D] gains the batch axis
    assert from_npy.sha256 == from_pt.sha256


def test_import_never_unpickles(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(NoiseFileError, match="objects.npy: not a readable array"):
        import_noise(tmp_path / "objects.npy")


def test_noise_make_and_show_commands(tmp_path):
    out = tmp_path / "noise" / "koch_seed0.safetensors"
    made = run_cli("noise", "make", "--seed", "0", "--shape", "1,50,32", "--out", out)
    assert made.returncode == 0, made.stderr
    assert SEED0_PI0_SHA256 in made.stdout
    shown = run_cli("noise", "show", out)
    assert shown.returncode == 0, shown.stderr
    summary = json.loads(shown.stdout)
    assert summary["shape"] == [1, 50, 32]
    assert summary["seed"] == 0
    assert summary["finite"] is True
    assert summary["sha256"] == SEED0_PI0_SHA256
    assert abs(summary["std"] - 1) < 0.1


def test_noise_command_bad_input_exit_codes(tmp_path):
    bad_shape = run_cli("noise", "make", "--seed", "0", "--shape", "1,x,32", "--out", tmp_path / "n.safetensors")
    assert bad_shape.returncode == 2
    assert "shape must be comma-separated integers" in bad_shape.stderr
    missing = run_cli("noise", "show", tmp_path / "absent.safetensors")
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"verify-ate: error: {tmp_path / 'absent.safetensors'}: noise file not found"
