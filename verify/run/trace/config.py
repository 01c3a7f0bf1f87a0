"""What a trace records and how it judges: the request from the command line and configs/trace.yaml."""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verify_ate.verify.configs import CONFIGS_DIR, read_yaml
from verify_ate.verify.errors import InputError

TRACE_FILE = CONFIGS_DIR / "trace.yaml"
X_T_PATH = "x_t"  # pseudo module: the Euler state after each step (recorded when record_x_t)
X_T_LABEL = "x_t after step"


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
    path: str  # below the policy's model; '*' matches one path component
    label: str  # '{0}', '{1}'... are the components '*' matched

    @classmethod
    def parse(cls, item: Any) -> ModuleRule:
        """A role name of the fence (`vlm_layers`), or {path, label} for a module path of one's own."""
        if isinstance(item, str):
            from verify_ate.verify.upstream.pi0_modules import role

            path, label = role(item)
            return cls(path, label)
        return cls(str(item["path"]), str(item.get("label", item["path"])))


@dataclass(frozen=True)
class TraceConfig:
    relative_tolerance: float = 1e-2
    modules: tuple[ModuleRule, ...] = ()
    record_x_t: bool = True
    exact_cap_bytes: int = 512 * 2**20
    sketch_size: int = 4096
    sketch_seed: int = 0
    source: str = str(TRACE_FILE)
    # Per policy other than pi0 (configs/trace.yaml `policies`): its modules, {path, label} below its traced model.
    policy_modules: tuple[tuple[str, tuple[ModuleRule, ...]], ...] = ()

    def rules_for(self, adapter: Any, model: Any) -> tuple[tuple[ModuleRule, ...], str]:
        """The modules to record of `adapter`'s policy, and where they were named (for errors)."""
        if adapter.name == "pi0":  # `modules`
            return self.modules, self.source
        own = dict(self.policy_modules).get(adapter.name)
        if own is not None:
            return own, f"{self.source} (policies: {adapter.name})"
        rules = tuple(ModuleRule(path, label) for path, label in adapter.trace_modules(model))
        return rules, f"the {adapter.label} adapter's trace modules"

    @classmethod
    def from_file(cls, path: str | Path | None = None, relative_tolerance: float | None = None) -> TraceConfig:
        """configs/trace.yaml (or `path`); `relative_tolerance` overrides the file's (the user's --trace-tol)."""
        path = Path(path) if path is not None else TRACE_FILE
        document = read_yaml(path, "trace configuration")
        try:
            if not isinstance(document, dict):
                raise ValueError("the file must hold a mapping")
            tolerance = float(document["relative_tolerance"] if relative_tolerance is None else relative_tolerance)
            config = cls(
                relative_tolerance=tolerance,
                modules=tuple(ModuleRule.parse(item) for item in document["modules"]),
                record_x_t=bool(document.get("record_x_t", True)),
                exact_cap_bytes=int(float(document["exact_cap_mib"]) * 2**20),
                sketch_size=int(document["sketch_size"]),
                sketch_seed=int(document.get("sketch_seed", 0)),
                source=str(path),
                policy_modules=tuple(
                    (str(name), tuple(ModuleRule.parse(dict(item)) for item in items))
                    for name, items in (document.get("policies") or {}).items()
                ),
            )
        except (KeyError, TypeError, ValueError) as error:
            detail = str(error).strip("'\"") if isinstance(error, KeyError) else str(error)
            if isinstance(error, KeyError) and not detail.startswith("no pi0 module role"):
                detail = f"missing key {error}"
            raise InputError(f"{path}: invalid trace configuration: {detail}") from None
        if not (math.isfinite(config.relative_tolerance) and config.relative_tolerance > 0):
            raise InputError(
                f"{path}: the relative tolerance must be a finite number > 0, not {config.relative_tolerance}"
            )
        if config.sketch_size < 16 or config.exact_cap_bytes < 0:
            raise InputError(f"{path}: sketch_size must be >= 16 and exact_cap_mib >= 0")
        if not config.modules and not config.record_x_t:
            raise InputError(f"{path}: nothing to trace (no modules and record_x_t false)")
        return config


def select_modules(
    model: Any, rules: tuple[ModuleRule, ...], source: str = "trace configuration"
) -> list[tuple[str, str, Any]]:
    """(path, label, module) for every module of `model` a rule names, in the rules' order, each once."""
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
            raise InputError(f"{source}: module path {rule.path!r} matches nothing in this policy's model")
        chosen.extend(matches)
    seen, unique = set(), []
    for name, label, module in chosen:
        if name not in seen:
            seen.add(name)
            unique.append((name, label, module))
    return unique
