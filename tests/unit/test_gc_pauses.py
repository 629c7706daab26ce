"""The garbage collector's pauses are measured, and the start-up heap can be frozen out of its sight."""

from __future__ import annotations

import gc

from prometheus_client import REGISTRY

from ragbot.observability.gc_pauses import freeze_startup_heap, watch_pauses


def _count(generation: str) -> float:
    return REGISTRY.get_sample_value("ragbot_gc_pause_seconds_count", {"generation": generation}) or 0.0


def test_each_collection_is_timed_once_per_process() -> None:
    watch_pauses()
    watch_pauses()  # a second call adds no second callback
    before = _count("2")
    gc.collect()
    assert _count("2") == before + 1


def test_freezing_takes_live_objects_out_of_later_collections() -> None:
    alive_at_startup: list[object] = []
    try:
        frozen = freeze_startup_heap()
        # other threads may free a few frozen objects before we look, so the count can only shrink
        assert frozen > 1000 and 0 < gc.get_freeze_count() <= frozen
        assert not any(obj is alive_at_startup for gen in range(3) for obj in gc.get_objects(generation=gen))
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0
