"""Pure assembly of ``Hit``s from an engine's ranked lists, shared by the Edge and server backends.

A fused hybrid query returns one score per point. Running the sparse and the dense query beside it (in the
same batched call) lets each fused hit also carry its per-retriever score and rank, which explanations,
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
    primary: Sequence[ScoredId], sparse: Sequence[ScoredId], dense: Sequence[ScoredId]
) -> list[Hit]:
    """Hits in ``primary`` order (payload required there), annotated from the sparse and dense lists."""
    sparse_at = {s.point_id: (rank, s.score) for rank, s in enumerate(sparse, start=1)}
    dense_at = {s.point_id: (rank, s.score) for rank, s in enumerate(dense, start=1)}
    hits = []
    for scored in primary:
        if scored.payload is None:
            raise ValueError(f"point {scored.point_id} came back without its payload")
        s_rank, s_score = sparse_at.get(scored.point_id, (None, None))
        d_rank, d_score = dense_at.get(scored.point_id, (None, None))
        hits.append(
            Hit(
                chunk=payload_to_chunk(scored.payload),
                score=scored.score,
                sparse_score=s_score,
                dense_score=d_score,
                sparse_rank=s_rank,
                dense_rank=d_rank,
            )
        )
    return hits


def assemble_candidates(
    sparse: Sequence[ScoredId],
    dense: Sequence[ScoredId],
    sparse_exact: Mapping[str, float],
    dense_exact: Mapping[str, float],
) -> list[Candidate]:
    """The union of both top lists, sparse list first (payloads must hold ``chunk_id``).

    A score comes from the chunk's own list, else from the exact rescoring by the other retriever
    (``*_exact``: point id -> score, for every point that was rescored), else, for a point nobody rescored,
    from the other list's lowest score: a bound, and the candidate says ``exact=False``.
    """
    s_at = {s.point_id: (rank, s.score) for rank, s in enumerate(sparse, start=1)}
    d_at = {s.point_id: (rank, s.score) for rank, s in enumerate(dense, start=1)}
    s_floor = min((s.score for s in sparse), default=0.0)
    d_floor = min((s.score for s in dense), default=0.0)
    union: dict[str, ScoredId] = {}
    for scored in [*sparse, *dense]:
        union.setdefault(scored.point_id, scored)
    candidates = []
    for pid, scored in union.items():
        chunk_id = chunk_id_of(scored)
        exact = True
        s_rank, s_score = s_at.get(pid, (None, sparse_exact.get(pid)))
        d_rank, d_score = d_at.get(pid, (None, dense_exact.get(pid)))
        if s_score is None:
            s_score, exact = s_floor, False
        if d_score is None:
            d_score, exact = d_floor, False
        candidates.append(Candidate(chunk_id, s_score, d_score, s_rank, d_rank, exact))
    return candidates


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
