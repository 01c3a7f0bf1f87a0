"""How one YAML file of configs/ (thresholds, profiles, trace) is read; where they live is
`verify_ate.CONFIGS_DIR`, the one path a checkout and an installed copy share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from verify_ate import CONFIGS_DIR
from verify_ate.verify.errors import InputError

__all__ = ["CONFIGS_DIR", "read_yaml"]


def read_yaml(path: str | Path, what: str) -> Any:
    """The parsed document, or a one-line InputError naming the file and why it cannot be used."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(f"{path}: cannot read the {what} ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
