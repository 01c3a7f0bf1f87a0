"""Divergence localisation: forward hooks on the real lerobot PI0Pytorch modules, both sides compared.

Array-level tests check the comparison arithmetic and the sketch; model tests hook the tiny pi0
(lerobot's own PI0Policy) in process; the one-shot form's --trace runs as a user runs it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

from verify_ate.verify.errors import InputError
from verify_ate.verify.run.trace.comparator import UnderTestComparator
from verify_ate.verify.run.trace.config import X_T_PATH, ModuleRule, TraceConfig, select_modules
from verify_ate.verify.run.trace.divergence import trace_divergence
from verify_ate.verify.run.trace.hooks import ModuleRecorder, first_tensor
from verify_ate.verify.run.trace.sketch import CountSketch
from verify_ate.verify.run.trace.store import ReferenceStore

# ---------------------------------------------------------------- configuration and arithmetic


def test_default_configuration_and_bad_files(tmp_path):
    config = TraceConfig.from_file()
    assert config.relative_tolerance == 1e-2
    assert config.record_x_t
    assert config.exact_cap_bytes == 512 * 2**20
    assert any("gemma_expert.model.layers.*" in rule.path for rule in config.modules)
    assert TraceConfig.from_file(relative_tolerance=1e-4).relative_tolerance == 1e-4
    bad = tmp_path / "trace.yaml"
    bad.write_text("relative_tolerance: 0.01\n")
    with pytest.raises(InputError, match="missing key 'modules'"):
        TraceConfig.from_file(bad)
    with pytest.raises(InputError, match="> 0"):
        TraceConfig.from_file(relative_tolerance=-1)
    with pytest.raises(InputError, match="cannot read"):
        TraceConfig.from_file(tmp_path / "missing.yaml")


def _store(cap_bytes=10**9, dump=None):
    return ReferenceStore(TraceConfig(modules=(), exact_cap_bytes=cap_bytes, sketch_size=4096, record_x_t=True), dump)


def test_exact_comparison_is_relative_error_and_cosine():
    store = _store()
    a = torch.tensor([[3.0, 4.0]])
    store("m", 0, "m", "prefix", a)
    store("n", 0, "n", "prefix", torch.ones(2, 2))
    store("k", 0, "k", "prefix", torch.ones(3))
    compare = UnderTestComparator(store, tolerance=0.1)
    compare("m", 0, "m", "prefix", torch.tensor([[3.0, 4.5]]))
    compare("n", 0, "n", "prefix", torch.tensor([[1.0, float("nan")], [1.0, 1.0]]))
    compare("k", 0, "k", "prefix", torch.ones(4))
    compare("extra", 0, "extra", "step 0", torch.ones(1))
    m, n, k, extra = compare.entries()
    assert m.relative_error == pytest.approx(0.5 / 5.0)
    assert m.cosine == pytest.approx((9 + 18) / (5 * math.hypot(3, 4.5)))
    assert m.max_abs_error == pytest.approx(0.5)
    assert m.method == "exact"
    assert not m.crossed
    assert n.crossed
    assert n.note == "non-finite values"
    assert k.crossed
    assert "shape" in k.note
    assert extra.crossed
    assert extra.method == "missing"


def test_count_sketch_is_linear_and_keeps_norms_and_angles_roughly(rng):
    sketch = CountSketch(4096, seed=0)
    a = torch.from_numpy(rng.standard_normal(200_000))
    b = a + 0.03 * torch.from_numpy(rng.standard_normal(200_000))
    sa, sb = sketch(a), sketch(b)
    torch.testing.assert_close(sa - sb, sketch(a - b))
    exact = float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(a))
    estimate = float(torch.linalg.vector_norm(sa - sb) / torch.linalg.vector_norm(a))
    assert abs(estimate / exact - 1) < 0.1
    store = _store(cap_bytes=0)  # nothing fits: every output is sketched
    store("m", 0, "m", "prefix", a.float())
    compare = UnderTestComparator(store, tolerance=1.0)
    compare("m", 0, "m", "prefix", b.float())
    entry = compare.entries()[0]
    assert entry.method == "sketch"
    assert entry.max_abs_error is None
    assert store.exact_bytes == 0
    assert abs(entry.relative_error / exact - 1) < 0.1
    assert entry.cosine == pytest.approx(float(a @ b / a.norm() / b.norm()), abs=1e-3)


def test_first_tensor_reads_module_outputs():
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    t = torch.ones(2)
    assert first_tensor(t) is t
    assert first_tensor((None, t)) is t
    assert first_tensor(BaseModelOutputWithPooling(last_hidden_state=t)) is t
    assert first_tensor(None) is None


# ---------------------------------------------------------------- hooks on the real pi0


@pytest.fixture(scope="module")
def tiny(demo_cache, demo_dataset):
    """A tiny random-weight pi0 (built into the session's demo cache), a batch of two frames and two noise rows."""
    from verify_ate.noise import make_noise
    from verify_ate.verify.data.observation import load_frames
    from verify_ate.verify.model.tiny import ensure_tiny_checkpoint

    observations = load_frames(demo_dataset, 0, [4, 9])
    checkpoint = ensure_tiny_checkpoint(Path(demo_cache) / "checkpoints", observations.stats, seed=0)
    noise = np.concatenate([make_noise(s, (1, 50, 32)).values for s in (0, 1)])
    return checkpoint, observations, noise


@pytest.mark.slow
def test_hooks_record_every_chosen_output_in_execution_order_without_changing_the_result(tiny):
    from verify_ate.verify.model.runner import Pi0Runner, stack_frames

    checkpoint, observations, noise = tiny
    config = TraceConfig.from_file()
    seen = []
    with Pi0Runner(checkpoint, "cpu", "float32", observations.stats) as runner:
        plain = runner.predict(observations.frames, noise)
        model = runner.policy.model
        steps = int(model.config.num_inference_steps)
        layers = len(model.paligemma_with_expert.gemma_expert.model.layers)
        with ModuleRecorder(model, config, batch_size=2, row=1, sink=lambda *item: seen.append(item)):
            hooked = runner.predict(observations.frames, noise)
        assert not model.action_out_proj._forward_hooks  # hooks removed afterwards
        # x_t after the last step is exactly what predict_action_chunk returns (before unnormalising).
        batch = runner.preprocessor(stack_frames(observations.frames, runner.camera_keys))
        chunk = runner.policy.predict_action_chunk(batch, noise=torch.from_numpy(noise))
    assert plain.tobytes() == hooked.tobytes()
    cameras = len(runner.camera_keys)
    per_step = 3 + layers + 1 + 1 + 1  # state/action/time projections, expert layers, norm, v_t, x_t
    assert len(seen) == cameras * 2 + layers + 1 + steps * per_step
    paths = [item[0] for item in seen]
    assert paths[0].endswith("vision_tower")
    assert paths[cameras * 2].endswith("language_model.layers.0")
    phases = [item[3] for item in seen]
    assert phases[: cameras * 2 + layers + 1] == ["prefix"] * (cameras * 2 + layers + 1)
    assert phases[-1] == f"step {steps - 1}"
    assert paths[-1] == X_T_PATH
    assert all(item[4].shape[0] == 1 for item in seen)  # only row 1 of the batch is kept
    assert torch.equal(seen[-1][4][0, :, :6], chunk[1])


def test_a_module_path_that_matches_nothing_is_named():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))

    with pytest.raises(InputError, match="'layers.\\*' matches nothing"):
        select_modules(model, (ModuleRule("layers.*", "x"),), "configs/trace.yaml")
    assert [name for name, _, _ in select_modules(model, (ModuleRule("*", "layer {0}"),))] == ["0"]


