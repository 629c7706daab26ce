"""The retriever over a real Qdrant Edge shard, with tiny deterministic encoders in place of the models
(the encoders' own tests cover SPLADE and MiniLM; here the subject is query -> index -> explained hits)."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from ragbot.index.edge import EdgeIndex
from ragbot.index.points import chunk_point_id
from ragbot.retrieval.calibration import FusionCalibration
from ragbot.retrieval.retriever import Retriever, fuse_candidates
from ragbot.types import Chunk, EncodedChunk, SparseVector

pytestmark = pytest.mark.integration

_WORDS = re.compile(r"[a-z0-9]+")


class WordSparseEncoder:
    """Term counts over a growing vocabulary, plus fixed "expansions" the way SPLADE adds related terms."""

    EXPANSIONS: ClassVar[dict[str, str]] = {"money": "refund", "cancel": "subscription"}

    def __init__(self) -> None:
        self._vocab: dict[str, int] = {}

    def _id(self, term: str) -> int:
        return self._vocab.setdefault(term, len(self._vocab))

    def _encode(self, text: str) -> SparseVector:
        weights: dict[int, float] = {}
        for word in _WORDS.findall(text.lower()):
            weights[self._id(word)] = weights.get(self._id(word), 0.0) + 1.0
            if word in self.EXPANSIONS:
                expansion = self._id(self.EXPANSIONS[word])
                weights[expansion] = weights.get(expansion, 0.0) + 0.5
        keys = sorted(weights)
        return SparseVector(tuple(keys), tuple(weights[k] for k in keys))

    def encode_documents(self, texts: Sequence[str]) -> list[SparseVector]:
        return [self._encode(t) for t in texts]

    def encode_query(self, text: str) -> SparseVector:
        return self._encode(text)

    def vocabulary_term(self, index: int) -> str:
        return next(term for term, i in self._vocab.items() if i == index)

    def count_tokens(self, text: str) -> int:
        return len(_WORDS.findall(text.lower()))


class HashedDenseEncoder:
    """Unit-length hashed bag of words: similar wording gives similar vectors, nothing more."""

    dim = 16

    def _encode(self, text: str) -> tuple[float, ...]:
        v = [0.0] * self.dim
        v[0] = 0.1  # never the zero vector
        for word in _WORDS.findall(text.lower()):
            v[int(hashlib.sha256(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        norm = math.sqrt(sum(x * x for x in v))
        return tuple(x / norm for x in v)

    def encode_documents(self, texts: Sequence[str]) -> list[tuple[float, ...]]:
        return [self._encode(t) for t in texts]

    def encode_query(self, text: str) -> tuple[float, ...]:
        return self._encode(text)

    def count_tokens(self, text: str) -> int:
        return len(_WORDS.findall(text.lower()))


DOCS = {
    "refunds": "You get your money back within 30 days of purchase.",
    "shipping": "Orders ship within two business days from our warehouse.",
    "cancel": "To cancel, open the account page and press the cancel button.",
    "contact": "Write to support for any question about orders or invoices.",
}


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[EdgeIndex, WordSparseEncoder, HashedDenseEncoder]]:
    sparse, dense = WordSparseEncoder(), HashedDenseEncoder()
    index = EdgeIndex(tmp_path, "retriever")
    for bot in ("shop", "other-shop"):
        texts = (
            list(DOCS.values()) if bot == "shop" else ["Refund money is never returned by the other shop."]
        )
        names = list(DOCS) if bot == "shop" else ["policy"]
        chunks = [
            Chunk(
                chunk_point_id(bot, f"https://{bot}.example/{n}", 0, t),
                bot,
                n,
                f"https://{bot}.example/{n}",
                n,
                t,
                0,
            )
            for n, t in zip(names, texts, strict=True)
        ]
        s_vecs, d_vecs = sparse.encode_documents(texts), dense.encode_documents(texts)
        index.upsert([EncodedChunk(c, s, d) for c, s, d in zip(chunks, s_vecs, d_vecs, strict=True)])
    yield index, sparse, dense
    index.close()


def make(setup: tuple[EdgeIndex, WordSparseEncoder, HashedDenseEncoder], fusion: str = "rrf") -> Retriever:
    index, sparse, dense = setup
    return Retriever(sparse, dense, index, prefetch_k=10, fusion=fusion, rrf_k=60)


def test_hybrid_hits_are_explained_including_expansion_terms(setup) -> None:  # type: ignore[no-untyped-def]
    hits = make(setup).retrieve("shop", "refund money", top_k=2)
    top = hits[0]
    assert top.chunk.source_id == "refunds"
    assert top.sparse_score is not None
    assert top.dense_score is not None
    terms = {t.term: t for t in top.matched_terms}
    assert terms["money"].in_text is True
    assert terms["refund"].in_text is False  # only an expansion of "money": the text never says "refund"
    assert terms["money"].contribution == pytest.approx(1.0 * 1.0)
    assert terms["refund"].contribution == pytest.approx(1.5 * 0.5)  # the query expands "money" too
    assert sum(t.contribution for t in top.matched_terms) == pytest.approx(top.sparse_score)


def test_a_bot_only_retrieves_its_own_chunks(setup) -> None:  # type: ignore[no-untyped-def]
    retriever = make(setup)
    assert {h.chunk.bot_id for h in retriever.retrieve("shop", "refund money", top_k=10)} == {"shop"}
    [only] = retriever.retrieve("other-shop", "cancel my orders", top_k=10)
    assert only.chunk.bot_id == "other-shop"
    assert retriever.retrieve("nobody", "refund", top_k=3) == []


def test_modes_for_evaluation(setup) -> None:  # type: ignore[no-untyped-def]
    retriever = make(setup)
    sparse_hits = retriever.retrieve_mode("shop", "cancel subscription", 3, "sparse")
    assert sparse_hits[0].chunk.source_id == "cancel"
    assert sparse_hits[0].sparse_rank == 1
    assert sparse_hits[0].dense_score is None
    assert {t.term for t in sparse_hits[0].matched_terms} == {"cancel", "subscription"}
    dense_hits = retriever.retrieve_mode("shop", "cancel subscription", 3, "dense")
    assert len(dense_hits) == 3
    assert all(h.matched_terms == () and h.sparse_score is None for h in dense_hits)
    assert dense_hits[0].dense_rank == 1


def test_client_side_rrf_ranks_like_the_engine(setup) -> None:  # type: ignore[no-untyped-def]
    index, sparse, dense = setup
    query = "orders within days"
    engine = make(setup, "rrf").retrieve("shop", query, top_k=4)
    candidates = index.hybrid_candidates("shop", sparse.encode_query(query), dense.encode_query(query), 10)
    client = fuse_candidates("rrf", candidates, rrf_k=60)[:4]
    # Same fused score per chunk (ties, like rank 2+3 against 3+2, may be ordered either way).
    engine_by_id = {h.chunk.id: h for h in engine}
    assert {c.chunk_id for c, _ in client} == set(engine_by_id)
    for candidate, score in client:
        twin = engine_by_id[candidate.chunk_id]
        assert score == pytest.approx(twin.score, rel=1e-5)
        assert (candidate.sparse_rank, candidate.dense_rank) == (twin.sparse_rank, twin.dense_rank)
        assert candidate.dense_score == pytest.approx(twin.dense_score, abs=1e-6)
    assert [s for _, s in client] == sorted((s for _, s in client), reverse=True)


def test_zscore_fusion_runs_client_side_with_both_scores_on_every_hit(setup) -> None:  # type: ignore[no-untyped-def]
    hits = make(setup, "zscore").retrieve("shop", "cancel my orders", top_k=4)
    assert hits[0].chunk.source_id == "cancel"
    assert all(h.sparse_score is not None and h.dense_score is not None for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert {t.term for t in hits[0].matched_terms} >= {"cancel"}


def test_dbsf_fusion(setup) -> None:  # type: ignore[no-untyped-def]
    hits = make(setup, "dbsf").retrieve("shop", "cancel button", top_k=2)
    assert hits[0].chunk.source_id == "cancel"


def test_bad_requests_are_refused(setup) -> None:  # type: ignore[no-untyped-def]
    retriever = make(setup)
    with pytest.raises(ValueError, match="empty"):
        retriever.retrieve("shop", "   ", 3)
    with pytest.raises(ValueError, match="top_k"):
        retriever.retrieve("shop", "refund", 0)
    with pytest.raises(ValueError, match="mode"):
        retriever.retrieve_mode("shop", "refund", 3, "magic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bm25 mode needs the BM25 retriever"):
        retriever.retrieve_mode("shop", "refund", 3, "bm25")
    index, sparse, dense = setup
    with pytest.raises(ValueError, match="fusion"):
        Retriever(sparse, dense, index, prefetch_k=10, fusion="adaptive", rrf_k=60)
    with pytest.raises(ValueError, match="prefetch_k"):
        Retriever(sparse, dense, index, prefetch_k=0, fusion="rrf", rrf_k=60)


@pytest.mark.parametrize("fusion", ["rrf", "zscore"])
def test_a_deep_request_is_not_cut_to_the_prefetch(setup, fusion: str) -> None:  # type: ignore[no-untyped-def]
    index, sparse, dense = setup
    shallow = Retriever(sparse, dense, index, prefetch_k=1, fusion=fusion, rrf_k=60)
    deep = shallow.retrieve("shop", "cancel my orders", top_k=len(DOCS))
    # Each retriever was asked for top_k, not for the prefetch of 1, so every document comes back.
    assert sorted(h.chunk.source_id for h in deep) == sorted(DOCS)


def test_calibrated_fusion_learns_per_bot_from_its_queries(setup) -> None:  # type: ignore[no-untyped-def]
    index, sparse, dense = setup
    retriever = Retriever(
        sparse,
        dense,
        index,
        prefetch_k=10,
        fusion="zscore_calibrated",
        rrf_k=60,
        calibration=FusionCalibration(min_queries=2),
    )
    # "cancel my orders" matches three of the four documents by word: a sparse list no longer than the
    # statistic's head says nothing about how sharp it is, so that query teaches nothing
    retriever.retrieve("shop", "cancel my orders", top_k=4)
    assert retriever.calibration.queries("shop") == 0
    for query in ("cancel orders money support", "orders money cancel question"):  # all four match
        hits = retriever.retrieve("shop", query, top_k=4)
        assert all(h.sparse_score is not None and h.dense_score is not None for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert retriever.calibration.queries("shop") == 2
    assert retriever.calibration.queries("other-shop") == 0
    w_sparse, w_dense, w_bm25 = retriever.calibration.weights("shop")
    assert w_sparse + w_dense == pytest.approx(2.0)
    assert (w_sparse, w_dense) != pytest.approx((1.0, 1.0))  # learned, not the default
    assert w_bm25 <= min(w_sparse, w_dense)
    assert retriever.calibration.weights("other-shop") == (1.0, 1.0, 1.0)
