"""Per-bot fusion weights and scales, learned from the bot's own queries without any relevance label.

Which retriever deserves more weight depends on the collection (dense leads sparse by 0.10 nDCG@10 on an
entity-search set and trails it on MS MARCO), and no single query says which: per query the signal is noise.
Averaged over a few dozen queries it is not. Each hybrid query adds its lists' ``top_z`` statistics (sparse,
dense and BM25) to a running mean for its bot; once ``min_queries`` have been seen, ``weights`` turns the
means into ``fusion.calibrated_weights``, and ``scales`` gives each retriever's usual spread over its top
scores, by which ``fusion.zscore_exact`` divides in place of each query's own spread. Before that every
bot fuses with equal weights and per-query spreads (the plain z-score sum).

Without a store the state is in memory, per process. With a ``CalibrationStore`` (the runtime gives it the
SQL one) every process adds its observations to shared totals, so a restart keeps what was learned and
several API workers learn together: a bot's stored totals are loaded on first use, observations collect as
pending deltas, and every ``flush_every`` observations (and on ``flush()``, e.g. at shutdown) the deltas are
added to the store, whose reply (every process's totals) becomes this process's view. Deltas, not
totals, are written, so two processes flushing at once both count. A store that fails is logged and
retried at the next flush; retrieval never fails because of it.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import astuple, dataclass, field
from typing import Protocol

from ragbot.retrieval.fusion import (
    CALIBRATION_HEAD,
    CALIBRATION_TEMPERATURE,
    SCALE_DEPTH,
    capped_weights,
    top_z,
)

__all__ = ["CalibrationStore", "FusionCalibration", "Totals"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Totals:
    """Sums over ``queries`` hybrid queries: the whole state behind a bot's weights and scales.

    ``*_sum`` add each query's ``top_z`` (the weights); ``*_mean_sum`` and ``*_square_sum`` add the mean
    and the mean square of its first ``SCALE_DEPTH`` scores, from which ``scales`` reads each retriever's
    usual spread. Field order is the stored columns' order (``ragbot.db.repositories``).
    """

    queries: int = 0
    sparse_sum: float = 0.0
    dense_sum: float = 0.0
    bm25_sum: float = 0.0
    sparse_mean_sum: float = 0.0
    dense_mean_sum: float = 0.0
    bm25_mean_sum: float = 0.0
    sparse_square_sum: float = 0.0
    dense_square_sum: float = 0.0
    bm25_square_sum: float = 0.0

    def __add__(self, other: Totals) -> Totals:
        return Totals(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    @classmethod
    def of_query(cls, lists: Sequence[Sequence[float] | None]) -> Totals:
        """One query's contribution; ``lists`` are the sparse, dense and BM25 scores (None: did not run)."""
        stats = [_query_stats(scores) for scores in lists]
        return cls(1, *(t for t, _, _ in stats), *(m for _, m, _ in stats), *(q for _, _, q in stats))

    def scales(self) -> tuple[float, float, float]:
        """Each retriever's spread over its top ``SCALE_DEPTH`` scores of every query (0: no spread)."""

        def spread(mean_sum: float, square_sum: float) -> float:
            n = self.queries
            return math.sqrt(max(0.0, square_sum / n - (mean_sum / n) ** 2)) if n else 0.0

        return (
            spread(self.sparse_mean_sum, self.sparse_square_sum),
            spread(self.dense_mean_sum, self.dense_square_sum),
            spread(self.bm25_mean_sum, self.bm25_square_sum),
        )


def _query_stats(scores: Sequence[float] | None) -> tuple[float, float, float]:
    """``(top_z, mean, mean square)`` of one list's head; zeros for a retriever that did not run."""
    if scores is None:
        return 0.0, 0.0, 0.0
    head = scores[:SCALE_DEPTH]
    return (
        top_z(scores),
        math.fsum(head) / len(head),
        math.fsum(x * x for x in head) / len(head),
    )


class CalibrationStore(Protocol):
    """Where totals shared by every process live. ``add`` must add atomically (two processes adding at
    once both count) and return the totals after the addition, everyone's included."""

    def load(self, bot_id: str) -> Totals | None: ...

    def add(self, bot_id: str, delta: Totals) -> Totals: ...

    def reset(self, bot_id: str) -> None: ...


@dataclass(slots=True)
class _Bot:
    known: Totals = Totals()  # the store's totals as last seen (or this process's, without a store)
    pending: Totals = Totals()  # observed here, not yet in the store
    in_flight: Totals = Totals()  # being written now: still part of the view until the store replies
    since_attempt: int = 0  # observations since the last flush attempt: a failing store is retried every N
    loaded: bool = False
    #: Serialises this bot's store I/O, which runs outside ``FusionCalibration._lock`` so a slow or dead
    #: database stalls at most the query that flushes, never every retrieval thread.
    io: threading.Lock = field(default_factory=threading.Lock)


