"""One suite, every ``VectorIndex`` backend: Qdrant Edge in a temp dir and qdrant-client's local mode (the
stand-in for a Qdrant server, which cannot run here). Small hand-made vectors, so expected rankings and scores
are computed by hand, and the whole suite runs in seconds."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import qdrant_edge as qe
from qdrant_client import QdrantClient
from qdrant_client.http import models as qm

import ragbot.index.edge as edge_module
import ragbot.index.remote as remote_module
from ragbot.index.base import IndexClosedError, IndexConfigError, VectorIndex
from ragbot.index.edge import EdgeIndex
from ragbot.index.points import SOURCE_FIELD, TENANT_FIELD, PointFormatError, chunk_point_id, point_id
from ragbot.index.qdrant_base import Fused, QdrantIndexBase, Search, StoredPoint
from ragbot.index.remote import QdrantServerIndex
from ragbot.retrieval.fusion import rrf, sort_scores
from ragbot.types import Chunk, EncodedChunk, SparseVector

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant"),
    pytest.mark.filterwarnings("ignore:Local mode performs exact"),
]

A, B = "bot-a", "bot-b"


class Backend:
    """Opens (and re-opens) one backend's index on the same storage, and closes whatever it opened."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        self.root = root
        self._clients: list[QdrantClient] = []
        self._indexes: list[VectorIndex] = []

    def open(self, *, lexical: bool = True) -> VectorIndex:
        """``lexical=False``: the two-vector layout of collections created before BM25."""
        index: VectorIndex
        if self.kind == "edge":
            index = EdgeIndex(self.root, "contract", lexical=lexical)
        else:
            for client in self._clients:  # local mode locks its folder: one client at a time
                client.close()
            client = QdrantClient(path=str(self.root / "qdrant-local"))
            self._clients.append(client)
            index = QdrantServerIndex(client=client, collection="contract", lexical=lexical)
        self._indexes.append(index)
        return index

    def reopen(self, index: VectorIndex) -> VectorIndex:
        index.close()
        return self.open()

    def close_all(self) -> None:
        for index in self._indexes:
            index.close()
        for client in self._clients:
            client.close()


