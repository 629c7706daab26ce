"""Query -> the encoders -> one hybrid query in the index -> hits that say which terms matched.

Three retrievers: SPLADE (``sparse``), the dense model (``dense``) and BM25 (``bm25``, exact terms in any
language; ``ragbot.encoders.lexical``). RRF and DBSF run inside the engine (one batched call). Any other name
in ``ragbot.retrieval.fusion.FUSIONS`` (e.g. ``zscore_calibrated``) is computed client-side by ``fusion.fuse``
over the top lists; the index gives every candidate every retriever's exact score, and only the winners'
chunks are fetched. ``zscore_calibrated`` also feeds each query's lists to a per-bot ``FusionCalibration``
and fuses with the weights it has learned so far.

The language gate: the packaged SPLADE and dense models know English only, so on a query in another
language their lists are noise that drowns BM25 (Arabic ``arcd``: hybrid 0.099 nDCG@10 against BM25's 0.75).
A query whose language is detected with confidence (``ragbot.encoders.lexical.detect_language``) and is not
one of ``neural_languages`` is served by BM25 alone; an undetermined one (short queries often are) is served
by BM25 alone when the passages BM25 matched are in such a language, and by the full hybrid otherwise. When
BM25 finds nothing, the hybrid answers instead. The rule is the same for every bot
and data set.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Literal

from ragbot.encoders.base import DenseEncoder, SparseEncoder
from ragbot.index.base import Candidate, FusionName, VectorIndex
from ragbot.index.scoring import check_fusion
from ragbot.retrieval import fusion as fusion_fns
from ragbot.retrieval.calibration import FusionCalibration
from ragbot.retrieval.explain import lexical_matched_terms, matched_terms
from ragbot.retrieval.fusion import Scored
from ragbot.types import Hit, SparseVector

if TYPE_CHECKING:
    from ragbot.encoders.lexical import Bm25Encoder

_WORDS = re.compile(r"\w+")
#: An undetermined query's language is read off its first BM25 hits (so many, so many characters).
_GATE_SAMPLE_HITS, _GATE_SAMPLE_CHARS = 3, 1500
RetrievalMode = Literal["sparse", "dense", "bm25", "hybrid"]
RETRIEVAL_MODES: tuple[RetrievalMode, ...] = ("sparse", "dense", "bm25", "hybrid")
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
        lexical: Bm25Encoder | None = None,
        neural_languages: Collection[str] = ("en",),
    ) -> None:
        """``lexical`` None: no BM25 (two-signal hybrid, and the ``bm25`` mode is refused)."""
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
        self._lexical = lexical
        self._neural_languages = frozenset(neural_languages)
        self._prefetch_k = prefetch_k
        self._fusion = fusion
        self._engine_fusion: FusionName | None = check_fusion(fusion) if fusion in ENGINE_FUSIONS else None
        self._rrf_k = rrf_k
        self._explain_terms = explain_terms
        #: Learned per-bot fusion weights (used by ``zscore_calibrated`` only).
        self.calibration = calibration or FusionCalibration()

    @property
    def lexical(self) -> Bm25Encoder | None:
        return self._lexical

    def retrieve(self, bot_id: str, query: str, top_k: int) -> list[Hit]:
        return self.retrieve_mode(bot_id, query, top_k, "hybrid")

    def retrieve_mode(self, bot_id: str, query: str, top_k: int, mode: RetrievalMode) -> list[Hit]:
        """One retriever alone (``sparse``, ``dense``, ``bm25``) or all fused (``hybrid``), for serving and
        evaluation. Hits of the sparse, BM25 and hybrid modes carry ``matched_terms``; dense hits have no
        term-level story.
        """
        if not query.strip():
            raise ValueError("query is empty")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        if mode not in RETRIEVAL_MODES:
            raise ValueError(f"unknown retrieval mode {mode!r}: expected one of {', '.join(RETRIEVAL_MODES)}")
        if mode == "bm25":
            if self._lexical is None:
                raise ValueError("the bm25 mode needs the BM25 retriever (RAGBOT_LEXICAL_RETRIEVER=true)")
            return self._bm25_alone(bot_id, query, top_k)
        if mode == "hybrid":
            gated = self._language_gate(bot_id, query, top_k)
            if gated:
                return gated
        q_sparse = self._sparse.encode_query(query) if mode in ("sparse", "hybrid") else None
        q_dense = self._dense.encode_query(query) if mode in ("dense", "hybrid") else None
        if q_sparse is not None and q_dense is not None:
            q_bm25 = self._bm25_query(query)
            hits = self._hybrid(bot_id, query, q_sparse, q_dense, q_bm25, top_k)
        elif q_sparse is not None:
            hits = self._index.search_sparse(bot_id, q_sparse, top_k)
        else:
            assert q_dense is not None
            hits = self._index.search_dense(bot_id, q_dense, top_k)
        if q_sparse is None:
            return hits
        explained = self._explain(bot_id, q_sparse, hits)
        if mode == "hybrid" and self._lexical is not None:
            # Hits SPLADE has no story for (an invented name, another language) get their exact terms.
            bare = [h for h in explained if not h.matched_terms]
            if bare:
                lexical = {id(h): h for h in self._explain_lexical(bot_id, query, bare)}
                explained = [lexical.get(id(h), h) for h in explained]
        return explained

    def outside_neural_languages(self, query: str) -> bool:
        """Whether the query is confidently in a language the neural models do not know (BM25 alone)."""
        if self._lexical is None or not self._index.has_bm25():
            return False
        from ragbot.encoders.lexical import UNDETERMINED, detect_language

        language = detect_language(query)
        return language != UNDETERMINED and language not in self._neural_languages

    def _language_gate(self, bot_id: str, query: str, top_k: int) -> list[Hit]:
        """BM25's hits when the neural models cannot read this query or what it matches; else ``[]``.

        A query of undetermined language (short ones often are: "Wer gewann den Super Bowl XLIX?") takes the
        language of the passages BM25 matched for it: on German content it is a German question, and the
        English-only models' lists would only add noise. That is evidence from the query's own matches, so
        no per-bot state is needed and the rule stays the same everywhere.
        """
        if self._lexical is None or not self._index.has_bm25():
            return []
        from ragbot.encoders.lexical import UNDETERMINED, detect_language

        language = detect_language(query)
        if language in self._neural_languages:
            return []
        hits = self._bm25_alone(bot_id, query, top_k)
        if language != UNDETERMINED or not hits:
            return hits
        matched = detect_language(
            " ".join(h.chunk.text for h in hits[:_GATE_SAMPLE_HITS])[:_GATE_SAMPLE_CHARS]
        )
        return hits if matched != UNDETERMINED and matched not in self._neural_languages else []

    def _bm25_query(self, query: str) -> SparseVector | None:
        if self._lexical is None or not self._index.has_bm25():
            return None
        return self._lexical.encode_query(query)

    def _bm25_alone(self, bot_id: str, query: str, top_k: int) -> list[Hit]:
        q_bm25 = self._bm25_query(query)
        if q_bm25 is None:
            return []
        hits = self._index.search_bm25(bot_id, q_bm25, top_k)
        # Equal scores (a passage repeated across pages) rank by chunk id, so a short and a deep request
        # agree on their common prefix: the engine's order among ties depends on the limit.
        hits.sort(key=lambda h: (-h.score, h.chunk.id))
        ranked = [dataclasses.replace(h, bm25_rank=rank) for rank, h in enumerate(hits, start=1)]
        return self._explain_lexical(bot_id, query, ranked)

    def _hybrid(
        self,
        bot_id: str,
        query: str,
        q_sparse: SparseVector,
        q_dense: Sequence[float],
        q_bm25: SparseVector | None,
        top_k: int,
    ) -> list[Hit]:
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
                bm25=q_bm25,
            )
        if self._fusion == "zscore_calibrated":
            learned = self.calibration.weights(bot_id)
            usual = self.calibration.scales(bot_id)
            # SPLADE already reads every word of a question without pieced words: BM25 would count them twice
            bm25_votes = q_bm25 is not None and holds_pieced_words(query, self._sparse.count_tokens)

            def fusion_weights(n_lists: int) -> tuple[float, ...]:
                weights = fusion_fns.renormalised(learned, n_lists)
                return weights if n_lists <= 2 or bm25_votes else (*weights[:2], 0.0)

            def fusion_scales(n_lists: int) -> tuple[float, ...] | None:
                return usual[:n_lists] if usual is not None else None

            def worth_rescoring(lists: Sequence[list[Scored]]) -> set[str]:
                n_lists = len(lists)
                return fusion_fns.worth_rescoring(
                    lists, fusion_weights(n_lists), top_k, fusion_scales(n_lists)
                )

            candidates = self._index.hybrid_candidates(
                bot_id, q_sparse, q_dense, prefetch_k, worth_rescoring, bm25=q_bm25
            )
            lists = _top_lists(candidates)
            weights, scales = fusion_weights(len(lists)), fusion_scales(len(lists))
            self.calibration.observe(
                bot_id,
                [c.sparse_score for c in lists[0]],
                [c.dense_score for c in lists[1]],
                [c.bm25_score or 0.0 for c in lists[2]] if len(lists) > 2 else None,
            )
        else:
            candidates = self._index.hybrid_candidates(bot_id, q_sparse, q_dense, prefetch_k, bm25=q_bm25)
            lists = _top_lists(candidates)
            weights = (1.0,) * len(lists)
            scales = None
        ranked = _fuse_lists(
            self._fusion, candidates, lists, rrf_k=self._rrf_k, weights=weights, scales=scales
        )[:top_k]
        chunks = self._index.chunks(bot_id, [c.chunk_id for c, _ in ranked])
        return [
            Hit(
                chunk=chunks[c.chunk_id],
                score=score,
                sparse_score=c.sparse_score,
                dense_score=c.dense_score,
                sparse_rank=c.sparse_rank,
                dense_rank=c.dense_rank,
                bm25_score=c.bm25_score,
                bm25_rank=c.bm25_rank,
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

    def _explain_lexical(self, bot_id: str, query: str, hits: list[Hit]) -> list[Hit]:
        """``matched_terms`` from BM25: the query's terms each hit's stored BM25 vector holds, named by the
        word as the passage writes it."""
        if self._explain_terms <= 0 or not hits or self._lexical is None:
            return hits
        stored = self._index.bm25_vectors(bot_id, [h.chunk.id for h in hits])
        query_terms = self._lexical.query_terms(query)
        explained = []
        for hit in hits:
            doc = stored.get(hit.chunk.id)
            terms = (
                ()
                if doc is None
                else lexical_matched_terms(query_terms, doc, self._lexical, hit.chunk, self._explain_terms)
            )
            explained.append(dataclasses.replace(hit, matched_terms=terms))
        return explained


def holds_pieced_words(query: str, count_tokens: Callable[[str], int]) -> bool:
    """Whether the query holds a word the neural models read only in pieces: one their vocabulary splits
    into several word pieces (an invented product name, a rare term), or one with a digit (a model number,
    an error code).

    Such a word is what BM25 is in the hybrid for: SPLADE-tiny and MiniLM match its pieces loosely, while
    BM25 keeps it whole as one rare term. A question of common words only is fused without BM25: SPLADE
    already matches those words exactly (and expands them), and BM25's list would count the same lexical
    evidence a second time (benchmarks/FUSION.md, fourth study).
    """
    for word in _WORDS.findall(query):
        if any(ch.isdigit() for ch in word):
            return True
        if len(word) > 2 and count_tokens(word.lower()) > 1:
            return True
    return False


def fuse_candidates(
    name: str, candidates: Sequence[Candidate], *, rrf_k: int, weights: Sequence[float] | None = None
) -> list[tuple[Candidate, float]]:
    """Client-side fusion of ``VectorIndex.hybrid_candidates`` by ``fusion.fuse``, best first.

    Each retriever's top list is rebuilt in rank order with its own scores, as ``fuse`` expects; the exact
    scores a candidate got from the retrievers that did not rank it go along for the fusions that use them.
    """
    lists = _top_lists(candidates)
    return _fuse_lists(name, candidates, lists, rrf_k=rrf_k, weights=weights or (1.0,) * len(lists))


def _fuse_lists(
    name: str,
    candidates: Sequence[Candidate],
    lists: Sequence[list[Candidate]],
    *,
    rrf_k: int,
    weights: Sequence[float],
    scales: Sequence[float] | None = None,
) -> list[tuple[Candidate, float]]:
    by_id = {c.chunk_id: c for c in candidates}
    n = len(lists)
    scored = [[(c.chunk_id, c.scores(n)[column]) for c in ranked] for column, ranked in enumerate(lists)]
    fused = fusion_fns.fuse(
        name,
        *scored,
        rrf_k=rrf_k,
        exact={c.chunk_id: c.scores(n) for c in candidates},
        weights=weights,
        scales=scales,
    )
    return [(by_id[chunk_id], score) for chunk_id, score in fused]


def _top_lists(candidates: Sequence[Candidate]) -> list[list[Candidate]]:
    """Each retriever's top list in its own rank order: sparse, dense, and BM25 when it ran."""
    sparse = sorted((c for c in candidates if c.sparse_rank is not None), key=lambda c: c.sparse_rank or 0)
    dense = sorted((c for c in candidates if c.dense_rank is not None), key=lambda c: c.dense_rank or 0)
    lists = [sparse, dense]
    if any(c.bm25_score is not None for c in candidates):
        lists.append(
            sorted((c for c in candidates if c.bm25_rank is not None), key=lambda c: c.bm25_rank or 0)
        )
    return lists
