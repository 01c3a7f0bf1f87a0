"""Seam: lerobot 0.6.1's pi0.5 state discretisation (policies/pi05/processor_pi05.py
`Pi05PrepareStateTokenizerProcessorStep.__call__`), copied with one change on purpose for the `state-bins-shifted`
fault: the bin index is np.digitize's without the `- 1` (openpi `PaligemmaTokenizer.tokenize` subtracts it), so
every state token names the next bin."""

from __future__ import annotations

from copy import deepcopy
from typing import Any


def state_bins_off_by_one_step(step: Any) -> Any:
    """A processor step standing in for a pipeline's Pi05PrepareStateTokenizerProcessorStep `step`: the same prompt,
    each state token one bin higher."""
    import numpy as np
    from lerobot.lerobot_types import TransitionKey
    from lerobot.policies.pi05.processor_pi05 import Pi05PrepareStateTokenizerProcessorStep
    from lerobot.utils.constants import OBS_STATE

    class OffByOne(Pi05PrepareStateTokenizerProcessorStep):
        def __call__(self, transition: Any) -> Any:
            transition = transition.copy()
            state = transition.get(TransitionKey.OBSERVATION, {}).get(OBS_STATE)
            tasks = transition.get(TransitionKey.COMPLEMENTARY_DATA, {}).get(self.task_key)
            state_np = deepcopy(state).cpu().numpy()
            discretized_states = np.digitize(state_np, bins=np.linspace(-1, 1, 256 + 1)[:-1])  # lerobot: ... - 1
            full_prompts = []
            for i, task in enumerate(tasks):
                cleaned_text = task.strip().replace("_", " ").replace("\n", " ")
                state_str = " ".join(map(str, discretized_states[i]))
                full_prompts.append(f"Task: {cleaned_text}, State: {state_str};\nAction: ")
            transition[TransitionKey.COMPLEMENTARY_DATA][self.task_key] = full_prompts
            return transition

    return OffByOne(max_state_dim=step.max_state_dim, task_key=step.task_key)
