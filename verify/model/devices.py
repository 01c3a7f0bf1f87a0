"""Device backends of the harness: parse a spec, check it is really there, synchronise, time a call.

Specs: `cpu`, `cuda`, `cuda:N`, `npu`, `npu:N`. A device that is not there raises
DeviceUnavailableError (exit 3) with a message that names exactly what is missing. `torch_npu`
is imported only when an NPU is asked for: importing it patches torch globally and needs CANN.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch

from verify_ate.verify.errors import DeviceUnavailableError, InputError

BACKENDS = ("cpu", "cuda", "npu")
_SPEC = re.compile(r"^(?P<backend>[a-z]+)(?::(?P<index>\d+))?$")
# The Ascend extra of pyproject.toml; torch-npu must share torch's minor version.
NPU_INSTALL_HINT = "pip install 'verify-ate[npu]'"


@dataclass(frozen=True)
class DeviceSpec:
    """A parsed device spec; `index` None means the backend's default device."""

    backend: str
    index: int | None = None

    def __str__(self) -> str:
        return self.backend if self.index is None else f"{self.backend}:{self.index}"


def parse_device(spec: str) -> DeviceSpec:
    """`cpu`, `cuda`, `cuda:1`, `npu`, `npu:3` -> DeviceSpec; anything else is InputError."""
    text = str(spec).strip().lower()
    match = _SPEC.match(text)
    if not match or match["backend"] not in BACKENDS:
        raise InputError(f"device {spec!r}: not a device spec (use cpu, cuda, cuda:N, npu or npu:N)")
    index = None if match["index"] is None else int(match["index"])
    if match["backend"] == "cpu" and index is not None:
        raise InputError(f"device {spec!r}: cpu takes no index (use cpu)")
    return DeviceSpec(match["backend"], index)


def resolve_device(spec: str | DeviceSpec) -> torch.device:
    """The torch.device for a spec, after checking that it exists here (else DeviceUnavailableError)."""
    parsed = spec if isinstance(spec, DeviceSpec) else parse_device(spec)
    if parsed.backend == "cpu":
        return torch.device("cpu")
    if parsed.backend == "cuda":
        return _resolve_cuda(parsed)
    return _resolve_npu(parsed)


def _resolve_cuda(spec: DeviceSpec) -> torch.device:
    if torch.version.cuda is None:
        raise DeviceUnavailableError(
            f"device {spec}: torch {torch.__version__} was built without CUDA; install a CUDA build of torch"
        )
    if not torch.cuda.is_available():
        hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
        why = f"CUDA_VISIBLE_DEVICES={hidden!r}" if hidden is not None else "no NVIDIA driver or GPU found"
        raise DeviceUnavailableError(
            f"device {spec}: no CUDA GPU visible (torch {torch.__version__} has CUDA {torch.version.cuda}, "
            f"but torch.cuda.is_available() is False: {why})"
        )
    index = torch.cuda.current_device() if spec.index is None else spec.index
    _check_index(spec, index, torch.cuda.device_count(), "CUDA")
    return torch.device("cuda", index)


def _import_torch_npu(spec: DeviceSpec):
    """torch_npu, imported on demand; its absence or a broken CANN set-up is DeviceUnavailableError."""
    try:
        return importlib.import_module("torch_npu")
    except ModuleNotFoundError as error:
        if error.name != "torch_npu":
            raise DeviceUnavailableError(
                f"device {spec}: torch_npu is installed but cannot import {error.name!r} ({error}); "
                "reinstall torch-npu matching torch"
            ) from None
        raise DeviceUnavailableError(
            f"device {spec}: torch_npu is not installed; install the Ascend extra with {NPU_INSTALL_HINT} "
            f"(torch-npu {_torch_minor()}.x, the same minor as torch {torch.__version__}) and source CANN's set_env.sh"
        ) from None
    except (ImportError, OSError, RuntimeError) as error:
        raise DeviceUnavailableError(
            f"device {spec}: torch_npu is installed but failed to load ({type(error).__name__}: {error}); "
            "is the CANN toolkit installed and its set_env.sh sourced?"
        ) from None


