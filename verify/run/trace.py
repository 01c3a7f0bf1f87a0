"""Where two devices part: chosen pi0 module outputs on both sides for the same input, compared.

Forward hooks (torch `register_forward_hook`) on lerobot's own PI0Pytorch modules record each
chosen output (configs/trace.yaml) in execution order: the vision tower and image projector once
per camera, every VLM layer in the prefix pass, then per flow-matching (Euler) step the
projections, every action-expert layer and `action_out_proj` (the velocity v_t). lerobot 0.6.1's
`sample_actions` runs `euler_integrate`: `x_t <- x_t + dt * v_t` with `dt = -1/num_steps`,
`denoise_step` computing v_t; its x_t enters `action_in_proj` (a forward pre-hook sees it) and its
v_t leaves `action_out_proj`, so the hook records "x_t after step k" with the very same expression.
A forward pre-hook on `state_proj` (the first module of each denoise step) counts the steps.

The two sides run one after the other, never both loaded. Memory stays bounded: the reference pass
keeps an exact CPU copy of each output up to a cap (trace.yaml `exact_cap_mib`) and a CountSketch
beyond it (then relative error and cosine are estimates, marked "sketch"); the device-under-test
pass compares inside its hook and keeps only numbers. With `dump_dir` every output of both sides is
written to safetensors files instead, and the comparison reads the reference's file back (exact).

The traced batch is the same batch the comparison ran (same frames, same noise rows, same batch
size), and only one row of it is kept, so the traced run reproduces the compared actions bit for bit
on the same device and thread count; the result says whether it did.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from verify.configs import CONFIGS_DIR, read_yaml
from verify.errors import InputError

TRACE_FILE = CONFIGS_DIR / "trace.yaml"
X_T_PATH = "x_t"  # pseudo module: the Euler state after each step
X_T_LABEL = "x_t after step"
STEP_MARKER_PATH = "state_proj"  # runs first in every denoise step (embed_suffix)
ACTION_IN_PATH = "action_in_proj"
ACTION_OUT_PATH = "action_out_proj"
_MAX_CACHED_HASHES = 8


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class TraceRequest:
    """What the user asked of the trace: always, only when the gate fails, a tensor dump, a tolerance."""

    always: bool = False
    on_fail: bool = False
    dump_dir: Path | None = None  # also save every traced tensor here (implies a trace)
    tolerance: float | None = None  # None: configs/trace.yaml's relative_tolerance

    def wanted(self, passed: bool) -> bool:
        return bool(self.always or self.dump_dir is not None or (self.on_fail and not passed))

    def config(self) -> TraceConfig:
        return TraceConfig.from_file(relative_tolerance=self.tolerance)


@dataclass(frozen=True)
class ModuleRule:
    path: str  # below PI0Policy.model; '*' matches one path component
    label: str  # '{0}', '{1}'... are the components '*' matched


@dataclass(frozen=True)
class TraceConfig:
    relative_tolerance: float = 1e-2
    modules: tuple[ModuleRule, ...] = ()
    record_x_t: bool = True
    exact_cap_bytes: int = 512 * 2**20
    sketch_size: int = 4096
    sketch_seed: int = 0
    source: str = str(TRACE_FILE)

    @classmethod
    def from_file(cls, path: str | Path | None = None, relative_tolerance: float | None = None) -> TraceConfig:
        path = Path(path) if path is not None else TRACE_FILE
        document = read_yaml(path, "trace configuration")
        try:
            if not isinstance(document, dict):
                raise ValueError("the file must hold a mapping")
            rules = []
            for item in document["modules"]:
                if isinstance(item, str):
                    item = {"path": item, "label": item}
                rules.append(ModuleRule(str(item["path"]), str(item.get("label", item["path"]))))
            tolerance = float(document["relative_tolerance"] if relative_tolerance is None else relative_tolerance)
            config = cls(
                relative_tolerance=tolerance,
                modules=tuple(rules),
                record_x_t=bool(document.get("record_x_t", True)),
                exact_cap_bytes=int(float(document["exact_cap_mib"]) * 2**20),
                sketch_size=int(document["sketch_size"]),
                sketch_seed=int(document.get("sketch_seed", 0)),
                source=str(path),
            )
        except (KeyError, TypeError, ValueError) as error:
            detail = f"missing key {error}" if isinstance(error, KeyError) else str(error)
            raise InputError(f"{path}: invalid trace configuration: {detail}") from None
        if not (math.isfinite(config.relative_tolerance) and config.relative_tolerance > 0):
            raise InputError(
                f"{path} or --trace-tol: the relative tolerance must be a finite number > 0, not "
                f"{config.relative_tolerance}"
            )
        if config.sketch_size < 16 or config.exact_cap_bytes < 0:
            raise InputError(f"{path}: sketch_size must be >= 16 and exact_cap_mib >= 0")
        if not config.modules and not config.record_x_t:
            raise InputError(f"{path}: nothing to trace (no modules and record_x_t false)")
        return config


def select_modules(
    model, rules: tuple[ModuleRule, ...], source: str = "trace configuration"
) -> list[tuple[str, str, object]]:
    """(path, label, module) for every module of `model` a rule names, in the model's own order."""
    named = {name: module for name, module in model.named_modules() if name}  # the root itself is not a traced output
    chosen = []
    for rule in rules:
        pattern = rule.path.split(".")
        matches = []
        for name, module in named.items():
            parts = name.split(".")
            if len(parts) == len(pattern) and all(
                fnmatch.fnmatchcase(p, q) for p, q in zip(parts, pattern, strict=True)
            ):
                wildcards = [p for p, q in zip(parts, pattern, strict=True) if q != p or "*" in q]
                matches.append((name, rule.label.format(*wildcards), module))
        if not matches:
            raise InputError(f"{source}: module path {rule.path!r} matches nothing in this pi0 (lerobot PI0Pytorch)")
        chosen.extend(matches)
    seen, unique = set(), []
    for name, label, module in chosen:
        if name not in seen:
            seen.add(name)
            unique.append((name, label, module))
    return unique


