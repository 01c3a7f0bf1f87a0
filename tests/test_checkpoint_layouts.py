"""pi0 checkpoints of every era load: each tensor-name layout pi0 weights have been published in, made here from
the trained tiny checkpoint with the names, dtypes and tied tensors of the code that wrote it, gives the same
actions as the same weights under lerobot 0.6.1's names, through the command line and through the runner.

The writers, and what each did to the file (verify/upstream/pi0_weights.py has the sources):

- lerobot before 0.4 (a27411022 to v0.3.3) under transformers 4.48-4.51: PaliGemma's tree of those releases
  (`paligemma.language_model.model.*`, `paligemma.language_model.lm_head`, `paligemma.vision_tower.*`,
  `paligemma.multi_modal_projector.*`); `to_bfloat16_like_physical_intelligence` stored the whole PaliGemma and
  the expert's layers in bfloat16; the head tied to the input embedding, so safetensors' `save_model` kept only
  `lm_head` (the first name of a shared tensor in sorted order);
- lerobot 0.4.x under transformers 4.53-4.57 with dtype bfloat16: 0.6.1's names, bfloat16 but for v0.4.0's
  `params_to_keep_float32`, the head tied (so `lm_head` only);
- transformers' `save_pretrained` direction: the embedding kept, the head dropped;
- openpi's converter at precision bfloat16: no `model.` prefix, every tensor bfloat16, `lm_head` only, and the
  action-time MLP under the `time_mlp_*` names lerobot 0.6.1's `_fix_pytorch_state_dict_keys` renames.

Tied tensors are one tensor in the writing models, and it is the embedding pi0 uses; so the files hold the
tiny checkpoint's embedding under the head's name, and every reference sets its head to the embedding too. An
era that stored bfloat16 is compared with the same bfloat16-rounded weights stored in float32 under 0.6.1's
names.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, run_side, tiny_checkpoint
from test_legacy_checkpoint import make_legacy

PALI = "model.paligemma_with_expert.paligemma."
EMBED = f"{PALI}model.language_model.embed_tokens.weight"
HEAD = f"{PALI}lm_head.weight"
# transformers 4.48-4.51's PaliGemmaForConditionalGeneration tree, as lerobot before 0.4 saved it:
# lerobot 0.6.1's name prefix -> the name prefix that code wrote
TREE_448 = (
    (f"{PALI}lm_head.", f"{PALI}language_model.lm_head."),
    (f"{PALI}model.language_model.", f"{PALI}language_model.model."),
    (f"{PALI}model.vision_tower.", f"{PALI}vision_tower."),
    (f"{PALI}model.multi_modal_projector.", f"{PALI}multi_modal_projector."),
)
# lerobot a27411022 paligemma_with_expert.py to_bfloat16_like_physical_intelligence: the whole PaliGemma, then these
BFLOAT16_BEFORE_04 = ("language_model.model.layers", "gemma_expert.model.layers", "vision_tower", "multi_modal")
# lerobot v0.4.0 modeling_pi0.py PaliGemmaWithExpertModel.to_bfloat16_for_selected_params: all of it but these
FLOAT32_FROM_04 = (
    "vision_tower.vision_model.embeddings.patch_embedding.weight",
    "vision_tower.vision_model.embeddings.patch_embedding.bias",
    "vision_tower.vision_model.embeddings.position_embedding.weight",
    "input_layernorm",
    "post_attention_layernorm",
    "model.norm",
)


def renamed(name: str, table) -> str:
    for new, old in table:
        if name.startswith(new):
            return old + name[len(new) :]
    return name


def tied_to_embedding(tensors: dict) -> dict:
    """The writing models' tie: the head is the input embedding."""
    return {**tensors, HEAD: tensors[EMBED].clone()}


