"""Query -> both encoders -> one hybrid query in the index -> hits that say which terms matched.

RRF and DBSF run inside the engine (one batched call). Any other fusion name is computed here, over the
sparse and dense candidate lists with their scores, by the single function ``fuse_candidates``, so a new
fusion only has to be added in ``ragbot.retrieval.fusion`` and called from there.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Literal

from ragbot.encoders.base import DenseEncoder, SparseEncoder
from ragbot.index.base import FusionName, VectorIndex
from ragbot.index.scoring import check_fusion
from ragbot.retrieval import fusion as fusion_fns
from ragbot.retrieval.explain import matched_terms
from ragbot.types import Hit, SparseVector

log = logging.getLogger(__name__)

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
    ) -> None:
        if prefetch_k < 1:
            raise ValueError(f"prefetch_k must be at least 1, got {prefetch_k}")
        if rrf_k < 1:
            raise ValueError(f"rrf_k must be at least 1, got {rrf_k}")
        if not fusion:
            raise ValueError("fusion must name a method, e.g. 'rrf' or 'dbsf'")
        if fusion not in ENGINE_FUSIONS:
            log.warning(
                "fusion %r runs client-side; until ragbot.retrieval.fusion defines it, it fuses by RRF",
                fusion,
            )
        self._sparse = sparse
        self._dense = dense
        self._index = index
        self._prefetch_k = prefetch_k
        self._fusion = fusion
        self._engine_fusion: FusionName | None = check_fusion(fusion) if fusion in ENGINE_FUSIONS else None
        self._rrf_k = rrf_k
        self._explain_terms = explain_terms

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
        if self._engine_fusion is not None:
            return self._index.hybrid_search(
                bot_id,
                q_sparse,
                q_dense,
                top_k,
                self._prefetch_k,
                fusion=self._engine_fusion,
                rrf_k=self._rrf_k,
            )
        sparse_hits = self._index.search_sparse(bot_id, q_sparse, self._prefetch_k)
        dense_hits = self._index.search_dense(bot_id, q_dense, self._prefetch_k)
        return fuse_candidates(self._fusion, sparse_hits, dense_hits, rrf_k=self._rrf_k)[:top_k]

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
    name: str, sparse_hits: Sequence[Hit], dense_hits: Sequence[Hit], *, rrf_k: int
) -> list[Hit]:
    """Client-side fusion of two ranked candidate lists (each hit's ``score`` is its retriever's score).

    The one call site of a fusion function: today RRF for every name, tomorrow ``fusion.<name>``.
    """
    by_id = {h.chunk.id: h for h in [*dense_hits, *sparse_hits]}
    sparse_at = {h.chunk.id: (rank, h.score) for rank, h in enumerate(sparse_hits, start=1)}
    dense_at = {h.chunk.id: (rank, h.score) for rank, h in enumerate(dense_hits, start=1)}
    fused = fusion_fns.rrf([list(sparse_at), list(dense_at)], k=rrf_k)
    hits = []
    for chunk_id, score in fusion_fns.sort_scores(fused):
        s_rank, s_score = sparse_at.get(chunk_id, (None, None))
        d_rank, d_score = dense_at.get(chunk_id, (None, None))
        hits.append(
            Hit(
                chunk=by_id[chunk_id].chunk,
                score=score,
                sparse_score=s_score,
                dense_score=d_score,
                sparse_rank=s_rank,
                dense_rank=d_rank,
            )
        )
    return hits
