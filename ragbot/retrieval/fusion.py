"""Rank fusion as pure functions over ranked id lists and scores (no I/O).

Every function takes N ranked lists (sparse, dense, and BM25 when it ran). ``rrf`` fuses ranks only.
``zscore`` standardises each retriever's scores by the mean and spread of its own top list, per query, and
adds them. ``zscore_calibrated`` (the default) does the same over every exact score of every candidate and
weighs the retrievers by ``calibrated_weights``, a label-free estimate per collection
(``ragbot.retrieval.calibration`` keeps it). ``benchmarks/FUSION.md`` has the two studies
behind the choice: plain z-scores beat the better single retriever on four of five public sets and lost
0.013 on the fifth, where dense leads sparse by 0.10; the calibrated weights lose on none.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

Scored = tuple[str, float]

#: Client-side fusions ``fuse`` knows; "rrf" is also what the engines compute server-side.
FUSIONS = ("rrf", "zscore", "zscore_calibrated")

#: ``top_z`` looks at the first ``CALIBRATION_HEAD`` scores of a list's first ``CALIBRATION_DEPTH``. Three,
#: not ten: a top 10 also holds the answer's topical neighbours (the other paragraphs of the same article),
#: so a retriever that clusters by topic looked sharpest without ranking the answer first (benchmarks/
#: FUSION.md, third study: on xquad-en the head-10 statistic gave the weakest retriever 1.8 of 3).
CALIBRATION_HEAD, CALIBRATION_DEPTH = 3, 50
#: ``zscore_exact`` with learned ``scales`` divides each retriever's scores by the spread of its top
#: ``SCALE_DEPTH`` scores over all of a bot's queries (``ragbot.retrieval.calibration``), not by this
#: query's spread: a list that separates its candidates more than usual counts more on this query.
SCALE_DEPTH = 10
#: Softmax temperature of ``calibrated_weights``: 10 keeps every retriever in the vote unless its head is
#: clearly flatter (20 all but dropped two of three on a set where equal weights gain 0.017).
CALIBRATION_TEMPERATURE = 10.0


def rrf(
    rankings: Sequence[Sequence[str]], k: int = 60, weights: Sequence[float] | None = None
) -> dict[str, float]:
    """Reciprocal rank fusion (Cormack et al. 2009): score = sum_i w_i / (k + rank_i), ranks from 1."""
    ws = list(weights) if weights is not None else [1.0] * len(rankings)
    fused: dict[str, float] = {}
    for w, ranking in zip(ws, rankings, strict=True):
        for rank, doc_id in enumerate(ranking, start=1):
            fused[doc_id] = fused.get(doc_id, 0.0) + w / (k + rank)
    return fused


def sort_scores(scores: Mapping[str, float]) -> list[tuple[str, float]]:
    """Best first; equal scores fall back to id order so results are deterministic."""
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def zscore(*lists: Sequence[Scored]) -> list[Scored]:
    """Sum of per-query z-scores over the union of the candidate lists, best first.

    Each list is one retriever's top list ``(id, score)``, best first (sparse, dense, and BM25 when it
    ran). Each list's own mean and standard deviation put its scores on a common footing for this query
    (a SPLADE dot product, a cosine and a BM25 score live on unrelated scales), and a candidate missing from
    a list gets that list's lowest z-score: a document the retriever did not rank counts as no better than
    the worst one it did. Unlike ranks (RRF), z-scores keep how far apart the candidates are, so a clear
    winner in one list is not flattened to "first among many".
    """
    union = {doc for ranked in lists for doc, _ in ranked}
    fused = dict.fromkeys(union, 0.0)
    for ranked in lists:
        if not ranked:
            continue
        z = _z_scores(ranked)
        floor = min(z.values())
        for doc in union:
            fused[doc] += z.get(doc, floor)
    return sort_scores(fused)


def zscore_exact(
    lists: Sequence[Sequence[Scored]],
    exact: Mapping[str, Sequence[float]],
    weights: Sequence[float] | None = None,
    scales: Sequence[float] | None = None,
) -> list[Scored]:
    """Weighted z-score sum where every candidate has every retriever's exact score.

    ``lists`` are the top lists (sparse, dense[, bm25]); ``exact`` maps each candidate of their union to its
    scores in the same order, including those of the retrievers that did not list it (the index rescores
    those). Each retriever's scores are standardised by the mean and spread of its own top list, as in
    ``zscore``, so a candidate one list missed is placed by its real score instead of that list's floor.
    ``weights`` (one per list) default to 1.

    ``scales`` (one per list, learned per bot) replace each list's spread on this query by its usual spread:
    a per-query spread puts a list that barely tells its candidates apart on the same footing as one
    with a clear winner, a usual one keeps that difference (benchmarks/FUSION.md, fourth study).
    """
    ws = _weights(weights, len(lists))
    ss = _scales(scales, len(lists))
    fused = dict.fromkeys(exact, 0.0)
    for column, (ranked, weight) in enumerate(zip(lists, ws, strict=True)):
        if not ranked:
            continue
        standardise = _standardiser([score for _, score in ranked], ss[column])
        for doc, scores in exact.items():
            fused[doc] += weight * standardise(scores[column])
    return sort_scores(fused)


def worth_rescoring(
    lists: Sequence[Sequence[Scored]],
    weights: Sequence[float],
    top_k: int,
    scales: Sequence[float] | None = None,
) -> set[str]:
    """The candidates some list missed that could still reach ``zscore_exact``'s top ``top_k``.

    A candidate absent from a top list scores at most that list's lowest score there (sparse search is
    exact; for an HNSW dense list this holds up to the index's recall), so its fused score is bounded by
    its own z-scores plus the missing lists' lowest z-scores. Candidates in every list have exact fused
    scores; the ``top_k``-th of those is a floor the final top ``top_k`` cannot fall below, and a candidate
    whose bound is under it cannot enter the result: fetching its exact scores would change nothing. On
    typical queries no candidate survives and the rescoring round trip is skipped. ``scales`` as in
    ``zscore_exact``.
    """
    ws = _weights(weights, len(lists))
    ss = _scales(scales, len(lists))
    listed = [dict(ranked) for ranked in lists]
    z: list[dict[str, float]] = []
    floors: list[float] = []
    for ranked, scale in zip(lists, ss, strict=True):
        zs = _z_scores(ranked, scale) if ranked else {}
        z.append(zs)
        floors.append(min(zs.values(), default=0.0))

    def bound(doc: str) -> float:
        return math.fsum(w * zs.get(doc, floor) for w, zs, floor in zip(ws, z, floors, strict=True))

    union = set().union(*(d.keys() for d in listed)) if listed else set()
    everywhere = set.intersection(*(set(d) for d in listed)) if listed else set()
    both = [bound(doc) for doc in everywhere]
    threshold = sorted(both, reverse=True)[top_k - 1] if len(both) >= top_k else -math.inf
    return {doc for doc in union - everywhere if bound(doc) >= threshold}


def top_z(scores: Sequence[float], head: int = CALIBRATION_HEAD, depth: int = CALIBRATION_DEPTH) -> float:
    """How far a list's best scores stand above the rest: the mean z-score of its first ``head`` scores,
    standardised over its first ``depth`` (scores best first). 0 for a flat or empty list."""
    xs = list(scores[:depth])
    if not xs:
        return 0.0
    standardise = _standardiser(xs)
    top = xs[:head]
    return math.fsum(standardise(x) for x in top) / len(top)


def calibrated_weights(*means: float, temperature: float = CALIBRATION_TEMPERATURE) -> tuple[float, ...]:
    """One weight per retriever, summing to the number of retrievers, from each one's mean ``top_z`` over
    many queries: a softmax, ``w_i = n * exp(T*g_i) / sum_j exp(T*g_j)``.

    The retriever whose top 10 stands further above its top 50, on average over many queries, separates
    relevant from irrelevant passages better on this collection and gets more weight; equal statistics
    give equal weights, i.e. the plain z-score sum. Per query the statistic is noise (the first study);
    averaged over >= 40 queries it ranked five public collections in the same order as the best fixed
    weights found with relevance labels. For two retrievers it is the sigmoid ``2/(1+exp(-T(g_1-g_2)))``
    the two-signal fusion used, and any two weights keep the same ratio whatever the others are.
    """
    if not means:
        return ()
    top = max(means)
    exps = [math.exp(temperature * (g - top)) for g in means]
    total = math.fsum(exps)
    return tuple(len(means) * e / total for e in exps)


def capped_weights(
    g_sparse: float, g_dense: float, g_bm25: float, *, temperature: float = CALIBRATION_TEMPERATURE
) -> tuple[float, float, float]:
    """``(w_sparse, w_dense, w_bm25)`` from the three mean ``top_z``: the neural pair is exactly the
    two-signal calibration (summing to 2); BM25's softmax weight on the same scale is capped at the
    weaker neural retriever's.

    BM25's list is peakier than its quality warrants (IDF-weighted exact matches stand out even when they
    are the wrong passage): on msmarco-5k its mean top_z led both neural lists while its nDCG@10 trailed
    them by 0.1, and the uncapped softmax weight (1.73 of 3) cost hybrid 0.033.
    """
    w_sparse, w_dense = calibrated_weights(g_sparse, g_dense, temperature=temperature)
    three = calibrated_weights(g_sparse, g_dense, g_bm25, temperature=temperature)
    w_bm25 = three[2] * w_sparse / three[0]
    return w_sparse, w_dense, min(w_bm25, w_sparse, w_dense)


def fuse(
    name: str,
    *lists: Sequence[Scored],
    rrf_k: int = 60,
    exact: Mapping[str, Sequence[float]] | None = None,
    weights: Sequence[float] | None = None,
    scales: Sequence[float] | None = None,
) -> list[Scored]:
    """The one entry point for client-side fusion, by the name in ``Settings.fusion``.

    ``lists`` are the retrievers' ``(chunk_id, score)`` lists, best first, as each returned them (sparse,
    dense, and BM25 when it ran). ``zscore_calibrated`` also needs ``exact`` (every score of every
    candidate, in list order) and the collection's ``weights`` (and ``scales``, once learned).
    """
    if name == "rrf":
        return sort_scores(rrf([[d for d, _ in ranked] for ranked in lists], k=rrf_k))
    if name == "zscore":
        return zscore(*lists)
    if name == "zscore_calibrated":
        if exact is None:
            raise ValueError("zscore_calibrated needs every exact score of every candidate")
        return zscore_exact(lists, exact, weights, scales)
    raise ValueError(f"unknown fusion {name!r}: expected one of {', '.join(FUSIONS)}")


def renormalised(weights: Sequence[float], keep: int) -> tuple[float, ...]:
    """The first ``keep`` weights scaled to sum to ``keep``: the fusion weights when fewer retrievers ran
    (a softmax's ratios do not depend on the left-out terms, so this is the softmax over the ``keep``)."""
    head = list(weights[:keep])
    total = math.fsum(head)
    return tuple(keep * w / total for w in head) if total > 0 else (1.0,) * keep


def _weights(weights: Sequence[float] | None, n: int) -> tuple[float, ...]:
    ws = tuple(weights) if weights is not None else (1.0,) * n
    if len(ws) != n:
        raise ValueError(f"{len(ws)} weights for {n} lists")
    return ws


def _scales(scales: Sequence[float] | None, n: int) -> tuple[float | None, ...]:
    if scales is None:
        return (None,) * n
    if len(scales) != n:
        raise ValueError(f"{len(scales)} scales for {n} lists")
    return tuple(s if s > 0 else None for s in scales)


def _standardiser(xs: Sequence[float], scale: float | None = None) -> Callable[[float], float]:
    """x -> (x - mean) / std over ``xs`` (``scale`` instead of std when given); every value maps to 0
    when there is no spread."""
    mean, std = _mean_std(xs)
    spread = scale if scale is not None else std
    return (lambda x: (x - mean) / spread) if spread > 0 else (lambda x: 0.0)


def _z_scores(ranked: Sequence[Scored], scale: float | None = None) -> dict[str, float]:
    """Each listed document's z-score within its own (non-empty) list."""
    standardise = _standardiser([score for _, score in ranked], scale)
    return {doc: standardise(score) for doc, score in ranked}


def _mean_std(xs: Sequence[float]) -> tuple[float, float]:
    mean = math.fsum(xs) / len(xs)
    return mean, math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / len(xs))
