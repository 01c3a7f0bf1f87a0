"""Every policy beside pi0, through the one policy interface: lerobot's own pi0.5, SmolVLA, ACT and Diffusion Policy
at tiny sizes (seeded weights, written by lerobot), on the demo dataset, through the real command line. The policy type
comes from the checkpoint's config.json."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import run_cli, tiny_checkpoint

from verify_ate.verify.data.observation import load_frames
from verify_ate.verify.model.policies import adapter_for, checkpoint_adapter, supported_policies
from verify_ate.verify.model.policies.tiny import build_tiny_policy_checkpoint, load_policy_profile
from verify_ate.verify.model.runners import runner_for

POLICIES = ["pi05", "smolvla", "act", "diffusion"]


@pytest.fixture(scope="session")
def policy_checkpoints(tmp_path_factory, demo_dataset):
    """A tiny checkpoint of each policy, built for the demo dataset's statistics (a second or two each). The Diffusion
    Policy predicts the noise, lerobot's default (its demo profile predicts the sample, whose chunk barely depends on
    its noise), so that the noise faults have something to move."""
    stats = load_frames(demo_dataset, 0, [0]).stats
    folder = tmp_path_factory.mktemp("policies")
    profiles = {name: load_policy_profile(name) for name in POLICIES}
    profiles["diffusion"]["policy"]["prediction_type"] = "epsilon"
    return {name: build_tiny_policy_checkpoint(name, folder / name, stats, profile=profiles[name]) for name in POLICIES}


def test_the_policy_type_comes_from_config_json_and_an_unknown_one_is_refused_naming_the_supported(
    policy_checkpoints, demo_cache, demo_dataset, tmp_path
):
    assert supported_policies()[0] == "pi0"
    assert {checkpoint_adapter(path).name for path in policy_checkpoints.values()} == set(POLICIES)
    assert checkpoint_adapter(tiny_checkpoint(demo_cache)).name == "pi0"
    unknown = tmp_path / "vqbet"
    shutil.copytree(policy_checkpoints["act"], unknown)
    config = json.loads((unknown / "config.json").read_text())
    (unknown / "config.json").write_text(json.dumps({**config, "type": "vqbet"}))
    result = run_cli("run", "--checkpoint", unknown, "--dataset", demo_dataset, "--save", tmp_path / "x.npz")
    assert result.returncode == 2
    supported = "verify-ate runs: pi0, pi05, smolvla, act, diffusion"
    assert f"{unknown / 'config.json'}: policy type 'vqbet' is not supported ({supported})" in result.stderr
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.parametrize("policy", POLICIES)
def test_one_shot_passes_against_itself_in_bfloat16(policy, policy_checkpoints, demo_dataset, tmp_path):
    out = tmp_path / "report"
    result = run_cli(
        "--checkpoint", policy_checkpoints[policy], "--dataset", demo_dataset, "--ref", "cpu", "--dut", "cpu",
        "--dut-dtype", "bfloat16", "--iters", "0", "--out", out, "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ref"]["policy"] == summary["dut"]["policy"] == policy
    assert summary["dut"]["dtype"] == "bfloat16"
    config = json.loads((policy_checkpoints[policy] / "config.json").read_text())
    chunk = config["n_action_steps"] if policy == "diffusion" else config["chunk_size"]
    assert summary["shape"] == [1, chunk, 6]
    assert 0 < summary["position"]["max"] < 0.03  # bfloat16 moved it, within the bound
    assert f"policy {policy} · robot koch_v1_1" in (out / "index.html").read_text()


@pytest.mark.parametrize("policy", POLICIES)
def test_two_machines_run_then_compare(policy, policy_checkpoints, demo_dataset, tmp_path):
    for name, dtype in (("ref", "float32"), ("dut", "bfloat16")):
        ran = run_cli(
            "run", "--checkpoint", policy_checkpoints[policy], "--dataset", demo_dataset, "--dtype", dtype,
            "--iters", "0", "--save", tmp_path / f"{name}.npz", "--quiet",
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr
    compared = run_cli("compare", tmp_path / "ref.npz", tmp_path / "dut.npz", "--json", tmp_path / "s.json")
    assert compared.returncode == 0, compared.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["pass"] and summary["ref"]["policy"] == policy


def _predict(checkpoint, demo_dataset, global_seed: int, dtype: str = "float32") -> np.ndarray:
    from verify_ate.verify.run.sides import default_noise

    observations = load_frames(demo_dataset, 0, [0, 5])
    with runner_for(checkpoint, dtype=dtype) as runner:
        torch.manual_seed(global_seed)
        return runner.predict(observations.frames, default_noise(runner.expected_noise_shape))


def test_diffusion_two_cpu_runs_with_different_global_seeds_are_byte_identical(policy_checkpoints, demo_dataset):
    checkpoint = policy_checkpoints["diffusion"]
    first, second = (_predict(checkpoint, demo_dataset, seed) for seed in (0, 12345))
    assert first.tobytes() == second.tobytes()
    # lerobot's own call with the same initial sample draws every scheduler step from the global generator: it
    # differs between two seeds, which is what the pin removes.
    from verify_ate.verify.run.sides import default_noise

    observations = load_frames(demo_dataset, 0, [0])
    with runner_for(checkpoint) as runner:
        batch = runner.adapter.model_batch(runner._preprocess(observations.frames), runner.config)
        noise = runner.noise_tensor(default_noise(runner.expected_noise_shape), 1)
        unpinned = []
        for seed in (0, 12345):
            torch.manual_seed(seed)
            unpinned.append(runner.policy.predict_action_chunk(batch, noise=noise))
    assert not torch.equal(*unpinned)


def test_diffusion_step_noise_is_the_same_in_both_precisions(policy_checkpoints, demo_dataset):
    """The per-step draws are float32 whatever the model's dtype: bfloat16 moves the actions a little, not a lot."""
    checkpoint = policy_checkpoints["diffusion"]
    full, half = _predict(checkpoint, demo_dataset, 0), _predict(checkpoint, demo_dataset, 1, "bfloat16")
    assert 0 < np.abs(full - half).max() < 0.05 * np.abs(full).max()