def _resolve_npu(spec: DeviceSpec) -> torch.device:
    torch_npu = _import_torch_npu(spec)
    npu = getattr(torch, "npu", None)
    version = getattr(torch_npu, "__version__", "unknown")
    if npu is None or not npu.is_available():
        hidden = os.environ.get("ASCEND_RT_VISIBLE_DEVICES")
        why = f"ASCEND_RT_VISIBLE_DEVICES={hidden!r}" if hidden is not None else "check the driver with npu-smi info"
        raise DeviceUnavailableError(
            f"device {spec}: torch_npu {version} is installed but no Ascend NPU is visible "
            f"(torch.npu.is_available() is False; {why})"
        )
    index = npu.current_device() if spec.index is None else spec.index
    _check_index(spec, index, npu.device_count(), "Ascend NPU")
    return torch.device("npu", index)


def _check_index(spec: DeviceSpec, index: int, count: int, what: str) -> None:
    if index >= count:
        valid = f"{spec.backend}:0" if count == 1 else f"{spec.backend}:0 .. {spec.backend}:{count - 1}"
        raise DeviceUnavailableError(
            f"device {spec}: index {index} out of range, {count} {what} device(s) visible ({valid})"
        )


def _torch_minor() -> str:
    return ".".join(torch.__version__.split("+")[0].split(".")[:2])


def _backend_module(device: torch.device):
    """torch.cuda or torch.npu for an accelerator device, None for cpu."""
    if device.type == "cpu":
        return None
    module = getattr(torch, device.type, None)
    if module is None:
        raise DeviceUnavailableError(f"device {device}: torch has no {device.type!r} backend loaded")
    return module


def synchronize(device: torch.device | str) -> None:
    """Wait for all queued work on the device (no-op on cpu)."""
    device = torch.device(device)
    module = _backend_module(device)
    if module is not None:
        module.synchronize(device)


def empty_cache(device: torch.device | str) -> None:
    """Return the caching allocator's free blocks to the device (no-op on cpu)."""
    device = torch.device(device)
    module = _backend_module(device)
    if module is not None:
        module.empty_cache()


class DeviceTimer:
    """Milliseconds of one code region on a device.

    On an accelerator the time comes from device events recorded around the region on the
    device's current stream; queued work is drained first so it is not billed to the region, and
    the end event is waited for. On cpu it is perf_counter wall time (nothing to synchronise).

        timer = DeviceTimer(device)
        with timer.measure() as elapsed_ms:
            run()
        elapsed_ms()  # after the block
    """

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self._module = _backend_module(self.device)
        self.kind = "perf_counter" if self._module is None else f"{self.device.type}-event"

    @contextlib.contextmanager
    def measure(self):
        box: dict[str, float] = {}
        if self._module is None:
            began = time.perf_counter()
            yield lambda: box["ms"]
            box["ms"] = (time.perf_counter() - began) * 1000.0
            return
        with self._module.device(self.device):
            self._module.synchronize(self.device)
            start = self._module.Event(enable_timing=True)
            end = self._module.Event(enable_timing=True)
            start.record()
            yield lambda: box["ms"]
            end.record()
            end.synchronize()
            box["ms"] = float(start.elapsed_time(end))