def save_model(tensors: dict, path: Path, tied: tuple[str, str] | None = None) -> None:
    """`tensors` saved as their writers saved them: safetensors' `save_model` of a module tree holding them,
    `tied` (two names) sharing one parameter, which `save_model` stores once."""
    import torch
    from safetensors.torch import save_model as safetensors_save_model

    root = torch.nn.Module()
    shared = {}
    for name, tensor in tensors.items():
        *path_parts, leaf = name.split(".")
        module = root
        for part in path_parts:
            if part not in module._modules:
                module.add_module(part, torch.nn.Module())
            module = module._modules[part]
        if tied and name in tied:
            parameter = shared.setdefault("tie", torch.nn.Parameter(tensor.contiguous(), requires_grad=False))
        else:
            parameter = torch.nn.Parameter(tensor.contiguous(), requires_grad=False)
        module.register_parameter(leaf, parameter)
    safetensors_save_model(root, str(path))


def checkpoint_with(tiny: Path, target: Path, write) -> Path:
    """A copy of the tiny checkpoint folder (config, processors, tokenizer, architecture) whose
    model.safetensors is written by `write(path)`."""
    shutil.copytree(tiny, target)
    (target / "model.safetensors").unlink()
    write(target / "model.safetensors")
    return target


def file_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


class Layouts:
    """Every layout's folder and its reference, made once for the module."""

    def __init__(self, tiny: Path, stats: dict, root: Path):
        import torch
        from safetensors.torch import save_file

        self.tiny = tiny
        current = tied_to_embedding(file_tensors(tiny / "model.safetensors"))

        def reference(name: str, bfloat16) -> Path:
            rounded = {
                key: value.to(torch.bfloat16).float() if bfloat16(key) else value for key, value in current.items()
            }
            return checkpoint_with(tiny, root / f"reference-{name}", lambda path: save_file(rounded, str(path)))

        def stored(bfloat16) -> dict:
            return {key: value.to(torch.bfloat16) if bfloat16(key) else value for key, value in current.items()}

        def before_04(key: str) -> bool:
            return key.startswith(PALI) or any(part in renamed(key, TREE_448) for part in BFLOAT16_BEFORE_04)

        def from_04(key: str) -> bool:
            return key.startswith("model.paligemma_with_expert.") and not any(part in key for part in FLOAT32_FROM_04)

        old = {renamed(key, TREE_448): value for key, value in stored(before_04).items()}
        old_tie = (renamed(HEAD, TREE_448), renamed(EMBED, TREE_448))
        self.before_04 = checkpoint_with(tiny, root / "lerobot-0.3", lambda path: save_model(old, path, old_tie))
        self.before_04_reference = reference("before-0.4", before_04)
        staged = checkpoint_with(tiny, root / "lerobot-0.3-staged", lambda path: save_model(old, path, old_tie))
        self.before_04_old_config = make_legacy(staged, stats, root / "pi0_model_for_koch")

        self.from_04 = checkpoint_with(
            tiny, root / "lerobot-0.4", lambda p: save_model(stored(from_04), p, (HEAD, EMBED))
        )
        self.from_04_reference = reference("from-0.4", from_04)

        without_head = {key: value for key, value in current.items() if key != HEAD}
        self.embedding_only = checkpoint_with(tiny, root / "save-pretrained", lambda p: save_file(without_head, str(p)))
        self.float32_reference = reference("float32", lambda key: False)

        def openpi_name(key: str) -> str:
            key = key.removeprefix("model.")
            return key.replace("action_time_mlp_", "time_mlp_", 1) if key.startswith("action_time_mlp_") else key

        self.openpi_tensors = {openpi_name(key): value for key, value in stored(lambda key: True).items()}
        openpi_tie = (openpi_name(HEAD), openpi_name(EMBED))
        self.openpi = checkpoint_with(tiny, root / "openpi", lambda p: save_model(self.openpi_tensors, p, openpi_tie))
        self.openpi_reference = reference("openpi", lambda key: True)


