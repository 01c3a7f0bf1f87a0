"""A lerobot pi0 checkpoint folder: its files, config, tokenizer and weights, and their hash.

The model is lerobot 0.6.1's own `PI0Policy`, built from the folder's config by lerobot's code.
Its weights are not loaded through `PI0Policy.from_pretrained`, which builds the whole model on
the CPU with random initialisation and then overwrites every tensor (minutes at the real size):
the module structure is built without memory on the meta device, in the requested dtype, then
created on the target device and filled tensor by tensor from the safetensors files
(verify/model/weights.py), with lerobot's own buffers. Tensor names are mapped from whichever
layout wrote the file (lerobot before 0.4, lerobot 0.4 to 0.6.1, openpi; tied twins filled from each
other: verify/upstream/pi0_weights.py), by name, before anything is read. This module also proves
that every tensor came from the file, names the file in every error, and hashes the files a load
reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verify_ate.verify.errors import DeviceUnavailableError, InputError, interrupt_behind
from verify_ate.verify.model.architecture import checkpoint_architecture
from verify_ate.verify.model.devices import check_fits, library_version
from verify_ate.verify.model.weights import (
    INDEX_FILE,
    WEIGHTS_FILE,
    CheckpointWeights,
    checkpoint_weights,
    read_all_into,
    read_tensor,
)
from verify_ate.verify.upstream.pi0_build import parameters_on_meta
from verify_ate.verify.upstream.pi0_weights import LEGACY_NORMALIZATION_PREFIXES, WeightSources, weight_sources

CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "policy_preprocessor.json"
POSTPROCESSOR_FILE = "policy_postprocessor.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")  # fast (tokenizers) or sentencepiece
# Files that define the model besides its weights: configs, processor statistics, tokenizer.
HASHED_SUFFIXES = (".safetensors", ".json", ".model")


def check_checkpoint_folder(folder: Path, adapter: Any = None) -> None:
    """Everything about a checkpoint folder that can be checked without building a model, before any
    heavy work: config.json (a JSON object of `adapter`'s policy type, default pi0), the weight files' headers
    (sizes, shards), a tokenizer file that parses (policies that take a prompt), processor pipelines whose
    statistics files are there. InputError naming the file and the problem."""
    if not folder.is_dir():
        raise InputError(f"{folder}: checkpoint folder not found")
    config = _json_file(folder / CONFIG_FILE, "config", required=True)
    if not isinstance(config, dict):
        raise InputError(f"{folder / CONFIG_FILE}: not a policy config (a JSON object is expected)")
    policy_type = str(config.get("type"))
    expected = adapter.name if adapter is not None else "pi0"
    if policy_type != expected:
        raise InputError(f"{folder / CONFIG_FILE}: policy type is {policy_type!r}, not {expected!r}")
    checkpoint_weights(folder)
    if (adapter is None or adapter.needs_tokenizer) and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise InputError(
            f"{folder}: no tokenizer in the checkpoint folder (needs {' or '.join(TOKENIZER_FILES)} "
            "with tokenizer_config.json; save the PaliGemma tokenizer there with "
            "AutoTokenizer.from_pretrained(...).save_pretrained(folder)); the hub is never used"
        )
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        _json_file(folder / name, "tokenizer file")
    for name in (PREPROCESSOR_FILE, POSTPROCESSOR_FILE):
        pipeline = _json_file(folder / name, "processor pipeline")
        steps = pipeline.get("steps") if isinstance(pipeline, dict) else None
        if pipeline is not None and not isinstance(steps, list):
            raise InputError(f"{folder / name}: not a processor pipeline (no list of steps)")
        for step in steps or []:
            state_file = step.get("state_file") if isinstance(step, dict) else None
            if state_file and not (folder / state_file).is_file():
                raise InputError(f"{folder / state_file}: missing; {name} reads its statistics from it")


def _json_file(path: Path, what: str, required: bool = False) -> Any:
    if not path.is_file():
        if required:
            raise InputError(f"{path.parent}: not a lerobot checkpoint folder (no {path.name})")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InputError(f"{path}: not a readable {what} ({type(error).__name__}: {error})") from None


def load_checkpoint_tokenizer(folder: Path):
    """The checkpoint's own tokenizer (never the hub): AutoTokenizer on the folder, offline (the folder
    has passed `check_checkpoint_folder`)."""
    from transformers import AutoTokenizer

    try:
        with quiet():
            return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as error:  # transformers raises many types for broken tokenizer files
        if (interrupt := interrupt_behind(error)) is not None:
            raise interrupt from None
        raise InputError(f"{folder}: the tokenizer files cannot be loaded ({type(error).__name__}: {error})") from None


def load_pi0_config(folder: Path, overrides: list[str] = ()):
    """config.json parsed by lerobot (PreTrainedConfig.from_pretrained); must be a pi0 config."""
    from lerobot.policies.pi0 import PI0Config

    return load_policy_config(folder, overrides, PI0Config, "pi0")


def load_policy_config(folder: Path, overrides: list[str], config_class: Any, policy_type: str):
    """config.json parsed by lerobot (PreTrainedConfig.from_pretrained); must be a `config_class` config.

    `overrides`: lerobot's own command-line style overrides ("--dtype=bfloat16"). The device is
    pinned to cpu while parsing: a config saved with "npu" or "cuda" would otherwise be rejected
    or silently switched by lerobot's device check; callers set the real device afterwards.
    """
    from lerobot.configs import PreTrainedConfig

    path = folder / CONFIG_FILE
    try:  # draccus reports a bad field as an argparse usage text on stderr and SystemExit
        with quiet(), contextlib.redirect_stderr(io.StringIO()):
            config = PreTrainedConfig.from_pretrained(
                str(folder), local_files_only=True, cli_overrides=[*overrides, "--device=cpu"]
            )
    except (Exception, SystemExit) as error:  # draccus reports unknown/invalid fields with its own error types
        if (interrupt := interrupt_behind(error)) is not None:
            raise interrupt from None
        raise InputError(
            f"{path}: lerobot {library_version('lerobot')} cannot parse this config ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); for a checkpoint of an older lerobot try "
            f"verify-ate import checkpoint {folder} --out NEW_FOLDER --dataset DATASET"
        ) from None
    if not isinstance(config, config_class):
        raise InputError(f"{path}: policy type is {getattr(config, 'type', '?')!r}, not {policy_type!r}")
    return config


@dataclass(frozen=True)
class LoadReport:
    """What loading one side cost: time, tensors and bytes, and which parameters stayed float32."""

    seconds: float
    parameters: int
    parameter_bytes: int
    buffer_bytes: int
    bytes_read: int
    files: tuple[str, ...]  # the weight files read, relative to the checkpoint folder
    float32_modules: tuple[str, ...]  # under bfloat16: the modules lerobot keeps in float32 (layer indices as *)
    layout: str | None = None  # the tensor-name layout the file was written in (pi0_weights.LAYOUTS); None: no file
    tied: tuple[tuple[str, str], ...] = ()  # (model key, file tensor) for tensors filled from their tied twin

    def as_dict(self) -> dict:
        return {
            "seconds": round(self.seconds, 3),
            "parameters": self.parameters,
            "parameter_bytes": self.parameter_bytes,
            "buffer_bytes": self.buffer_bytes,
            "bytes_read": self.bytes_read,
            "files": list(self.files),
            "float32_modules": list(self.float32_modules),
            "layout": self.layout,
            "tied": dict(self.tied),
        }


def load_policy(
    folder: Path,
    config: Any,
    weights: CheckpointWeights,
    device: Any,
    strict: bool = True,
    on_bytes: Callable[[int, int], None] | None = None,
) -> tuple[Any, LoadReport]:
    """lerobot's PI0Policy for `config` (dtype set) on `device`, its weights streamed from `weights`.

    Checks before any memory is taken: every model tensor has a file tensor of its shape, the
    file has no tensor the model lacks (unless `strict` is off: legacy checkpoints), and the
    model fits the device's free memory (else DeviceUnavailableError, exit 3). After loading,
    `verify_weights_loaded` proves the values came from the file. `on_bytes(read, total)`
    reports progress.
    """

    started = time.perf_counter()
    policy, buffers = build_skeleton(folder, config)
    plan = tensor_sources(policy, weights, strict)
    sources = plan.sources
    parameters = _unique_parameters(policy)
    parameter_bytes = sum(p.numel() * p.element_size() for p in parameters)
    buffer_bytes = sum(b.numel() * b.element_size() for b in policy.buffers())
    check_fits(
        device,
        parameter_bytes + buffer_bytes,
        f"pi0 from {folder} ({sum(p.numel() for p in parameters):,} parameters in {config.dtype})",
    )
    try:
        materialise(policy, buffers, device)
    except (RuntimeError, AssertionError) as error:  # torch asserts "not compiled with CUDA enabled"
        if _device_error(error):
            raise DeviceUnavailableError(f"device {device}: {error}") from None
        raise
    total = read_all_into(policy.state_dict(keep_vars=True), sources, weights, on_bytes)
    config.device = str(device)
    verify_weights_loaded(policy, weights, plan)
    report = LoadReport(
        seconds=time.perf_counter() - started,
        parameters=sum(p.numel() for p in parameters),
        parameter_bytes=parameter_bytes,
        buffer_bytes=buffer_bytes,
        bytes_read=total,
        files=tuple(path.relative_to(weights.folder).as_posix() for path in weights.files),
        float32_modules=float32_modules(policy) if config.dtype == "bfloat16" else (),
        layout=plan.layout.name,
        tied=tuple(plan.tied.items()),
    )
    return policy.eval(), report


def build_skeleton(folder: Path, config: Any) -> tuple[Any, dict]:
    """PI0Policy for `config` and the checkpoint folder's architecture, see `build_skeleton_with`."""
    return build_skeleton_with(config, checkpoint_architecture(folder))


