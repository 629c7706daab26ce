"""Per-bot fusion weights, learned from the bot's own queries without any relevance label.

Which retriever deserves more weight depends on the collection (dense leads sparse by 0.10 nDCG@10 on an
entity-search set and trails it on MS MARCO), and no single query says which: per query the signal is noise.
Averaged over a few dozen queries it is not. Each hybrid query adds its two lists' ``top_z`` statistics to
a running mean for its bot; once ``min_queries`` have been seen, ``weights`` turns the means into
``fusion.calibrated_weights``. Before that every bot fuses with equal weights (the plain z-score sum).

State is in memory, per process: a restart re-learns it within ``min_queries`` queries.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from ragbot.retrieval.fusion import CALIBRATION_TEMPERATURE, calibrated_weights, top_z

__all__ = ["FusionCalibration"]


@dataclass(slots=True)
class _Running:
    queries: int = 0
    sparse_sum: float = 0.0
    dense_sum: float = 0.0


class FusionCalibration:
    """Running ``top_z`` means per bot, and the fusion weights they imply."""

    def __init__(self, *, min_queries: int = 40, temperature: float = CALIBRATION_TEMPERATURE) -> None:
        if min_queries < 1:
            raise ValueError(f"min_queries must be at least 1, got {min_queries}")
        self.min_queries = min_queries
        self.temperature = temperature
        self._bots: dict[str, _Running] = {}
        self._lock = threading.Lock()

    def observe(self, bot_id: str, sparse_scores: Sequence[float], dense_scores: Sequence[float]) -> None:
        """Record one query's two top lists (scores, best first). A query one retriever could not answer
        (no shared vocabulary term, an empty collection) says nothing about the other, so it is skipped."""
        if len(sparse_scores) < 2 or len(dense_scores) < 2:
            return
        g_sparse, g_dense = top_z(sparse_scores), top_z(dense_scores)
        with self._lock:
            running = self._bots.setdefault(bot_id, _Running())
            running.queries += 1
            running.sparse_sum += g_sparse
            running.dense_sum += g_dense

    def queries(self, bot_id: str) -> int:
        with self._lock:
            running = self._bots.get(bot_id)
            return running.queries if running else 0

    def weights(self, bot_id: str) -> tuple[float, float]:
        """``(w_sparse, w_dense)`` for the bot: equal until ``min_queries`` queries have been observed."""
        with self._lock:
            running = self._bots.get(bot_id)
            if running is None or running.queries < self.min_queries:
                return 1.0, 1.0
            g_sparse = running.sparse_sum / running.queries
            g_dense = running.dense_sum / running.queries
        return calibrated_weights(g_sparse, g_dense, self.temperature)

    def forget(self, bot_id: str) -> None:
        """Drop a bot's statistics, e.g. after its content was replaced wholesale."""
        with self._lock:
            self._bots.pop(bot_id, None)