@pytest.fixture(scope="module")
def layouts(demo_cache, demo_dataset, tmp_path_factory):
    from verify_ate.verify.data.observation import load_frames

    stats = load_frames(demo_dataset, 0, [0]).stats
    return Layouts(tiny_checkpoint(demo_cache), stats, tmp_path_factory.mktemp("layouts"))


def saved(artifact: Path) -> tuple[np.ndarray, dict]:
    with np.load(artifact, allow_pickle=False) as archive:
        return archive["actions"], json.loads(str(archive["meta"]))


@pytest.fixture(scope="module")
def reference_actions(demo_dataset, tmp_path_factory):
    """Actions of a reference folder through the CLI, each (folder, dtype) run once for the module."""
    out = tmp_path_factory.mktemp("references")
    known: dict = {}

    def actions(folder: Path, dtype: str = "float32") -> np.ndarray:
        if (folder, dtype) not in known:
            artifact = out / f"{folder.name}-{dtype}.npz"
            result = run_side(folder, demo_dataset, artifact, "--dtype", dtype)
            assert result.returncode == 0, result.stderr
            known[folder, dtype] = saved(artifact)[0]
        return known[folder, dtype]

    return actions


# ---------------------------------------------------------------- the name rules, without a model


def test_each_layout_maps_its_writers_names_onto_lerobot_061s():
    from verify_ate.verify.upstream.pi0_weights import weight_sources

    keys = [
        EMBED,
        HEAD,
        f"{PALI}model.vision_tower.vision_model.post_layernorm.weight",
        "model.action_time_mlp_in.bias",
    ]
    old = [
        f"{PALI}language_model.lm_head.weight",
        f"{PALI}vision_tower.vision_model.post_layernorm.weight",
        "model.action_time_mlp_in.bias",
        "normalize_inputs.buffer_observation_state.mean",
    ]
    plan = weight_sources(old, keys, "f")
    assert plan.layout.name == "lerobot<0.4"
    assert plan.unused == ()
    assert plan.sources == {
        HEAD: old[0],
        f"{PALI}model.vision_tower.vision_model.post_layernorm.weight": old[1],
        "model.action_time_mlp_in.bias": old[2],
        EMBED: old[0],
    }
    assert plan.tied == {EMBED: old[0]}
    openpi = [name.removeprefix("model.") for name in keys if name != HEAD]
    for time_mlp in ("time_mlp_in.bias", "action_time_mlp_in.bias"):  # lerobot's rename; openpi's pi0 name
        plan = weight_sources([*openpi[:-1], time_mlp], keys, "f")
        assert plan.layout.name == "openpi"
        assert plan.tied == {HEAD: openpi[0]}
        assert plan.sources["model.action_time_mlp_in.bias"] == time_mlp
    pi05_keys = [*keys[:-1], "model.time_mlp_in.bias"]  # pi0.5's action-time MLP, lerobot's PI05Policy names
    for time_mlp in ("time_mlp_in.bias", "action_time_mlp_in.bias"):  # openpi's pi0.5 name; lerobot's rename
        plan = weight_sources([*openpi[:-1], time_mlp], pi05_keys, "f", policy="pi05")
        assert plan.layout.name == "openpi"
        assert plan.sources["model.time_mlp_in.bias"] == time_mlp
    plan = weight_sources(keys, keys, "f")
    assert plan.layout.name == "lerobot>=0.4"
    assert plan.tied == {}
    assert plan.sources == dict(zip(keys, keys, strict=True))
    assert weight_sources([*keys, "model.extra.weight"], keys, "f").unused == ("model.extra.weight",)
    assert weight_sources(keys, [k for k in keys if k != HEAD], "f").unused == ()  # a head the model lacks: a twin