def test_act_takes_no_noise_and_no_step_count(policy_checkpoints, demo_dataset, tmp_path):
    noise = tmp_path / "noise.safetensors"
    assert run_cli("noise", "make", "--seed", "0", "--shape", "1,50,32", "--out", noise).returncode == 0
    common = ("run", "--checkpoint", policy_checkpoints["act"], "--dataset", demo_dataset, "--save", tmp_path / "x.npz")
    refused = run_cli(*common, "--noise", noise)
    assert refused.returncode == 2
    assert f"{noise}: policy act is deterministic at inference and takes no noise" in refused.stderr
    assert "drop --noise" in refused.stderr
    steps = run_cli(*common, "--num-inference-steps", "3")
    assert steps.returncode == 2
    assert "--num-inference-steps: ACT predicts in one forward pass" in steps.stderr
    assert not (tmp_path / "x.npz").exists()
    assert adapter_for("act").noise_shape(json_config(policy_checkpoints["act"])) == (1, 50, 0)


def json_config(folder):
    from types import SimpleNamespace

    return SimpleNamespace(**json.loads((folder / "config.json").read_text()))


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["act", "diffusion"])  # pi0.5's on its trained demo: test_pi05_demo_selftest
def test_selftest_catches_every_fault_of_the_policy_where_injected_and_passes_its_variants(
    policy, policy_checkpoints, demo_dataset, tmp_path
):
    from verify_ate.verify.model.rewrites import CATALOGUE

    out = tmp_path / "selftest"
    result = run_cli("selftest", "--checkpoint", policy_checkpoints[policy], "--dataset", demo_dataset, "--out", out)
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads((out / "selftest.json").read_text())
    ran = {case["name"]: case for case in document["cases"]}
    assert set(ran) == {name for name, rewrite in CATALOGUE.items() if rewrite.applies_to(policy)}
    for case in ran.values():
        assert case["ok"], case
        if case["kind"] == "fault":  # caught, not merely harmless
            assert case["caught"] and case["calibrated_pass"] is False, case


