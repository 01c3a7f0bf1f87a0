"""A lerobot pi0 checkpoint folder: its files, config, tokenizer and weights, and their hash.

Everything model-side is lerobot 0.6.1's own code (`PreTrainedConfig.from_pretrained`,
`PI0Policy.from_pretrained`); this module adds what lerobot does not check: that every tensor
really came from the file (lerobot's loader only prints a warning and keeps random weights),
one-line errors naming the file, and a content hash for provenance.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import sys
from pathlib import Path

from verify.errors import DeviceUnavailableError, InputError
from verify.model.architecture import checkpoint_architecture
from verify.model.devices import library_version

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")  # fast (tokenizers) or sentencepiece
# Files that define the model: weights, configs, processor statistics, tokenizer.
HASHED_SUFFIXES = (".safetensors", ".json", ".model")
# Pre-0.4 lerobot checkpoints kept normalisation statistics as buffers inside the weights.
LEGACY_NORMALIZATION_PREFIXES = ("normalize_inputs.", "normalize_targets.", "unnormalize_outputs.")


def check_checkpoint_folder(folder: Path) -> None:
    """The folder exists and holds a config and weights (InputError naming what is missing)."""
    if not folder.is_dir():
        raise InputError(f"{folder}: checkpoint folder not found")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise InputError(f"{folder}: not a lerobot checkpoint folder (no {name})")


def load_checkpoint_tokenizer(folder: Path):
    """The checkpoint's own tokenizer (never the hub): AutoTokenizer on the folder, offline."""
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise InputError(
            f"{folder}: no tokenizer in the checkpoint folder (needs {' or '.join(TOKENIZER_FILES)} "
            "with tokenizer_config.json; save the PaliGemma tokenizer there with "
            "AutoTokenizer.from_pretrained(...).save_pretrained(folder)); the hub is never used"
        )
    from transformers import AutoTokenizer

    try:
        with quiet():
            return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as error:  # transformers raises many types for broken tokenizer files
        raise InputError(f"{folder}: the tokenizer files cannot be loaded ({type(error).__name__}: {error})") from None


def load_pi0_config(folder: Path, overrides: list[str] = ()):
    """config.json parsed by lerobot (PreTrainedConfig.from_pretrained); must be a pi0 config.

    `overrides`: lerobot's own command-line style overrides ("--dtype=bfloat16"). The device is
    pinned to cpu while parsing: a config saved with "npu" or "cuda" would otherwise be rejected
    or silently switched by lerobot's device check; callers set the real device afterwards.
    """
    from lerobot.configs import PreTrainedConfig
    from lerobot.policies.pi0 import PI0Config

    path = folder / CONFIG_FILE
    try:
        with quiet():
            config = PreTrainedConfig.from_pretrained(
                str(folder), local_files_only=True, cli_overrides=[*overrides, "--device=cpu"]
            )
    except Exception as error:  # draccus reports unknown/invalid fields with its own error types
        raise InputError(
            f"{path}: lerobot {library_version('lerobot')} cannot parse this config ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); a checkpoint from an older lerobot "
            "must first be converted with lerobot's migration script "
            "(python -m lerobot.processor.migrate_policy_normalization)"
        ) from None
    if not isinstance(config, PI0Config):
        raise InputError(f"{path}: policy type is {getattr(config, 'type', '?')!r}, not 'pi0'")
    return config


def load_policy(folder: Path, config, strict: bool):
    """PI0Policy.from_pretrained with our config (dtype, device), then proof the weights are in."""
    from lerobot.policies.pi0 import PI0Policy

    printed = io.StringIO()
    try:
        with checkpoint_architecture(folder), contextlib.redirect_stdout(printed), _without_patch_embedding_notice():
            policy = PI0Policy.from_pretrained(str(folder), config=config, strict=strict, local_files_only=True)
    except (RuntimeError, AssertionError) as error:  # torch asserts "not compiled with CUDA enabled"
        if _device_error(error):
            raise DeviceUnavailableError(f"device {config.device}: {error}") from None
        raise
    verify_weights_loaded(policy, folder / WEIGHTS_FILE, printed.getvalue())
    return policy.eval()


