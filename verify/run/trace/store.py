"""The reference pass: what it keeps of every output (exact summaries, and an exact copy, a sketch or a dump file)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verify_ate.verify.run.trace.config import TraceConfig
from verify_ate.verify.run.trace.sketch import CountSketch


@dataclass
class KeptOutput:
    """One reference output: its summary always, and one of: an exact copy, a sketch, a dump file."""

    label: str
    phase: str
    shape: tuple[int, ...]
    dtype: str
    norm: float
    finite: bool
    exact: Any = None  # CPU tensor (module dtype)
    sketch: Any = None  # float64 [sketch_size]
    dump: Path | None = None


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80]


def dump_tensor(tensor: Any, folder: Path, index: int, path: str, call: int, label: str, phase: str, side: str) -> Path:
    """One traced output written (atomically) to folder/side/NNNN_module_call.safetensors, described in its metadata."""
    from safetensors.torch import save_file

    from verify_ate.reports.atomic import atomic_path

    target = folder / side / f"{index:04d}_{_safe_name(path)}_{call}.safetensors"
    with atomic_path(target) as temporary:
        save_file(
            {"tensor": tensor.contiguous()},
            str(temporary),
            metadata={"module": path, "call": str(call), "label": label, "phase": phase, "side": side},
        )
    return target


def cpu_copy(tensor: Any) -> Any:
    """The recorded row on the CPU, in its own storage (not a view of the batch's)."""
    import torch

    return tensor.to("cpu").clone(memory_format=torch.contiguous_format)


class ReferenceStore:
    """The sink of the reference pass; `kept` maps (module path, call) to what was kept, in execution order."""

    def __init__(self, config: TraceConfig, dump_dir: Path | None = None):
        self.config = config
        self.dump_dir = dump_dir
        self.kept: dict[tuple[str, int], KeptOutput] = {}
        self.exact_bytes = 0
        self.sketched = 0
        self.sketch = CountSketch(config.sketch_size, config.sketch_seed)

    def __call__(self, path: str, call: int, label: str, phase: str, tensor: Any) -> None:
        import torch

        cpu = cpu_copy(tensor)
        as64 = cpu.to(torch.float64)
        kept = KeptOutput(
            label=label,
            phase=phase,
            shape=tuple(cpu.shape),
            dtype=str(cpu.dtype).replace("torch.", ""),
            norm=float(torch.linalg.vector_norm(as64)),
            finite=bool(torch.isfinite(as64).all()),
        )
        nbytes = cpu.numel() * cpu.element_size()
        if self.dump_dir is not None:
            kept.dump = dump_tensor(cpu, self.dump_dir, len(self.kept), path, call, label, phase, "ref")
        elif self.exact_bytes + nbytes <= self.config.exact_cap_bytes:
            kept.exact = cpu
            self.exact_bytes += nbytes
        else:
            kept.sketch = self.sketch(as64)
            self.sketched += 1
        self.kept[(path, call)] = kept

    def memory(self) -> dict:
        """How the reference's outputs were kept, for the trace's summary."""
        return {
            "mode": "dump" if self.dump_dir is not None else ("exact" if self.sketched == 0 else "exact+sketch"),
            "exact_bytes": self.exact_bytes,
            "exact_cap_bytes": self.config.exact_cap_bytes,
            "sketched_entries": self.sketched,
            "sketch_size": self.config.sketch_size,
        }
