"""Both passes of a trace: the reference hooked and kept, then the device under test hooked and compared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from verify_ate.verify.run.trace.comparator import UnderTestComparator
from verify_ate.verify.run.trace.config import TraceConfig, TraceRequest
from verify_ate.verify.run.trace.hooks import ModuleRecorder
from verify_ate.verify.run.trace.result import TraceResult
from verify_ate.verify.run.trace.store import ReferenceStore

STEPS = 2  # progress steps a trace takes: one per side


def trace_divergence(
    checkpoint: Any,
    frames: list[dict],
    noise: Any,
    row: int,
    sides: Any,
    dataset_stats: dict | None,
    config: TraceConfig,
    dump_dir: Path | None = None,
    progress: Any = None,
    compared_actions: tuple[np.ndarray, np.ndarray] | None = None,
    unit: dict | None = None,
) -> TraceResult:
    """Run the batch `frames` with `noise` ([1|B, T, D]) on the reference side then the device under test
    (sides: two verify_ate.verify.run.sides.SideConfig), hooked; compare row `row` module by module.

    compared_actions: the (reference, under test) actions [T, J] of that row from the comparison, to state
    whether the traced run reproduced them exactly. A trace is decided during a run (--trace-on-fail), so it
    adds its STEPS progress steps to the plan itself.
    """
    from verify_ate.verify.run.sides import load_runner

    if progress is not None:
        progress.extend(STEPS)
    if not 0 <= row < len(frames):
        raise ValueError(f"row {row} outside the batch of {len(frames)}")
    dump_dir = Path(dump_dir) if dump_dir is not None else None
    reference_side, under_test_side = sides
    store = ReferenceStore(config, dump_dir)
    actions = []

    def traced(side: Any, sink: Any) -> None:
        if progress is not None:
            progress.step(f"tracing modules on {side.label}")
        with load_runner(side, checkpoint, dataset_stats) as runner:
            with ModuleRecorder(
                runner.adapter.traced_model(runner.policy), config, len(frames), row, sink, runner.adapter
            ):
                actions.append(runner.predict(frames, noise)[row])

    traced(reference_side, store)
    comparator = UnderTestComparator(store, config.relative_tolerance, dump_dir)  # in the reference's order
    traced(under_test_side, comparator)
    reproduced = {}
    if compared_actions is not None:
        for name, traced, compared in zip(("ref", "dut"), actions, compared_actions, strict=True):
            reproduced[name] = bool(np.array_equal(np.asarray(traced), np.asarray(compared), equal_nan=True))
    result = TraceResult(
        entries=comparator.entries(),
        tolerance=config.relative_tolerance,
        reference_label=reference_side.label,
        under_test_label=under_test_side.label,
        memory=store.memory(),
        reference_actions=actions[0],
        under_test_actions=actions[1],
        reproduced=reproduced,
        unit=unit,
        dump_dir=dump_dir,
        config_source=config.source,
    )
    if dump_dir is not None:
        from verify_ate.reports.summary_files import write_json

        write_json(result.summary(), dump_dir / "trace.json")
    return result


def trace_one_frame(
    request: TraceRequest, sides: Any, inputs: Any, noise: Any, result: Any, unit_name: str, progress: Any = None
) -> TraceResult:
    """The one-shot form's trace: the one observation and noise of the comparison `result`.

    inputs: the run's verify_ate.verify.run.sides.RunInputs; noise: the FixedNoise both sides received.
    """
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