def device_description(device: torch.device | str) -> dict:
    """What a report says about a device: its name and the runtime versions behind it."""
    device = torch.device(device)
    description: dict[str, Any] = {"device": str(device), "backend": device.type, "torch": torch.__version__}
    if device.type == "cpu":
        description["name"] = _cpu_model()
        description["threads"] = torch.get_num_threads()
    elif device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        properties = torch.cuda.get_device_properties(index)
        description.update(
            name=properties.name,
            capability=f"{properties.major}.{properties.minor}",
            memory_gib=round(properties.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    elif device.type == "npu":
        torch_npu = importlib.import_module("torch_npu")  # resolve_device has checked it loads
        index = torch.npu.current_device() if device.index is None else device.index
        description.update(
            name=torch.npu.get_device_name(index),
            torch_npu=getattr(torch_npu, "__version__", None),
            cann=cann_version(torch_npu),
        )
    return description


def _cpu_model() -> str:
    """The CPU model name (/proc/cpuinfo on Linux, platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def cann_version(torch_npu) -> str | None:
    # torch_npu publishes it as torch.version.cann; newer releases also have npu.utils.get_cann_version.
    version = getattr(torch.version, "cann", None)
    if version:
        return str(version)
    try:
        return str(torch_npu.npu.utils.get_cann_version()) or None
    except Exception:  # an informational field: a missing API must not fail the run
        return None


def runtime_versions() -> dict:
    """python, torch, torch_npu (None when absent), lerobot, transformers, cuda / cann when present."""
    import torch

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_npu": None,
        "lerobot": library_version("lerobot"),
        "transformers": library_version("transformers"),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "cann": None,
    }
    if "torch_npu" in sys.modules or library_version("torch-npu"):
        try:
            import torch_npu  # registers the npu device

            versions["torch_npu"] = getattr(torch_npu, "__version__", library_version("torch-npu"))
            versions["cann"] = cann_version(torch_npu) or os.environ.get("ASCEND_TOOLKIT_VERSION")
        except Exception:  # an installed but broken torch_npu is reported as absent here
            pass
    return versions


def library_version(distribution: str) -> str | None:
    """The installed version of a distribution, or None when it is not installed."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


MEMORY_LIMIT_VARIABLE = "VERIFY_ATE_MEMORY_LIMIT"


def free_memory(device: torch.device) -> int | None:
    """Bytes a new model may take on `device` now, or None when the runtime cannot say.

    cuda/npu: the runtime's free memory. cpu: MemAvailable, capped by the cgroup's memory limit
    when the process runs in one. VERIFY_ATE_MEMORY_LIMIT (bytes, or with K/M/G/T) caps any of
    them: to keep a shared machine's headroom, or to rehearse a smaller device.
    """
    free: int | None = None
    module = _backend_module(device)
    if module is not None and hasattr(module, "mem_get_info"):
        free = int(module.mem_get_info(device)[0])
    elif device.type == "cpu":
        free = _host_available()
    limit = os.environ.get(MEMORY_LIMIT_VARIABLE)
    if limit:
        capped = parse_bytes(limit, MEMORY_LIMIT_VARIABLE)
        free = capped if free is None else min(free, capped)
    return free


def parse_bytes(text: str, what: str) -> int:
    """`2G`, `512M`, `1.5G`, `1000000` -> bytes (powers of 1024)."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = units.get(value[-1:], 1)
    try:
        number = float(value[:-1] if value[-1:] in units else value)
    except ValueError:
        raise InputError(f"{what}={text!r}: not a size (use bytes or a number with K, M, G or T)") from None
    if number < 0:
        raise InputError(f"{what}={text!r}: a size must be >= 0")
    return int(number * scale)


def _host_available() -> int | None:
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    try:  # cgroup v2: a container's limit is what this process may really use
        limit = open("/sys/fs/cgroup/memory.max", encoding="ascii").read().strip()
        used = int(open("/sys/fs/cgroup/memory.current", encoding="ascii").read().strip())
        if limit != "max" and available is not None:
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return available


def check_fits(device: torch.device, needed: int, what: str) -> None:
    """DeviceUnavailableError (exit 3) before loading when `needed` bytes do not fit the device's free memory."""
    free = free_memory(device)
    if free is not None and needed > free:
        raise DeviceUnavailableError(
            f"device {device}: not enough free memory for {what}: needs {needed / 2**30:.2f} GiB "
            f"({needed} bytes), {free / 2**30:.2f} GiB free ({free} bytes)"
        )


class MemoryMonitor:
    """Peak memory of one stretch of work: the process's resident set and the device's allocator.

    Host: Linux's VmHWM, reset at start through /proc/self/clear_refs where the kernel allows it
    (else the peak is the process's lifetime peak, and `host_peak_is_lifetime` says so). Device:
    the runtime's peak allocated bytes, reset at start (cuda, npu).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self._module = _backend_module(device)
        self.host_peak_is_lifetime = not _reset_host_peak()
        self.host_before = _status_kib("VmRSS")
        if self._module is not None and hasattr(self._module, "reset_peak_memory_stats"):
            self._module.reset_peak_memory_stats(device)

    def read(self) -> dict:
        peak = _status_kib("VmHWM")
        device_peak = None
        if self._module is not None and hasattr(self._module, "max_memory_allocated"):
            device_peak = round(self._module.max_memory_allocated(device=self.device) / 2**20, 1)
        return {
            "peak_host_rss_mib": None if peak is None else round(peak / 1024, 1),
            "host_rss_increase_mib": None
            if peak is None or self.host_before is None
            else round((peak - self.host_before) / 1024, 1),
            "host_peak_is_lifetime": self.host_peak_is_lifetime,
            "peak_device_memory_mib": device_peak,
        }


def _reset_host_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None
