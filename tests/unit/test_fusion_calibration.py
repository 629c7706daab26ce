"""Per-bot fusion weights learned from queries: equal until enough evidence, then the sharper retriever."""

from __future__ import annotations

import threading

import pytest

from ragbot.retrieval.calibration import FusionCalibration
from ragbot.retrieval.fusion import calibrated_weights, top_z

pytestmark = pytest.mark.unit

SHARP = [10.0] * 10 + [1.0] * 40  # a clear head: top-10 z of 2
SOFT = [1.0 - 0.01 * i for i in range(50)]  # a gentle slope


def test_equal_weights_until_enough_queries() -> None:
    calibration = FusionCalibration(min_queries=3)
    for _ in range(2):
        calibration.observe("shop", SOFT, SHARP)
    assert calibration.weights("shop") == (1.0, 1.0)
    calibration.observe("shop", SOFT, SHARP)
    w_sparse, w_dense = calibration.weights("shop")
    assert (w_sparse, w_dense) == pytest.approx(calibrated_weights(top_z(SOFT), top_z(SHARP)))
    assert w_dense > w_sparse


def test_bots_learn_separately_and_can_forget() -> None:
    calibration = FusionCalibration(min_queries=1)
    calibration.observe("shop", SHARP, SOFT)
    calibration.observe("docs", SOFT, SHARP)
    shop, docs = calibration.weights("shop"), calibration.weights("docs")
    assert shop[0] > shop[1]
    assert docs[1] > docs[0]
    assert calibration.weights("nobody") == (1.0, 1.0)
    calibration.forget("shop")
    assert calibration.weights("shop") == (1.0, 1.0)
    assert calibration.queries("docs") == 1


def test_a_query_one_retriever_could_not_answer_is_not_evidence() -> None:
    calibration = FusionCalibration(min_queries=1)
    calibration.observe("shop", [], SHARP)  # no shared vocabulary term
    calibration.observe("shop", [3.0], SHARP)
    assert calibration.queries("shop") == 0
    assert calibration.weights("shop") == (1.0, 1.0)


def test_concurrent_observations_are_all_counted() -> None:
    calibration = FusionCalibration(min_queries=1)

    def observe() -> None:
        for _ in range(200):
            calibration.observe("shop", SOFT, SHARP)

    threads = [threading.Thread(target=observe) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calibration.queries("shop") == 800


def test_min_queries_must_be_positive() -> None:
    with pytest.raises(ValueError, match="min_queries"):
        FusionCalibration(min_queries=0)