def build_skeleton_with(config: Any, architecture: contextlib.AbstractContextManager) -> tuple[Any, dict]:
    """PI0Policy for `config` with every parameter on the meta device (built inside `architecture`,
    the size overrides of a tiny model), and its buffers as lerobot computed them ({state name:
    CPU tensor}), to be put in place by `materialise`."""
    buffers: dict = {}
    policy_class = _paligemma_policy_class(config)
    device = config.device
    config.device = "meta"  # lerobot moves its model to config.device at the end of construction
    try:
        with architecture, parameters_on_meta(buffers), quiet():
            policy = policy_class(config)
    finally:
        config.device = device
    return policy, {f"model.{name}": tensor for name, tensor in buffers.items()}


def _paligemma_policy_class(config: Any) -> Any:
    """PI0Policy, or PI05Policy for a pi0.5 config: the two are built and loaded the same way."""
    from lerobot.policies.pi0 import PI0Policy
    from lerobot.policies.pi05 import PI05Config, PI05Policy

    return PI05Policy if isinstance(config, PI05Config) else PI0Policy


def materialise(policy: Any, buffers: dict, device: Any) -> None:
    """Uninitialised storage on `device` for every parameter (ties kept), and the buffers lerobot computed."""
    ties: dict[int, list[tuple[Any, str]]] = {}
    for module in policy.modules():
        for name, parameter in module._parameters.items():
            if parameter is not None:
                ties.setdefault(id(parameter), []).append((module, name))
    policy.to_empty(device=device)
    for holders in ties.values():
        first_module, first_name = holders[0]
        for module, name in holders[1:]:
            module._parameters[name] = first_module._parameters[first_name]
    for name, value in buffers.items():
        owner, _, attribute = name.rpartition(".")
        policy.get_submodule(owner)._buffers[attribute] = value.to(device)


