"""The runner of a checkpoint: `Pi0Runner` for pi0, `LerobotRunner` (with the policy's adapter) for the others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from verify_ate.verify.model.policies import checkpoint_adapter
from verify_ate.verify.model.seeded import SeededCheckpoint


def runner_for(checkpoint: Path | SeededCheckpoint, **kwargs: Any) -> Any:
    """The loaded policy of `checkpoint` (its config.json type; a seeded full-size pi0), ready to predict.
    kwargs: device, dtype, dataset_stats, num_inference_steps, on_bytes."""
    adapter = checkpoint_adapter(checkpoint)
    if adapter.runner_kind == "pi0":
        from verify_ate.verify.model.runner import Pi0Runner

        return Pi0Runner(checkpoint, **kwargs)
    from verify_ate.verify.model.lerobot_runner import LerobotRunner

    return LerobotRunner(adapter, Path(checkpoint), **kwargs)