def test_a_pi05_checkpoint_in_openpis_layout_gives_the_same_actions(demo_dataset, tmp_path):
    """openpi's converter writes pi0.5 without lerobot's `model.` wrapper and with its action-time MLP as
    `time_mlp_*`, which is pi0.5's own name in lerobot (pi0's loader would rename it to pi0's `action_time_mlp_*`)."""
    from safetensors.torch import save_file

    from verify_ate.verify.run.inputs import demo_files

    committed = demo_files("koch_v1_1", "pi05").committed
    tensors = file_tensors(committed / "model.safetensors")
    assert "model.time_mlp_in.weight" in tensors
    openpi = {key.removeprefix("model."): value for key, value in tensors.items()}
    folder = checkpoint_with(committed, tmp_path / "pi05-openpi", lambda path: save_file(openpi, str(path)))
    actions = []
    for checkpoint in (committed, folder):
        result = run_side(checkpoint, demo_dataset, tmp_path / f"{checkpoint.name}.npz")
        assert result.returncode == 0, result.stderr
        actions.append(saved(tmp_path / f"{checkpoint.name}.npz"))
    assert actions[1][1]["load"]["layout"] == "openpi"
    assert actions[0][0].tobytes() == actions[1][0].tobytes()


def test_unknown_and_mixed_layouts_are_one_line_naming_the_file_and_a_missing_tensor():
    from verify_ate.verify.errors import InputError
    from verify_ate.verify.upstream.pi0_weights import weight_sources

    keys = [EMBED, f"{PALI}model.vision_tower.a.weight", f"{PALI}model.language_model.norm.weight"]
    with pytest.raises(
        InputError, match=r"^/x/model.safetensors: .* 3 of 3 tensors missing \(e.g. .*embed_tokens.* no known"
    ):
        weight_sources(["vlm.embed.weight", "vlm.norm.weight"], keys, "/x/model.safetensors")
    mixed = [EMBED, f"{PALI}vision_tower.a.weight", f"{PALI}model.language_model.norm.weight"]
    with pytest.raises(
        InputError, match=r"1 of 3 tensors missing \(e.g. .*vision_tower.a.weight\); it mixes .*<0.4 and"
    ):
        weight_sources(mixed, keys, "/x/model.safetensors")
    with pytest.raises(InputError, match=r"1 of 3 tensors missing \(e.g. .*norm.weight\)$"):
        weight_sources(keys[:2], keys, "/x/model.safetensors")
    # a complete layout plus another's name: that layout, the stray name unused (a strict load refuses it)
    plan = weight_sources([*keys, f"{PALI}vision_tower.stray"], keys, "f")
    assert plan.layout.name == "lerobot>=0.4"
    assert plan.unused == (f"{PALI}vision_tower.stray",)


def test_read_into_converts_between_bfloat16_and_float32(tmp_path):
    import torch
    from safetensors.torch import save_file

    from verify_ate.verify.model.weights import read_header, read_into

    values = torch.randn(3, 1000) * 1e3
    save_file({"f32": values, "bf16": values.to(torch.bfloat16)}, str(tmp_path / "w.safetensors"))
    entries = read_header(tmp_path / "w.safetensors")
    into_float32, into_bfloat16 = torch.empty(3, 1000), torch.empty(3, 1000, dtype=torch.bfloat16)
    read_into(entries["bf16"], into_float32)
    read_into(entries["f32"], into_bfloat16)
    assert torch.equal(into_float32, values.to(torch.bfloat16).float())  # exact: every bfloat16 is a float32
    assert torch.equal(into_bfloat16, values.to(torch.bfloat16))  # rounded as torch rounds


