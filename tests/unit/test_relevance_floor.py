"""The per-bot relevance floor: calibrated robustly on null questions, signals missing on either side
are ignored, and the strongest signal decides."""

from __future__ import annotations

import pytest

from ragbot.retrieval.scope import NULL_QUESTIONS, calibrate, hit_signals
from ragbot.types import Chunk, Hit

pytestmark = pytest.mark.unit


def _hit(dense: float | None, sparse: float | None, bm25: float | None = None) -> Hit:
    chunk = Chunk(id="c", bot_id="b", source_id="s", uri="u", title="t", text="x", chunk_index=0)
    return Hit(chunk=chunk, score=0.0, dense_score=dense, sparse_score=sparse, bm25_score=bm25)


def test_the_null_set_is_large_diverse_and_has_other_languages() -> None:
    assert len(NULL_QUESTIONS) >= 95 and len(set(NULL_QUESTIONS)) == len(NULL_QUESTIONS)
    assert sum(not q.isascii() for q in NULL_QUESTIONS) >= 15


def test_floor_is_median_plus_k_robust_deviations() -> None:
    nulls = [0.10, 0.12, 0.11, 0.13, 0.09, 0.10, 0.12, 0.11]
    model = calibrate({"dense": nulls}, k=3.0)
    null = model.nulls["dense"]
    assert null.median == pytest.approx(0.11)
    assert null.scale == pytest.approx(max(1.4826 * 0.01, 0.02))
    assert model.dense_floor() == pytest.approx(0.11 + 3 * 0.02)
    assert model.in_scope({"dense": 0.18}) and not model.in_scope({"dense": 0.16})


def test_one_outlier_null_question_does_not_move_the_floor() -> None:
    base = [0.10, 0.12, 0.11, 0.13, 0.09, 0.10, 0.12, 0.11, 0.10]
    calm = calibrate({"dense": base}, k=3.0).dense_floor()
    odd = calibrate({"dense": [*base, 0.95]}, k=3.0).dense_floor()
    assert odd == pytest.approx(calm, abs=0.011)


def test_the_strongest_signal_decides_and_missing_ones_are_ignored() -> None:
    model = calibrate(
        {"dense": [0.1, 0.12, 0.11, 0.13, 0.1, 0.12], "sparse": [2.0, 3.0, 2.5, 2.2, 2.8, 2.4], "bm25": []},
        k=3.0,
    )
    assert "bm25" not in model.nulls  # too few values: left out on both sides
    assert model.in_scope({"dense": 0.05, "sparse": 9.0, "bm25": None})  # an exact name: sparse carries it
    assert not model.in_scope({"dense": 0.12, "sparse": 2.5, "bm25": 99.0})  # bm25 was not calibrated
    assert not model.in_scope({})


def test_hit_signals_take_each_signals_best_over_the_hits() -> None:
    signals = hit_signals([_hit(0.3, 4.0), _hit(0.5, None, 7.0), _hit(None, 6.0)])
    assert signals == {"dense": 0.5, "sparse": 6.0, "bm25": 7.0}
    assert hit_signals([]) == {"dense": None, "sparse": None, "bm25": None}