def _unique_parameters(policy: Any) -> list:
    return list({id(p): p for p in policy.parameters()}.values())


def tensor_sources(policy: Any, weights: CheckpointWeights, strict: bool) -> WeightSources:
    """Which file tensor fills each model state key (model key -> file tensor name), in the layout the file's
    names were written in (verify/upstream/pi0_weights.py), decided from the headers alone; InputError naming
    the file when they do not fit: a tensor missing, a shape that differs, or (`strict`) a tensor the model
    does not have."""
    state = policy.state_dict(keep_vars=True)
    where = weights.files[0] if len(weights.files) == 1 else weights.folder
    plan = weight_sources(weights.tensors, state, where, policy.config.type)  # lerobot's registry name
    sources = plan.sources
    wrong = [key for key, file_key in sources.items() if weights.tensors[file_key].shape != tuple(state[key].shape)]
    if wrong:
        key = wrong[0]
        raise InputError(
            f"{weights.tensors[sources[key]].path}: {len(wrong)} tensors do not fit the model built from config.json "
            f"(e.g. {key}: file {list(weights.tensors[sources[key]].shape)}, model {list(state[key].shape)})"
        )
    if strict and plan.unused:
        raise InputError(
            f"{weights.tensors[plan.unused[0]].path}: {len(plan.unused)} tensors that the model built from config.json "
            f"does not have (e.g. {plan.unused[0]})"
        )
    return plan


def float32_modules(policy: Any) -> tuple[str, ...]:
    """The largest modules whose parameters are all float32 (layer indices as *): what lerobot keeps
    in float32 when the rest of pi0 runs in bfloat16."""
    import re

    import torch

    def all_float32(module: Any) -> bool:
        params = list(module.parameters())
        return bool(params) and all(p.dtype == torch.float32 for p in params)

    found = set()
    for name, module in policy.named_modules():
        parent = name.rpartition(".")[0]
        if all_float32(module) and not (name and all_float32(policy.get_submodule(parent))):
            found.add(re.sub(r"\.\d+\.", ".*.", name.removeprefix("model.")))
    return tuple(sorted(found))


