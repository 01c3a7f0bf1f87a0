"""Seam: the tensor names of pi0 checkpoints, as each era of lerobot (and openpi) wrote them, and lerobot 0.6.1's
own remapping of them (policies/pi0/modeling_pi0.py `PI0Policy.from_pretrained`).

A checkpoint's `model.safetensors` holds the state dict of the model that wrote it, saved with safetensors'
`save_model` (lerobot policies/pretrained.py `PreTrainedPolicy._save_pretrained`, openpi
examples/convert_jax_model_to_pytorch.py `convert_pi0_checkpoint`). The names follow that model's module tree,
which is lerobot's (`model.paligemma_with_expert...`, `model.state_proj`...) around transformers' PaliGemma and
Gemma; each layout below says which code wrote it and how its names become lerobot 0.6.1's:

  lerobot<0.4   lerobot from its first pi0 (638d411cd, 2025-02-04; a27411022 of 2025-03 wrote the seed's
                checkpoint) to v0.3.3, under transformers 4.48-4.51 (pinned >=4.48, then >=4.50.3,<4.52), whose
                `PaliGemmaForConditionalGeneration` holds `language_model` (a GemmaForCausalLM: `.model`, `.lm_head`),
                `vision_tower` and `multi_modal_projector`; renamed as transformers 4.52 renamed them itself
                (`PaliGemmaForConditionalGeneration._checkpoint_conversion_mapping`, PR #37033; in 5.5 the "llava"
                entry of conversion_mapping.py, which paligemma uses) and as lerobot did for its hub weights
                (v0.3.2 `PI0Policy._transform_state_dict_keys`, PR #1415);
  lerobot>=0.4  lerobot 0.4.0-0.6.1 (transformers 4.53-5.5), and lerobot 0.3.x run under transformers >= 4.52:
                lerobot 0.6.1's own names;
  openpi        openpi's PyTorch port (examples/convert_jax_model_to_pytorch.py, `PI0Pytorch` saved with
                `save_model`): the same tree without lerobot's `model.` wrapper, as lerobot 0.6.1's
                `from_pretrained` and `_fix_pytorch_state_dict_keys` expect it (`time_mlp_*` -> `action_time_mlp_*`,
                `model.` prefixed, `lm_head` only).

Tied weights: PaliGemma's input embedding and output head are one tensor in the models transformers 4.x builds
(Gemma's `tie_word_embeddings`, tied by `post_init`), and `save_model` keeps one name of a shared tensor, the
first in sorted order: the file holds `...lm_head.weight` and no `embed_tokens` (lerobot 0.6.1 fills the
embedding from it). transformers' `save_pretrained` drops the other one (`_tied_weights_keys`). Either way the
missing twin is filled from the tensor the file has, and the fill is recorded. lerobot 0.6.1 under transformers
5.5 builds them as two tensors and saves both.

Everything here works on names: which layout a file is, and which file tensor fills each model tensor, is
decided from the safetensors headers without reading a tensor.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from verify_ate.verify.errors import InputError

# Pre-0.4 lerobot checkpoints kept normalisation statistics as buffers inside the weights
# (lerobot a27411022 policies/normalize.py `Normalize`/`Unnormalize` as PI0Policy attributes).
LEGACY_NORMALIZATION_PREFIXES = ("normalize_inputs.", "normalize_targets.", "unnormalize_outputs.")
# lerobot 0.6.1's names of PaliGemma's input embedding and output head, tied in the models that wrote older files.
EMBED_TOKENS = "model.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
LM_HEAD = "model.paligemma_with_expert.paligemma.lm_head.weight"
TIED = ((EMBED_TOKENS, LM_HEAD),)

_PALIGEMMA = "model.paligemma_with_expert.paligemma."


@dataclass(frozen=True)
class Layout:
    """One way pi0 checkpoints have named their tensors."""

    name: str  # recorded in artifacts (meta.load.layout)
    written_by: str  # the code, commit or release, file and function that wrote these names
    markers: tuple[str, ...]  # a file tensor name starting with one of these marks the layout (and no other)
    renames: tuple[tuple[str, str], ...]  # (file name prefix, lerobot 0.6.1 prefix), the first that matches

    def model_key(self, name: str, policy: str = "pi0") -> str:
        """The lerobot 0.6.1 state key a file tensor of this layout loads into, in a model of `policy`."""
        for old, new in self.renames:
            if name.startswith(old):
                name = new + name[len(old) :]
                break
        return lerobot_key(name, policy)


LEROBOT_BEFORE_04 = Layout(
    name="lerobot<0.4",
    written_by=(
        "lerobot 638d411cd (2025-02, a27411022 of 2025-03 among them) to v0.3.3 under transformers 4.48-4.51: "
        "lerobot/common/policies/pi0/paligemma_with_expert.py PaliGemmaWithExpertModel (transformers' "
        "PaliGemmaForConditionalGeneration, GemmaForCausalLM), saved by policies/pretrained.py "
        "PreTrainedPolicy._save_pretrained (safetensors save_model)"
    ),
    markers=(
        f"{_PALIGEMMA}language_model.",
        f"{_PALIGEMMA}vision_tower.",
        f"{_PALIGEMMA}multi_modal_projector.",
    ),
    # transformers 4.52 PaliGemmaForConditionalGeneration._checkpoint_conversion_mapping; lerobot v0.3.2
    # src/lerobot/policies/pi0/modeling_pi0.py PI0Policy._transform_state_dict_keys (the same four, in this order).
    renames=(
        (f"{_PALIGEMMA}language_model.lm_head.", f"{_PALIGEMMA}lm_head."),
        (f"{_PALIGEMMA}language_model.model.", f"{_PALIGEMMA}model.language_model."),
        (f"{_PALIGEMMA}vision_tower.", f"{_PALIGEMMA}model.vision_tower."),
        (f"{_PALIGEMMA}multi_modal_projector.", f"{_PALIGEMMA}model.multi_modal_projector."),
    ),
)
LEROBOT_FROM_04 = Layout(
    name="lerobot>=0.4",
    written_by=(
        "lerobot v0.4.0-v0.6.1 (transformers 4.53-5.5; and lerobot 0.3.x under transformers >= 4.52): "
        "src/lerobot/policies/pi0/modeling_pi0.py PI0Policy, saved by policies/pretrained.py "
        "PreTrainedPolicy._save_pretrained (safetensors save_model)"
    ),
    markers=(f"{_PALIGEMMA}model.", f"{_PALIGEMMA}lm_head."),
    renames=(),
)
OPENPI = Layout(
    name="openpi",
    written_by=(
        "openpi examples/convert_jax_model_to_pytorch.py convert_pi0_checkpoint (src/openpi/models_pytorch/"
        "pi0_pytorch.py PI0Pytorch, transformers 4.53 with openpi's transformers_replace, safetensors save_model), "
        "as lerobot 0.6.1 PI0Policy.from_pretrained / _fix_pytorch_state_dict_keys loads it"
    ),
    markers=("paligemma_with_expert.",),
    renames=(),  # lerobot's own remapping (`lerobot_key`) is all it needs
)
LAYOUTS = (LEROBOT_BEFORE_04, LEROBOT_FROM_04, OPENPI)


# The action-time MLP is `action_time_mlp_*` in pi0 and `time_mlp_*` in pi0.5 (openpi's PI0Pytorch names it by its
# `pi05` flag); each lerobot 0.6.1 policy renames a file's unprefixed names of the other into its own, in
# `_fix_pytorch_state_dict_keys` (see lerobot v0.6.1 policies/pi0/modeling_pi0.py and policies/pi05/modeling_pi05.py).
TIME_MLP_RENAMES = {
    "pi0": (("time_mlp_in.", "action_time_mlp_in."), ("time_mlp_out.", "action_time_mlp_out.")),
    "pi05": (("action_time_mlp_in.", "time_mlp_in."), ("action_time_mlp_out.", "time_mlp_out.")),
}


def lerobot_key(name: str, policy: str = "pi0") -> str:
    """The model key lerobot 0.6.1's PI0Policy (PI05Policy for `policy` "pi05") `from_pretrained` loads a file tensor
    into: `_fix_pytorch_state_dict_keys` renames the other policy's action-time MLP names into its own, then every
    key without the `model.` prefix gets it."""
    for old, new in TIME_MLP_RENAMES[policy]:
        if name.startswith(old):
            name = new + name[len(old) :]
    return name if name.startswith("model.") else f"model.{name}"


@dataclass(frozen=True)
class WeightSources:
    """Where each model tensor comes from in a file, by name."""

    layout: Layout
    sources: dict[str, str]  # model key -> file tensor name (a tied twin's name where the file lacks the key's own)
    tied: dict[str, str]  # the model keys filled from their tied twin -> that file tensor name
    unused: tuple[str, ...]  # file tensors the model has no place for (normalisation buffers and tied twins aside)


def weight_sources(
    file_names: Iterable[str], model_keys: Iterable[str], where: str | Path, policy: str = "pi0"
) -> WeightSources:
    """{model key: file tensor name} for a file holding `file_names`, the layout recognised from those names,
    the tied tensors filled from their twin, and the file's tensors the model does not take. `policy`: "pi0" or
    "pi05", whose model the keys are (they name the action-time MLP differently).

    A layout is recognised by its marker names. When a file has the marker names of two layouts, each maps only
    the names no other one marks, and the one that fills the model is taken (the other names are then unused:
    a strict load refuses them). InputError, one line naming `where` (the file or folder) and a missing tensor,
    when no layout is recognised or none fills every model tensor."""
    names = list(file_names)
    keys = list(model_keys)
    found = [layout for layout in LAYOUTS if any(name.startswith(layout.markers) for name in names)]
    if not found:
        mapped = {lerobot_key(name, policy) for name in names}
        missing = [key for key in keys if key not in mapped]
        known = ", ".join(layout.name for layout in LAYOUTS)
        raise _missing_error(where, missing or keys, keys, f"; its tensor names are of no known layout ({known})")
    attempts = []
    for layout in found:
        foreign = tuple(marker for other in found if other is not layout for marker in other.markers)
        sources, tied = _map(layout, names, keys, foreign, policy)
        attempts.append((layout, sources, tied, [key for key in keys if key not in sources]))
    complete = [attempt for attempt in attempts if not attempt[3]]
    if len(complete) > 1:
        alike = " and ".join(attempt[0].name for attempt in complete)
        raise InputError(f"{where}: its tensor names fit the layouts {alike} alike; cannot tell which wrote it")
    if not complete:
        missing = min((attempt[3] for attempt in attempts), key=len)
        mixed = f"; it mixes the tensor names of layouts {' and '.join(each.name for each in found)}"
        raise _missing_error(where, missing, keys, mixed if len(found) > 1 else "")
    layout, sources, tied, _ = complete[0]
    taken = set(sources.values())
    twins = {twin for pair in TIED if any(key in keys for key in pair) for twin in pair} - set(keys)
    unused = tuple(
        name
        for name in names
        if name not in taken
        and not name.startswith(LEGACY_NORMALIZATION_PREFIXES)
        and layout.model_key(name, policy) not in twins
    )
    return WeightSources(layout, sources, tied, unused)


def _map(layout: Layout, names: list[str], keys: list[str], foreign: tuple[str, ...], policy: str) -> tuple[dict, dict]:
    by_key: dict[str, str] = {}
    for name in names:
        if foreign and name.startswith(foreign):
            continue
        by_key.setdefault(layout.model_key(name, policy), name)
    wanted = set(keys)
    sources = {key: by_key[key] for key in keys if key in by_key}
    tied = {}
    for pair in TIED:
        for key, twin in (pair, pair[::-1]):
            if key in wanted and key not in sources and twin in by_key:
                sources[key] = tied[key] = by_key[twin]
    return sources, tied


def _missing_error(where: str | Path, missing: list[str], keys: list[str], why: str) -> InputError:
    return InputError(
        f"{where}: weights do not fit the model built from config.json: {len(missing)} of {len(keys)} tensors "
        f"missing (e.g. {missing[0]}){why}"
    )
