"""Device backends: spec parsing, availability messages, synchronisation and the timer."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
import types

import pytest
import torch
from conftest import REPO_ROOT

from verify_ate.verify.errors import DeviceUnavailableError, InputError
from verify_ate.verify.model.devices import (
    DeviceSpec,
    DeviceTimer,
    device_description,
    parse_device,
    resolve_device,
    synchronize,
)

HAS_CUDA = torch.cuda.is_available()
HAS_TORCH_NPU = importlib.util.find_spec("torch_npu") is not None
needs_gpu = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device here (torch.cuda.is_available() is False)")


@pytest.mark.parametrize(
    "spec, backend, index, text",
    [
        ("cpu", "cpu", None, "cpu"),
        ("cuda", "cuda", None, "cuda"),
        ("cuda:1", "cuda", 1, "cuda:1"),
        ("npu", "npu", None, "npu"),
        ("npu:3", "npu", 3, "npu:3"),
        (" CUDA:0 ", "cuda", 0, "cuda:0"),
    ],
)
def test_parse_device_accepts_the_documented_specs(spec, backend, index, text):
    parsed = parse_device(spec)
    assert parsed == DeviceSpec(backend, index)
    assert str(parsed) == text


@pytest.mark.parametrize("spec", ["", "gpu", "cuda:", "cuda:-1", "npu:x", "cuda:1:2", "cpu:1", "mps", "cuda0"])
def test_parse_device_rejects_anything_else_with_one_line(spec):
    with pytest.raises(InputError) as caught:
        parse_device(spec)
    message = str(caught.value)
    assert "\n" not in message
    assert repr(spec) in message


def test_cpu_is_always_available():
    assert resolve_device("cpu") == torch.device("cpu")
    synchronize("cpu")  # a no-op, but must not fail


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA device; the unavailable path cannot be seen")
def test_cuda_without_a_gpu_says_what_is_missing():
    with pytest.raises(DeviceUnavailableError) as caught:
        resolve_device("cuda")
    message = str(caught.value)
    if torch.version.cuda is None:
        assert "built without CUDA" in message
    else:  # a CUDA build of torch on a machine without a visible GPU (this project's CPU machines)
        assert "no CUDA GPU visible" in message
        assert torch.version.cuda in message
    assert message.startswith("device cuda:")
    assert "\n" not in message


def test_cuda_index_out_of_range_says_how_many_there_are(monkeypatch):
    # No hardware here: pretend two GPUs are visible to reach the index check.
    monkeypatch.setattr(torch.version, "cuda", torch.version.cuda or "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    with pytest.raises(DeviceUnavailableError) as caught:
        resolve_device("cuda:5")
    message = str(caught.value)
    assert "cuda:5" in message
    assert "index 5 out of range" in message
    assert "2 CUDA device(s) visible (cuda:0 .. cuda:1)" in message
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda", 0)


@pytest.mark.skipif(HAS_TORCH_NPU, reason="torch_npu is installed here")
def test_npu_without_torch_npu_names_the_missing_package():
    with pytest.raises(DeviceUnavailableError) as caught:
        resolve_device("npu:0")
    message = str(caught.value)
    assert "torch_npu is not installed" in message
    assert "pip install 'verify-ate[npu]'" in message
    minor = ".".join(torch.__version__.split(".")[:2])
    assert f"torch-npu {minor}.x" in message


@pytest.mark.slow  # real processes
def test_torch_npu_is_imported_only_when_an_npu_is_asked_for():
    # A fresh interpreter: importing the module and using cpu/cuda must not load torch_npu.
    script = (
        "import sys\n"
        "from verify_ate.verify.model.devices import parse_device, resolve_device\n"
        "resolve_device('cpu'); parse_device('npu:1')\n"
        "try:\n    resolve_device('cuda')\nexcept Exception:\n    pass\n"
        "print('torch_npu' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def _fake_torch_npu(monkeypatch, available: bool, count: int):
    """torch_npu stands in for hardware that is absent here: a module and a torch.npu namespace."""
    module = types.ModuleType("torch_npu")
    module.__version__ = "2.11.0"
    monkeypatch.setitem(sys.modules, "torch_npu", module)
    npu = types.SimpleNamespace(is_available=lambda: available, device_count=lambda: count, current_device=lambda: 0)
    monkeypatch.setattr(torch, "npu", npu, raising=False)


def test_torch_npu_present_but_no_npu_visible(monkeypatch):
    _fake_torch_npu(monkeypatch, available=False, count=0)
    monkeypatch.delenv("ASCEND_RT_VISIBLE_DEVICES", raising=False)
    with pytest.raises(DeviceUnavailableError) as caught:
        resolve_device("npu")
    message = str(caught.value)
    assert "torch_npu 2.11.0 is installed but no Ascend NPU is visible" in message
    assert "npu-smi" in message


def test_npu_index_out_of_range(monkeypatch):
    _fake_torch_npu(monkeypatch, available=True, count=1)
    with pytest.raises(DeviceUnavailableError) as caught:
        resolve_device("npu:3")
    # Only the message: torch.device("npu") itself needs the real torch_npu to register the backend.
    assert "index 3 out of range, 1 Ascend NPU device(s) visible (npu:0)" in str(caught.value)


def test_cpu_device_timer_times_a_region():
    timer = DeviceTimer("cpu")
    assert timer.kind == "perf_counter"
    with timer.measure() as elapsed_ms:
        time.sleep(0.01)
    assert 9.0 <= elapsed_ms() < 1000.0


def test_cpu_description_names_the_processor():
    description = device_description("cpu")
    assert description["device"] == "cpu"
    assert description["backend"] == "cpu"
    assert description["name"]
    assert description["torch"] == torch.__version__


@needs_gpu
@pytest.mark.gpu
def test_gpu_is_resolved_timed_and_described():
    device = resolve_device("cuda")
    assert device.type == "cuda"
    assert device.index == torch.cuda.current_device()
    timer = DeviceTimer(device)
    assert timer.kind == "cuda-event"
    with timer.measure() as region_ms:
        torch.cuda._sleep(10_000_000)  # a GPU-side spin: only device events see it without a sync
    assert region_ms() > 0
    synchronize(device)
    description = device_description(device)
    assert description["name"] == torch.cuda.get_device_name(device)
    assert description["cuda"] == torch.version.cuda
    count = torch.cuda.device_count()
    with pytest.raises(DeviceUnavailableError, match=f"{count} CUDA device"):
        resolve_device(f"cuda:{count}")