def verify_weights_loaded(policy: Any, weights: CheckpointWeights, plan: WeightSources | None = None) -> None:
    """Every model tensor must come from the file: keys and shapes (checked before loading) and the
    values of an evenly spread sample of them, and of every tensor filled from its tied twin, read back
    from disk and compared. `plan`: the sources the load used (else worked out again from the names)."""
    import torch

    state = policy.state_dict()
    plan = plan or tensor_sources(policy, weights, strict=False)
    sources, tied = plan.sources, plan.tied
    common = sorted(sources)
    sample = [*common[:: max(1, len(common) // 16)], *(key for key in sorted(tied) if key in sources)]
    for key in dict.fromkeys(sample):
        entry = weights.tensors[sources[key]]
        stored = read_tensor(entry).to(state[key].dtype)
        if not torch.equal(stored, state[key].detach().to("cpu")):
            raise InputError(f"{entry.path}: tensor {key} differs from the file after loading; weights not loaded")


def legacy_normalization_stats(weights: CheckpointWeights) -> dict | None:
    """Statistics a pre-processor-era checkpoint keeps inside its weights, via lerobot's migrator."""
    keys = [key for key in weights.tensors if key.startswith(LEGACY_NORMALIZATION_PREFIXES)]
    if not keys:
        return None
    from lerobot.processor.migrate_policy_normalization import extract_normalization_stats

    return extract_normalization_stats({key: read_tensor(weights.tensors[key]) for key in keys})


def hashed_files(folder: Path, weights: CheckpointWeights | None = None) -> list[Path]:
    """The files a run reads from a checkpoint folder: the chosen weights, configs, processor statistics,
    tokenizer (a duplicate weights layout that is not read is not hashed either)."""
    weights = weights or checkpoint_weights(folder)
    layouts = {folder / WEIGHTS_FILE, folder / INDEX_FILE}
    unread_weights = set(folder.glob("model*.safetensors*")) | layouts
    chosen = set(weights.files)
    files = [
        path
        for path in folder.rglob("*")
        if path.is_file()
        and path.suffix in HASHED_SUFFIXES
        and not path.name.startswith(".")
        and (path in chosen or path not in unread_weights)
    ]
    return sorted(files)


def checkpoint_sha256(checkpoint_dir: str | Path, cache_file: Path | None = None) -> str:
    """sha256 over the files a run reads (`hashed_files`): sorted relative paths, each path, size, then bytes.

    Streamed in 1 MiB blocks. With `cache_file`, a result is reused while every hashed file keeps
    its relative path, size and modification time (a changed file is hashed again).
    """
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        raise InputError(f"{folder}: checkpoint folder not found")
    files = hashed_files(folder)
    stamp = [[path.relative_to(folder).as_posix(), path.stat().st_size, path.stat().st_mtime_ns] for path in files]
    cache = _read_hash_cache(cache_file)
    entry = cache.get(str(folder.resolve()))
    if entry and entry.get("files") == stamp:
        return str(entry["sha256"])
    digest = hashlib.sha256()
    for path in files:
        relative = path.relative_to(folder).as_posix().encode("utf-8")
        digest.update(len(relative).to_bytes(8, "little") + relative)
        digest.update(path.stat().st_size.to_bytes(8, "little"))
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    sha = digest.hexdigest()
    if cache_file is not None:
        cache[str(folder.resolve())] = {"files": stamp, "sha256": sha}
        _write_hash_cache(cache_file, cache)
    return sha


def _read_hash_cache(path: Path | None) -> dict:
    if path is None or not path.is_file():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return document if isinstance(document, dict) else {}
    except (OSError, ValueError):
        return {}  # a damaged cache is rebuilt, never trusted


def _write_hash_cache(path: Path, cache: dict) -> None:
    from verify_ate.reports.atomic import write_text

    try:
        write_text(path, json.dumps(cache, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass  # an unwritable cache only costs the next run a hash


def _device_error(error: Exception) -> bool:
    text = str(error).lower()
    return any(word in text for word in ("cuda", "npu", "device", "driver", "out of memory"))


@contextlib.contextmanager
def quiet():
    """lerobot and transformers print banners to stdout; keep stdout for the tool's own output."""
    with contextlib.redirect_stdout(sys.stderr):
        yield
