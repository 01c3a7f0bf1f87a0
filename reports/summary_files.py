"""Machine-readable outputs of one comparison: JSON summary, JUnit XML, Markdown table.

Each takes the summary dict (the JSON contract in docs/files.md), so every format says the same thing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

from verify_ate.reports.atomic import write_text

# The error series of a summary, in table order (orientation_rpy: present in summaries of version 0.2 on).
SERIES_KEYS = ("position", "orientation", "orientation_rpy")


def _json_safe(value):
    """NaN/Inf are not JSON: write them as null so strict parsers (CI tools) can read the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(summary: dict, path: str | Path) -> Path:
    return write_text(path, json.dumps(_json_safe(summary), indent=2, sort_keys=False, allow_nan=False) + "\n")


def _case_name(check: dict) -> str:
    if check["name"] == "finite":
        return "finite: all actions finite"
    return f"{check['name']} ATE {check['stat']} <= {check['threshold']:g} {check['unit']}"


def junit_xml(summary: dict, suite_name: str = "verify-ate") -> str:
    """One testcase per gate check."""
    label = f"{summary['ref'].get('device')} vs {summary['dut'].get('device')}"
    classname = f"{suite_name}.{summary.get('robot', 'robot')}"
    cases = [
        JUnitCase(classname, _case_name(c), c["message"], None if c["pass"] else f"{label}: {c['message']}")
        for c in summary["checks"]
    ]
    notices = summary.get("notices", [])
    properties = {"forced": "true" if summary.get("forced") else "false"}
    for difference in summary.get("forced_differences", []):
        properties[f"forced.{difference['input']}"] = f"{difference['reference']} vs {difference['under_test']}"
    return junit_suite_xml(suite_name, cases, properties, "\n".join(n["text"] for n in notices) or None)


@dataclass(frozen=True)
class JUnitCase:
    classname: str
    name: str
    message: str  # what happened: the failure's message, or the passing case's output
    failure: str | None = None  # the failure's text; None: the case passed


def junit_suite_xml(
    suite_name: str,
    cases: Sequence[JUnitCase],
    properties: dict[str, str] | None = None,
    system_out: str | None = None,
) -> str:
    """The one JUnit XML layout of every verify-ate file: one suite of `cases` inside <testsuites>, with the
    run's `properties` (e.g. forced) and what the reader must know beside the cases (`system_out`)."""
    failures = sum(case.failure is not None for case in cases)
    suite = ET.Element(
        "testsuite", name=suite_name, tests=str(len(cases)), failures=str(failures), errors="0", skipped="0"
    )
    if properties:
        listed = ET.SubElement(suite, "properties")
        for name, value in properties.items():
            ET.SubElement(listed, "property", name=name, value=value)
    for case in cases:
        element = ET.SubElement(suite, "testcase", classname=case.classname, name=case.name)
        if case.failure is not None:
            failure = ET.SubElement(element, "failure", message=case.message, type="GateFailed")
            failure.text = case.failure
        else:
            ET.SubElement(element, "system-out").text = case.message
    if system_out:
        ET.SubElement(suite, "system-out").text = system_out
    suites = ET.Element("testsuites", name=suite_name, tests=str(len(cases)), failures=str(failures))
    suites.append(suite)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(summary: dict, path: str | Path) -> Path:
    return write_text(path, junit_xml(summary))


def _number(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.6g}"


def markdown_summary(summary: dict, statistics: Sequence[str]) -> str:
    """A Markdown table of `statistics` (names, in column order) per error series, then the checks."""
    verdict = "PASS" if summary["pass"] else "FAIL"
    stat = summary["position"]["stat"]
    lines = [
        f"### verify-ate: **{verdict}** ({summary['ref'].get('device')} {summary['ref'].get('dtype')} vs "
        f"{summary['dut'].get('device')} {summary['dut'].get('dtype')}, {summary['n_steps']} steps, gate on {stat})",
        "",
        "| error | " + " | ".join(statistics) + " | bound | pass |",
        "|---" * (len(statistics) + 3) + "|",
    ]
    for key in SERIES_KEYS:
        if key not in summary:
            continue
        row = summary[key]
        cells = [_number(row[s]) for s in statistics]
        lines.append(
            f"| {key} ({row['unit']}) | "
            + " | ".join(cells)
            + f" | {row['threshold']:g} | {'yes' if row['pass'] else '**no**'} |"
        )
    lines.append("")
    for check in summary["checks"]:
        lines.append(f"- {'✅' if check['pass'] else '❌'} {check['message']}")
    notices = summary.get("notices", [])
    if notices:
        lines.append("")
    for notice in notices:
        lines.append(f"> {'**' + notice['text'] + '**' if notice['kind'] == 'forced' else 'note: ' + notice['text']}")
    return "\n".join(lines) + "\n"


def write_markdown(summary: dict, path: str | Path, statistics: Sequence[str]) -> Path:
    return write_text(path, markdown_summary(summary, statistics))
