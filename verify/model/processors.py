"""lerobot's pi0 pre/post-processor pipelines: loaded from a checkpoint, or built from dataset statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from verify_ate.verify.errors import InputError
from verify_ate.verify.model.checkpoint import POSTPROCESSOR_FILE, PREPROCESSOR_FILE, quiet

STATE_KEY = "observation.state"


def checkpoint_processors(folder: Path, config, tokenizer, device, dataset_stats: dict | None):
    """lerobot's saved pipelines when the folder has them, else built from statistics."""
    from lerobot.processor import PolicyProcessorPipeline
    from lerobot.processor.converters import (
        batch_to_transition,
        policy_action_to_transition,
        transition_to_batch,
        transition_to_policy_action,
    )

    if (folder / PREPROCESSOR_FILE).is_file() and (folder / POSTPROCESSOR_FILE).is_file():
        try:
            with quiet():
                preprocessor = PolicyProcessorPipeline.from_pretrained(
                    str(folder),
                    config_filename=PREPROCESSOR_FILE,
                    overrides={
                        "tokenizer_processor": {"tokenizer": tokenizer},
                        "device_processor": {"device": str(device)},
                    },
                    to_transition=batch_to_transition,
                    to_output=transition_to_batch,
                    local_files_only=True,
                )
                postprocessor = PolicyProcessorPipeline.from_pretrained(
                    str(folder),
                    config_filename=POSTPROCESSOR_FILE,
                    to_transition=policy_action_to_transition,
                    to_output=transition_to_policy_action,
                    local_files_only=True,
                )
        except Exception as error:
            raise InputError(
                f"{folder}: the saved processor pipelines cannot be loaded ({type(error).__name__}: {error})"
            ) from None
        return preprocessor, postprocessor, "checkpoint"
    if dataset_stats is None:
        raise InputError(
            f"{folder}: no {PREPROCESSOR_FILE}/{POSTPROCESSOR_FILE} in the checkpoint and no dataset statistics "
            "given to build them (pass the dataset, whose meta/stats.json has them)"
        )
    config.device = str(device)
    preprocessor, postprocessor = make_processors(config, dataset_stats, tokenizer)
    return preprocessor, postprocessor, "dataset_stats"


def make_processors(config, dataset_stats: dict, tokenizer):
    """lerobot's own pi0 pipelines from dataset statistics, with a local tokenizer object (never the hub)."""
    from verify_ate.verify.upstream.pi0_processors import pi0_processors

    stats = torch_stats(dataset_stats)
    for key in (STATE_KEY, "action"):
        if key not in stats or not {"mean", "std"} <= set(stats[key]):
            raise InputError(f"dataset statistics lack mean/std for {key!r} (pi0 normalises it with MEAN_STD)")
    return pi0_processors(config, stats, tokenizer)


def torch_stats(dataset_stats: dict) -> dict:
    import torch

    return {
        feature: {name: torch.as_tensor(np.asarray(value, dtype=np.float32)) for name, value in stats.items()}
        for feature, stats in dataset_stats.items()
        if isinstance(stats, dict)
    }
