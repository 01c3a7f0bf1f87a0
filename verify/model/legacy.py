"""Old-format pi0 checkpoints (lerobot before 0.4, as the Ascend guide's `pi0_model_for_koch_v1_1`) made
into lerobot 0.6.1 checkpoint folders, in this process.

An old folder differs in three ways: its config.json has fields 0.6.1's PI0Config does not know
(`resize_imgs_with_padding`, `num_steps`, `proj_width`, the aloha switches...) and may leave
`input_features`/`output_features` empty (they came from the dataset at training time); its
normalisation statistics are buffers inside the weights (`normalize_inputs.buffer_observation_state.mean`
...) instead of processor pipelines; it has no processor files. The import maps the config fields,
fills the features from the dataset's info.json, takes the statistics out of the weights and drops
those buffers with lerobot 0.6.1's own migration functions, builds lerobot's pi0 processors from
them, and writes the weights tensor by tensor (a shard set becomes one file) under lerobot 0.6.1's
names: an old folder's weights are named as transformers 4.48-4.51's PaliGemma named its modules, and
each tensor is renamed as its layout says (verify/upstream/pi0_weights.py), the output head's tied twin
(the input embedding, which such files omit) written from the same bytes. The names are checked
against the model the new config builds (on the meta device, no memory) before anything is written.
The imported folder is a plain 0.6.1 folder. The tokenizer files and a tiny model's architecture
file are copied as they are.

A folder whose config is current but whose weights are in an older layout is not imported: the
loader maps the names as it streams them in (checkpoint.py `tensor_sources`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from verify_ate.verify.errors import InputError
from verify_ate.verify.model.architecture import ARCHITECTURE_FILE
from verify_ate.verify.model.checkpoint import CONFIG_FILE, POSTPROCESSOR_FILE, quiet
from verify_ate.verify.model.weights import (
    WEIGHTS_FILE,
    CheckpointWeights,
    TensorEntry,
    checkpoint_weights,
    read_tensor,
)
from verify_ate.verify.upstream.pi0_weights import LEGACY_NORMALIZATION_PREFIXES

# Old pi0 config fields and their 0.6.1 names.
RENAMED = {"num_steps": "num_inference_steps", "resize_imgs_with_padding": "image_resolution"}
# Old fields 0.6.1 has no use for at inference (training switches and the old attention implementation).
DROPPED = (
    "proj_width", "use_cache", "attention_implementation", "train_state_proj", "use_amp", "device", "type",
    "adapt_to_pi_aloha", "use_delta_joint_actions_aloha",
)  # fmt: skip
# Old switches that change what the model computes; 0.6.1 cannot reproduce them.
UNSUPPORTED_WHEN_TRUE = ("adapt_to_pi_aloha", "use_delta_joint_actions_aloha")
TOKENIZER_SIDE_FILES = (
    "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
)  # fmt: skip
# Fields that only an old config has: any of them marks a folder to import.
OLD_ONLY = ("resize_imgs_with_padding", "num_steps", "proj_width", "adapt_to_pi_aloha", "use_delta_joint_actions_aloha")


def is_legacy_checkpoint(folder: Path) -> bool:
    """An old-format pi0 folder: an old config field, or statistics buffers and no processor files."""
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # check_checkpoint_folder names what is wrong
    if not isinstance(config, dict) or config.get("type") != "pi0":
        return False
    if any(key in config for key in OLD_ONLY):
        return True
    if (folder / POSTPROCESSOR_FILE).is_file():
        return False
    try:
        weights = checkpoint_weights(folder)
    except InputError:
        return False
    return any(key.startswith(LEGACY_NORMALIZATION_PREFIXES) for key in weights.tensors)


def import_checkpoint(source: Path, out_dir: Path, dataset: Path | None = None) -> Path:
    """`source` (old format) as a lerobot 0.6.1 checkpoint folder at `out_dir`, staged then renamed.

    `dataset`: a LeRobot dataset whose info.json fills empty input/output features (InputError when
    they are empty and no dataset is given). Refuses an existing `out_dir`.
    """
    from verify_ate.verify.model.tiny import write_checkpoint

    if out_dir.exists():
        raise InputError(f"{out_dir}: already exists; refusing to overwrite a checkpoint folder")
    config_path = source / CONFIG_FILE
    try:
        old = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"{config_path}: not a readable policy config ({error})") from None
    if not isinstance(old, dict) or old.get("type") != "pi0":
        kind = old.get("type") if isinstance(old, dict) else type(old).__name__
        raise InputError(f"{config_path}: policy type is {kind!r}, not 'pi0'")
    for switch in UNSUPPORTED_WHEN_TRUE:
        if old.get(switch):
            raise InputError(f"{config_path}: {switch} is true, which lerobot 0.6.1's pi0 does not reproduce")
    weights = checkpoint_weights(source)
    config = _new_config(old, config_path, dataset)
    stats = _statistics(weights)
    tokenizer = _tokenizer(source)
    from verify_ate.verify.model.processors import make_processors

    processors = make_processors(config, stats, tokenizer)
    staged = _WeightsOnly(_renamed(source, weights, config), config)
    folder = write_checkpoint(out_dir, staged, processors, tokenizer, None)
    for name in (ARCHITECTURE_FILE, *(n for n in TOKENIZER_SIDE_FILES if not (folder / n).exists())):
        if (source / name).is_file():
            shutil.copy2(source / name, folder / name)
    return folder


def _new_config(old: dict, path: Path, dataset: Path | None) -> Any:
    from lerobot.configs import NormalizationMode, PolicyFeature
    from lerobot.policies.pi0 import PI0Config

    known = set(PI0Config.__dataclass_fields__)
    values: dict[str, Any] = {}
    for key, value in old.items():
        key = RENAMED.get(key, key)
        if key in DROPPED or key not in known:
            continue
        values[key] = value
    if "image_resolution" in values:
        values["image_resolution"] = tuple(int(v) for v in values["image_resolution"])
    inputs, outputs = old.get("input_features") or {}, old.get("output_features") or {}
    if not inputs or not outputs:
        if dataset is None:
            raise InputError(
                f"{path}: input_features/output_features are empty (they came from the training dataset); "
                "pass --dataset so that its meta/info.json fills them"
            )
        inputs, outputs = _features_from_dataset(dataset)
    try:
        values["input_features"] = {k: PolicyFeature(**_feature(v)) for k, v in inputs.items()}
        values["output_features"] = {k: PolicyFeature(**_feature(v)) for k, v in outputs.items()}
        if "normalization_mapping" in values:
            values["normalization_mapping"] = {
                k: NormalizationMode(v) for k, v in values["normalization_mapping"].items()
            }
        values["device"] = "cpu"  # the real device is set when a side loads it
        with quiet():
            return PI0Config(**values, push_to_hub=False)
    except (TypeError, ValueError, KeyError) as error:
        raise InputError(f"{path}: cannot be made into a lerobot 0.6.1 pi0 config ({error})") from None


def _feature(value: dict) -> dict:
    from lerobot.configs import FeatureType

    return {"type": FeatureType(value["type"]), "shape": tuple(int(n) for n in value["shape"])}


def _features_from_dataset(dataset: Path) -> tuple[dict, dict]:
    """pi0's features from a dataset's info.json: cameras [C, H, W], observation.state and action [n]."""
    info_path = dataset / "meta" / "info.json"
    try:
        features = json.loads(info_path.read_text(encoding="utf-8"))["features"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"{info_path}: cannot read the dataset's features ({error})") from None
    inputs, outputs = {}, {}
    for key, feature in features.items():
        shape = [int(n) for n in feature.get("shape", [])]
        if feature.get("dtype") in ("video", "image") and len(shape) == 3:
            names = feature.get("names") or []
            channels_last = list(names)[-1:] == ["channels"] or shape[-1] in (1, 3)
            inputs[key] = {"type": "VISUAL", "shape": [shape[2], shape[0], shape[1]] if channels_last else shape}
        elif key == "observation.state":
            inputs[key] = {"type": "STATE", "shape": shape}
        elif key == "action":
            outputs[key] = {"type": "ACTION", "shape": shape}
    if not any(v["type"] == "VISUAL" for v in inputs.values()) or "observation.state" not in inputs or not outputs:
        raise InputError(f"{info_path}: needs cameras, observation.state and action to fill pi0's features")
    return inputs, outputs


def _statistics(weights: CheckpointWeights) -> dict:
    from lerobot.processor.migrate_policy_normalization import extract_normalization_stats

    buffers = {
        key: read_tensor(entry)
        for key, entry in weights.tensors.items()
        if key.startswith(LEGACY_NORMALIZATION_PREFIXES)
    }
    if not buffers:
        raise InputError(f"{weights.folder}: no normalisation statistics in the weights and no processor files")
    return extract_normalization_stats(buffers)


def _renamed(source: Path, weights: CheckpointWeights, config: Any) -> dict[str, TensorEntry]:
    """{lerobot 0.6.1 name: file tensor} for every tensor of the model `config` builds (tied twins from the same
    tensor), in the model's order; InputError naming the file when the weights do not fit that model."""
    from verify_ate.verify.model.checkpoint import build_skeleton, tensor_sources

    policy, _ = build_skeleton(source, config)  # parameters on the meta device: names and shapes only
    sources = tensor_sources(policy, weights, strict=True).sources
    return {key: weights.tensors[name] for key, name in sources.items()}


def _tokenizer(source: Path):
    from verify_ate.verify.model.checkpoint import load_checkpoint_tokenizer

    return load_checkpoint_tokenizer(source)


class _WeightsOnly:
    """What write_checkpoint needs of a policy (save_pretrained), for weights that never enter a model:
    the config, and the model's tensors under their lerobot 0.6.1 names (the normalisation buffers,
    which lerobot's migration drops, are not among them), written tensor by tensor into one
    model.safetensors."""

    def __init__(self, tensors: dict[str, TensorEntry], config: Any):
        self.tensors = tensors
        self.config = config

    def save_pretrained(self, folder: Path) -> None:
        from verify_ate.verify.model.weights import write_safetensors

        write_safetensors(self.tensors, Path(folder) / WEIGHTS_FILE)
        self.config._save_pretrained(Path(folder))
