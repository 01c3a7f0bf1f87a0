"""The YAML files in configs/ (thresholds, profiles, trace): where they live and how one is read.

configs/ sits beside the code packages both in a checkout and in an installed copy (pyproject.toml
ships it as package data), so one path serves both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from verify.errors import InputError

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"


def read_yaml(path: str | Path, what: str) -> Any:
    """The parsed document, or a one-line InputError naming the file and why it cannot be used."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(f"{path}: cannot read the {what} ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
