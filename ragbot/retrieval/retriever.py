"""Query -> both encoders -> one hybrid query in the index -> hits that say which terms matched.

RRF and DBSF run inside the engine (one batched call). Any other name in ``ragbot.retrieval.fusion.FUSIONS``
(e.g. ``zscore_calibrated``) is computed client-side by ``fusion.fuse`` over the sparse and dense top lists;
the index gives every candidate both retrievers' exact scores, and only the winners' chunks are fetched.
``zscore_calibrated`` also feeds each query's lists to a per-bot ``FusionCalibration`` and fuses with the
weights it has learned so far.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

from ragbot.encoders.base import DenseEncoder, SparseEncoder
from ragbot.index.base import Candidate, FusionName, VectorIndex
from ragbot.index.scoring import check_fusion
from ragbot.retrieval import fusion as fusion_fns
from ragbot.retrieval.calibration import FusionCalibration
from ragbot.retrieval.explain import matched_terms
from ragbot.retrieval.fusion import Scored
from ragbot.types import Hit, SparseVector

RetrievalMode = Literal["sparse", "dense", "hybrid"]
ENGINE_FUSIONS: tuple[FusionName, ...] = ("rrf", "dbsf")


class Retriever:
    def __init__(
        self,
        sparse: SparseEncoder,
        dense: DenseEncoder,
        index: VectorIndex,
        *,
        prefetch_k: int,
        fusion: str,
        rrf_k: int,
        explain_terms: int = 8,
        calibration: FusionCalibration | None = None,
    ) -> None:
        if prefetch_k < 1:
            raise ValueError(f"prefetch_k must be at least 1, got {prefetch_k}")
        if rrf_k < 1:
            raise ValueError(f"rrf_k must be at least 1, got {rrf_k}")
        if fusion not in ENGINE_FUSIONS and fusion not in fusion_fns.FUSIONS:
            known = ", ".join(dict.fromkeys([*ENGINE_FUSIONS, *fusion_fns.FUSIONS]))
            raise ValueError(f"unknown fusion {fusion!r}: expected one of {known}")
        self._sparse = sparse
        self._dense = dense
        self._index = index
        self._prefetch_k = prefetch_k
        self._fusion = fusion
        self._engine_fusion: FusionName | None = check_fusion(fusion) if fusion in ENGINE_FUSIONS else None
        self._rrf_k = rrf_k
        self._explain_terms = explain_terms
        #: Learned per-bot fusion weights (used by ``zscore_calibrated`` only).
        self.calibration = calibration or FusionCalibration()

    def retrieve(self, bot_id: str, query: str, top_k: int) -> list[Hit]:
        return self.retrieve_mode(bot_id, query, top_k, "hybrid")

    def retrieve_mode(self, bot_id: str, query: str, top_k: int, mode: RetrievalMode) -> list[Hit]:
        """One retriever alone (``sparse``, ``dense``) or both fused (``hybrid``), for serving and evaluation.

        Hits of the sparse and hybrid modes carry ``matched_terms``; dense hits have no term-level story.
        """
        if not query.strip():
            raise ValueError("query is empty")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        q_sparse = self._sparse.encode_query(query) if mode in ("sparse", "hybrid") else None
        q_dense = self._dense.encode_query(query) if mode in ("dense", "hybrid") else None
        if q_sparse is not None and q_dense is not None:
            hits = self._hybrid(bot_id, q_sparse, q_dense, top_k)
        elif q_sparse is not None:
            hits = self._index.search_sparse(bot_id, q_sparse, top_k)
        elif q_dense is not None:
            hits = self._index.search_dense(bot_id, q_dense, top_k)
        else:
            raise ValueError(f"unknown retrieval mode {mode!r}: expected 'sparse', 'dense' or 'hybrid'")
        return self._explain(bot_id, q_sparse, hits) if q_sparse is not None else hits

    def _hybrid(self, bot_id: str, q_sparse: SparseVector, q_dense: Sequence[float], top_k: int) -> list[Hit]:
        # Each retriever must offer at least top_k candidates, or a deep request (an evaluation's Recall@100)
        # would be cut to the prefetch union and rank worse than either retriever alone.
        prefetch_k = max(self._prefetch_k, top_k)
        if self._engine_fusion is not None:
            return self._index.hybrid_search(
                bot_id,
                q_sparse,
                q_dense,
                top_k,
                prefetch_k,
                fusion=self._engine_fusion,
                rrf_k=self._rrf_k,
            )
        if self._fusion == "zscore_calibrated":
            weights = self.calibration.weights(bot_id)

            def worth_rescoring(sparse: list[Scored], dense: list[Scored]) -> set[str]:
                return fusion_fns.worth_rescoring(sparse, dense, weights, top_k)

            candidates = self._index.hybrid_candidates(bot_id, q_sparse, q_dense, prefetch_k, worth_rescoring)
            lists = _top_lists(candidates)
            self.calibration.observe(
                bot_id, [c.sparse_score for c in lists[0]], [c.dense_score for c in lists[1]]
            )
        else:
            weights = (1.0, 1.0)
            candidates = self._index.hybrid_candidates(bot_id, q_sparse, q_dense, prefetch_k)
            lists = _top_lists(candidates)
        ranked = _fuse_lists(self._fusion, candidates, lists, rrf_k=self._rrf_k, weights=weights)[:top_k]
        chunks = self._index.chunks(bot_id, [c.chunk_id for c, _ in ranked])
        return [
            Hit(
                chunk=chunks[c.chunk_id],
                score=score,
                sparse_score=c.sparse_score,
                dense_score=c.dense_score,
                sparse_rank=c.sparse_rank,
                dense_rank=c.dense_rank,
            )
            for c, score in ranked
            if c.chunk_id in chunks  # a chunk deleted by a concurrent re-ingest is simply skipped
        ]

    def _explain(self, bot_id: str, q_sparse: SparseVector, hits: list[Hit]) -> list[Hit]:
        if self._explain_terms <= 0 or not hits:
            return hits
        stored = self._index.sparse_vectors(bot_id, [h.chunk.id for h in hits])
        term_of = self._sparse.vocabulary_term
        explained = []
        for hit in hits:
            doc = stored.get(hit.chunk.id)
            terms = (
                ()
                if doc is None
                else matched_terms(q_sparse, doc, term_of, hit.chunk.text, self._explain_terms)
            )
            explained.append(dataclasses.replace(hit, matched_terms=terms))
        return explained


def fuse_candidates(
    name: str, candidates: Sequence[Candidate], *, rrf_k: int, weights: tuple[float, float] = (1.0, 1.0)
) -> list[tuple[Candidate, float]]:
    """Client-side fusion of ``VectorIndex.hybrid_candidates`` by ``fusion.fuse``, best first.

    Each retriever's top list is rebuilt in rank order with its own scores, as ``fuse`` expects; the exact
    scores a candidate got from the retriever that did not rank it go along for the fusions that use them.
    """
    return _fuse_lists(name, candidates, _top_lists(candidates), rrf_k=rrf_k, weights=weights)


def _fuse_lists(
    name: str,
    candidates: Sequence[Candidate],
    lists: tuple[list[Candidate], list[Candidate]],
    *,
    rrf_k: int,
    weights: tuple[float, float],
) -> list[tuple[Candidate, float]]:
    by_id = {c.chunk_id: c for c in candidates}
    sparse, dense = lists
    fused = fusion_fns.fuse(
        name,
        [(c.chunk_id, c.sparse_score) for c in sparse],
        [(c.chunk_id, c.dense_score) for c in dense],
        rrf_k=rrf_k,
        exact={c.chunk_id: (c.sparse_score, c.dense_score) for c in candidates},
        weights=weights,
    )
    return [(by_id[chunk_id], score) for chunk_id, score in fused]


def _top_lists(candidates: Sequence[Candidate]) -> tuple[list[Candidate], list[Candidate]]:
    """The sparse and the dense top list, each in its own rank order."""
    sparse = sorted((c for c in candidates if c.sparse_rank is not None), key=lambda c: c.sparse_rank or 0)
    dense = sorted((c for c in candidates if c.dense_rank is not None), key=lambda c: c.dense_rank or 0)
    return sparse, dense
