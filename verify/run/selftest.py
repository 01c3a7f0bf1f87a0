"""The self-test: is this gate tight enough for this model? Every variant and every fault against the
unmodified reference, on the same inputs, each judged by the fixed and the calibrated bounds and traced
module by module; and, on request, how small a perturbation of each module the gate misses.

One model is loaded and serves every case: the reference runs once, hooked, and keeps its module outputs
(verify/run/trace/); each case then rewrites that same model (verify/model/rewrites.py), runs hooked
against those outputs, is compared like any run (verify/compare/), and is undone. A variant should pass
the calibrated gate; a fault should fail it with the trace naming the module the fault broke.
What is not reused, and why: the calibration's other precision needs a model built in that dtype
(verify/run/calibrate.py); a compiled case compiles on first use (torch's inductor keeps its kernels in
its own cache across runs, which is all that can be reused of it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from verify_ate.noise import FixedNoise
from verify_ate.verify.compare.artifact import TrajectoryArtifact
from verify_ate.verify.compare.comparator import ComparisonResult, compare
from verify_ate.verify.compare.gate import GateConfig
from verify_ate.verify.configs import CONFIGS_DIR, read_yaml
from verify_ate.verify.errors import InputError
from verify_ate.verify.model.rewrites import FAULT, VARIANT, Rewrite
from verify_ate.verify.run.sides import RunInputs, SideConfig, side_artifact
from verify_ate.verify.run.trace.config import ModuleRule, TraceConfig

SELFTEST_FILE = CONFIGS_DIR / "selftest.yaml"


@dataclass(frozen=True)
class SelftestConfig:
    """configs/selftest.yaml: the trace tolerance of the cases, and the sensitivity sweep."""

    trace_tolerance: float
    scales: tuple[float, ...]
    modules: tuple[ModuleRule, ...]  # perturbed one at a time (roles of the fence, or paths of one's own)
    seed: int = 0  # of the perturbation's draws

    @classmethod
    def from_file(cls, path: Path = SELFTEST_FILE) -> SelftestConfig:
        document = read_yaml(path, "self-test settings")
        try:
            config = cls(
                trace_tolerance=float(document["trace_relative_tolerance"]),
                scales=tuple(sorted(float(s) for s in document["sensitivity"]["scales"])),
                modules=tuple(ModuleRule.parse(m) for m in document["sensitivity"]["modules"]),
                seed=int(document["sensitivity"].get("seed", 0)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"{path}: invalid self-test settings ({type(error).__name__}: {error})") from None
        if not (config.trace_tolerance > 0 and config.scales and all(s > 0 for s in config.scales)):
            raise InputError(f"{path}: the tolerance and every scale must be > 0, with at least one scale")
        return config


@dataclass(frozen=True)
class CaseResult:
    """One variant or fault against the reference."""

    name: str
    kind: str
    summary: str
    expected_module: str | None  # where a fault's damage should show first
    fixed_pass: bool = False  # the fixed bounds (configs/thresholds.yaml, the Ascend port's criterion)
    calibrated_pass: bool = False
    position: float = float("nan")  # the gate's statistic, metres
    orientation: float = float("nan")  # radians (the gated orientation series)
    statistic: str = ""
    exact: bool = False  # actions byte-equal to the reference's
    first_module: str | None = None  # the trace's first module over tolerance
    error: str | None = None  # a case that could not run here
    # The largest benign floor of the calibration (position m, orientation rad): what a benign change moves it.
    floor: tuple[float, float] = (float("nan"), float("nan"))

    @property
    def caught(self) -> bool:
        """A fault that fails the calibrated gate, first seen where it was injected (or in one of that module's
        numbered instances: "image encoder 1" where one encoder per camera runs)."""
        if self.kind != FAULT or self.error is not None or self.calibrated_pass:
            return False
        first, expected = self.first_module or "", self.expected_module or ""
        return first == expected or (first.startswith(expected + " ") and first[len(expected) + 1 :].isdigit())

    @property
    def harmless(self) -> bool:
        """A fault that moves this model less than its largest benign floor in both position and orientation:
        nothing that passes benign changes can catch it, and on this model it does no harm (a policy whose chunk
        does not depend on its noise is unmoved by another noise)."""
        return (
            self.kind == FAULT
            and self.error is None
            and self.calibrated_pass
            and self.position <= self.floor[0]
            and self.orientation <= self.floor[1]
        )

    @property
    def ok(self) -> bool:
        """A variant passes the calibrated gate; a fault fails it, first seen where it was injected, or is harmless
        on this model."""
        if self.error is not None:
            return False
        if self.kind == VARIANT:
            return self.calibrated_pass
        return self.caught or self.harmless

    @property
    def outcome(self) -> str:
        """What happened, in words: "as expected" or what went otherwise."""
        if self.error is not None:
            return f"could not run: {self.error}"
        if self.harmless:
            return "harmless on this model (under the benign floor)"
        if self.ok:
            return "as expected"
        if self.kind == VARIANT:
            return "FAILS the calibrated gate"
        if self.calibrated_pass:
            return "MISSED by the calibrated gate"
        return f"caught, but first diverging at {self.first_module or 'no traced module'}, not {self.expected_module}"

    @property
    def fixed_misses(self) -> bool:
        """A fault the fixed bounds let through."""
        return self.kind == FAULT and self.error is None and self.fixed_pass and not self.harmless

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "summary": self.summary,
            "ok": self.ok,
            "caught": self.caught,
            "harmless": self.harmless,
            "outcome": self.outcome,
            "fixed_pass": self.fixed_pass,
            "seed_pass": self.fixed_pass,  # the old name, kept for one release (CHANGELOG)
            "calibrated_pass": self.calibrated_pass,
            "fixed_misses": self.fixed_misses,
            "seed_misses": self.fixed_misses,  # the old name, kept for one release (CHANGELOG)
            "position": self.position,
            "orientation": self.orientation,
            "stat": self.statistic,
            "exact": self.exact,
            "first_module": self.first_module,
            "expected_module": self.expected_module,
            "error": self.error,
        }


@dataclass
class SensitivityRow:
    """The smallest relative perturbation of one module's output each gate fails."""

    path: str
    label: str
    scales: list[float]
    position: list[float] = field(default_factory=list)
    orientation: list[float] = field(default_factory=list)
    fixed_pass: list[bool] = field(default_factory=list)
    calibrated_pass: list[bool] = field(default_factory=list)

    @staticmethod
    def _smallest_failing(scales: list[float], passed: list[bool]) -> float | None:
        return next((scale for scale, ok in zip(scales, passed, strict=True) if not ok), None)

    def as_dict(self) -> dict:
        fixed = self._smallest_failing(self.scales, self.fixed_pass)
        calibrated = self._smallest_failing(self.scales, self.calibrated_pass)
        return {
            "path": self.path,
            "label": self.label,
            "scales": self.scales,
            "position": self.position,
            "orientation": self.orientation,
            "fixed_pass": self.fixed_pass,
            "seed_pass": self.fixed_pass,  # the old name, kept for one release (CHANGELOG)
            "calibrated_pass": self.calibrated_pass,
            "smallest_failing_scale_fixed": fixed,
            "smallest_failing_scale_calibrated": calibrated,
            "smallest_failing_seed": fixed,  # the old names, kept for one release (CHANGELOG)
            "smallest_failing_calibrated": calibrated,
        }


