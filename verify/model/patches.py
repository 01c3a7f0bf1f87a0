"""Changes made to one loaded model's instances, recorded so that they can be undone.

A rewrite (verify/model/rewrites.py) sets attributes on module instances (a forward), registers
hooks and adds edits to its runner's lists; `InstancePatches` records each, and `undo()` puts the
model back as lerobot built it, so one loaded model can run every case of a self-test in turn.
"""

from __future__ import annotations

from typing import Any

_ABSENT = object()


class InstancePatches:
    def __init__(self) -> None:
        self._undo: list[tuple[str, Any, Any, Any]] = []  # (kind, target, key, previous), in order

    def set(self, target: Any, name: str, value: Any) -> None:
        """target.name = value on the instance (a class attribute it shadowed comes back on undo)."""
        self._undo.append(("attribute", target, name, vars(target).get(name, _ABSENT)))
        setattr(target, name, value)

    def hook(self, handle: Any) -> None:
        """A torch hook handle, removed on undo."""
        self._undo.append(("hook", handle, None, None))

    def append(self, items: list, item: Any) -> None:
        """items.append(item), taken out again on undo."""
        items.append(item)
        self._undo.append(("item", items, item, None))

    def __len__(self) -> int:
        return len(self._undo)

    def undo(self) -> None:
        """Every recorded change reversed, newest first."""
        while self._undo:
            kind, target, key, previous = self._undo.pop()
            if kind == "hook":
                target.remove()
            elif kind == "item":
                target.remove(key)
            elif previous is _ABSENT:
                delattr(target, key)
            else:
                setattr(target, key, previous)