def test_a_rewrite_of_another_policy_is_refused_naming_this_policys(policy_checkpoints, demo_dataset, tmp_path):
    result = run_cli(
        "run", "--checkpoint", policy_checkpoints["act"], "--dataset", demo_dataset, "--inject", "rmsnorm-coef",
        "--save", tmp_path / "x.npz",
    )  # fmt: skip
    assert result.returncode == 2
    act_faults = "act's faults: image-norm-skipped, norm-batch-stats"
    assert f"fault rmsnorm-coef is a rewrite of pi0, pi05, smolvla, not of act ({act_faults})" in result.stderr


@pytest.mark.parametrize(
    ("policy", "fault", "label", "phase"),
    [
        ("pi05", "adarms-swapped", "expert layer 0", "step 0"),
        ("smolvla", "image-stretched", "vision tower", "prefix"),
        ("act", "image-norm-skipped", "ResNet backbone", "forward"),
        ("diffusion", "image-norm-skipped", "image encoder", "prefix"),  # one ResNet for both cameras
    ],
)
def test_the_trace_names_the_policys_module_a_fault_breaks_first(
    policy, fault, label, phase, policy_checkpoints, demo_dataset, tmp_path
):
    out = tmp_path / "report"
    result = run_cli(
        "--checkpoint", policy_checkpoints[policy], "--dataset", demo_dataset, "--dut", "cpu", "--inject", fault,
        "--trace", "--trace-tol", "1e-4", "--iters", "0", "--out", out, "--quiet",
    )  # fmt: skip  # both sides float32 on one device: every module before the fault agrees to rounding
    assert result.returncode in (0, 1), result.stderr  # the fixed bounds may let it through (selftest says so)
    trace = json.loads((out / "summary.json").read_text())["trace"]
    assert (trace["first_divergent"]["label"], trace["first_divergent"]["phase"]) == (label, phase)


# ── the demos of the other policies ───────────────────────────────────────────────────────────────


def test_policy_chooses_only_the_demos_policy(demo_cache, demo_dataset, tmp_path):
    checkpoint = tiny_checkpoint(demo_cache)
    without_demo = run_cli(
        "run", "--checkpoint", checkpoint, "--dataset", demo_dataset, "--policy", "act", "--save", tmp_path / "x.npz"
    )
    assert without_demo.returncode == 2
    assert "--policy chooses the demo's policy (add --demo); a checkpoint's policy comes from its config.json" in (
        without_demo.stderr
    )
    full = run_cli("run", "--demo", "--policy", "act", "--size", "full", "--save", tmp_path / "x.npz")
    assert full.returncode == 2
    assert "--size full: the full-size demo is pi0's" in full.stderr
    unknown = run_cli("run", "--demo", "--policy", "groot", "--save", tmp_path / "x.npz")
    assert unknown.returncode == 2 and "invalid choice: 'groot'" in unknown.stderr


@pytest.mark.parametrize(
    ("policy", "tracking_m"),
    # pi0.5 measured 27 mm: the 2 cm goal is not reached in two minutes of one core (demo_training_pi05.yaml);
    # SmolVLA 6.2 mm in 25 s (demo_training_smolvla.yaml)
    [("pi05", 0.03), ("smolvla", 0.02)],
)
def test_the_committed_demo_was_trained_on_the_demo_dataset(policy, tracking_m):
    """A changed recipe, profile or library version without a regenerated demo_policy_<policy>/ fails here (the
    demo then trains a copy on first use): run scripts/train_demo_policy.py --policy <policy>."""
    from verify_ate.verify.data.demo_dataset import profile_cache_key
    from verify_ate.verify.model.training import TRAINING_FILE, stored_identity, training_identity
    from verify_ate.verify.run.inputs import demo_files

    files = demo_files("koch_v1_1", policy)
    profile = files.profile()
    expected = training_identity(
        profile_cache_key(profile), files.training_recipe(), files.tiny_profile(profile), policy
    )
    assert stored_identity(files.committed) == expected
    record = json.loads((files.committed / TRAINING_FILE).read_text())
    assert record["policy"] == policy
    assert record["wall_seconds"] < 120  # one core, as measured when it was trained
    assert record["tracking"]["mean_tcp_distance_m"] <= tracking_m
    assert sum(path.stat().st_size for path in files.committed.rglob("*") if path.is_file()) <= 2_000_000


