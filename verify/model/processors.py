"""lerobot's pre/post-processor pipelines: loaded from a checkpoint, or built from dataset statistics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from verify_ate.verify.errors import InputError, interrupt_behind
from verify_ate.verify.model.checkpoint import POSTPROCESSOR_FILE, PREPROCESSOR_FILE, quiet

STATE_KEY = "observation.state"


def checkpoint_processors(folder: Path, config, tokenizer, device, dataset_stats: dict | None):
    """lerobot's saved pi0 (pi0.5) pipelines when the folder has them, else built from statistics."""

    def load_saved() -> tuple[Any, Any]:
        from lerobot.processor import PolicyProcessorPipeline
        from lerobot.processor.converters import (
            batch_to_transition,
            policy_action_to_transition,
            transition_to_batch,
            transition_to_policy_action,
        )

        preprocessor = PolicyProcessorPipeline.from_pretrained(
            str(folder),
            config_filename=PREPROCESSOR_FILE,
            overrides={"tokenizer_processor": {"tokenizer": tokenizer}, "device_processor": {"device": str(device)}},
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
        return preprocessor, postprocessor

    return saved_or_built(
        folder, config, device, dataset_stats, load_saved, lambda stats: make_processors(config, stats, tokenizer)
    )


def saved_or_built(
    folder: Path,
    config: Any,
    device: Any,
    dataset_stats: dict | None,
    load_saved: Callable[[], tuple[Any, Any]],
    build: Callable[[dict], tuple[Any, Any]],
) -> tuple[Any, Any, str]:
    """(pre, post, source) for every policy: the folder's saved pipelines (`load_saved`, "checkpoint") when it has
    both files, else `build(dataset_stats)` ("dataset_stats") with the config's device set. InputError naming the
    folder when the saved ones do not load or there is nothing to build from."""
    if (folder / PREPROCESSOR_FILE).is_file() and (folder / POSTPROCESSOR_FILE).is_file():
        try:
            with quiet():
                preprocessor, postprocessor = load_saved()
        except Exception as error:  # lerobot and transformers raise many types for a broken pipeline file
            if (interrupt := interrupt_behind(error)) is not None:
                raise interrupt from None
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
    preprocessor, postprocessor = build(dataset_stats)
    return preprocessor, postprocessor, "dataset_stats"


# The statistics each of lerobot's normalisation modes reads (lerobot processor/normalize_processor.py).
MODE_STATISTICS = {
    "MEAN_STD": ("mean", "std"),
    "MIN_MAX": ("min", "max"),
    "QUANTILES": ("q01", "q99"),
    "QUANTILE10": ("q10", "q90"),
    "IDENTITY": (),
}


def make_processors(config, dataset_stats: dict, tokenizer):
    """lerobot's own pi0 (or pi0.5) pipelines from dataset statistics, with a local tokenizer object (never the
    hub). The state and action statistics their normalisation mode reads must be there."""
    from verify_ate.verify.upstream.pi0_processors import pi0_processors

    stats = torch_stats(dataset_stats)
    for key, kind in ((STATE_KEY, "STATE"), ("action", "ACTION")):
        mode = str(getattr(config.normalization_mapping[kind], "value", config.normalization_mapping[kind]))
        needed = MODE_STATISTICS.get(mode, ())
        if key not in stats or not set(needed) <= set(stats[key]):
            raise InputError(
                f"dataset statistics lack {'/'.join(needed)} for {key!r} ({config.type} normalises it with {mode})"
            )
    return pi0_processors(config, stats, tokenizer)


def torch_stats(dataset_stats: dict) -> dict:
    import torch

    return {
        feature: {name: torch.as_tensor(np.asarray(value, dtype=np.float32)) for name, value in stats.items()}
        for feature, stats in dataset_stats.items()
        if isinstance(stats, dict)
    }
