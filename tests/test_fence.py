"""The fence around lerobot, transformers and torch (verify/upstream/): the version check, and patches that are
thread-scoped and gone when their block ends. Real lerobot classes throughout; the tiny pi0 where a model is
built."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from conftest import run_process, tiny_checkpoint

from verify_ate.verify import upstream
from verify_ate.verify.upstream import pi0_build
from verify_ate.verify.upstream.patching import thread_scoped

WRITTEN = {"lerobot": "0.6.1", "transformers": "5.5.4", "torch": "2.11.0+cpu"}


def test_the_releases_it_was_written_for_pass_and_others_are_named_with_both_versions(monkeypatch, capsys):
    assert upstream.mismatches(WRITTEN.get) == []
    assert upstream.mismatches({**WRITTEN, "torch": "2.11.3"}.get) == []  # a patch release of the same series
    found = upstream.mismatches({**WRITTEN, "lerobot": "0.7.0", "transformers": "5.6.0"}.get)
    assert found == ["lerobot 0.7.0 (written for 0.6.1)", "transformers 5.6.0 (written for 5.5)"]
    assert upstream.mismatches({**WRITTEN, "lerobot": None}.get) == ["lerobot not installed (written for 0.6.1)"]
    monkeypatch.delenv(upstream.ALLOW_VARIABLE, raising=False)
    with pytest.raises(upstream.UpstreamVersionError) as refused:
        upstream.check_versions({**WRITTEN, "lerobot": "0.7.0"}.get)
    message = str(refused.value)
    assert "lerobot 0.7.0 (written for 0.6.1)" in message
    assert upstream.ALLOW_VARIABLE in message
    assert "\n" not in message
    monkeypatch.setenv(upstream.ALLOW_VARIABLE, "1")
    upstream.check_versions({**WRITTEN, "lerobot": "0.7.0"}.get)  # accepted, with a warning
    assert "warning: running on lerobot 0.7.0 (written for 0.6.1)" in capsys.readouterr().err


@pytest.mark.slow
def test_a_model_command_on_another_lerobot_stops_with_exit_3_and_one_line(tmp_path, demo_cache):
    """A real process whose import path finds lerobot 0.7.0's metadata first: the version check runs when the
    model-running code is imported, before any model is built."""
    fake = tmp_path / "site" / "lerobot-0.7.0.dist-info"
    fake.mkdir(parents=True)
    (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: lerobot\nVersion: 0.7.0\n")
    result = run_process(
        "run", "--demo", "--cache-dir", demo_cache, "--iters", "0", "--save", tmp_path / "ref.npz",
        env={"PYTHONPATH": str(tmp_path / "site"), "VERIFY_ATE_ALLOW_UPSTREAM": ""},
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("verify-ate: unavailable: lerobot 0.7.0 (written for 0.6.1)"), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "ref.npz").exists()


def test_a_patch_is_this_threads_only_and_gone_when_its_block_ends():
    class Owner:
        def method(self):
            return "original"

    inside, release, seen = threading.Event(), threading.Event(), {}

    def patched_thread():
        with thread_scoped(Owner, "method", lambda self: "patched"):
            seen["patching thread"] = Owner().method()
            inside.set()
            release.wait(10)

    worker = threading.Thread(target=patched_thread)
    worker.start()
    assert inside.wait(10)
    seen["other thread"] = Owner().method()
    release.set()
    worker.join(10)
    assert seen == {"patching thread": "patched", "other thread": "original"}
    assert Owner.__dict__["method"](Owner()) == "original"
    assert Owner().method() == "original"


def test_building_a_reduced_pi0_leaves_torch_and_lerobot_as_they_were_for_other_threads():
    """While one thread builds pi0 on the meta device at reduced sizes, another thread's modules get real
    parameters and lerobot's full sizes; afterwards every patched attribute is upstream's own again."""
    from lerobot.policies.pi0 import modeling_pi0

    def patched_attributes():
        return (
            torch.nn.Module.register_parameter,
            modeling_pi0.get_gemma_config,
            modeling_pi0.PI0Pytorch.__init__,
            modeling_pi0.PiGemmaForCausalLM.__init__,
            modeling_pi0.PaliGemmaForConditionalGenerationWithPiGemma.__init__,
        )

    originals = patched_attributes()
    gemma = {"depth": 1, "num_heads": 8, "num_kv_heads": 1, "head_dim": 16}
    architecture = {
        "vlm": {**gemma, "width": 64, "mlp_dim": 128},
        "action_expert": {**gemma, "width": 32, "mlp_dim": 64},
        "vision": {
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "patch_size": 14,
        },
        "vocab_size": 300,
    }
    inside, release, seen = threading.Event(), threading.Event(), {}

    def building_thread():
        buffers: dict = {}
        with pi0_build.reduced_sizes(architecture), pi0_build.parameters_on_meta(buffers):
            seen["patched width"] = modeling_pi0.get_gemma_config("gemma_300m").width
            seen["patched device"] = torch.nn.Linear(2, 2).weight.device.type
            inside.set()
            release.wait(10)

    worker = threading.Thread(target=building_thread)
    worker.start()
    assert inside.wait(10)
    seen["other width"] = modeling_pi0.get_gemma_config("gemma_300m").width
    seen["other device"] = torch.nn.Linear(2, 2).weight.device.type
    release.set()
    worker.join(10)
    assert seen == {"patched width": 32, "patched device": "meta", "other width": 1024, "other device": "cpu"}
    assert all(a is b for a, b in zip(patched_attributes(), originals, strict=True))


@pytest.mark.slow
def test_two_threads_load_the_same_checkpoint_at_once_and_predict_what_one_does_alone(demo_cache, demo_dataset):
    from verify_ate.verify.data.observation import load_frames
    from verify_ate.verify.model.runner import Pi0Runner
    from verify_ate.verify.run.sides import default_noise

    checkpoint = tiny_checkpoint(demo_cache)
    frames = load_frames(demo_dataset, 0, [0]).frames
    with Pi0Runner(checkpoint) as alone:
        noise = default_noise(alone.expected_noise_shape)
        expected = alone.predict(frames, noise)
    results: dict = {}

    def load_and_predict(name):
        try:
            with Pi0Runner(checkpoint) as runner:
                results[name] = runner.predict(frames, noise)
        except Exception as error:  # reported below, with the thread's name
            results[name] = error

    threads = [threading.Thread(target=load_and_predict, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for name in ("a", "b"):
        assert isinstance(results[name], np.ndarray), results[name]
        np.testing.assert_array_equal(results[name], expected)
