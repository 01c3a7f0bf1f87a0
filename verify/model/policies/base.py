"""What every policy adapter answers: how the policy loads and runs, and what its randomness is.

The harness (verify/run/) never asks which policy it has: it asks for the checkpoint's runner
(verify/model/runners.py `runner_for`), and the adapter of the checkpoint (by config.json `type`) for the shape of
the noise the policy takes, how many actions a chunk holds and how many denoising steps it runs. Adapters of
lerobot policies other than pi0 share `LerobotRunner`, which calls back into the adapter for the three things that
differ: the offline config, the model batch, and the pinned call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar


class PolicyAdapter:
    """One lerobot policy type."""

    name: ClassVar[str]  # lerobot's registry name, config.json `type`
    label: ClassVar[str]  # what reports call it
    # What the noise file holds for this policy, and how each source of randomness is pinned (docs/policies.md).
    randomness: ClassVar[str]
    takes_noise: ClassVar[bool] = True  # False: deterministic at inference, a noise file is refused
    denoises: ClassVar[bool] = True  # predicts in denoising steps (--num-inference-steps applies)
    steps_field: ClassVar[str] = "num_inference_steps"  # the config field --num-inference-steps sets
    needs_tokenizer: ClassVar[bool] = False  # the checkpoint folder must hold a tokenizer
    # Which runner loads it (verify/model/runners.py): "pi0" (Pi0Runner: lerobot's PaliGemma policies, built on the
    # meta device and streamed) or "lerobot" (LerobotRunner, which calls back into the adapter).
    runner_kind: ClassVar[str] = "lerobot"

    # ------------------------------------------------------------ lerobot classes

    def config_class(self) -> Any:
        raise NotImplementedError

    def policy_class(self) -> Any:
        raise NotImplementedError

    # ------------------------------------------------------------ facts of a config

    def noise_shape(self, config: Any) -> tuple[int, int, int]:
        """[1, T, D] of the noise file (D = 0 for a policy that takes none)."""
        raise NotImplementedError

    def chunk_size(self, config: Any) -> int:
        """Actions in one predicted chunk."""
        raise NotImplementedError

    def training_horizon(self, config: Any) -> int:
        """Actions a training sample holds (lerobot's delta_timestamps): the chunk, or Diffusion's horizon."""
        return self.chunk_size(config)

    def num_inference_steps(self, config: Any) -> int | None:
        """Denoising steps a prediction takes (None: one forward pass)."""
        return None

    # ------------------------------------------------------------ running (LerobotRunner)

    def prepare_config(self, config: Any, folder: Path | None = None) -> None:
        """Make a parsed config buildable offline before the policy is built (its weights come from the file);
        `folder`: the checkpoint folder it was read from."""

    def processor_overrides(self, config: Any) -> dict:
        """lerobot's overrides of the saved pre-processor's steps when it is loaded (by step registry name)."""
        return {}

    def model_batch(self, batch: dict, config: Any) -> dict:
        """The preprocessed batch as the policy's `predict_action_chunk` takes it."""
        return batch

    def predict(self, policy: Any, batch: dict, noise: Any) -> Any:
        """Actions [B, chunk, A] (normalised) for a model batch, every random draw pinned by `noise` (float32, as
        the noise file holds it, on the policy's device)."""
        raise NotImplementedError

    # ------------------------------------------------------------ the module trace (--trace)

    # A module called once at the start of every denoising step (its pre-hook counts the steps), below
    # `traced_model`; None: one forward pass, every output recorded in phase "prefix".
    step_module: ClassVar[str | None] = None
    records_x_t: ClassVar[bool] = False  # pi0's Euler state after each step

    def traced_model(self, policy: Any) -> Any:
        """The module whose submodules `--trace` hooks."""
        raise NotImplementedError

    def trace_modules(self, model: Any) -> tuple[tuple[str, str], ...]:
        """(path pattern, label) of the modules recorded by default, in the order they run."""
        raise NotImplementedError

    # ------------------------------------------------------------ tiny offline versions

    def tiny_config(self, profile: dict, dtype: str = "float32", device: str = "cpu") -> Any:
        """The lerobot config of the tiny offline policy of a profile (configs/profiles/tiny_<name>.yaml)."""
        raise NotImplementedError