def test_demo_policy_pi05_runs_the_committed_trained_pi05(demo_cache, tmp_path):
    out = tmp_path / "report"
    result = run_cli(
        "--demo", "--policy", "pi05", "--cache-dir", demo_cache, "--dut", "cpu", "--dut-dtype", "bfloat16",
        "--iters", "0", "--out", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    assert "using the committed trained tiny pi0.5" in result.stderr
    assert "tiny pi0.5 TRAINED on a generated Koch-like dataset" in result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ref"]["policy"] == summary["dut"]["policy"] == "pi05"


@pytest.mark.slow
def test_pi05_demo_selftest_catches_every_fault_where_injected(demo_cache, tmp_path):
    """pi0.5's own faults and every one it shares with pi0, on its trained demo: each fails the calibrated gate where
    injected. `mask-inverted` needs padding to attend to: the 128-token prompt is a third padding (at 96 tokens it
    moved the robot less than the bound). Every variant but `compile`, whose half minute of compiling the same Gemma
    code pi0's selftest test spends already (tests/test_rewrites.py)."""
    from verify_ate.verify.model.rewrites import CATALOGUE, VARIANTS

    variants = [name for name in VARIANTS if CATALOGUE[name].applies_to("pi05") and CATALOGUE[name].runs_on("cpu")]
    variants.remove("compile")
    out = tmp_path / "selftest"
    result = run_cli(
        "selftest", "--demo", "--policy", "pi05", "--cache-dir", demo_cache, "--variants", ",".join(variants),
        "--out", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads((out / "selftest.json").read_text())
    ran = {case["name"]: case for case in document["cases"]}
    assert set(ran) == {
        name for name, rewrite in CATALOGUE.items() if rewrite.applies_to("pi05") and rewrite.runs_on("cpu")
    } - {"compile"}
    assert {"adarms-swapped", "state-bins-shifted", "mask-inverted"} <= set(ran)
    for case in ran.values():
        assert case["ok"], case
        if case["kind"] == "fault":
            assert case["caught"], case


@pytest.mark.slow
def test_smolvla_demo_selftest_catches_every_fault_where_injected(demo_cache, tmp_path):
    """SmolVLA's faults (its own RoPE, RMSNorm and image resize) and the shared ones, on its trained demo: each
    fails the calibrated gate and the trace names the module it broke."""
    from verify_ate.verify.model.rewrites import CATALOGUE

    out = tmp_path / "selftest"
    result = run_cli("selftest", "--demo", "--policy", "smolvla", "--cache-dir", demo_cache, "--out", out)
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads((out / "selftest.json").read_text())
    ran = {case["name"]: case for case in document["cases"]}
    assert set(ran) == {name for name, rewrite in CATALOGUE.items() if rewrite.applies_to("smolvla")}
    assert {"rope-interleaved", "rmsnorm-coef", "image-stretched"} <= set(ran)
    for case in ran.values():
        assert case["ok"] and case["calibrated_pass"] is False, case
        assert case["first_module"] == case["expected_module"], case


def test_a_diffusion_frame_draws_the_same_step_noise_alone_as_in_a_batch(policy_checkpoints, demo_dataset):
    """Every frame's scheduler draws come from its own generator: a frame's actions do not depend on the frames
    batched with it (with one generator for the batch, frame 0's draws after the first step were another frame's)."""
    from verify_ate.noise import make_noise

    frames = load_frames(demo_dataset, 0, [0, 20, 40]).frames
    with runner_for(policy_checkpoints["diffusion"]) as runner:
        noise = make_noise(0, runner.expected_noise_shape)
        batched = runner.predict(frames, noise)
        alone = np.concatenate([runner.predict([frame], noise) for frame in frames])
    np.testing.assert_allclose(batched, alone, rtol=1e-4, atol=1e-3)  # batched kernels round differently
