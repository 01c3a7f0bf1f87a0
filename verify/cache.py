"""Where verify-ate keeps what it makes once and reuses: the demo's dataset and models, imported old-format
inputs, checkpoint hashes, and torch's compiled kernels."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """$VERIFY_ATE_CACHE, else ~/.cache/verify-ate."""
    configured = os.environ.get("VERIFY_ATE_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "verify-ate"
