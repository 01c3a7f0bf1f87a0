"""Seam: lerobot 0.6.1's pi0 processor factory (policies/pi0/processor_pi0.py `make_pi0_pre_post_processors`).

lerobot names the tokenizer "google/paligemma-3b-pt-224" and its tokenizer step
(processor/tokenizer_processor.py) fetches it with `AutoTokenizer.from_pretrained` while the pipeline is
built; these machines have no hub. For the duration of the build, in this thread, that lookup answers
with a tokenizer object the caller already has. The saved pipeline keeps lerobot's name, as real
checkpoints do; loaders pass the folder's tokenizer as an override.
"""

from __future__ import annotations

from typing import Any

from verify_ate.verify.upstream.patching import thread_scoped_object


class _Given:
    """What lerobot's tokenizer step sees as AutoTokenizer: from_pretrained returns the given tokenizer."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def from_pretrained(self, *_args: Any, **_kwargs: Any) -> Any:
        return self.tokenizer


def pi0_processors(config: Any, dataset_stats: dict, tokenizer: Any) -> tuple[Any, Any]:
    """lerobot's own pi0 (pre, post) pipelines for `config` and `dataset_stats` (torch tensors), built with
    `tokenizer` instead of a hub download; pi0.5's (policies/pi05/processor_pi05.py
    `make_pi05_pre_post_processors`, the same tokenizer step) for a pi0.5 config."""
    from lerobot.policies.pi0.processor_pi0 import make_pi0_pre_post_processors
    from lerobot.policies.pi05 import PI05Config
    from lerobot.policies.pi05.processor_pi05 import make_pi05_pre_post_processors
    from lerobot.processor import tokenizer_processor

    factory = make_pi05_pre_post_processors if isinstance(config, PI05Config) else make_pi0_pre_post_processors
    with thread_scoped_object(tokenizer_processor, "AutoTokenizer", _Given(tokenizer)):
        return factory(config, dataset_stats=dataset_stats)
