"""Old-format pi0 checkpoints, as the Ascend guide's `pi0_model_for_koch_v1_1` comes from the hub: imported
into lerobot 0.6.1 folders by `verify-ate import checkpoint`, or on their own by the main form and `run`.

The old folder is made here from the tiny 0.6.1 checkpoint, following the public layout of lerobot/pi0
(Feb 2025): an old config.json (`resize_imgs_with_padding`, `num_steps`, `proj_width`, the aloha switches,
empty input/output features), the normalisation statistics as buffers inside the weights, the weights
sharded with an index, the tokenizer's side files (`special_tokens_map.json` with `<image>`,
`added_tokens.json`), and no processor files. The same weights and statistics must give the same actions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, tiny_checkpoint

pytestmark = pytest.mark.slow


def make_legacy(tiny: Path, stats: dict, target: Path, shards: int = 2) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    target.mkdir(parents=True)
    tensors = load_file(str(tiny / "model.safetensors"))
    for prefix in (
        "normalize_inputs.buffer_observation_state",
        "normalize_targets.buffer_action",
        "unnormalize_outputs.buffer_action",
    ):
        feature = "observation.state" if "state" in prefix else "action"
        for stat in ("mean", "std"):
            tensors[f"{prefix}.{stat}"] = torch.as_tensor(np.asarray(stats[feature][stat], dtype=np.float32))
    names = sorted(tensors)
    weight_map = {}
    for index in range(shards):
        shard = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        save_file(
            {n: tensors[n].contiguous() for n in names[index::shards]}, str(target / shard), metadata={"format": "pt"}
        )
        weight_map.update(dict.fromkeys(names[index::shards], shard))
    (target / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    new = json.loads((tiny / "config.json").read_text())
    old = {
        "type": "pi0",
        "n_obs_steps": 1,
        "normalization_mapping": {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"},
        "input_features": {},
        "output_features": {},
        "chunk_size": new["chunk_size"],
        "n_action_steps": new["n_action_steps"],
        "max_state_dim": new["max_state_dim"],
        "max_action_dim": new["max_action_dim"],
        "resize_imgs_with_padding": list(new["image_resolution"]),
        "empty_cameras": 0,
        "adapt_to_pi_aloha": False,
        "use_delta_joint_actions_aloha": False,
        "tokenizer_max_length": new["tokenizer_max_length"],
        "proj_width": 1024,
        "num_steps": new["num_inference_steps"],
        "use_cache": True,
        "freeze_vision_encoder": True,
        "train_expert_only": False,
        "train_state_proj": True,
        "optimizer_lr": 2.5e-05,
        "optimizer_betas": [0.9, 0.95],
        "optimizer_eps": 1e-08,
        "optimizer_weight_decay": 1e-10,
        "scheduler_warmup_steps": 1000,
        "scheduler_decay_steps": 30000,
        "scheduler_decay_lr": 2.5e-06,
        "device": "cuda",
        "use_amp": False,
        "attention_implementation": "eager",
    }
    (target / "config.json").write_text(json.dumps(old, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json", "tiny_pi0_architecture.json"):
        shutil.copy2(tiny / name, target / name)
    (target / "special_tokens_map.json").write_text(
        json.dumps(
            {
                "bos_token": "<bos>",
                "eos_token": "<eos>",
                "pad_token": "<pad>",
                "unk_token": "<unk>",
                "additional_special_tokens": ["<image>"],
            }
        )
    )
    (target / "added_tokens.json").write_text(json.dumps({"<image>": 257152}))
    return target


@pytest.fixture(scope="module")
def legacy(demo_cache, demo_dataset, tmp_path_factory):
    from verify_ate.verify.data.observation import load_frames

    tiny = tiny_checkpoint(demo_cache)
    stats = load_frames(demo_dataset, 0, [0]).stats
    return tiny, make_legacy(tiny, stats, tmp_path_factory.mktemp("legacy") / "pi0_model")


def actions_of(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        return archive["actions"]


def test_import_checkpoint_gives_the_same_actions_as_the_model_it_came_from(legacy, demo_dataset, tmp_path):
    tiny, old = legacy
    imported = tmp_path / "imported"
    result = run_cli("import", "checkpoint", old, "--out", imported, "--dataset", demo_dataset)
    assert result.returncode == 0, result.stderr
    assert {
        "config.json",
        "model.safetensors",
        "policy_preprocessor.json",
        "policy_postprocessor.json",
        "tokenizer.json",
        "special_tokens_map.json",
        "added_tokens.json",
    } <= {p.name for p in imported.iterdir()}
    config = json.loads((imported / "config.json").read_text())
    assert config["type"] == "pi0"
    assert config["num_inference_steps"] == 10
    assert config["image_resolution"] == [224, 224]
    assert config["input_features"]["observation.images.laptop"]["shape"] == [3, 48, 64]
    for folder, name in ((tiny, "tiny"), (imported, "imported")):
        side = run_cli(
            "run",
            "--checkpoint",
            folder,
            "--dataset",
            demo_dataset,
            "--iters",
            "0",
            "--quiet",
            "--save",
            tmp_path / f"{name}.npz",
        )
        assert side.returncode == 0, side.stderr
    assert np.array_equal(actions_of(tmp_path / "tiny.npz"), actions_of(tmp_path / "imported.npz"))


def test_the_main_form_and_run_import_an_old_folder_on_their_own(legacy, demo_dataset, tmp_path):
    tiny, old = legacy
    cache = tmp_path / "cache"
    env = {"VERIFY_ATE_CACHE": str(cache)}
    first = run_cli(
        "run",
        "--checkpoint",
        old,
        "--dataset",
        demo_dataset,
        "--iters",
        "0",
        "--quiet",
        "--save",
        tmp_path / "old.npz",
        env=env,
    )
    assert first.returncode == 0, first.stderr
    assert "old-format pi0 checkpoint" in first.stderr
    assert str(cache / "imported") in first.stderr
    again = run_cli(
        "--checkpoint",
        old,
        "--dataset",
        demo_dataset,
        "--dut",
        "cpu",
        "--iters",
        "0",
        "--quiet",
        "--json",
        tmp_path / "s.json",
        env=env,
    )
    assert again.returncode == 0, again.stderr
    assert "imported earlier" in again.stderr  # once, keyed by the old folder's content
    assert len(list((cache / "imported").iterdir())) == 1
    reference = run_cli(
        "run",
        "--checkpoint",
        tiny,
        "--dataset",
        demo_dataset,
        "--iters",
        "0",
        "--quiet",
        "--save",
        tmp_path / "tiny.npz",
    )
    assert reference.returncode == 0
    assert np.array_equal(actions_of(tmp_path / "old.npz"), actions_of(tmp_path / "tiny.npz"))


def test_bad_old_folders_are_exit_2_naming_the_file(legacy, demo_dataset, tmp_path):
    _, old = legacy
    other = tmp_path / "act"
    shutil.copytree(old, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "type": "act"}))
    half = tmp_path / "half"
    shutil.copytree(old, half)
    (half / "model-00002-of-00002.safetensors").unlink()
    for folder, extra, named in (
        (other, ("--dataset", demo_dataset), "config.json"),
        (old, (), "config.json"),  # empty features and no dataset to fill them
        (half, ("--dataset", demo_dataset), "model-00002-of-00002.safetensors"),
    ):
        result = run_cli("import", "checkpoint", folder, "--out", tmp_path / "out", *extra)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, result.stderr
        assert len(lines) == 1, result.stderr
        assert named in lines[0], result.stderr
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "out").exists()
    assert "--dataset" in run_cli("import", "checkpoint", old, "--out", tmp_path / "out").stderr
