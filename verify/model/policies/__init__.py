"""The policies verify-ate runs, one adapter each, behind one interface (`PolicyAdapter`).

A checkpoint's policy type comes from its config.json `type` (lerobot's own registry name); `adapter_for` maps it
to the adapter that knows how that policy loads, what its randomness is and how it is pinned, how its batch is
shaped and how its tiny offline version is built. pi0 is one of them; verify/model/runners.py gives each
checkpoint its runner: the original `Pi0Runner` for pi0, `LerobotRunner` (verify/model/lerobot_runner.py) for
every other policy. Nothing here imports a runner.
"""

from __future__ import annotations

import json
from pathlib import Path

from verify_ate.verify.errors import InputError
from verify_ate.verify.model.policies.base import PolicyAdapter

CONFIG_FILE = "config.json"


def _adapters() -> dict[str, PolicyAdapter]:
    from verify_ate.verify.model.policies.act import ActAdapter
    from verify_ate.verify.model.policies.diffusion import DiffusionAdapter
    from verify_ate.verify.model.policies.pi0 import Pi0Adapter
    from verify_ate.verify.model.policies.pi05 import Pi05Adapter
    from verify_ate.verify.model.policies.smolvla import SmolVlaAdapter

    adapters = (Pi0Adapter(), Pi05Adapter(), SmolVlaAdapter(), ActAdapter(), DiffusionAdapter())
    return {adapter.name: adapter for adapter in adapters}


def supported_policies() -> tuple[str, ...]:
    """lerobot policy types verify-ate runs, pi0 first."""
    return tuple(_adapters())


def adapter_for(policy_type: str, where: str = "policy") -> PolicyAdapter:
    """The adapter of a lerobot policy type; InputError listing the supported ones for any other."""
    adapters = _adapters()
    if policy_type not in adapters:
        raise InputError(
            f"{where}: policy type {policy_type!r} is not supported (verify-ate runs: {', '.join(adapters)})"
        )
    return adapters[policy_type]


def checkpoint_policy_type(folder: Path) -> str:
    """config.json `type` of a checkpoint folder (its other contents are checked when it loads)."""
    path = Path(folder) / CONFIG_FILE
    if not Path(folder).is_dir():
        raise InputError(f"{folder}: checkpoint folder not found")
    if not path.is_file():
        raise InputError(f"{folder}: not a lerobot checkpoint folder (no {CONFIG_FILE})")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InputError(f"{path}: not a readable config ({type(error).__name__}: {error})") from None
    if not isinstance(document, dict):
        raise InputError(f"{path}: not a policy config (a JSON object is expected)")
    return str(document.get("type"))


def checkpoint_adapter(checkpoint) -> PolicyAdapter:
    """The adapter of a checkpoint folder (by its config.json), or pi0's for a seeded full-size pi0."""
    if not isinstance(checkpoint, (str, Path)):
        return adapter_for("pi0")
    folder = Path(checkpoint)
    return adapter_for(checkpoint_policy_type(folder), str(folder / CONFIG_FILE))


__all__ = ["PolicyAdapter", "adapter_for", "checkpoint_adapter", "checkpoint_policy_type", "supported_policies"]
