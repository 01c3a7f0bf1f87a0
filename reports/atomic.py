"""Atomic file output: write to a temporary file beside the target, then rename over it.

An interrupted run leaves either the old file or no file, never half of a new one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yields a temporary path in the target's folder; renamed onto `target` only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Named before it is made, so that an interrupt landing anywhere after this line finds it to remove (one landing
    # inside mkstemp, between the file's creation and its return, left it behind).
    temporary = _sibling(target, "partial")
    try:
        # Created with the umask's permissions, as any other output: a report folder is meant to be shared.
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        yield temporary
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _sibling(target: Path, suffix: str) -> Path:
    """A new hidden name beside `target`: .<name>.<random>.<suffix>."""
    return target.parent / f".{target.name}.{secrets.token_hex(6)}.{suffix}"


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_text(target: str | Path, text: str) -> Path:
    with atomic_path(target) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(target)


def write_bytes(target: str | Path, data: bytes) -> Path:
    with atomic_path(target) as temporary:
        temporary.write_bytes(data)
    return Path(target)


@contextlib.contextmanager
def atomic_folder(target: str | Path) -> Iterator[Path]:
    """Yields an empty staging folder beside `target`; on success it takes `target`'s place whole.

    An existing `target` is replaced only by a complete new one: it is moved aside, the staged
    folder renamed into place, then the old one removed. The swap holds an exclusive lock on the
    parent folder (flock), so two runs writing the same `target` at once end with one complete
    folder, the last to finish, never a mix. On any exception, interruptions included, the staging
    folder is removed and `target` is left as it was.
    """
    import fcntl
    import shutil

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Both names first: an interrupt landing anywhere after them finds what there is to remove.
    staging, aside = _sibling(target, "partial"), _sibling(target, "old")
    try:
        os.mkdir(staging)  # with the umask's permissions: a report is meant to be shared
        yield staging
        moved = None
        lock = os.open(target.parent, os.O_RDONLY)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if target.exists() or target.is_symlink():
                os.mkdir(aside)
                moved = aside / target.name
                os.rename(target, moved)
            os.rename(staging, target)
        except BaseException:
            if moved is not None and not target.exists():
                os.rename(moved, target)  # interrupted between the two renames: the old folder goes back
            raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            os.close(lock)
        shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if target.exists() or target.is_symlink():  # the old folder, if it was moved aside, is no longer needed
            shutil.rmtree(aside, ignore_errors=True)
        raise
