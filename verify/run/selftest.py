"""The self-test: is this gate tight enough for this model? Every variant and every fault against the
unmodified reference, on the same inputs, each judged by the seed's and the calibrated bounds and
traced module by module; and, on request, how small a perturbation of each module the gate misses.

The reference runs once, hooked, and keeps its module outputs (verify/run/trace.py); every case then
loads the device-under-test side with one rewrite (verify/model/rewrites.py), runs hooked against
those outputs, and is compared like any run (verify/compare/). A variant should pass the calibrated
gate; a fault should fail it with the trace naming the module the fault broke.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from noise import FixedNoise
from verify.compare.artifact import TrajectoryArtifact
from verify.compare.comparator import ComparisonResult, compare
from verify.compare.gate import GateConfig
from verify.configs import CONFIGS_DIR, read_yaml
from verify.errors import InputError
from verify.run.sides import RunInputs, SideConfig, load_runner, side_artifact
from verify.run.trace import ModuleRecorder, ReferenceStore, TraceConfig, UnderTestComparator

SELFTEST_FILE = CONFIGS_DIR / "selftest.yaml"
VARIANT, FAULT, PERTURBATION = "variant", "fault", "perturbation"


@dataclass(frozen=True)
class SelftestConfig:
    """configs/selftest.yaml: the trace tolerance of the cases, and the sensitivity sweep."""

    trace_tolerance: float
    scales: tuple[float, ...]
    modules: tuple[tuple[str, str], ...]  # (path below PI0Policy.model, label)
    seed: int = 0

    @classmethod
    def from_file(cls, path: Path = SELFTEST_FILE) -> SelftestConfig:
        document = read_yaml(path, "self-test settings")
        try:
            config = cls(
                float(document["trace_relative_tolerance"]),
                tuple(sorted(float(s) for s in document["sensitivity"]["scales"])),
                tuple((str(m["path"]), str(m["label"])) for m in document["sensitivity"]["modules"]),
                int(document["sensitivity"].get("seed", 0)),
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
    seed_pass: bool
    calibrated_pass: bool
    position: float  # the gate's statistic, metres
    orientation: float  # radians (the gated orientation series)
    statistic: str
    exact: bool  # actions byte-equal to the reference's
    first_module: str | None  # the trace's first module over tolerance
    expected_module: str | None  # where a fault's damage should show first
    error: str | None = None  # a case that could not run (e.g. compile-cudagraphs off CUDA)

    @property
    def ok(self) -> bool:
        """A variant passes the calibrated gate; a fault fails it, first seen where it was injected."""
        if self.error is not None:
            return False
        if self.kind == VARIANT:
            return self.calibrated_pass
        return not self.calibrated_pass and self.first_module == self.expected_module

    @property
    def outcome(self) -> str:
        """What happened, in words: "as expected" or what went otherwise."""
        if self.error is not None:
            return f"could not run: {self.error}"
        if self.ok:
            return "as expected"
        if self.kind == VARIANT:
            return "FAILS the calibrated gate"
        if self.calibrated_pass:
            return "MISSED by the calibrated gate"
        return f"caught, but first diverging at {self.first_module or 'no traced module'}, not {self.expected_module}"

    @property
    def seed_misses(self) -> bool:
        """A fault the seed's fixed bounds let through."""
        return self.kind == FAULT and self.seed_pass

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "summary": self.summary,
            "ok": self.ok,
            "outcome": self.outcome,
            "seed_pass": self.seed_pass,
            "calibrated_pass": self.calibrated_pass,
            "seed_misses": self.seed_misses,
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
    seed_pass: list[bool] = field(default_factory=list)
    calibrated_pass: list[bool] = field(default_factory=list)

    @staticmethod
    def _smallest_failing(scales: list[float], passed: list[bool]) -> float | None:
        return next((scale for scale, ok in zip(scales, passed, strict=True) if not ok), None)

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "label": self.label,
            "scales": self.scales,
            "position": self.position,
            "orientation": self.orientation,
            "seed_pass": self.seed_pass,
            "calibrated_pass": self.calibrated_pass,
            "smallest_failing_seed": self._smallest_failing(self.scales, self.seed_pass),
            "smallest_failing_calibrated": self._smallest_failing(self.scales, self.calibrated_pass),
        }


