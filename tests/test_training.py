"""The demo's trained tiny pi0 (verify/model/training.py): repeatable training that learns, and the
committed checkpoint (verify/model/demo_policy/) that matches what it says it was trained on and
follows the demo dataset's recorded motion to within 2 cm of tool-centre-point distance."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

pytest.importorskip("lerobot")

from verify_ate.verify.data.demo_dataset import load_demo_profile, profile_cache_key
from verify_ate.verify.model.training import (
    COMMITTED_POLICY,
    TRAINING_FILE,
    load_recipe,
    stored_identity,
    train_policy,
    training_batch,
    training_identity,
)

pytestmark = pytest.mark.slow  # trains a model or runs the committed one on all 120 demo frames

TRACKING_BOUND_M = 0.02  # the acceptance figure: mean TCP distance to the recorded chunks


@pytest.fixture(scope="module")
def demo_batch(demo_dataset):
    """The demo dataset's 120 frames through the tiny pi0's pre-processor, and the statistics it used."""
    from verify_ate.verify.data.observation import load_chunk_frames, load_frames
    from verify_ate.verify.model.processors import make_processors
    from verify_ate.verify.model.tiny import build_byte_tokenizer, build_tiny_policy, load_tiny_profile

    stats = load_frames(demo_dataset, 0, [0]).stats
    config = build_tiny_policy(load_tiny_profile(), seed=0).config
    preprocessor, _ = make_processors(config, stats, build_byte_tokenizer())
    frames = load_chunk_frames(demo_dataset, int(config.chunk_size))
    return training_batch(frames, preprocessor, list(config.image_features))


def _trained(batch, recipe):
    from verify_ate.verify.model.tiny import build_tiny_policy, load_tiny_profile

    policy = build_tiny_policy(load_tiny_profile(), seed=recipe.seed)
    return policy, train_policy(policy, batch, recipe)


def test_the_frames_carry_lerobots_action_chunk_and_padding(demo_batch):
    assert demo_batch["action"].shape == (120, 50, 6)
    # Frame 59 is the last of episode 0: its first action is recorded, the other 49 are lerobot's padding.
    assert demo_batch["action_is_pad"][59].sum() == 49
    assert not demo_batch["action_is_pad"][0].any()


def test_two_trainings_of_one_recipe_give_byte_identical_weights(demo_batch):
    recipe = replace(load_recipe(), steps=5)
    first, first_losses = _trained(demo_batch, recipe)
    second, second_losses = _trained(demo_batch, recipe)
    assert first_losses == second_losses
    first_state, second_state = first.state_dict(), second.state_dict()
    assert list(first_state) == list(second_state)
    for name, tensor in first_state.items():
        assert tensor.dtype == second_state[name].dtype
        assert tensor.numpy().tobytes() == second_state[name].numpy().tobytes(), name
    untrained = _untrained_state()
    changed = sum(not untrained[name].equal(tensor) for name, tensor in first_state.items())
    assert changed > 0  # the five steps did move weights


def _untrained_state():
    from verify_ate.verify.model.tiny import build_tiny_policy, load_tiny_profile

    return build_tiny_policy(load_tiny_profile(), seed=load_recipe().seed).state_dict()


def test_training_lowers_the_flow_matching_loss(demo_batch):
    from verify_ate.verify.model.tiny import build_tiny_policy, load_tiny_profile

    recipe = replace(load_recipe(), steps=60, warmup_steps=5)
    before = _loss_on_every_frame(build_tiny_policy(load_tiny_profile(), seed=recipe.seed), demo_batch)
    trained, _ = _trained(demo_batch, recipe)
    after = _loss_on_every_frame(trained, demo_batch)
    assert after < 0.8 * before


def _loss_on_every_frame(policy, batch) -> float:
    """PI0Policy.forward's loss on all frames at once, with the same noise and times for every policy (a
    training step's own loss varies with the time it drew more than a few steps lower it)."""
    import torch

    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(1)
        loss, _ = policy.forward(batch)
    return float(loss)


def test_the_committed_policy_was_trained_on_this_dataset_with_this_recipe():
    """A changed dataset profile, recipe, tiny profile or library version without a regenerated
    demo_policy/ fails here (the demo then trains a copy on first use): run scripts/train_demo_policy.py."""
    from verify_ate.verify.model.runner import Pi0Runner
    from verify_ate.verify.model.tiny import load_tiny_profile

    expected = training_identity(profile_cache_key(load_demo_profile()), load_recipe(), load_tiny_profile())
    assert stored_identity(COMMITTED_POLICY) == expected
    record = json.loads((COMMITTED_POLICY / TRAINING_FILE).read_text())
    assert len(record["loss_per_step"]) == record["recipe"]["steps"]
    assert record["wall_seconds"] < 120  # the recipe's budget on one thread, as measured when it was trained
    assert (COMMITTED_POLICY / "loss_curve.png").stat().st_size > 0
    assert sum(path.stat().st_size for path in COMMITTED_POLICY.iterdir()) <= 2_000_000
    with Pi0Runner(COMMITTED_POLICY) as runner:
        assert runner.processor_source == "checkpoint"
        assert runner.expected_noise_shape == (1, 50, 32)


def test_the_committed_policy_follows_the_recorded_motion(demo_dataset):
    from verify_ate.kinematics import load_robot
    from verify_ate.verify.run.inputs import demo_tracking_error

    tracking = demo_tracking_error(COMMITTED_POLICY, demo_dataset, load_robot(load_demo_profile().robot))
    assert tracking["frames"] == 120
    assert tracking["mean_tcp_distance_m"] <= TRACKING_BOUND_M, tracking
    recorded = json.loads((COMMITTED_POLICY / TRAINING_FILE).read_text())["tracking"]
    assert tracking["mean_tcp_distance_m"] == pytest.approx(recorded["mean_tcp_distance_m"], abs=1e-3)
