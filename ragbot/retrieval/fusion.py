"""Rank fusion as pure functions over ranked id lists and scores (no I/O).

``rrf`` fuses ranks only. ``zscore`` standardises each retriever's scores by the mean and spread of its
own top list, per query, and adds them. ``benchmarks/FUSION.md`` has the study behind the choice: on five
public sets it beat the better single retriever on four and rank fusion on three.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

Scored = tuple[str, float]

#: Client-side fusions ``fuse`` knows; "rrf" is also what the engines compute server-side.
FUSIONS = ("rrf", "zscore")


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


def zscore(sparse: Sequence[Scored], dense: Sequence[Scored]) -> list[Scored]:
    """Sum of per-query z-scores over the union of both candidate lists, best first.

    ``sparse`` and ``dense`` are each retriever's top list ``(id, score)``, best first. Each list's own
    mean and standard deviation put its scores on a common footing for this query (a SPLADE dot product
    and a cosine live on unrelated scales), and a candidate missing from a list gets that list's lowest
    z-score: a document the retriever did not rank counts as no better than the worst one it did.
    Unlike ranks (RRF), z-scores keep how far apart the candidates are, so a clear winner in one list is
    not flattened to "first among many".
    """
    union = {doc for ranked in (sparse, dense) for doc, _ in ranked}
    fused = dict.fromkeys(union, 0.0)
    for ranked in (sparse, dense):
        if not ranked:
            continue
        listed = dict(ranked)
        mean, std = _mean_std(list(listed.values()))
        z = {doc: (score - mean) / std if std > 0 else 0.0 for doc, score in listed.items()}
        floor = min(z.values())
        for doc in union:
            fused[doc] += z.get(doc, floor)
    return sort_scores(fused)


def fuse(name: str, sparse: Sequence[Scored], dense: Sequence[Scored], *, rrf_k: int = 60) -> list[Scored]:
    """The one entry point for client-side fusion, by the name in ``Settings.fusion``.

    ``sparse`` and ``dense`` are ``(chunk_id, score)`` lists, best first, as each retriever returned them.
    """
    if name == "rrf":
        return sort_scores(rrf([[d for d, _ in sparse], [d for d, _ in dense]], k=rrf_k))
    if name == "zscore":
        return zscore(sparse, dense)
    raise ValueError(f"unknown fusion {name!r}: expected one of {', '.join(FUSIONS)}")


def _mean_std(xs: Sequence[float]) -> tuple[float, float]:
    mean = math.fsum(xs) / len(xs)
    return mean, math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / len(xs))