# ---------------------------------------------------------------- hooks


def first_tensor(output):
    """The tensor a module produced: itself, the first of a tuple/list, or a ModelOutput's first field."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            found = first_tensor(item)
            if found is not None:
                return found
        return None
    values = getattr(output, "values", None)
    if callable(values):  # transformers ModelOutput (an OrderedDict): last_hidden_state first
        for item in values():
            found = first_tensor(item)
            if found is not None:
                return found
    return None


class ModuleRecorder:
    """Hooks on one PI0Pytorch; `sink(path, call, label, phase, tensor)` gets each recorded output.

    `row`: the batch row to keep (outputs whose first dimension is the batch size are sliced to it).
    """

    def __init__(self, model, config: TraceConfig, batch_size: int, row: int, sink):
        self.model = model
        self.config = config
        self.batch_size = batch_size
        self.row = row
        self.sink = sink
        self.step = -1  # -1: prefix pass; k: Euler step k
        self.calls: dict[str, int] = {}
        self._x_in = None
        self._handles = []
        self.num_steps = int(model.config.num_inference_steps)

    @property
    def phase(self) -> str:
        return "prefix" if self.step < 0 else f"step {self.step}"

    def _row(self, tensor):
        tensor = tensor.detach()
        if tensor.dim() >= 1 and tensor.shape[0] == self.batch_size:
            return tensor[self.row : self.row + 1]
        return tensor

    def _emit(self, path: str, label: str, tensor) -> None:
        call = self.calls.get(path, 0)
        self.calls[path] = call + 1
        self.sink(path, call, label, self.phase, self._row(tensor))

    def __enter__(self) -> ModuleRecorder:
        modules = dict(self.model.named_modules())
        for name in (STEP_MARKER_PATH, ACTION_IN_PATH, ACTION_OUT_PATH):
            if name not in modules:
                raise InputError(f"this policy has no {name!r} module; not lerobot 0.6.1's pi0")

        def count_step(_module, _args):
            self.step += 1

        self._handles.append(modules[STEP_MARKER_PATH].register_forward_pre_hook(count_step))
        # Registered in selection order, so they fire in it; the x_t hook is registered last.
        for path, label, module in select_modules(self.model, self.config.modules, self.config.source):

            def record(_module, _args, output, path=path, label=label):
                tensor = first_tensor(output)
                if tensor is not None:
                    self._emit(path, label, tensor)

            self._handles.append(module.register_forward_hook(record))
        if self.config.record_x_t:
            dt = -1.0 / self.num_steps  # lerobot euler_integrate's dt, same Python float

            def keep_x_in(_module, args):
                self._x_in = args[0]

            def record_x_t(_module, _args, v_t):
                if self._x_in is not None:
                    self._emit(X_T_PATH, X_T_LABEL, self._x_in + dt * v_t)  # euler_integrate's own update
                    self._x_in = None

            self._handles.append(modules[ACTION_IN_PATH].register_forward_pre_hook(keep_x_in))
            self._handles.append(modules[ACTION_OUT_PATH].register_forward_hook(record_x_t))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


# ---------------------------------------------------------------- compact copies


class CountSketch:
    """A linear sketch of fixed size: bucket i sums sign * value over the elements hashed to it.

    Linear, so sketch(a) - sketch(b) = sketch(a - b); norms and inner products are preserved in
    expectation (relative spread about sqrt(2 / size)). Hashes depend only on (seed, length), so
    both sides of a comparison hash alike.
    """

    def __init__(self, size: int, seed: int):
        self.size = size
        self.seed = seed
        self._cache: dict[int, tuple] = {}

    def _hashes(self, length: int):
        import torch

        if length not in self._cache:
            if len(self._cache) >= _MAX_CACHED_HASHES:
                self._cache.pop(next(iter(self._cache)))
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + length)
            bucket = torch.randint(0, self.size, (length,), generator=generator)
            sign = torch.randint(0, 2, (length,), generator=generator, dtype=torch.int8).to(torch.float64) * 2 - 1
            self._cache[length] = (bucket, sign)
        return self._cache[length]

    def __call__(self, values):
        import torch

        flat = values.reshape(-1).to(torch.float64)
        bucket, sign = self._hashes(flat.numel())
        return torch.zeros(self.size, dtype=torch.float64).index_add_(0, bucket, flat * sign)


@dataclass
class _Kept:
    label: str
    phase: str
    shape: tuple
    dtype: str
    norm: float
    finite: bool
    exact: object = None  # CPU tensor (module dtype)
    sketch: object = None  # float64 [sketch_size]
    dump: Path | None = None


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80]


def _dump(tensor, folder: Path, index: int, path: str, call: int, label: str, phase: str, side: str) -> Path:
    from safetensors.torch import save_file

    from reports.atomic import atomic_path

    target = folder / side / f"{index:04d}_{_safe_name(path)}_{call}.safetensors"
    with atomic_path(target) as temporary:
        save_file(
            {"tensor": tensor.contiguous()},
            str(temporary),
            metadata={"module": path, "call": str(call), "label": label, "phase": phase, "side": side},
        )
    return target


class ReferenceStore:
    """The reference pass: exact summaries, plus an exact copy, a sketch or a dump file per output."""

    def __init__(self, config: TraceConfig, dump_dir: Path | None = None):
        self.config = config
        self.dump_dir = dump_dir
        self.kept: dict[tuple[str, int], _Kept] = {}
        self.exact_bytes = 0
        self.sketched = 0
        self.sketch = CountSketch(config.sketch_size, config.sketch_seed)

    def __call__(self, path, call, label, phase, tensor) -> None:
        import torch

        cpu = tensor.to("cpu").clone(memory_format=torch.contiguous_format)  # only the row, not the batch's storage
        as64 = cpu.to(torch.float64)
        kept = _Kept(
            label,
            phase,
            tuple(cpu.shape),
            str(cpu.dtype).replace("torch.", ""),
            float(torch.linalg.vector_norm(as64)),
            bool(torch.isfinite(as64).all()),
        )
        nbytes = cpu.numel() * cpu.element_size()
        if self.dump_dir is not None:
            kept.dump = _dump(cpu, self.dump_dir, len(self.kept), path, call, label, phase, "ref")
        elif self.exact_bytes + nbytes <= self.config.exact_cap_bytes:
            kept.exact = cpu
            self.exact_bytes += nbytes
        else:
            kept.sketch = self.sketch(as64)
            self.sketched += 1
        self.kept[(path, call)] = kept


@dataclass(frozen=True)
class TraceEntry:
    index: int  # execution order on the reference side
    path: str
    call: int
    label: str
    phase: str
    shape: list
    ref_dtype: str
    dut_dtype: str | None
    ref_norm: float
    dut_norm: float | None
    relative_error: float | None  # ||ref - dut|| / ||ref||
    cosine: float | None
    max_abs_error: float | None  # exact comparisons only
    method: str  # exact | sketch | dump | missing
    crossed: bool
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


def _ratio(numerator: float, denominator: float) -> float:
    if denominator == 0:
        return 0.0 if numerator == 0 else math.inf
    return numerator / denominator


class UnderTestComparator:
    """The device-under-test pass: compares each output with the reference's inside the hook."""

    def __init__(self, reference: ReferenceStore, tolerance: float, dump_dir: Path | None = None):
        self.reference = reference
        self.tolerance = tolerance
        self.dump_dir = dump_dir
        self.results: dict[tuple[str, int], TraceEntry] = {}
        self.extra: list[TraceEntry] = []
        self._order = {key: i for i, key in enumerate(reference.kept)}

    def __call__(self, path, call, label, phase, tensor) -> None:
        import torch

        key = (path, call)
        cpu = tensor.to("cpu").clone(memory_format=torch.contiguous_format)  # only the row, not the batch's storage
        b = cpu.to(torch.float64)
        dut_norm = float(torch.linalg.vector_norm(b))
        dut_dtype = str(cpu.dtype).replace("torch.", "")
        if self.dump_dir is not None:
            _dump(
                cpu,
                self.dump_dir,
                self._order.get(key, len(self._order) + len(self.extra)),
                path,
                call,
                label,
                phase,
                "dut",
            )
        kept = self.reference.kept.get(key)
        if kept is None:
            self.extra.append(
                TraceEntry(
                    len(self._order) + len(self.extra),
                    path,
                    call,
                    label,
                    phase,
                    list(cpu.shape),
                    "—",
                    dut_dtype,
                    math.nan,
                    dut_norm,
                    None,
                    None,
                    None,
                    "missing",
                    True,
                    "recorded on the device under test only",
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
            self.results[key] = TraceEntry(
                **common,
                relative_error=None,
                cosine=None,
                max_abs_error=None,
                method="missing",
                crossed=True,
                note=f"shape {list(cpu.shape)} on the device under test",
            )
            return
        if kept.sketch is not None:
            sketch_b = self.reference.sketch(b)
            relative = _ratio(float(torch.linalg.vector_norm(kept.sketch - sketch_b)), kept.norm)
            cosine = _ratio(
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
            relative = _ratio(float(torch.linalg.vector_norm(difference)), kept.norm)
            both = kept.norm * dut_norm
            cosine = 1.0 if both == 0 and kept.norm == dut_norm else _ratio(float((a * b).sum()), both)
            max_abs = float(difference.abs().max()) if difference.numel() else 0.0
        finite = kept.finite and bool(torch.isfinite(b).all())
        crossed = not finite or not (relative <= self.tolerance)  # NaN never passes
        note = "" if finite else "non-finite values"
        self.results[key] = TraceEntry(
            **common,
            relative_error=relative,
            cosine=cosine,
            max_abs_error=max_abs,
            method=method,
            crossed=crossed,
            note=note,
        )

    def entries(self) -> list[TraceEntry]:
        found = []
        for key, index in self._order.items():
            if key in self.results:
                found.append(self.results[key])
            else:
                kept = self.reference.kept[key]
                found.append(
                    TraceEntry(
                        index,
                        key[0],
                        key[1],
                        kept.label,
                        kept.phase,
                        list(kept.shape),
                        kept.dtype,
                        None,
                        kept.norm,
                        None,
                        None,
                        None,
                        None,
                        "missing",
                        True,
                        "not recorded on the device under test",
                    )
                )
        return found + self.extra


# ---------------------------------------------------------------- the trace


@dataclass
class TraceResult:
    entries: list[TraceEntry]
    tolerance: float
    reference_label: str
    under_test_label: str
    memory: dict
    reference_actions: np.ndarray  # [T, J] of the traced row
    under_test_actions: np.ndarray
    reproduced: dict = field(default_factory=dict)  # side -> bool | None: equals the compared run's actions
    unit: dict | None = None  # which frame was traced (episode, frame, seed, why)
    dump_dir: Path | None = None
    config_source: str = ""

    @property
    def first_divergent(self) -> TraceEntry | None:
        return next((entry for entry in self.entries if entry.crossed), None)

    def steps(self) -> list[dict]:
        """Per Euler step: x_t's relative error and cosine, and the worst expert-side entry of that step."""
        rows = {}
        for entry in self.entries:
            if not entry.phase.startswith("step"):
                continue
            row = rows.setdefault(
                entry.phase,
                {
                    "phase": entry.phase,
                    "x_t_relative_error": None,
                    "x_t_cosine": None,
                    "worst_module": None,
                    "worst_relative_error": None,
                },
            )
            if entry.path == X_T_PATH:
                row["x_t_relative_error"], row["x_t_cosine"] = entry.relative_error, entry.cosine
            elif entry.relative_error is not None and (
                row["worst_relative_error"] is None or not entry.relative_error <= row["worst_relative_error"]
            ):
                row["worst_module"], row["worst_relative_error"] = entry.name, entry.relative_error
        return list(rows.values())

    def headline(self) -> str:
        first = self.first_divergent
        if first is None:
            worst = max(
                (e for e in self.entries if e.relative_error is not None), key=lambda e: e.relative_error, default=None
            )
            tail = f"; largest {worst.name} ({worst.phase}) {worst.relative_error:.3g}" if worst else ""
            return f"no traced module exceeds relative error {self.tolerance:g}{tail}"
        value = "n/a" if first.relative_error is None else f"{first.relative_error:.3g}"
        cosine = "" if first.cosine is None else f", cosine {first.cosine:.6f}"
        why = f" ({first.note})" if first.note else ""
        return (
            f"first module over relative error {self.tolerance:g}: {first.name} ({first.phase}, {first.path}) "
            f"relative error {value}{cosine}{why}"
        )

    def summary(self, full: bool = True) -> dict:
        first = self.first_divergent
        document = {
            "tolerance": {"relative_error": self.tolerance},
            "first_divergent": first.as_dict() if first else None,
            "headline": self.headline(),
            "n_entries": len(self.entries),
            "n_over_tolerance": sum(e.crossed for e in self.entries),
            "reference": self.reference_label,
            "under_test": self.under_test_label,
            "unit": self.unit,
            "reproduced": self.reproduced,
            "memory": self.memory,
            "dump_dir": str(self.dump_dir) if self.dump_dir else None,
            "config": self.config_source,
            "trace_ate": _row_ate(self.reference_actions, self.under_test_actions),
        }
        if full:
            document["entries"] = [e.as_dict() for e in self.entries]
            document["steps"] = self.steps()
        return document


def _row_ate(reference: np.ndarray, under_test: np.ndarray) -> dict:
    difference = np.abs(np.asarray(reference, np.float64) - np.asarray(under_test, np.float64))
    return {"max_abs_joint_error": float(difference.max()) if difference.size else 0.0}


def trace_divergence(
    checkpoint: Path,
    frames: list[dict],
    noise,
    row: int,
    sides,
    dataset_stats: dict | None,
    config: TraceConfig,
    dump_dir: Path | None = None,
    progress=None,
    compared_actions: tuple[np.ndarray, np.ndarray] | None = None,
    unit: dict | None = None,
) -> TraceResult:
    """Run the batch `frames` with `noise` ([1|B, T, D]) on the reference side then the device under
    test (sides: two verify.run.sides.SideConfig), hooked; compare row `row` module by module.

    compared_actions: the (reference, under test) actions [T, J] of that row from the comparison,
    to state whether the traced run reproduced them exactly.
    """
    from verify.run.sides import load_runner

    step = progress.step if progress is not None else (lambda message: None)
    if not 0 <= row < len(frames):
        raise ValueError(f"row {row} outside the batch of {len(frames)}")
    dump_dir = Path(dump_dir) if dump_dir is not None else None
    reference_side, under_test_side = sides
    store = ReferenceStore(config, dump_dir)
    actions = []
    for side, sink_factory in (
        (reference_side, lambda: store),
        (under_test_side, lambda: UnderTestComparator(store, config.relative_tolerance, dump_dir)),
    ):
        step(f"tracing modules on {side.label}")
        sink = sink_factory()
        with load_runner(side, checkpoint, dataset_stats) as runner:
            with ModuleRecorder(runner.policy.model, config, len(frames), row, sink):
                actions.append(runner.predict(frames, noise)[row])
        comparator = sink
    entries = comparator.entries()
    reproduced = {}
    if compared_actions is not None:
        for name, traced, compared in zip(("ref", "dut"), actions, compared_actions, strict=True):
            reproduced[name] = bool(np.array_equal(np.asarray(traced), np.asarray(compared), equal_nan=True))
    memory = {
        "mode": "dump" if dump_dir is not None else ("exact" if store.sketched == 0 else "exact+sketch"),
        "exact_bytes": store.exact_bytes,
        "exact_cap_bytes": config.exact_cap_bytes,
        "sketched_entries": store.sketched,
        "sketch_size": config.sketch_size,
    }
    result = TraceResult(
        entries,
        config.relative_tolerance,
        reference_side.label,
        under_test_side.label,
        memory,
        actions[0],
        actions[1],
        reproduced,
        unit,
        dump_dir,
        config.source,
    )
    if dump_dir is not None:
        from reports.summary_files import write_json

        write_json(result.summary(), dump_dir / "trace.json")
    return result


def trace_one_frame(request: TraceRequest, sides, inputs, noise, result, unit_name: str, progress=None) -> TraceResult:
    """The one-shot form's trace: the one observation and noise of the comparison `result`.

    inputs: the run's verify.run.sides.RunInputs; noise: the FixedNoise both sides received.
    """
    if progress is not None:
        progress.total = (progress.total or 0) + 2
    return trace_divergence(
        inputs.checkpoint,
        inputs.observations.frames,
        noise,
        0,
        sides,
        inputs.observations.stats,
        request.config(),
        dump_dir=request.dump_dir,
        progress=progress,
        compared_actions=(result.reference.actions[0], result.under_test.actions[0]),
        unit={"unit": 0, "name": unit_name, "why": "the compared frame", "batch_size": 1},
    )
