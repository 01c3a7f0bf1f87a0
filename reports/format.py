"""How numbers and provenance values read on a page: one formatting rule for every report section."""

from __future__ import annotations

import json
import math


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(value, unit: str = "", digits: int = 4) -> str:
    """4 significant digits and the unit; None/NaN/Inf read as 'n/a' (a non-finite run has no statistics)."""
    if value is None or not is_number(value) or not math.isfinite(value):
        return "n/a"
    text = f"{value:.{digits}g}"
    return f"{text} {unit}".strip()


def text(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)
