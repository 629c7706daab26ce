"""One process per embedded Qdrant Edge shard: an OS file lock beside the shard, held while it is open.

Qdrant Edge keeps the shard's state in the opening process; a second process writing the same files
would corrupt it. ``lock_shard`` takes an exclusive ``flock`` (``filelock``) on ``.<collection>.lock``
next to the shard directory (not inside: an empty shard directory means "create on first write"), and a
second process gets ``ShardInUseError`` at once, naming the fix, before it touches a file. The kernel
drops the lock when its process exits, however it exits, so a crashed server never leaves it stale.

Within one process the lock is counted, not exclusive: tests and tools open the same shard through
several ``EdgeIndex`` objects in turn (or at once, as before this lock), and the file lock is released
when the last of them closes.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

__all__ = ["ShardInUseError", "ShardLock", "lock_path", "lock_shard"]


class ShardInUseError(RuntimeError):
    """Another process has this Qdrant Edge shard open."""


def lock_path(shard_dir: Path) -> Path:
    """``<data>/qdrant-edge/.ragbot.lock`` for the shard ``<data>/qdrant-edge/ragbot``."""
    return shard_dir.parent / f".{shard_dir.name}.lock"


class ShardLock:
    """One open ``EdgeIndex``'s share of its shard's lock; ``release()`` is idempotent."""

    def __init__(self, key: str) -> None:
        self._key = key
        self._released = False

    def release(self) -> None:
        with _registry_lock:
            if self._released:
                return
            self._released = True
            held = _held[self._key]
            held.count -= 1
            if held.count == 0:
                del _held[self._key]
                held.lock.release()


@dataclass(slots=True)
class _Held:
    lock: FileLock
    count: int  # open indexes sharing it


#: The shard locks this process holds, by the lock file's real path.
_held: dict[str, _Held] = {}
_registry_lock = threading.Lock()


def lock_shard(shard_dir: Path) -> ShardLock:
    """Hold ``shard_dir``'s lock for this process, or raise ``ShardInUseError`` if another process has it."""
    path = lock_path(shard_dir)
    key = os.path.realpath(path)
    with _registry_lock:
        held = _held.get(key)
        if held is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            # not thread-local: an index is often closed by another thread than the one that opened it
            file_lock = FileLock(key, thread_local=False)
            try:
                file_lock.acquire(blocking=False)
            except Timeout:
                raise ShardInUseError(
                    f"the Qdrant Edge shard at {shard_dir} is open in another process (it holds {path}). "
                    "Embedded Qdrant Edge serves one process: stop the other process, or run a Qdrant server "
                    "and point every process at it with RAGBOT_QDRANT_URL (as `ragbot serve --workers N` "
                    "needs)."
                ) from None
            held = _held[key] = _Held(file_lock, 0)
        held.count += 1
    return ShardLock(key)
