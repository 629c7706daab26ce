"""Per-bot fusion weights learned from queries: equal until enough evidence, then the sharper retriever;
with a store, totals shared by every process (here an in-memory fake of the store seam)."""

from __future__ import annotations

import ast
import logging
import statistics
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures.threads import race

import ragbot.retrieval.calibration as calibration_module
from ragbot.retrieval.calibration import FusionCalibration, Totals
from ragbot.retrieval.fusion import calibrated_weights, renormalised, top_z

pytestmark = pytest.mark.unit

SHARP = [10.0] * 10 + [1.0] * 40  # a clear head: top-10 z of 2
SOFT = [1.0 - 0.01 * i for i in range(50)]  # a gentle slope


def test_equal_weights_until_enough_queries() -> None:
    calibration = FusionCalibration(min_queries=3)
    for _ in range(2):
        calibration.observe("shop", SOFT, SHARP)
    assert calibration.weights("shop") == (1.0, 1.0, 1.0)
    calibration.observe("shop", SOFT, SHARP)
    w_sparse, w_dense = renormalised(calibration.weights("shop"), 2)
    assert (w_sparse, w_dense) == pytest.approx(calibrated_weights(top_z(SOFT), top_z(SHARP)))
    assert w_dense > w_sparse


def test_bots_learn_separately_and_can_forget() -> None:
    calibration = FusionCalibration(min_queries=1)
    calibration.observe("shop", SHARP, SOFT)
    calibration.observe("docs", SOFT, SHARP)
    shop, docs = calibration.weights("shop"), calibration.weights("docs")
    assert shop[0] > shop[1]
    assert docs[1] > docs[0]
    assert calibration.weights("nobody") == (1.0, 1.0, 1.0)
    calibration.forget("shop")
    assert calibration.weights("shop") == (1.0, 1.0, 1.0)
    assert calibration.queries("docs") == 1


def test_a_query_one_retriever_could_not_answer_is_not_evidence() -> None:
    calibration = FusionCalibration(min_queries=1)
    calibration.observe("shop", [], SHARP)  # no shared vocabulary term
    calibration.observe("shop", [3.0], SHARP)
    calibration.observe("shop", [3.0, 2.0, 1.0], SHARP)  # no longer than the head: nothing below it
    assert calibration.queries("shop") == 0
    assert calibration.weights("shop") == (1.0, 1.0, 1.0)


def test_scales_are_each_retrievers_usual_spread_over_its_top_scores() -> None:
    """The spread of every top-10 score over all queries: a list whose head sits higher on some queries
    than on others has a wider usual spread than its spread on any one query."""
    calibration = FusionCalibration(min_queries=2)
    calibration.observe("shop", SOFT, SHARP, [4.0] * 5 + [0.0] * 5)
    assert calibration.scales("shop") is None  # per-query spreads until enough queries
    calibration.observe("shop", SOFT, [x + 2.0 for x in SHARP], [0.0] * 5 + [0.0] * 5)
    sparse, dense, bm25 = calibration.scales("shop") or (0.0, 0.0, 0.0)
    assert sparse == pytest.approx(statistics.pstdev(SOFT[:10]))  # the same list twice
    assert dense == pytest.approx(1.0)  # 10s on one query, 12s on the other
    assert bm25 == pytest.approx(statistics.pstdev([4.0] * 5 + [0.0] * 15))
    two = FusionCalibration(min_queries=1)
    two.observe("shop", SOFT, SHARP)  # BM25 did not run: no spread, each query's own is used
    assert (two.scales("shop") or (1.0, 1.0, 1.0))[2] == 0.0


def _observing(calibration: FusionCalibration, times: int) -> Callable[[int, threading.Barrier], None]:
    """A ``race`` body: ``times`` observations of the same two lists, started together."""

    def observe(_: int, barrier: threading.Barrier) -> None:
        barrier.wait()
        for _ in range(times):
            calibration.observe("shop", SOFT, SHARP)

    return observe


def test_concurrent_observations_are_all_counted() -> None:
    calibration = FusionCalibration(min_queries=1)
    assert race(4, _observing(calibration, 200)) == []
    assert calibration.queries("shop") == 800