# ---------------------------------------------------------------- every era, through the CLI and the runner


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, layout, tied, dropped",
    [
        ("before_04", "lerobot<0.4", {EMBED: f"{PALI}language_model.lm_head.weight"}, renamed(EMBED, TREE_448)),
        ("from_04", "lerobot>=0.4", {EMBED: HEAD}, EMBED),
        ("embedding_only", "lerobot>=0.4", {HEAD: EMBED}, HEAD),
        ("openpi", "openpi", {EMBED: HEAD.removeprefix("model.")}, EMBED.removeprefix("model.")),
    ],
    ids=["lerobot-before-0.4", "lerobot-0.4", "save-pretrained", "openpi"],
)
def test_every_layout_gives_byte_identical_actions_through_the_cli(
    layouts, reference_actions, demo_dataset, tmp_path, case, layout, tied, dropped
):
    folder = getattr(layouts, case)
    reference = {
        "before_04": layouts.before_04_reference,
        "from_04": layouts.from_04_reference,
        "embedding_only": layouts.float32_reference,
        "openpi": layouts.openpi_reference,
    }[case]
    written = set(file_tensors(folder / "model.safetensors"))
    assert dropped not in written
    assert set(tied.values()) <= written
    result = run_side(folder, demo_dataset, tmp_path / "side.npz")
    assert result.returncode == 0, result.stderr
    actions, meta = saved(tmp_path / "side.npz")
    assert np.array_equal(actions, reference_actions(reference))
    assert meta["load"]["layout"] == layout
    assert meta["load"]["tied"] == tied


@pytest.mark.slow
def test_the_runner_loads_every_layout_and_proves_the_tied_twin_came_from_the_file(layouts, demo_dataset):
    import torch

    from verify_ate.noise import make_noise
    from verify_ate.verify.data.observation import load_frames
    from verify_ate.verify.errors import InputError
    from verify_ate.verify.model.checkpoint import tensor_sources, verify_weights_loaded
    from verify_ate.verify.model.runner import Pi0Runner
    from verify_ate.verify.model.weights import checkpoint_weights

    observations = load_frames(demo_dataset, 0, [0, 5])
    noise = make_noise(3, (1, 50, 32))

    def predict(folder: Path, dtype: str = "float32") -> tuple[np.ndarray, str | None]:
        with Pi0Runner(folder, dtype=dtype) as runner:
            return runner.predict(observations.frames, noise), runner.load_report.layout

    for folder, reference in (
        (layouts.before_04, layouts.before_04_reference),
        (layouts.from_04, layouts.from_04_reference),
        (layouts.embedding_only, layouts.float32_reference),
        (layouts.openpi, layouts.openpi_reference),
    ):
        ours, layout = predict(folder)
        assert np.array_equal(ours, predict(reference)[0]), (folder.name, layout)
    # float32 stored, run in bfloat16 (and bfloat16 stored, run in float32, above)
    assert np.array_equal(
        predict(layouts.embedding_only, "bfloat16")[0], predict(layouts.float32_reference, "bfloat16")[0]
    )

    with Pi0Runner(layouts.from_04) as runner:
        weights = checkpoint_weights(layouts.from_04)
        plan = tensor_sources(runner.policy, weights, strict=True)
        assert plan.tied == {EMBED: HEAD}
        verify_weights_loaded(runner.policy, weights, plan)
        with torch.no_grad():
            runner.policy.state_dict(keep_vars=True)[EMBED].data.add_(1.0)
        with pytest.raises(InputError, match="embed_tokens.weight differs from the file"):
            verify_weights_loaded(runner.policy, weights, plan)


@pytest.mark.slow
def test_current_config_with_old_names_loads_directly_in_either_dtype(
    layouts, reference_actions, demo_dataset, tmp_path
):
    cache = tmp_path / "cache"
    result = run_side(
        layouts.before_04, demo_dataset, tmp_path / "bf16.npz", "--dtype", "bfloat16", env={"VERIFY_ATE_CACHE": cache}
    )
    assert result.returncode == 0, result.stderr
    assert "old-format" not in result.stderr
    assert not (cache / "imported").exists()
    actions, meta = saved(tmp_path / "bf16.npz")
    assert np.array_equal(actions, reference_actions(layouts.before_04_reference, "bfloat16"))
    assert meta["load"]["layout"] == "lerobot<0.4"
    assert meta["load"]["files"] == ["model.safetensors"]


