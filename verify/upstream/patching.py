"""How the fence patches upstream code: for one thread, under one lock, and only for the length of a block.

A patched attribute (a module's function, a class's method) answers with the replacement in the thread
that opened the block and with the original in every other thread, so a model built elsewhere in the
process at the same moment (a user's own lerobot code, a second verify-ate build) sees upstream's code.
Builds that patch are serialised by `PATCH_LOCK`, so two of them never stack their patches; the
attribute is restored when the block ends, whatever happened inside it.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any

# Held for the whole of a patched block; re-entrant, so one build may open several blocks.
PATCH_LOCK = threading.RLock()


@contextlib.contextmanager
def thread_scoped(owner: Any, name: str, replacement: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """`owner.name` is `replacement` for this thread while the block runs; yields the original.

    `owner` is a module or a class; the original is looked up in its own namespace, so a method
    patched on a class stays a method (the replacement receives `self` first, as the original does).
    """
    with PATCH_LOCK:
        namespace = vars(owner)
        if name not in namespace:
            raise AttributeError(f"{getattr(owner, '__name__', owner)!r} defines no {name!r} to patch")
        original = namespace[name]
        thread = threading.get_ident()

        @functools.wraps(original)
        def dispatch(*args: Any, **kwargs: Any) -> Any:
            chosen = replacement if threading.get_ident() == thread else original
            return chosen(*args, **kwargs)

        setattr(owner, name, dispatch)
        try:
            yield original
        finally:
            setattr(owner, name, original)


class _ThreadProxy:
    """Stands in for an object: attribute lookups go to `replacement` in one thread, to `original` elsewhere."""

    def __init__(self, original: Any, replacement: Any, thread: int):
        self._original, self._replacement, self._thread = original, replacement, thread

    def __getattr__(self, name: str) -> Any:
        chosen = self._replacement if threading.get_ident() == self._thread else self._original
        return getattr(chosen, name)


@contextlib.contextmanager
def thread_scoped_object(owner: Any, name: str, replacement: Any) -> Iterator[Any]:
    """`owner.name` (an object used through its attributes, such as a class whose classmethod is called) is
    `replacement` for this thread while the block runs; yields the original."""
    with PATCH_LOCK:
        original = vars(owner)[name]
        setattr(owner, name, _ThreadProxy(original, replacement, threading.get_ident()))
        try:
            yield original
        finally:
            setattr(owner, name, original)