def test_min_queries_must_be_positive() -> None:
    with pytest.raises(ValueError, match="min_queries"):
        FusionCalibration(min_queries=0)


def test_flush_every_must_be_positive() -> None:
    with pytest.raises(ValueError, match="flush_every"):
        FusionCalibration(flush_every=0)


# --------------------------------------------------------------------------- the store seam


class FakeStore:
    """The shared database in miniature: totals per bot, added atomically; ``down`` fails every call."""

    def __init__(self) -> None:
        self.totals: dict[str, Totals] = {}
        self.loads: list[str] = []
        self.adds: list[tuple[str, Totals]] = []
        self.down = False
        self._lock = threading.Lock()

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("database is down")

    def load(self, bot_id: str) -> Totals | None:
        self._check()
        self.loads.append(bot_id)
        return self.totals.get(bot_id)

    def add(self, bot_id: str, delta: Totals) -> Totals:
        self._check()
        with self._lock:
            self.adds.append((bot_id, delta))
            self.totals[bot_id] = self.totals.get(bot_id, Totals()) + delta
            return self.totals[bot_id]

    def reset(self, bot_id: str) -> None:
        self._check()
        self.totals.pop(bot_id, None)


def test_stored_totals_are_loaded_once_on_first_use() -> None:
    store = FakeStore()
    store.totals["shop"] = Totals(5, 5 * top_z(SOFT), 5 * top_z(SHARP))
    calibration = FusionCalibration(min_queries=5, store=store)
    assert renormalised(calibration.weights("shop"), 2) == pytest.approx(
        calibrated_weights(top_z(SOFT), top_z(SHARP))
    )
    calibration.observe("shop", SOFT, SHARP)
    assert calibration.queries("shop") == 6
    assert calibration.queries("docs") == 0
    assert store.loads == ["shop", "docs"]


def test_observations_are_flushed_as_deltas_every_n() -> None:
    store = FakeStore()
    calibration = FusionCalibration(min_queries=1, store=store, flush_every=3)
    for _ in range(5):
        calibration.observe("shop", SOFT, SHARP)
    one = Totals.of_query([SOFT, SHARP, None])
    assert store.adds == [("shop", one + one + one)]
    assert calibration.queries("shop") == 5  # 3 stored + 2 pending
    calibration.flush()
    calibration.flush()  # nothing pending: no write
    assert [delta.queries for _, delta in store.adds] == [3, 2]
    assert store.totals["shop"].queries == 5
    assert calibration.queries("shop") == 5


def test_a_flush_brings_in_other_processes_totals() -> None:
    store = FakeStore()
    mine = FusionCalibration(min_queries=4, store=store, flush_every=2)
    theirs = FusionCalibration(min_queries=4, store=store, flush_every=2)
    assert mine.weights("shop") == (1.0, 1.0, 1.0)  # loads nothing yet
    for _ in range(2):
        theirs.observe("shop", SHARP, SOFT)
    for _ in range(2):
        mine.observe("shop", SHARP, SOFT)  # the flush replies with their 2 and my 2
    assert mine.queries("shop") == 4
    w_sparse, w_dense, _ = mine.weights("shop")
    assert w_sparse > w_dense
    assert store.totals["shop"].queries == 4


def test_observations_being_written_still_count_in_the_weights() -> None:
    """Between taking the deltas and the store's reply, other threads still see them (no dip in the view
    that could flip a bot back to equal weights mid-flush)."""
    seen: list[int] = []

    class WatchedStore(FakeStore):
        def add(self, bot_id: str, delta: Totals) -> Totals:
            seen.append(calibration.queries(bot_id))
            return super().add(bot_id, delta)

    calibration = FusionCalibration(min_queries=1, store=WatchedStore(), flush_every=3)
    for _ in range(3):
        calibration.observe("shop", SOFT, SHARP)
    assert seen == [3]