@pytest.mark.slow
def test_sketch_and_dump_modes_agree_with_exact_on_fp32_vs_bf16(tiny, tmp_path):
    from verify_ate.verify.run.sides import SideConfig

    checkpoint, observations, noise = tiny
    sides = (SideConfig("cpu", "float32", 0), SideConfig("cpu", "bfloat16", 0))
    base = TraceConfig.from_file(relative_tolerance=1e-3)
    exact = trace_divergence(checkpoint, observations.frames, noise, 0, sides, observations.stats, base)
    from dataclasses import replace

    sketched = trace_divergence(
        checkpoint, observations.frames, noise, 0, sides, observations.stats, replace(base, exact_cap_bytes=0)
    )
    dumped = trace_divergence(
        checkpoint, observations.frames, noise, 0, sides, observations.stats, base, dump_dir=tmp_path / "dump"
    )
    assert exact.first_divergent.label == "VLM layer 0"  # lerobot keeps the vision path in fp32 under bf16
    assert exact.memory["mode"] == "exact"
    assert sketched.memory["sketched_entries"] == len(sketched.entries)
    for e, s, d in zip(exact.entries, sketched.entries, dumped.entries, strict=True):
        assert (e.label, e.phase) == (s.label, s.phase) == (d.label, d.phase)
        assert d.method == "dump"
        assert d.relative_error == e.relative_error
        assert d.cosine == e.cosine
        if e.relative_error > 1e-4:
            assert abs(s.relative_error / e.relative_error - 1) < 0.25
        else:  # identical outputs (fp32 on both sides) sketch to identical buckets
            assert s.relative_error == e.relative_error == 0
    files = sorted((tmp_path / "dump" / "ref").glob("*.safetensors"))
    assert len(files) == len(exact.entries) == len(list((tmp_path / "dump" / "dut").glob("*.safetensors")))
    from safetensors import safe_open

    with safe_open(str(files[0]), framework="pt") as handle:
        assert handle.metadata()["side"] == "ref"
        assert handle.get_tensor("tensor").shape[0] == 1
    assert json.loads((tmp_path / "dump" / "trace.json").read_text())["first_divergent"]["label"] == "VLM layer 0"


@pytest.mark.slow
def test_one_shot_trace_names_the_first_divergent_module_in_json_and_page(demo_cache, tmp_path):
    result = run_cli(
        "--demo",
        "--cache-dir",
        demo_cache,
        "--quiet",
        "--dut",
        "cpu",
        "--dut-dtype",
        "bfloat16",
        "--iters",
        "0",
        "--trace",
        "--trace-tol",
        "1e-3",
        "--trace-dump",
        tmp_path / "dump",
        "--out",
        tmp_path / "out",
        "--json",
        tmp_path / "s.json",
    )
    assert result.returncode == 0, result.stderr
    assert "trace: first module over relative error 0.001: VLM layer 0" in result.stdout
    summary = json.loads((tmp_path / "s.json").read_text())
    trace = summary["trace"]
    assert trace["first_divergent"]["label"] == "VLM layer 0"
    assert trace["reproduced"] == {"ref": True, "dut": True}
    assert trace["memory"]["mode"] == "dump"
    assert summary["position"]["rmse"] > 0
    full = json.loads((tmp_path / "out" / "trace.json").read_text())
    assert len(full["entries"]) == full["n_entries"]
    assert len(full["steps"]) == 10
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["trace"]["file"] == "trace.json"
    page = (tmp_path / "out" / "index.html").read_text()
    assert 'id="trace"' in page
    assert "trace_relative_error.png" in page
    assert (tmp_path / "out" / "trace_steps.png").is_file()
    assert list((tmp_path / "dump" / "dut").glob("*.safetensors"))
