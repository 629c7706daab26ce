"""Our metrics must equal trec_eval's (through pytrec_eval) on random graded runs."""

from __future__ import annotations

import random

import pytest

from ragbot.evaluation.metrics import mean_metrics, mrr_at, ndcg_at, recall_at

pytestmark = pytest.mark.unit

pytrec_eval = pytest.importorskip("pytrec_eval")


def _random_case(
    rng: random.Random, n_queries: int
) -> tuple[dict[str, dict[str, int]], dict[str, list[str]]]:
    qrels: dict[str, dict[str, int]] = {}
    runs: dict[str, list[str]] = {}
    docs = [f"d{i}" for i in range(300)]
    for q in range(n_queries):
        qid = f"q{q}"
        judged = rng.sample(docs, rng.randint(1, 40))
        qrels[qid] = {d: rng.choice([0, 0, 1, 2, 3]) for d in judged}
        qrels[qid][judged[0]] = rng.randint(1, 3)  # at least one relevant
        runs[qid] = rng.sample(docs, rng.randint(0, 150))
    return qrels, runs


def _trec(
    qrels: dict[str, dict[str, int]], runs: dict[str, list[str]], *, exponential: bool = False
) -> dict[str, dict[str, float]]:
    # Strictly decreasing scores so trec_eval's tie-breaking cannot reorder the ranking.
    scored = {qid: {d: float(len(r) - i) for i, d in enumerate(r)} for qid, r in runs.items()}
    top10 = {qid: {d: s for d, s in run.items() if s > len(runs[qid]) - 10} for qid, run in scored.items()}
    # trec_eval's nDCG gain is the qrels value, so exponential gains are checked through remapped qrels.
    gains = {
        q: {d: (2**g - 1 if exponential and g > 0 else g) for d, g in j.items()} for q, j in qrels.items()
    }
    full = pytrec_eval.RelevanceEvaluator(gains, {"ndcg_cut.10", "recall.100"}).evaluate(scored)
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    return {qid: {**full.get(qid, {}), **rr.get(qid, {})} for qid in qrels}


@pytest.mark.parametrize("exponential", [True, False])
@pytest.mark.parametrize("seed", range(5))
def test_per_query_metrics_equal_trec_eval(seed: int, exponential: bool) -> None:
    qrels, runs = _random_case(random.Random(seed), 40)
    expected = _trec(qrels, runs, exponential=exponential)
    for qid, ranking in runs.items():
        if not ranking:
            continue  # trec_eval omits queries with no retrieved documents
        got = ndcg_at(ranking, qrels[qid], 10, exponential=exponential)
        assert got == pytest.approx(expected[qid]["ndcg_cut_10"], abs=1e-9)
        assert recall_at(ranking, qrels[qid], 100) == pytest.approx(expected[qid]["recall_100"], abs=1e-9)
        assert mrr_at(ranking, qrels[qid], 10) == pytest.approx(expected[qid]["recip_rank"], abs=1e-9)


def test_mean_counts_missing_and_empty_runs_as_zero() -> None:
    qrels = {"a": {"x": 2, "y": 1}, "b": {"z": 1}, "c": {"w": 0}}
    runs = {"a": ["x", "y"], "c": ["w"]}  # "b" unanswered; "c" has no relevant doc so is not averaged
    means = mean_metrics(runs, qrels)
    assert means == {"ndcg@10": 0.5, "recall@100": 0.5, "mrr@10": 0.5}


def test_graded_gains_linear_and_exponential() -> None:
    judged = {"hi": 3, "lo": 1}
    log3 = 1.584962500721156
    assert ndcg_at(["lo", "hi"], judged, 10, exponential=False) == pytest.approx(
        (1 + 3 / log3) / (3 + 1 / log3)
    )
    assert ndcg_at(["lo", "hi"], judged, 10) == pytest.approx((1 + 7 / log3) / (7 + 1 / log3))