def test_a_failing_store_never_breaks_retrieval_and_keeps_the_deltas(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeStore()
    store.totals["shop"] = Totals(10, 10.0, 10.0)
    store.down = True
    calibration = FusionCalibration(min_queries=1, store=store, flush_every=2)
    with caplog.at_level(logging.ERROR, logger=calibration_module.__name__):
        for _ in range(3):
            calibration.observe("shop", SOFT, SHARP)  # load and the flush after 2 fail
        calibration.flush()
        assert calibration.queries("shop") == 3  # local view: the stored 10 could not be read
        assert renormalised(calibration.weights("shop"), 2) == pytest.approx(
            calibrated_weights(top_z(SOFT), top_z(SHARP))
        )
    assert "loading bot 'shop' failed" in caplog.text
    assert "storing 2 observations of bot 'shop' failed" in caplog.text
    assert "storing 3 observations of bot 'shop' failed" in caplog.text

    store.down = False
    calibration.observe("shop", SOFT, SHARP)  # no retry yet: failures are retried every flush_every
    assert store.adds == []
    calibration.observe("shop", SOFT, SHARP)
    assert [delta.queries for _, delta in store.adds] == [5]
    assert store.totals["shop"].queries == 15
    assert calibration.queries("shop") == 15  # the reply also brought in what could not be loaded


def test_concurrent_observations_are_all_flushed() -> None:
    store = FakeStore()
    calibration = FusionCalibration(min_queries=1, store=store, flush_every=7)
    assert race(4, _observing(calibration, 200)) == []
    calibration.flush()
    assert store.totals["shop"].queries == 800
    assert store.totals["shop"].sparse_sum == pytest.approx(800 * top_z(SOFT))
    assert calibration.queries("shop") == 800


def test_forget_resets_the_stored_totals_too() -> None:
    store = FakeStore()
    calibration = FusionCalibration(min_queries=1, store=store, flush_every=1)
    calibration.observe("shop", SHARP, SOFT)
    calibration.observe("docs", SOFT, SHARP)
    calibration.forget("shop")
    assert "shop" not in store.totals
    assert calibration.weights("shop") == (1.0, 1.0, 1.0)
    assert FusionCalibration(min_queries=1, store=store).queries("shop") == 0  # a restart learns afresh
    assert calibration.queries("docs") == 1


def test_forget_raises_when_the_store_is_down_and_drops_nothing() -> None:
    store = FakeStore()
    calibration = FusionCalibration(min_queries=1, store=store, flush_every=1)
    calibration.observe("shop", SHARP, SOFT)
    store.down = True
    with pytest.raises(ConnectionError):
        calibration.forget("shop")
    assert calibration.queries("shop") == 1
    assert store.totals["shop"].queries == 1


def test_the_calibration_module_imports_no_sql() -> None:
    """Retrieval reaches the database only through the ``CalibrationStore`` seam."""
    tree = ast.parse(Path(calibration_module.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name.split(".")[0] == "sqlalchemy" or ".db" in name}


def test_three_lists_learn_three_weights() -> None:
    """BM25's list joins the statistics: the neural pair keeps its two-signal weights, and BM25 gets its
    softmax weight on their scale, capped at the weaker neural one (a peaky BM25 list is not a better one).
    A query where BM25 found fewer than two chunks says nothing (skipped, like a short sparse list)."""
    calibration = FusionCalibration(min_queries=2)
    calibration.observe("shop", SOFT, SHARP, SHARP)
    calibration.observe("shop", SOFT, SHARP, [1.0])  # skipped
    assert calibration.queries("shop") == 1
    calibration.observe("shop", SOFT, SHARP, SHARP)
    w_sparse, w_dense, w_bm25 = calibration.weights("shop")
    assert (w_sparse, w_dense) == pytest.approx(calibrated_weights(top_z(SOFT), top_z(SHARP)))
    assert w_bm25 == pytest.approx(w_sparse)  # as peaked as dense: capped at the weaker neural weight
    flat = FusionCalibration(min_queries=1)
    flat.observe("docs", SHARP, SHARP, SOFT)
    w_sparse, w_dense, w_bm25 = flat.weights("docs")
    assert (w_sparse, w_dense) == pytest.approx((1.0, 1.0))
    softmax = calibrated_weights(top_z(SHARP), top_z(SHARP), top_z(SOFT))
    assert w_bm25 == pytest.approx(softmax[2] / softmax[0]) and w_bm25 < 1.0
