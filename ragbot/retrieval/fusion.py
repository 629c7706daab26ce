"""Rank fusion as pure functions over ranked id lists and scores (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def rrf(rankings: Sequence[Sequence[str]], k: int = 60, weights: Sequence[float] | None = None) -> dict[str, float]:
    """Reciprocal rank fusion (Cormack et al. 2009): score = sum_i w_i / (k + rank_i), ranks from 1."""
    ws = list(weights) if weights is not None else [1.0] * len(rankings)
    fused: dict[str, float] = {}
    for w, ranking in zip(ws, rankings, strict=True):
        for rank, doc_id in enumerate(ranking, start=1):
            fused[doc_id] = fused.get(doc_id, 0.0) + w / (k + rank)
    return fused


def sort_scores(scores: Mapping[str, float]) -> list[tuple[str, float]]:
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