class FusionCalibration:
    """Running ``top_z`` means per bot, and the fusion weights they imply."""

    def __init__(
        self,
        *,
        min_queries: int = 40,
        temperature: float = CALIBRATION_TEMPERATURE,
        store: CalibrationStore | None = None,
        flush_every: int = 10,
    ) -> None:
        if min_queries < 1:
            raise ValueError(f"min_queries must be at least 1, got {min_queries}")
        if flush_every < 1:
            raise ValueError(f"flush_every must be at least 1, got {flush_every}")
        self.min_queries = min_queries
        self.temperature = temperature
        self.flush_every = flush_every
        self._store = store
        self._bots: dict[str, _Bot] = {}
        self._lock = threading.Lock()

    def observe(
        self,
        bot_id: str,
        sparse_scores: Sequence[float],
        dense_scores: Sequence[float],
        bm25_scores: Sequence[float] | None = None,
    ) -> None:
        """Record one query's top lists (scores, best first; ``bm25_scores`` None where BM25 did not run,
        which adds 0 to its sum). A query where some list is no longer than ``top_z``'s head (no shared
        term, a tiny collection) is skipped: a head with nothing below it scores 0 whatever its quality,
        and would pull that retriever's weight down for no reason."""
        lists = [sparse_scores, dense_scores] + ([bm25_scores] if bm25_scores is not None else [])
        if any(len(scores) <= CALIBRATION_HEAD for scores in lists):
            return
        delta = Totals.of_query([sparse_scores, dense_scores, bm25_scores])
        bot = self._loaded(bot_id)
        with self._lock:
            if self._store is None:
                bot.known += delta
                return
            bot.pending += delta
            bot.since_attempt += 1
            due = bot.since_attempt >= self.flush_every
        if due:
            self._flush_bot(bot_id, bot, wait=False)

    def queries(self, bot_id: str) -> int:
        return self._view(bot_id).queries

    def weights(self, bot_id: str) -> tuple[float, float, float]:
        """``(w_sparse, w_dense, w_bm25)`` for the bot: equal until ``min_queries`` queries have been
        observed; then ``fusion.capped_weights`` of the mean statistics."""
        view = self._view(bot_id)
        if view.queries < self.min_queries:
            return 1.0, 1.0, 1.0
        n = view.queries
        return capped_weights(
            view.sparse_sum / n, view.dense_sum / n, view.bm25_sum / n, temperature=self.temperature
        )

    def scales(self, bot_id: str) -> tuple[float, float, float] | None:
        """Each retriever's usual spread on the bot's queries (``fusion.zscore_exact``'s ``scales``), once
        ``min_queries`` queries have been observed; None before (each query's own spread is used)."""
        view = self._view(bot_id)
        return view.scales() if view.queries >= self.min_queries else None

    def flush(self) -> None:
        """Write every bot's pending observations now (at shutdown, so a process's last queries count).
        Never raises: a failure is logged and the deltas stay pending."""
        with self._lock:
            bots = [(bot_id, bot) for bot_id, bot in self._bots.items() if bot.pending.queries]
        for bot_id, bot in bots:
            self._flush_bot(bot_id, bot, wait=True)

    def forget(self, bot_id: str) -> None:
        """Drop a bot's statistics, e.g. after its content was replaced wholesale: here, pending ones and
        the stored totals, so no process's next flush or restart brings them back (other processes drop
        theirs at their next flush). Observations racing a ``forget`` may land on either side of it.

        Unlike retrieval this is an operator's request, so a store failure raises and nothing is dropped.
        """
        bot = self._bot(bot_id)
        with bot.io:
            if self._store is not None:
                self._store.reset(bot_id)
            with self._lock:
                if self._bots.get(bot_id) is bot:
                    del self._bots[bot_id]

    # ----------------------------------------------------------------------------------------- internals

    def _bot(self, bot_id: str) -> _Bot:
        with self._lock:
            return self._bots.setdefault(bot_id, _Bot(loaded=self._store is None))

    def _loaded(self, bot_id: str) -> _Bot:
        """The bot's state, with the store's totals read on first use. A failed read counts as "nothing
        stored yet": the next successful flush replies with the true totals."""
        bot = self._bot(bot_id)
        if bot.loaded or self._store is None:
            return bot
        with bot.io:
            if bot.loaded:
                return bot
            try:
                stored = self._store.load(bot_id)
            except Exception:
                log.exception("fusion calibration: loading bot %r failed; starting from zero here", bot_id)
                stored = None
            with self._lock:
                bot.known = stored or Totals()
                bot.loaded = True
        return bot

    def _view(self, bot_id: str) -> Totals:
        bot = self._loaded(bot_id)
        with self._lock:
            return bot.known + bot.in_flight + bot.pending

    def _flush_bot(self, bot_id: str, bot: _Bot, *, wait: bool) -> None:
        """Move the bot's pending deltas to the store. ``wait=False`` (the query path) skips the flush
        when another thread is already writing this bot: its deltas go with the next one."""
        assert self._store is not None
        if not bot.io.acquire(blocking=wait):
            return
        try:
            with self._lock:
                delta, bot.pending, bot.since_attempt = bot.pending, Totals(), 0
                bot.in_flight = delta
            if not delta.queries:
                return
            try:
                totals = self._store.add(bot_id, delta)
            except Exception:
                log.exception(
                    "fusion calibration: storing %d observations of bot %r failed; keeping them for the "
                    "next flush",
                    delta.queries,
                    bot_id,
                )
                with self._lock:
                    bot.pending, bot.in_flight = delta + bot.pending, Totals()
                return
            with self._lock:
                bot.known, bot.in_flight = totals, Totals()
        finally:
            bot.io.release()
