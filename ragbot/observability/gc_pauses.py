"""Python's cyclic garbage collector in a long-running server: its pauses measured, and the start-up heap
taken out of its sight.

A full (generation 2) collection walks every container object the process holds, and a server that has
loaded torch, transformers, tokenizers and three models holds millions. Under load, ``benchmarks/load.py``
saw every visitor's first token stall for one to two seconds at the same points of each run (after about
the same number of turns): full collections, each holding the interpreter while it walked that heap.
``gc.freeze()`` after start-up moves everything alive then (the models, the libraries) into a permanent
generation that collections skip; objects made later (requests, conversations) are collected as before.
Instagram's write-up on running Django at scale is where the technique comes from.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

from ragbot.observability import metrics

log = logging.getLogger(__name__)

__all__ = ["freeze_startup_heap", "watch_pauses"]

_started: float | None = None
_watching = False


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    global _started
    if phase == "start":
        _started = time.perf_counter()
    elif _started is not None:
        metrics.gc_pause(int(info.get("generation", -1)), time.perf_counter() - _started)
        _started = None


def watch_pauses() -> None:
    """Record each collection's pause in ``ragbot_gc_pause_seconds`` (once per process)."""
    global _watching
    if not _watching:
        gc.callbacks.append(_on_collection)
        _watching = True


def freeze_startup_heap() -> int:
    """Collect once, then exclude every object alive now from later collections; how many were frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("garbage collector: %d start-up objects frozen", frozen)
    return frozen
