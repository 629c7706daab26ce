"""Pure assembly of ``Hit``s from an engine's ranked lists, shared by the Edge and server backends.

A fused hybrid query returns one score per point. Running the sparse, dense and BM25 queries beside it (in
the same batched call) lets each fused hit also carry its per-retriever score and rank, which explanations,
the retrieval log and calibrated refusal thresholds use; a point absent from a list gets ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ragbot.index.base import Candidate, FusionName
from ragbot.index.points import CHUNK_ID_FIELD, payload_to_chunk
from ragbot.types import Hit


@dataclass(frozen=True, slots=True)
class ScoredId:
    """One engine result: point id, score, and the payload when it was requested."""

    point_id: str
    score: float
    payload: Mapping[str, Any] | None = None


def assemble_hits(
    primary: Sequence[ScoredId],
    sparse: Sequence[ScoredId],
    dense: Sequence[ScoredId],
    bm25: Sequence[ScoredId] | None = None,
) -> list[Hit]:
    """Hits in ``primary`` order (payload required there), annotated from the single-retriever lists
    (``bm25`` None: BM25 did not run, and the hits say so with ``bm25_score`` None)."""
    sparse_at = _positions(sparse)
    dense_at = _positions(dense)
    bm25_at = _positions(bm25 or ())
    hits = []
    for scored in primary:
        if scored.payload is None:
            raise ValueError(f"point {scored.point_id} came back without its payload")
        s_rank, s_score = sparse_at.get(scored.point_id, (None, None))
        d_rank, d_score = dense_at.get(scored.point_id, (None, None))
        b_rank, b_score = bm25_at.get(scored.point_id, (None, None))
        hits.append(
            Hit(
                chunk=payload_to_chunk(scored.payload),
                score=scored.score,
                sparse_score=s_score,
                dense_score=d_score,
                sparse_rank=s_rank,
                dense_rank=d_rank,
                bm25_score=b_score,
                bm25_rank=b_rank,
            )
        )
    return hits


def assemble_candidates(
    sparse: Sequence[ScoredId],
    dense: Sequence[ScoredId],
    sparse_exact: Mapping[str, float],
    dense_exact: Mapping[str, float],
    bm25: Sequence[ScoredId] | None = None,
    bm25_exact: Mapping[str, float] | None = None,
) -> list[Candidate]:
    """The union of the top lists, sparse list first, then dense, then BM25 (payloads must hold
    ``chunk_id``); ``bm25`` None when BM25 did not run.

    A score comes from the chunk's own list, else from the exact rescoring by that retriever
    (``*_exact``: point id -> score, for every point that was rescored), else, for a point nobody rescored,
    from that list's lowest score: a bound, and the candidate says ``exact=False``.
    """
    columns = [(sparse, sparse_exact), (dense, dense_exact)]
    if bm25 is not None:
        columns.append((bm25, bm25_exact or {}))
    at = [_positions(ranked) for ranked, _ in columns]
    floors = [min((s.score for s in ranked), default=0.0) for ranked, _ in columns]
    union: dict[str, ScoredId] = {}
    for ranked, _ in columns:
        for scored in ranked:
            union.setdefault(scored.point_id, scored)
    candidates = []
    for pid, scored in union.items():
        exact = True
        ranks: list[int | None] = []
        scores: list[float] = []
        for (_, rescored), positions, floor in zip(columns, at, floors, strict=True):
            rank, score = positions.get(pid, (None, rescored.get(pid)))
            if score is None:
                score, exact = floor, False
            ranks.append(rank)
            scores.append(score)
        candidates.append(
            Candidate(
                chunk_id_of(scored),
                scores[0],
                scores[1],
                ranks[0],
                ranks[1],
                exact,
                scores[2] if bm25 is not None else None,
                ranks[2] if bm25 is not None else None,
            )
        )
    return candidates


def _positions(ranked: Sequence[ScoredId]) -> dict[str, tuple[int, float]]:
    return {s.point_id: (rank, s.score) for rank, s in enumerate(ranked, start=1)}


def chunk_id_of(scored: ScoredId) -> str:
    if scored.payload is None or CHUNK_ID_FIELD not in scored.payload:
        raise ValueError(f"point {scored.point_id} came back without its chunk id")
    return str(scored.payload[CHUNK_ID_FIELD])


def check_fusion(fusion: str) -> FusionName:
    if fusion == "rrf":
        return "rrf"
    if fusion == "dbsf":
        return "dbsf"
    raise ValueError(f"unknown engine fusion {fusion!r}: expected 'rrf' or 'dbsf'")


def engine_rrf_k(rrf_k: int) -> int:
    """Qdrant scores RRF as 1/(k + rank - 1) with ranks from 1 (measured on Edge and in qdrant-client's local
    mode); passing k + 1 gives the textbook 1/(k + rank) that ``ragbot.retrieval.fusion.rrf`` computes, so
    engine-side and client-side fusion rank alike."""
    if rrf_k < 1:
        raise ValueError(f"rrf_k must be a positive integer, got {rrf_k}")
    return rrf_k + 1
