"""The device-under-test pass: each output compared with the reference's inside its hook, one entry each."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verify_ate.verify.run.trace.store import ReferenceStore, cpu_copy, dump_tensor


@dataclass(frozen=True)
class TraceEntry:
    """One module output compared: where it ran, both norms, how far apart, and whether it crossed the tolerance."""

    index: int  # execution order on the reference side
    path: str
    call: int
    label: str
    phase: str
    shape: list[int]
    ref_dtype: str
    dut_dtype: str | None
    ref_norm: float
    dut_norm: float | None
    relative_error: float | None = None  # ||ref - dut|| / ||ref||
    cosine: float | None = None
    max_abs_error: float | None = None  # exact comparisons only
    method: str = "missing"  # exact | sketch | dump | missing
    crossed: bool = True
    note: str = ""

    @property
    def name(self) -> str:
        return self.label if self.call == 0 or self.phase.startswith("step") else f"{self.label} #{self.call}"

    def as_dict(self) -> dict:
        return {
            "index": self.index,
            "module": self.path,
            "call": self.call,
            "label": self.label,
            "name": self.name,
            "phase": self.phase,
            "shape": self.shape,
            "ref_dtype": self.ref_dtype,
            "dut_dtype": self.dut_dtype,
            "ref_norm": self.ref_norm,
            "dut_norm": self.dut_norm,
            "relative_error": self.relative_error,
            "cosine": self.cosine,
            "max_abs_error": self.max_abs_error,
            "method": self.method,
            "over_tolerance": self.crossed,
            "note": self.note,
        }


def ratio(numerator: float, denominator: float) -> float:
    if denominator == 0:
        return 0.0 if numerator == 0 else math.inf
    return numerator / denominator


class UnderTestComparator:
    """The sink of the device-under-test pass: compares each output with the reference's as it is recorded."""

    def __init__(self, reference: ReferenceStore, tolerance: float, dump_dir: Path | None = None):
        self.reference = reference
        self.tolerance = tolerance
        self.dump_dir = dump_dir
        self.results: dict[tuple[str, int], TraceEntry] = {}
        self.extra: list[TraceEntry] = []
        self._order = {key: i for i, key in enumerate(reference.kept)}

    def __call__(self, path: str, call: int, label: str, phase: str, tensor: Any) -> None:
        import torch

        key = (path, call)
        cpu = cpu_copy(tensor)
        b = cpu.to(torch.float64)
        dut_norm = float(torch.linalg.vector_norm(b))
        dut_dtype = str(cpu.dtype).replace("torch.", "")
        if self.dump_dir is not None:
            index = self._order.get(key, len(self._order) + len(self.extra))
            dump_tensor(cpu, self.dump_dir, index, path, call, label, phase, "dut")
        kept = self.reference.kept.get(key)
        if kept is None:
            self.extra.append(
                TraceEntry(
                    index=len(self._order) + len(self.extra),
                    path=path,
                    call=call,
                    label=label,
                    phase=phase,
                    shape=list(cpu.shape),
                    ref_dtype="—",
                    dut_dtype=dut_dtype,
                    ref_norm=math.nan,
                    dut_norm=dut_norm,
                    note="recorded on the device under test only",
                )
            )
            return
        common = {
            "index": self._order[key],
            "path": path,
            "call": call,
            "label": kept.label,
            "phase": kept.phase,
            "shape": list(kept.shape),
            "ref_dtype": kept.dtype,
            "dut_dtype": dut_dtype,
            "ref_norm": kept.norm,
            "dut_norm": dut_norm,
        }
        if tuple(cpu.shape) != kept.shape:
            self.results[key] = TraceEntry(**common, note=f"shape {list(cpu.shape)} on the device under test")
            return
        if kept.sketch is not None:
            sketch_b = self.reference.sketch(b)
            relative = ratio(float(torch.linalg.vector_norm(kept.sketch - sketch_b)), kept.norm)
            cosine = ratio(
                float(kept.sketch @ sketch_b),
                float(torch.linalg.vector_norm(kept.sketch) * torch.linalg.vector_norm(sketch_b)),
            )
            max_abs, method = None, "sketch"
        else:
            if kept.exact is not None:
                a, method = kept.exact.to(torch.float64), "exact"
            else:
                from safetensors.torch import load_file

                a, method = load_file(str(kept.dump))["tensor"].to(torch.float64), "dump"
            difference = a - b
            relative = ratio(float(torch.linalg.vector_norm(difference)), kept.norm)
            both = kept.norm * dut_norm
            cosine = 1.0 if both == 0 and kept.norm == dut_norm else ratio(float((a * b).sum()), both)
            max_abs = float(difference.abs().max()) if difference.numel() else 0.0
        finite = kept.finite and bool(torch.isfinite(b).all())
        self.results[key] = TraceEntry(
            **common,
            relative_error=relative,
            cosine=cosine,
            max_abs_error=max_abs,
            method=method,
            crossed=not finite or not (relative <= self.tolerance),  # NaN never passes
            note="" if finite else "non-finite values",
        )

    def entries(self) -> list[TraceEntry]:
        """Every reference output in execution order (those the device under test never produced as missing),
        then the outputs only the device under test produced."""
        found = []
        for key, index in self._order.items():
            if key in self.results:
                found.append(self.results[key])
                continue
            kept = self.reference.kept[key]
            found.append(
                TraceEntry(
                    index=index,
                    path=key[0],
                    call=key[1],
                    label=kept.label,
                    phase=kept.phase,
                    shape=list(kept.shape),
                    ref_dtype=kept.dtype,
                    dut_dtype=None,
                    ref_norm=kept.norm,
                    dut_norm=None,
                    note="not recorded on the device under test",
                )
            )
        return found + self.extra

    def first_crossed(self) -> TraceEntry | None:
        """The first entry over the tolerance in execution order, or None."""
        return next((entry for entry in self.entries() if entry.crossed), None)