class SelftestHarness:
    """The reference's outputs, kept once, and everything judged against them."""

    def __init__(
        self,
        side: SideConfig,
        inputs: RunInputs,
        gate: GateConfig,
        config: SelftestConfig,
        noise: FixedNoise,
        progress=None,
    ):
        """Runs the reference once, hooked. gate: with its calibration; noise: what every run receives."""
        self.side, self.inputs, self.gate, self.config, self.noise = side, inputs, gate, config, noise
        self.progress = progress
        self.trace_config = replace(TraceConfig.from_file(), relative_tolerance=config.trace_tolerance)
        self.store = ReferenceStore(self.trace_config)
        self.reference = self._run(side, self.store)

    def _step(self, message: str) -> None:
        if self.progress is not None:
            self.progress.step(message)

    def _run(self, side: SideConfig, sink) -> TrajectoryArtifact:
        """One hooked prediction of `side` (`sink` gets every traced output; None: not hooked)."""
        self._step(f"running {side.label}")
        with self._loaded(side) as runner:
            return self._predict(side, runner, sink)

    def _loaded(self, side: SideConfig):
        return load_runner(side, self.inputs.checkpoint, self.inputs.observations.stats)

    def _predict(self, side: SideConfig, runner, sink) -> TrajectoryArtifact:
        frames = self.inputs.observations.frames[:1]
        if sink is None:  # compiled models are not hooked: the compiler would trace the hooks
            actions = runner.predict(frames, self.noise)
        else:
            with ModuleRecorder(runner.policy.model, self.trace_config, len(frames), 0, sink):
                actions = runner.predict(frames, self.noise)
        return side_artifact(side, self.inputs, runner, actions, self.noise)

    def judge(self, under_test: TrajectoryArtifact) -> ComparisonResult:
        return compare(self.reference, under_test, self.inputs.robot, self.gate)

    def case(self, name: str, kind: str, summary: str, expected_module: str | None) -> CaseResult:
        """One rewrite on the device-under-test side, judged and traced."""
        side = replace(self.side, variants=(name,)) if kind == VARIANT else replace(self.side, faults=(name,))
        traced = not name.startswith("compile")
        comparator = UnderTestComparator(self.store, self.trace_config.relative_tolerance) if traced else None
        try:
            under_test = self._run(side, comparator)
        except Exception as error:  # a case that cannot run here is a row of the table, not the end of the test
            if isinstance(error, KeyboardInterrupt):
                raise
            return CaseResult(
                name,
                kind,
                summary,
                False,
                False,
                np.nan,
                np.nan,
                "",
                False,
                None,
                expected_module,
                f"{type(error).__name__}: {error}",
            )
        result = self.judge(under_test)
        first = None
        if comparator is not None:
            entry = next((e for e in comparator.entries() if e.crossed), None)
            first = entry.name if entry is not None else None
        assert result.calibrated_gate is not None
        return CaseResult(
            name,
            kind,
            summary,
            result.gate.passed,
            result.calibrated_gate.passed,
            float(result.position.statistics.get(self.gate.statistic)),
            float(result.gated_orientation.statistics.get(self.gate.statistic)),
            self.gate.statistic,
            bool(np.array_equal(self.reference.actions, under_test.actions)),
            first,
            expected_module,
        )

    def sensitivity(self) -> list[SensitivityRow]:
        """Per configured module, every scale's statistics and verdicts: one model, loaded once, with one
        perturbation hook at a time."""
        from verify.model.rewrites import perturb_output

        rows = []
        with self._loaded(self.side) as runner:
            for path, label in self.config.modules:
                row = SensitivityRow(path, label, list(self.config.scales))
                for scale in self.config.scales:
                    self._step(f"perturbing {label} by {scale:g}")
                    with runner.temporary_hooks():
                        perturb_output(path, scale, self.config.seed)(runner)
                        result = self.judge(self._predict(self.side, runner, None))
                    assert result.calibrated_gate is not None
                    row.position.append(float(result.position.statistics.get(self.gate.statistic)))
                    row.orientation.append(float(result.gated_orientation.statistics.get(self.gate.statistic)))
                    row.seed_pass.append(result.gate.passed)
                    row.calibrated_pass.append(result.calibrated_gate.passed)
                rows.append(row)
        return rows