class SelftestHarness:
    """The reference's outputs, kept once from one loaded model, and every case judged against them."""

    def __init__(
        self,
        runner: Any,
        side: SideConfig,
        inputs: RunInputs,
        gate: GateConfig,
        config: SelftestConfig,
        noise: FixedNoise,
        progress: Any = None,
    ):
        """Runs the reference once on `runner` (this side's loaded model), hooked. gate: with its calibration;
        noise: what every run receives. Takes REFERENCE_STEPS progress steps."""
        from verify_ate.verify.run.trace.store import ReferenceStore

        self.runner, self.side, self.inputs, self.gate, self.config, self.noise = (
            runner,
            side,
            inputs,
            gate,
            config,
            noise,
        )
        self.progress = progress
        self.trace_config = replace(TraceConfig.from_file(), relative_tolerance=config.trace_tolerance)
        self.store = ReferenceStore(self.trace_config)
        self._step(f"running {side.label}")
        self.reference = self._predict(side, self.store)

    REFERENCE_STEPS = 1
    CASE_STEPS = 1  # per case

    def _step(self, message: str) -> None:
        if self.progress is not None:
            self.progress.step(message)

    def _predict(self, side: SideConfig, sink: Any) -> TrajectoryArtifact:
        """One prediction of the model as it stands (`sink` gets every traced output; None: not hooked)."""
        from verify_ate.verify.run.trace.hooks import ModuleRecorder

        frames = self.inputs.observations.frames[:1]
        if sink is None:
            actions = self.runner.predict(frames, self.noise)
        else:
            with ModuleRecorder(
                self.runner.adapter.traced_model(self.runner.policy),
                self.trace_config,
                len(frames),
                0,
                sink,
                self.runner.adapter,
            ):
                actions = self.runner.predict(frames, self.noise)
        return side_artifact(side, self.inputs, self.runner, actions, self.noise)

    def judge(self, under_test: TrajectoryArtifact) -> ComparisonResult:
        return compare(self.reference, under_test, self.inputs.robot, self.gate)

    def case(self, rewrite: Rewrite) -> CaseResult:
        """One rewrite of the loaded model, run, judged and traced (module hooks where the rewrite is
        traceable: a compiled model runs without them), then undone."""
        from verify_ate.verify.run.trace.comparator import UnderTestComparator

        named = (rewrite.name,)
        variants, faults = (named, ()) if rewrite.kind == VARIANT else ((), named)
        side = replace(self.side, variants=variants, faults=faults)
        expected = {"name": rewrite.name, "kind": rewrite.kind, "summary": rewrite.summary}
        expected["expected_module"] = rewrite.expected_module(self.runner.adapter.name)
        self._step(f"running {side.label}")
        comparator = None
        if rewrite.traceable:
            comparator = UnderTestComparator(self.store, self.trace_config.relative_tolerance)
        try:
            with self.runner.rewritten(variants, faults):
                under_test = self._predict(side, comparator)
        except Exception as error:  # a case that cannot run here is a row of the table, not the end of the test
            return CaseResult(**expected, error=f"{type(error).__name__}: {error}")
        result = self.judge(under_test)
        assert result.calibrated_gate is not None
        first = comparator.first_crossed() if comparator is not None else None
        calibration = self.gate.calibration
        assert calibration is not None
        floor = (
            calibration.floor("position", self.gate.statistic)[0],
            calibration.floor(self.gate.orientation_series, self.gate.statistic)[0],
        )
        return CaseResult(
            **expected,
            fixed_pass=result.gate.passed,
            calibrated_pass=result.calibrated_gate.passed,
            position=float(result.position.statistics.get(self.gate.statistic)),
            orientation=float(result.gated_orientation.statistics.get(self.gate.statistic)),
            statistic=self.gate.statistic,
            exact=bool(np.array_equal(self.reference.actions, under_test.actions)),
            first_module=first.name if first is not None else None,
            floor=floor,
        )

    def sensitivity(self) -> list[SensitivityRow]:
        """Per configured module, every scale's statistics and verdicts: one perturbation hook at a time on the
        loaded model. Takes `sensitivity_steps(config)` progress steps."""
        from verify_ate.verify.model.rewrites import perturb_output

        rows = []
        for rule in self.config.modules:
            row = SensitivityRow(rule.path, rule.label, list(self.config.scales))
            for scale in self.config.scales:
                self._step(f"perturbing {rule.label} by {scale:g}")
                with self.runner.rewritten(extra=perturb_output(rule.path, scale, self.config.seed)):
                    result = self.judge(self._predict(self.side, None))
                assert result.calibrated_gate is not None
                row.position.append(float(result.position.statistics.get(self.gate.statistic)))
                row.orientation.append(float(result.gated_orientation.statistics.get(self.gate.statistic)))
                row.fixed_pass.append(result.gate.passed)
                row.calibrated_pass.append(result.calibrated_gate.passed)
            rows.append(row)
        return rows


def sensitivity_steps(config: SelftestConfig) -> int:
    """Progress steps `SelftestHarness.sensitivity` takes: one per module and scale."""
    return len(config.modules) * len(config.scales)