class _PatchEmbeddingNotice(logging.Filter):
    """lerobot 0.6.1 logs 'Vision embedding key might need handling' for every pi0 checkpoint (every one
    has a patch embedding); verify_weights_loaded checks those tensors for real, so the notice is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Vision embedding key might need handling")


@contextlib.contextmanager
def _without_patch_embedding_notice():
    notice = _PatchEmbeddingNotice()
    root = logging.getLogger()
    root.addFilter(notice)
    try:
        yield
    finally:
        root.removeFilter(notice)


def verify_weights_loaded(policy, weights_path: Path, lerobot_log: str = "") -> None:
    """Every model tensor must come from the file (lerobot's loader would keep random weights).

    Key check over all parameters and buffers, value check on an evenly spread sample of them
    (a whole-model comparison would read a full-size checkpoint twice).
    """
    import torch
    from safetensors import safe_open

    state = policy.state_dict()
    with safe_open(str(weights_path), framework="pt") as handle:
        file_keys = {_lerobot_key(key): key for key in handle.keys()}
        tied = "model.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
        lm_head = "model.paligemma_with_expert.paligemma.lm_head.weight"
        missing = [key for key in state if key not in file_keys and not (key == tied and lm_head in file_keys)]
        if missing:
            hint = _first_warning(lerobot_log)
            raise InputError(
                f"{weights_path}: weights do not fit the model built from config.json: {len(missing)} of "
                f"{len(state)} tensors missing (e.g. {missing[0]})" + (f"; lerobot said: {hint}" if hint else "")
            )
        wrong_shape = [
            key
            for key in state
            if key in file_keys and tuple(handle.get_slice(file_keys[key]).get_shape()) != tuple(state[key].shape)
        ]
        if wrong_shape:
            key = wrong_shape[0]
            raise InputError(
                f"{weights_path}: {len(wrong_shape)} tensors do not fit the model built from config.json "
                f"(e.g. {key}: file {list(handle.get_slice(file_keys[key]).get_shape())}, model "
                f"{list(state[key].shape)})"
            )
        common = sorted(key for key in state if key in file_keys)
        for key in common[:: max(1, len(common) // 16)]:
            stored = handle.get_tensor(file_keys[key]).to(state[key].dtype)
            if not torch.equal(stored, state[key].detach().to("cpu")):
                raise InputError(
                    f"{weights_path}: tensor {key} differs from the file after loading; weights not loaded"
                )


def _lerobot_key(key: str) -> str:
    """The model key lerobot's PI0Policy.from_pretrained loads a file key into (its own remapping)."""
    for old, new in (("time_mlp_in.", "action_time_mlp_in."), ("time_mlp_out.", "action_time_mlp_out.")):
        if key.startswith(old):
            key = new + key[len(old) :]
    return key if key.startswith("model.") else f"model.{key}"


def legacy_normalization_stats(weights_path: Path) -> dict | None:
    """Statistics a pre-processor-era checkpoint keeps inside model.safetensors, via lerobot's migrator."""
    from safetensors import safe_open

    with safe_open(str(weights_path), framework="pt") as handle:
        keys = [key for key in handle.keys() if key.startswith(LEGACY_NORMALIZATION_PREFIXES)]
        if not keys:
            return None
        from lerobot.processor.migrate_policy_normalization import extract_normalization_stats

        return extract_normalization_stats({key: handle.get_tensor(key) for key in keys})


def checkpoint_sha256(checkpoint_dir: str | Path) -> str:
    """sha256 over the weight/config/tokenizer files: sorted relative paths, each path then its bytes."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        raise InputError(f"{folder}: checkpoint folder not found")
    digest = hashlib.sha256()
    files = sorted(
        path
        for path in folder.rglob("*")
        if path.is_file() and path.suffix in HASHED_SUFFIXES and not path.name.startswith(".")
    )
    for path in files:
        relative = path.relative_to(folder).as_posix().encode("utf-8")
        digest.update(len(relative).to_bytes(8, "little") + relative)
        digest.update(path.stat().st_size.to_bytes(8, "little"))
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _device_error(error: Exception) -> bool:
    text = str(error).lower()
    return any(word in text for word in ("cuda", "npu", "device", "driver", "out of memory"))


def _first_warning(log: str) -> str:
    for line in log.splitlines():
        if "could not" in line.lower() or "missing" in line.lower():
            return line.strip()
    return ""


@contextlib.contextmanager
def quiet():
    """lerobot and transformers print banners to stdout; keep stdout for the tool's own output."""
    with contextlib.redirect_stdout(sys.stderr):
        yield