@pytest.fixture(params=["edge", "qdrant-client-local"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = Backend(request.param, tmp_path)
    yield b
    b.close_all()


@pytest.fixture
def index(backend: Backend) -> VectorIndex:
    idx = backend.open()
    idx.ensure_collection(4)
    return idx


def item(
    bot: str,
    source: str,
    n: int,
    sparse: dict[int, float],
    dense: tuple[float, ...],
    *,
    text: str | None = None,
    **fields: object,
) -> EncodedChunk:
    uri = f"https://example.org/{source}"
    body = text if text is not None else f"{source} chunk {n}"
    chunk = Chunk(
        id=chunk_point_id(bot, uri, n, body),
        bot_id=bot,
        source_id=source,
        uri=uri,
        title=f"Title of {source}",
        text=body,
        chunk_index=n,
        **fields,  # type: ignore[arg-type]
    )
    keys = sorted(sparse)
    return EncodedChunk(chunk, SparseVector(tuple(keys), tuple(sparse[k] for k in keys)), dense)


def sv(weights: dict[int, float]) -> SparseVector:
    keys = sorted(weights)
    return SparseVector(tuple(keys), tuple(weights[k] for k in keys))


# Three documents of bot A where sparse and dense disagree on the order.
DOC1 = item(A, "doc1", 0, {1: 2.0, 2: 1.0}, (1.0, 0.0, 0.0, 0.0))
DOC2 = item(A, "doc2", 0, {1: 1.0, 3: 3.0}, (0.0, 1.0, 0.0, 0.0))
DOC3 = item(A, "doc2", 1, {2: 0.5, 4: 1.0}, (0.6, 0.8, 0.0, 0.0))
QUERY_SPARSE = sv({1: 1.0, 3: 0.5})  # dots: doc1 2.0, doc2 2.5, doc3 0 (no shared term)
QUERY_DENSE = (1.0, 0.0, 0.0, 0.0)  # cosines: doc1 1.0, doc3 0.6, doc2 0.0
QUERY_BM25 = sv({100: 1.0, 101: 1.0})  # BM25 queries weigh each term 1; the engine multiplies by IDF


def lexical(encoded: EncodedChunk, weights: dict[int, float]) -> EncodedChunk:
    """The item with a BM25 vector (saturated term frequencies, as ``Bm25Encoder`` writes them)."""
    return dataclasses.replace(encoded, bm25=sv(weights))


def idf(n: int, total: int) -> float:
    """Qdrant's IDF modifier: ln(1 + (N - n + 0.5) / (n + 0.5)) over the points holding the vector."""
    return math.log(1.0 + (total - n + 0.5) / (n + 0.5))


# Four chunks of bot A for BM25: term 100 is in every one, term 101 only in LEX1. Raw dot products rank
# LEX2 first (3.0 against 2.0); with IDF the rare term decides and LEX1 wins.
LEX1 = lexical(item(A, "lex1", 0, {1: 1.0}, (0.0, 0.0, 1.0, 0.0)), {100: 1.0, 101: 1.0})
LEX2 = lexical(item(A, "lex2", 0, {1: 2.0}, (0.0, 0.0, 0.0, 1.0)), {100: 3.0})
LEX3 = lexical(item(A, "lex3", 0, {5: 1.0}, (1.0, 0.0, 0.0, 0.0)), {100: 1.2, 102: 0.5})
LEX4 = lexical(item(A, "lex4", 0, {5: 0.5}, (0.0, 1.0, 0.0, 0.0)), {100: 1.0})


def ids(hits: list) -> list[str]:  # type: ignore[type-arg]
    return [h.chunk.id for h in hits]


def test_reads_on_a_fresh_store_find_nothing(backend: Backend) -> None:
    fresh = backend.open()
    assert fresh.count(A) == 0
    assert fresh.search_sparse(A, QUERY_SPARSE, 5) == []
    assert fresh.hybrid_search(A, QUERY_SPARSE, QUERY_DENSE, 5, 10) == []
    assert fresh.sparse_vectors(A, [DOC1.chunk.id]) == {}
    fresh.delete_source(A, "doc1")  # nothing to delete is not an error


def test_upsert_creates_the_collection_and_reupsert_does_not_duplicate(backend: Backend) -> None:
    idx = backend.open()
    idx.upsert([DOC1, DOC2, DOC3])  # no ensure_collection first: the dimension comes from the items
    assert idx.count(A) == 3
    idx.upsert([DOC1, DOC2, DOC3])
    assert idx.count(A) == 3
    assert idx.count(A, source_id="doc2") == 2


def test_reupsert_with_the_same_id_replaces_payload_and_vectors(index: VectorIndex) -> None:
    index.upsert([DOC1])
    changed = EncodedChunk(
        Chunk(**{**_fields(DOC1.chunk), "title": "New title"}), sv({9: 1.0}), (0.0, 0.0, 1.0, 0.0)
    )
    index.upsert([changed])
    assert index.count(A) == 1
    [hit] = index.search_dense(A, (0.0, 0.0, 1.0, 0.0), 5)
    assert hit.chunk.title == "New title"
    assert hit.dense_score == pytest.approx(1.0, abs=1e-5)
    assert index.sparse_vectors(A, [DOC1.chunk.id])[DOC1.chunk.id] == sv({9: 1.0})


def test_sparse_search_ranks_by_dot_product(index: VectorIndex) -> None:
    index.upsert([DOC1, DOC2, DOC3])
    hits = index.search_sparse(A, QUERY_SPARSE, 10)
    assert ids(hits) == [DOC2.chunk.id, DOC1.chunk.id]  # doc3 shares no term with the query
    assert [h.score for h in hits] == pytest.approx([2.5, 2.0])
    assert [h.sparse_score for h in hits] == pytest.approx([2.5, 2.0])
    assert [h.sparse_rank for h in hits] == [1, 2]
    assert all(h.dense_score is None for h in hits)


def test_dense_search_ranks_by_cosine(index: VectorIndex) -> None:
    index.upsert([DOC1, DOC2, DOC3])
    hits = index.search_dense(A, (2.0, 0.0, 0.0, 0.0), 10)  # not unit length: cosine normalises
    assert ids(hits) == [DOC1.chunk.id, DOC3.chunk.id, DOC2.chunk.id]
    assert [h.score for h in hits] == pytest.approx([1.0, 0.6, 0.0], abs=1e-5)
    assert [h.dense_rank for h in hits] == [1, 2, 3]
    assert index.search_dense(A, QUERY_DENSE, 1) == hits[:1]


def test_hybrid_rrf_matches_textbook_rrf_over_both_rankings(index: VectorIndex) -> None:
    index.upsert([DOC1, DOC2, DOC3])
    hits = index.hybrid_search(A, QUERY_SPARSE, QUERY_DENSE, limit=3, prefetch_limit=10, rrf_k=60)
    sparse_rank = ids(index.search_sparse(A, QUERY_SPARSE, 10))
    dense_rank = ids(index.search_dense(A, QUERY_DENSE, 10))
    expected = sort_scores(rrf([sparse_rank, dense_rank], k=60))
    assert ids(hits) == [doc for doc, _ in expected]
    assert [h.score for h in hits] == pytest.approx([s for _, s in expected], rel=1e-5)
    top = hits[0]  # doc1: sparse rank 2, dense rank 1
    assert top.chunk.id == DOC1.chunk.id
    assert (top.sparse_rank, top.dense_rank) == (2, 1)
    assert top.sparse_score == pytest.approx(2.0)
    assert top.dense_score == pytest.approx(1.0, abs=1e-5)
    doc3 = next(h for h in hits if h.chunk.id == DOC3.chunk.id)
    assert doc3.sparse_score is None
    assert doc3.sparse_rank is None


def test_hybrid_respects_limit_prefetch_limit_and_rrf_k(index: VectorIndex) -> None:
    index.upsert([DOC1, DOC2, DOC3])
    assert len(index.hybrid_search(A, QUERY_SPARSE, QUERY_DENSE, limit=2, prefetch_limit=10)) == 2
    only_tops = index.hybrid_search(A, QUERY_SPARSE, QUERY_DENSE, limit=10, prefetch_limit=1)
    assert set(ids(only_tops)) == {DOC2.chunk.id, DOC1.chunk.id}  # the top of each list
    k1 = index.hybrid_search(A, QUERY_SPARSE, QUERY_DENSE, limit=1, prefetch_limit=10, rrf_k=1)
    assert k1[0].score == pytest.approx(1 / (1 + 2) + 1 / (1 + 1), rel=1e-5)


def test_hybrid_dbsf_fuses_in_the_engine(index: VectorIndex) -> None:
    index.upsert([DOC1, DOC2, DOC3])
    hits = index.hybrid_search(A, QUERY_SPARSE, QUERY_DENSE, limit=3, prefetch_limit=10, fusion="dbsf")
    assert set(ids(hits)) == {DOC1.chunk.id, DOC2.chunk.id, DOC3.chunk.id}
    assert hits[0].chunk.id == DOC1.chunk.id  # high in both lists
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_hybrid_candidates_carry_both_exact_scores(index: VectorIndex) -> None:
    index.upsert([DOC1, DOC2, DOC3])
    # Top 1 of each list: doc2 (sparse 2.5) and doc1 (dense 1.0); each is rescored by the other retriever.
    got = {c.chunk_id: c for c in index.hybrid_candidates(A, QUERY_SPARSE, QUERY_DENSE, limit=1)}
    assert set(got) == {DOC1.chunk.id, DOC2.chunk.id}
    doc1, doc2 = got[DOC1.chunk.id], got[DOC2.chunk.id]
    assert (doc1.sparse_rank, doc1.dense_rank, doc2.sparse_rank, doc2.dense_rank) == (None, 1, 1, None)
    assert doc1.sparse_score == pytest.approx(2.0)
    assert doc1.dense_score == pytest.approx(1.0, abs=1e-5)
    assert doc2.sparse_score == pytest.approx(2.5)
    assert doc2.dense_score == pytest.approx(0.0, abs=1e-5)
    everything = index.hybrid_candidates(A, QUERY_SPARSE, QUERY_DENSE, limit=10)
    doc3 = next(c for c in everything if c.chunk_id == DOC3.chunk.id)
    assert doc3.sparse_score == 0.0  # shares no term with the query
    assert doc3.sparse_rank is None
    assert doc3.dense_rank == 2
    assert index.hybrid_candidates(B, QUERY_SPARSE, QUERY_DENSE, limit=10) == []
    dense_only = index.hybrid_candidates(A, SparseVector((), ()), QUERY_DENSE, limit=10)
    assert [c.dense_rank for c in dense_only] == [1, 2, 3]
    assert all(c.sparse_rank is None and c.sparse_score == 0.0 and c.exact for c in dense_only)
    assert all(c.exact for c in [*got.values(), *everything])


def test_hybrid_candidates_rescore_only_what_the_caller_names(index: VectorIndex) -> None:
    index.upsert([DOC1, DOC2, DOC3])
    seen: list[Sequence[list[tuple[str, float]]]] = []

    def only_doc1(lists: Sequence[list[tuple[str, float]]]) -> set[str]:
        seen.append(lists)
        return {DOC1.chunk.id}

    got = {c.chunk_id: c for c in index.hybrid_candidates(A, QUERY_SPARSE, QUERY_DENSE, 1, only_doc1)}
    [(sparse, dense)] = seen
    assert [c for c, _ in sparse] == [DOC2.chunk.id]
    assert [c for c, _ in dense] == [DOC1.chunk.id]
    doc1, doc2 = got[DOC1.chunk.id], got[DOC2.chunk.id]
    assert doc1.exact
    assert doc1.sparse_score == pytest.approx(2.0)  # rescored exactly
    assert not doc2.exact
    assert doc2.dense_score == pytest.approx(dense[0][1])  # the dense list's lowest score: a bound
    nothing = index.hybrid_candidates(A, QUERY_SPARSE, QUERY_DENSE, 1, lambda lists: ())
    assert not any(c.exact for c in nothing)


def test_a_point_the_engine_fails_to_rescore_densely_is_an_error_not_a_guess(
    index: VectorIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    index.upsert([DOC1, DOC2, DOC3])
    search = index._search  # type: ignore[attr-defined]
    calls: list[int] = []

    def losing_rescores(requests: list[object]) -> list[list[object]]:
        calls.append(len(requests))
        return search(requests) if len(calls) == 1 else [[] for _ in requests]

    monkeypatch.setattr(index, "_search", losing_rescores)
    # A sparse rescore may legitimately find nothing (no shared term); a dense one always scores.
    with pytest.raises(ValueError, match="not rescored by the dense retriever"):
        index.hybrid_candidates(A, QUERY_SPARSE, QUERY_DENSE, limit=1)
    assert calls == [2, 2]


def test_chunks_by_id_stay_within_the_bot(index: VectorIndex) -> None:
    twin = item(B, "doc1", 0, {1: 2.0}, (1.0, 0.0, 0.0, 0.0))
    index.upsert([DOC1, DOC2, twin])
    got = index.chunks(A, [DOC2.chunk.id, DOC1.chunk.id, twin.chunk.id, "missing", DOC1.chunk.id])
    assert got == {DOC1.chunk.id: DOC1.chunk, DOC2.chunk.id: DOC2.chunk}
    assert index.chunks(B, [DOC1.chunk.id]) == {}
    assert index.chunks(A, []) == {}


def test_hybrid_with_an_empty_sparse_query_falls_back_to_dense(index: VectorIndex) -> None:
    index.upsert([DOC1, DOC2, DOC3])
    hits = index.hybrid_search(A, SparseVector((), ()), QUERY_DENSE, limit=3, prefetch_limit=10)
    assert ids(hits) == [DOC1.chunk.id, DOC3.chunk.id, DOC2.chunk.id]
    assert index.search_sparse(A, SparseVector((), ()), 3) == []


def test_tenants_never_see_each_other(index: VectorIndex) -> None:
    # Same document, same text, in two bots: distinct points, each visible to its own bot only.
    twin = item(B, "doc1", 0, {1: 2.0, 2: 1.0}, (1.0, 0.0, 0.0, 0.0))
    assert twin.chunk.id != DOC1.chunk.id
    index.upsert([DOC1, DOC2, twin])
    for search in (
        lambda bot: index.search_sparse(bot, QUERY_SPARSE, 10),
        lambda bot: index.search_dense(bot, QUERY_DENSE, 10),
        lambda bot: index.hybrid_search(bot, QUERY_SPARSE, QUERY_DENSE, 10, 10),
    ):
        assert {h.chunk.bot_id for h in search(A)} == {A}
        assert ids(search(B)) == [twin.chunk.id]
    assert (index.count(A), index.count(B), index.count("nobody")) == (2, 1, 0)
    assert index.sparse_vectors(B, [DOC1.chunk.id]) == {}
    index.delete_chunks(B, [DOC1.chunk.id])  # bot B cannot delete bot A's chunk by id
    index.delete_source(B, "doc2")
    assert index.count(A) == 2
    index.delete_bot(B)
    assert (index.count(A), index.count(B)) == (2, 0)


def test_delete_source_removes_every_chunk_of_that_document_only(index: VectorIndex) -> None:
    index.upsert([DOC1, DOC2, DOC3])
    index.delete_source(A, "doc2")
    assert index.count(A) == 1
    assert index.count(A, source_id="doc2") == 0
    assert ids(index.search_dense(A, QUERY_DENSE, 10)) == [DOC1.chunk.id]


def test_delete_chunks_by_id(index: VectorIndex) -> None:
    index.upsert([DOC1, DOC2, DOC3])
    index.delete_chunks(A, [DOC3.chunk.id, "never-stored"])
    index.delete_chunks(A, [])
    assert index.count(A) == 2
    assert index.count(A, source_id="doc2") == 1


def test_payload_round_trip_keeps_provenance(index: VectorIndex) -> None:
    pdf = item(
        A,
        "manual.pdf",
        3,
        {5: 1.0},
        (0.0, 0.0, 0.0, 1.0),
        text="Torque: 12 Nm",
        page=7,
        heading_path=("Install", "Bolts"),
        char_start=120,
        char_end=133,
    )
    video = item(A, "talk", 0, {6: 1.0}, (0.0, 0.0, 1.0, 0.0), text="ünïcode ✓", start_s=61.5, end_s=75.25)
    local = EncodedChunk(
        Chunk(**{**_fields(pdf.chunk), "id": "a-plain-id", "uri": "/srv/docs/manual.pdf"}),
        sv({7: 1.0}),
        (0.0, 0.0, 0.5, 0.5),
    )
    index.upsert([pdf, video, local])
    found = {h.chunk.id: h.chunk for h in index.search_dense(A, (0.0, 0.0, 1.0, 1.0), 10)}
    assert found[pdf.chunk.id] == pdf.chunk
    assert found[video.chunk.id] == video.chunk
    assert found["a-plain-id"] == local.chunk  # a non-UUID chunk id comes back exactly as given
    assert found["a-plain-id"].path == "/srv/docs/manual.pdf"
    assert found["a-plain-id"].url is None
    assert found[pdf.chunk.id].url == "https://example.org/manual.pdf"


def test_sparse_vectors_returns_what_was_stored(index: VectorIndex) -> None:
    index.upsert([DOC1, DOC2, DOC3])
    got = index.sparse_vectors(A, [DOC1.chunk.id, DOC3.chunk.id, DOC1.chunk.id, "missing"])
    assert got == {DOC1.chunk.id: DOC1.sparse, DOC3.chunk.id: DOC3.sparse}


def test_data_survives_close_and_reopen(backend: Backend, index: VectorIndex) -> None:
    index.upsert([DOC1, DOC2, DOC3])
    index.delete_chunks(A, [DOC3.chunk.id])
    reopened = backend.reopen(index)
    assert reopened.count(A) == 2
    assert ids(reopened.search_sparse(A, QUERY_SPARSE, 10)) == [DOC2.chunk.id, DOC1.chunk.id]
    reopened.upsert([DOC3])
    assert reopened.count(A) == 3


def test_a_store_with_another_dense_size_is_refused(backend: Backend, index: VectorIndex) -> None:
    index.upsert([DOC1])
    with pytest.raises(IndexConfigError):
        index.ensure_collection(8)
    reopened = backend.reopen(index)
    with pytest.raises(IndexConfigError):
        reopened.ensure_collection(8)
    reopened.ensure_collection(4)
    assert reopened.count(A) == 1


def test_bad_input_is_refused_and_writes_nothing(index: VectorIndex) -> None:
    index.upsert([DOC1])
    bad_items = [
        item(A, "x", 0, {1: math.nan}, (1.0, 0.0, 0.0, 0.0)),
        item(A, "x", 0, {1: 1.0}, (math.inf, 0.0, 0.0, 0.0)),
        item(A, "x", 0, {1: 1.0}, (0.0, 0.0, 0.0, 0.0)),
        item(A, "x", 0, {1: 1.0}, (1.0, 0.0, 0.0)),
        item("", "x", 0, {1: 1.0}, (1.0, 0.0, 0.0, 0.0)),
        EncodedChunk(DOC2.chunk, SparseVector((3, 1), (1.0, 1.0)), DOC2.dense),
    ]
    for bad in bad_items:
        with pytest.raises((PointFormatError, IndexConfigError)):
            index.upsert([DOC2, bad])  # a good item in the same batch is not written either
    assert index.count(A) == 1
    with pytest.raises(PointFormatError):
        index.search_dense("", QUERY_DENSE, 3)
    with pytest.raises(ValueError, match="limit"):
        index.hybrid_search(A, QUERY_SPARSE, QUERY_DENSE, 0, 10)
    with pytest.raises(ValueError, match="fusion"):
        index.hybrid_search(A, QUERY_SPARSE, QUERY_DENSE, 3, 10, fusion="mean")  # type: ignore[arg-type]
    with pytest.raises(PointFormatError):
        index.search_dense(A, (1.0, 0.0), 3)


def test_a_closed_index_refuses_calls(index: VectorIndex) -> None:
    index.upsert([DOC1])
    index.close()
    index.close()
    with pytest.raises(IndexClosedError):
        index.count(A)
    with pytest.raises(IndexClosedError):
        index.upsert([DOC2])


def _fields(chunk: Chunk) -> dict[str, object]:
    return {name: getattr(chunk, name) for name in Chunk.__dataclass_fields__}


# --- Edge only: the embedded shard serves a threaded API server in-process ---------------------------


def test_edge_serves_concurrent_queries_while_writing(tmp_path: Path) -> None:
    index = EdgeIndex(tmp_path, "threads")
    index.upsert([DOC1, DOC2, DOC3])
    errors: list[BaseException] = []
    stop = threading.Event()

    def query() -> None:
        while not stop.is_set():
            try:
                assert index.hybrid_search(A, QUERY_SPARSE, QUERY_DENSE, 3, 10)[0].chunk.bot_id == A
                assert index.search_dense(B, QUERY_DENSE, 3) == []
            except BaseException as exc:  # reported below: a thread cannot fail the test itself
                errors.append(exc)
                return

    readers = [threading.Thread(target=query) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        for n in range(20):
            index.upsert(
                [item(A, f"bulk{n}", i, {10 + i: 1.0}, (0.0, 0.0, 1.0, float(i))) for i in range(25)]
            )
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert errors == []
    assert index.count(A) == 3 + 20 * 25
    index.close()  # waits for the background optimiser


# --- tenancy at the engine seam: no query without the bot filter reaches the engine ----------------------
#
# Every engine call of both backends goes through the seam of ``QdrantIndexBase`` (``_search``, ``_delete``,
# ``_count``, ``_fetch``), and each adapter translates the neutral requests into its client's (``_request``).
# The recorder wraps both and keeps every filter that reaches the engine; each must pin ``TENANT_FIELD`` to
# the bot the caller named. ``_fetch`` reads by id (the engine has no filter there): what the by-id reads
# return must be the bot's own.

#: Bot B's copy of DOC1 (same document, same text): what a leak would return to bot A.
TWIN = item(B, "doc1", 0, {1: 2.0, 2: 1.0}, (1.0, 0.0, 0.0, 0.0))


class EngineRecorder:
    """Records every filter passed through an index's engine seam and its client translation."""

    def __init__(self) -> None:
        self.filters: list[tuple[str, Any]] = []  # (where, filter)
        self.seams: set[str] = set()
        self.fetched: list[StoredPoint] = []

    def attach(self, index: Any, patch: pytest.MonkeyPatch) -> None:
        search, delete, count, fetch = index._search, index._delete, index._count, index._fetch

        def _search(requests: list[Search[Any] | Fused[Any]]) -> Any:
            self.seams.add("_search")
            for request in requests:
                searches = [request, *request.prefetch] if isinstance(request, Fused) else [request]
                self.filters += [("_search", s.filter) for s in searches]
            return search(requests)

        def _delete(selection: Any) -> None:
            self.seams.add("_delete")
            self.filters.append(("_delete", selection))
            delete(selection)

        def _count(selection: Any) -> int:
            self.seams.add("_count")
            self.filters.append(("_count", selection))
            return int(count(selection))

        def _fetch(point_ids: list[str], payload: Any, vectors: Any) -> list[StoredPoint]:
            self.seams.add("_fetch")
            found = fetch(point_ids, payload, vectors)
            self.fetched += found
            return list(found)

        for name, wrapper in (
            ("_search", _search),
            ("_delete", _delete),
            ("_count", _count),
            ("_fetch", _fetch),
        ):
            patch.setattr(index, name, wrapper)
        for module in (edge_module, remote_module):  # the client requests the seam builds
            translate = module._request

            def recording(request: Any, translate: Any = translate) -> Any:
                engine = translate(request)
                self.filters += [("engine", f) for f in _engine_filters(engine)]
                return engine

            patch.setattr(module, "_request", recording)


def _engine_filters(request: Any) -> Iterator[Any]:
    """A client query's filter and its prefetches' (qdrant-client: ``prefetch``; Edge: ``prefetches``)."""
    yield request.filter
    nested = getattr(request, "prefetch", None) or getattr(request, "prefetches", None) or []
    for prefetch in nested if isinstance(nested, list) else [nested]:
        yield from _engine_filters(prefetch)


def pinned_tenants(selection: Any) -> list[str]:
    """The bot ids a filter's ``must`` conditions pin ``TENANT_FIELD`` to (either client's types)."""
    must = getattr(selection, "must", None) or []
    return [
        condition.match.value
        for condition in (must if isinstance(must, list) else [must])
        if isinstance(condition, qm.FieldCondition | qe.FieldCondition)
        and condition.key == TENANT_FIELD
        and isinstance(condition.match, qm.MatchValue | qe.MatchValue)
    ]


def tenant_violations(recorder: EngineRecorder, bot: str, returned: Iterable[str]) -> list[str]:
    """What reached the engine without the bot's filter, and what by-id reads returned of other bots."""
    found = [
        f"{where}: {selection!r}"
        for where, selection in recorder.filters
        if pinned_tenants(selection) != [bot]
    ]
    found += [f"by-id read returned bot {TWIN.chunk.bot_id}'s chunk" for c in returned if c == TWIN.chunk.id]
    return found


def tenant_scoped_methods() -> set[str]:
    """The ``VectorIndex`` methods that take a bot: a method added later must be exercised below too."""
    return {
        name
        for name, member in inspect.getmembers(VectorIndex, inspect.isfunction)
        if not name.startswith("_") and "bot_id" in inspect.signature(member).parameters
    }


def exercise_every_tenant_method(index: VectorIndex, bot: str) -> tuple[set[str], list[str]]:
    """Calls each tenant-scoped method for ``bot`` (reads first, deletes last); returns the methods called
    and the chunk ids the by-id reads returned."""
    called: set[str] = set()

    def call(name: str, *args: Any, **kwargs: Any) -> Any:
        called.add(name)
        return getattr(index, name)(bot, *args, **kwargs)

    call("hybrid_search", QUERY_SPARSE, QUERY_DENSE, 3, 10)
    call("hybrid_search", QUERY_SPARSE, QUERY_DENSE, 3, 10, fusion="dbsf")
    call("hybrid_search", SparseVector((), ()), QUERY_DENSE, 3, 10)
    call("hybrid_candidates", QUERY_SPARSE, QUERY_DENSE, 1)  # each top list misses one: exact rescoring
    call("hybrid_candidates", QUERY_SPARSE, QUERY_DENSE, 1, lambda lists: [c for ls in lists for c, _ in ls])
    call("hybrid_candidates", QUERY_SPARSE, QUERY_DENSE, 1, bm25=QUERY_BM25)
    call("hybrid_search", QUERY_SPARSE, QUERY_DENSE, 3, 10, bm25=QUERY_BM25)
    call("search_sparse", QUERY_SPARSE, 10)
    call("search_dense", QUERY_DENSE, 10)
    call("search_bm25", QUERY_BM25, 10)
    ids = [DOC1.chunk.id, TWIN.chunk.id]
    returned = [*call("chunks", ids), *call("sparse_vectors", ids), *call("bm25_vectors", ids)]
    call("count")
    call("count", source_id="doc2")
    call("delete_chunks", [DOC3.chunk.id, TWIN.chunk.id])
    call("delete_source", "doc2")
    call("delete_bot")
    return called, returned


def test_every_engine_call_carries_the_bot_filter(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    index = backend.open()
    index.upsert([DOC1, DOC2, DOC3, TWIN])
    recorder = EngineRecorder()
    with monkeypatch.context() as patch:
        recorder.attach(index, patch)
        called, returned = exercise_every_tenant_method(index, A)
    assert called == tenant_scoped_methods()
    assert recorder.seams == {"_search", "_delete", "_count", "_fetch"}
    assert {where for where, _ in recorder.filters} == {"_search", "_delete", "_count", "engine"}
    assert tenant_violations(recorder, A, returned) == []
    assert TWIN.chunk.id in {str(p.payload.get("chunk_id")) for p in recorder.fetched}  # asked for, kept out
    assert sorted(returned) == [DOC1.chunk.id] * 3  # chunks, sparse_vectors, bm25_vectors
    assert (index.count(A), index.count(B)) == (0, 1)  # bot A's deletes left bot B's twin alone


def _leaky_filter(
    self: Any, bot_id: str, *, source_id: str | None = None, point_ids: Iterable[str] = ()
) -> Any:
    """``_filter`` with the tenant condition dropped: the bug the check above exists to catch."""
    conditions = [self._match(SOURCE_FIELD, source_id)] if source_id is not None else []
    if ids := sorted(point_ids):
        conditions.append(self._has_id(ids))
    return self._all_of(conditions)


def _leaky_retrieve(self: Any, bot_id: str, chunk_ids: Any, payload: Any, vectors: Any) -> list[StoredPoint]:
    """``_retrieve`` without the tenant check on what the engine returned."""
    return list(self._fetch([point_id(c) for c in chunk_ids], payload, vectors))


@pytest.mark.parametrize("broken", ["_filter", "_retrieve"])
def test_the_bot_filter_check_catches_a_backend_that_drops_it(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    """The negative control: the same check fails on a subclass that leaves the tenant out."""
    index = backend.open()
    base = type(index)
    assert issubclass(base, QdrantIndexBase)
    leak = {"_filter": _leaky_filter, "_retrieve": _leaky_retrieve}[broken]
    index.__class__ = type(f"Leaky{base.__name__}", (base,), {broken: leak})
    index.upsert([DOC1, DOC2, DOC3, TWIN])
    if broken == "_filter":
        assert TWIN.chunk.id in ids(index.search_dense(A, QUERY_DENSE, 10))  # the leak is real
    recorder = EngineRecorder()
    with monkeypatch.context() as patch:
        recorder.attach(index, patch)
        _, returned = exercise_every_tenant_method(index, A)
    violations = tenant_violations(recorder, A, returned)
    assert violations
    if broken == "_filter":
        assert {v.split(":", 1)[0] for v in violations} == {"_search", "_delete", "_count", "engine"}
    else:
        assert violations == [f"by-id read returned bot {B}'s chunk"] * 3


# --- BM25: the third named vector, with the engine's IDF modifier ------------------------------------------


def test_the_idf_modifier_applies_inverse_document_frequency_at_query_time(index: VectorIndex) -> None:
    assert index.has_bm25()
    index.upsert([LEX1, LEX2, LEX3, LEX4])
    hits = index.search_bm25(A, QUERY_BM25, 4)
    assert ids(hits) == [LEX1.chunk.id, LEX2.chunk.id, LEX3.chunk.id, LEX4.chunk.id]  # raw dots: LEX2 first
    common, rare = idf(4, 4), idf(1, 4)
    expected = [common + rare, 3.0 * common, 1.2 * common, 1.0 * common]
    assert [h.score for h in hits] == pytest.approx(expected, rel=1e-4)
    assert [h.bm25_score for h in hits] == pytest.approx(expected, rel=1e-4)
    assert [h.bm25_rank for h in hits] == [1, 2, 3, 4]
    assert index.search_bm25(A, SparseVector((), ()), 4) == []
    assert index.search_bm25(B, QUERY_BM25, 4) == []
    stored = index.bm25_vectors(A, [LEX1.chunk.id, "missing"])
    assert stored == {LEX1.chunk.id: LEX1.bm25}


def test_hybrid_candidates_add_the_bm25_list_with_exact_rescoring(index: VectorIndex) -> None:
    index.upsert([LEX1, LEX2, LEX3, LEX4])
    query_sparse = sv({5: 1.0})  # LEX3, LEX4
    query_dense = (1.0, 0.0, 0.0, 0.0)  # LEX3 first
    got = {c.chunk_id: c for c in index.hybrid_candidates(A, query_sparse, query_dense, 1, bm25=QUERY_BM25)}
    assert set(got) == {LEX3.chunk.id, LEX1.chunk.id}  # sparse and dense top: LEX3
    lex1 = got[LEX1.chunk.id]
    assert (lex1.bm25_rank, lex1.sparse_rank, lex1.dense_rank) == (1, None, None)
    assert lex1.bm25_score == pytest.approx(idf(4, 4) + idf(1, 4), rel=1e-4)
    assert lex1.sparse_score == 0.0  # rescored: no shared term
    assert lex1.dense_score == pytest.approx(0.0, abs=1e-5)
    lex3 = got[LEX3.chunk.id]
    assert lex3.bm25_rank is None
    assert lex3.bm25_score == pytest.approx(1.2 * idf(4, 4), rel=1e-4)  # rescored exactly, IDF included
    assert all(c.exact for c in got.values())
    seen: list[int] = []
    index.hybrid_candidates(
        A, query_sparse, query_dense, 1, lambda lists: seen.append(len(lists)) or (), QUERY_BM25
    )
    assert seen == [3]
    without = index.hybrid_candidates(A, query_sparse, query_dense, 1)
    assert all(c.bm25_score is None and c.bm25_rank is None for c in without)


def test_engine_fusion_takes_the_bm25_prefetch(index: VectorIndex) -> None:
    index.upsert([LEX1, LEX2, LEX3, LEX4])
    hits = index.hybrid_search(A, sv({5: 1.0}), (1.0, 0.0, 0.0, 0.0), 4, 10, bm25=QUERY_BM25)
    by_id = {h.chunk.id: h for h in hits}
    assert by_id[LEX1.chunk.id].bm25_rank == 1
    assert by_id[LEX3.chunk.id].dense_rank == 1
    two = index.hybrid_search(A, sv({5: 1.0}), (1.0, 0.0, 0.0, 0.0), 4, 10)
    assert all(h.bm25_score is None for h in two)
    assert LEX1.chunk.id in by_id  # found by BM25 alone


def test_a_collection_from_before_bm25_keeps_working_and_rebuilds_from_its_payloads(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    old = backend.open(lexical=False)
    old.upsert([DOC1, DOC2, DOC3, TWIN])
    assert not old.has_bm25()
    upgraded = backend.reopen(old)
    with caplog.at_level(logging.WARNING):
        assert not upgraded.has_bm25()
        assert not upgraded.has_bm25()
    warnings = [r for r in caplog.records if "ragbot reindex" in r.getMessage()]
    assert len(warnings) == 1  # one clear warning, not one per query
    # Two signals: a BM25 query is ignored, nothing fails.
    candidates = upgraded.hybrid_candidates(A, QUERY_SPARSE, QUERY_DENSE, 10, bm25=QUERY_BM25)
    assert {c.chunk_id for c in candidates} == {DOC1.chunk.id, DOC2.chunk.id, DOC3.chunk.id}
    assert all(c.bm25_score is None for c in candidates)
    assert upgraded.search_bm25(A, QUERY_BM25, 5) == []
    assert upgraded.bm25_vectors(A, [DOC1.chunk.id]) == {}
    assert len(upgraded.hybrid_search(A, QUERY_SPARSE, QUERY_DENSE, 3, 10, bm25=QUERY_BM25)) == 3
    upgraded.upsert([lexical(item(A, "new", 0, {1: 1.0}, (0.0, 0.0, 1.0, 0.0)), {101: 1.0})])
    assert upgraded.count(A) == 4
    # Rebuild from what is stored (the caller derives BM25 vectors from the payload text).
    stored = [batch for batch in upgraded.export(batch_size=2)]
    assert sum(len(b) for b in stored) == 5
    assert all(e.bm25 is None for b in stored for e in b)
    by_id = {e.chunk.id: e for b in stored for e in b}
    assert by_id[DOC1.chunk.id].chunk == DOC1.chunk
    assert by_id[DOC1.chunk.id].sparse == DOC1.sparse
    assert by_id[DOC1.chunk.id].dense == pytest.approx(DOC1.dense)
    added = {DOC1.chunk.id: {100: 1.0, 101: 1.0}, DOC2.chunk.id: {100: 1.0}}
    written = upgraded.rebuild(
        iter([[lexical(e, added.get(e.chunk.id, {100: 0.5})) for e in batch] for batch in stored])
    )
    assert written == 5
    assert upgraded.has_bm25()
    assert (upgraded.count(A), upgraded.count(B)) == (4, 1)
    assert ids(upgraded.search_bm25(A, QUERY_BM25, 1)) == [DOC1.chunk.id]
    assert upgraded.sparse_vectors(A, [DOC2.chunk.id]) == {DOC2.chunk.id: DOC2.sparse}
    assert ids(upgraded.search_dense(A, QUERY_DENSE, 1)) == [DOC1.chunk.id]
    again = backend.reopen(upgraded)
    assert again.has_bm25()
    assert ids(again.search_bm25(A, QUERY_BM25, 1)) == [DOC1.chunk.id]