@pytest.mark.slow
def test_an_old_folder_is_imported_with_lerobot_061s_names(layouts, reference_actions, demo_dataset, tmp_path):
    import torch
    from safetensors import safe_open

    old = layouts.before_04_old_config
    assert any(
        ".language_model.model." in name
        for name in json.loads((old / "model.safetensors.index.json").read_text())["weight_map"]
    )
    imported = tmp_path / "imported"
    result = run_cli("import", "checkpoint", old, "--out", imported, "--dataset", demo_dataset)
    assert result.returncode == 0, result.stderr
    tiny_names = set(file_tensors(layouts.tiny / "model.safetensors"))
    with safe_open(str(imported / "model.safetensors"), "pt") as handle:
        assert set(handle.keys()) == tiny_names  # a plain 0.6.1 folder: its names, both tied twins, no buffers
        embedding, head = handle.get_tensor(EMBED), handle.get_tensor(HEAD)
        assert embedding.dtype == torch.bfloat16
        assert torch.equal(embedding, head)
    reference = reference_actions(layouts.before_04_reference)
    result = run_side(imported, demo_dataset, tmp_path / "imported.npz")
    assert result.returncode == 0, result.stderr
    actions, meta = saved(tmp_path / "imported.npz")
    assert np.array_equal(actions, reference)
    assert meta["load"]["layout"] == "lerobot>=0.4"
    assert meta["load"]["tied"] == {}
    implicit = run_side(old, demo_dataset, tmp_path / "implicit.npz", env={"VERIFY_ATE_CACHE": tmp_path / "cache"})
    assert implicit.returncode == 0, implicit.stderr
    assert "old-format pi0 checkpoint" in implicit.stderr
    assert np.array_equal(saved(tmp_path / "implicit.npz")[0], reference)


@pytest.mark.slow
def test_a_missing_an_extra_or_a_mixed_tensor_is_exit_2_naming_the_file(layouts, demo_dataset, tmp_path):
    from safetensors.torch import save_file

    tensors = layouts.openpi_tensors
    norm = "paligemma_with_expert.paligemma.model.language_model.norm.weight"
    extra = "paligemma_with_expert.paligemma.model.language_model.extra.weight"
    old_vision = {
        (
            f"{PALI}vision_tower." + key.removeprefix(f"{PALI}model.vision_tower.")
            if ".model.vision_tower." in key
            else key
        ): value
        for key, value in file_tensors(layouts.float32_reference / "model.safetensors").items()
    }
    cases = (
        ("missing", {k: v for k, v in tensors.items() if k != norm}, f"missing (e.g. model.{norm})"),
        ("extra", {**tensors, extra: tensors[norm].clone()}, f"does not have (e.g. {extra})"),
        ("mixed", old_vision, "mixes the tensor names of layouts lerobot<0.4 and lerobot>=0.4"),
    )
    for name, content, said in cases:
        folder = checkpoint_with(layouts.tiny, tmp_path / name, lambda path, c=content: save_file(c, str(path)))
        result = run_side(folder, demo_dataset, tmp_path / "out" / f"{name}.npz")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (name, result.stderr)
        assert "Traceback" not in result.stderr, (name, result.stderr)
        assert str(folder / "model.safetensors") in lines[-1], (name, lines[-1])
        assert said in lines[-1], (name, lines[-1])
        assert name != "missing" or "no known layout" not in lines[-1]
    assert not (tmp_path / "out").exists()
    import_from = make_legacy(
        checkpoint_with(layouts.tiny, tmp_path / "staged", lambda path: save_file(cases[1][1], str(path))),
        {"observation.state": {"mean": [0.0] * 6, "std": [1.0] * 6}, "action": {"mean": [0.0] * 6, "std": [1.0] * 6}},
        tmp_path / "old-extra",
    )
    result = run_cli("import", "checkpoint", import_from, "--out", tmp_path / "imported", "--dataset", demo_dataset)
    assert result.returncode == 2, result.stderr
    assert extra in result.stderr, result.stderr
    assert "of-00002.safetensors" in result.stderr, result.stderr
    assert not (tmp_path / "imported").exists()
