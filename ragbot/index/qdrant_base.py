"""The client-independent half of the Qdrant adapters: every ``VectorIndex`` method, written once.

Qdrant Edge (``ragbot.index.edge``) and a Qdrant server (``ragbot.index.remote``) share one data model (named
vectors, payload filters, prefetch + fusion); only the client objects differ. So validation, tenant filters,
component scores, candidate rescoring and payload mapping live here, where the two backends cannot drift
apart, and each adapter supplies the seam: filter conditions, running a batch of neutral ``Search``/``Fused``
requests, and writing, deleting, counting and retrieving points.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from ragbot.index.base import Candidate, FusionName, IndexClosedError, IndexConfigError, RescoreFilter
from ragbot.index.points import (
    BM25_VECTOR,
    CHUNK_ID_FIELD,
    DENSE_VECTOR,
    SOURCE_FIELD,
    SPARSE_VECTOR,
    TENANT_FIELD,
    check_bot_id,
    check_dense,
    check_search_limits,
    check_sparse,
    chunk_to_payload,
    payload_to_chunk,
    point_id,
    sparse_from_pairs,
)
from ragbot.index.scoring import (
    ScoredId,
    assemble_candidates,
    assemble_hits,
    check_fusion,
    chunk_id_of,
    engine_rrf_k,
)
from ragbot.types import Chunk, EncodedChunk, Hit, SparseVector

FilterT = TypeVar("FilterT")
QueryVector = SparseVector | list[float]

log = logging.getLogger(__name__)

#: The warning a collection without BM25 vectors gets, once per index.
LEGACY_WARNING = (
    "%s was created before the BM25 retriever: hybrid search uses two signals (SPLADE and dense) and "
    "exact names or other languages match less well; run `ragbot reindex` to add BM25 from the stored text"
)


@dataclass(frozen=True, slots=True)
class Search(Generic[FilterT]):
    """A nearest-neighbour query on one named vector, in the neutral form each adapter translates."""

    vector: QueryVector
    filter: FilterT
    limit: int
    with_payload: bool | list[str] = False
    exact: bool = False  # exact scoring, to rescore a few known ids
    #: The named vector to search; by default the query vector's type says which (sparse or dense).
    vector_name: str | None = None

    @property
    def using(self) -> str:
        if self.vector_name is not None:
            return self.vector_name
        return SPARSE_VECTOR if isinstance(self.vector, SparseVector) else DENSE_VECTOR


@dataclass(frozen=True, slots=True)
class Fused(Generic[FilterT]):
    """The single-vector searches as prefetches, fused inside the engine; hits come with their payload."""

    prefetch: tuple[Search[FilterT], ...]
    rrf_k: int | None  # the engine's k for RRF (see ``engine_rrf_k``); None fuses by DBSF
    filter: FilterT
    limit: int


@dataclass(frozen=True, slots=True)
class NewPoint:
    """A validated point, ready for the adapter to write."""

    point_id: str
    dense: list[float]
    sparse: SparseVector
    payload: dict[str, Any]
    bm25: SparseVector | None = None  # None: the point is written without a BM25 vector


@dataclass(frozen=True, slots=True)
class StoredPoint:
    """A point read back: its payload and, where they were asked for, its vectors."""

    payload: Mapping[str, Any]
    sparse: SparseVector | None = None
    bm25: SparseVector | None = None
    dense: list[float] | None = None


class EngineScoredPoint(Protocol):
    """What both clients' scored points have in common."""

    @property
    def id(self) -> object: ...
    @property
    def score(self) -> float: ...
    @property
    def payload(self) -> Mapping[str, Any] | None: ...


class EngineSparseVector(Protocol):
    """What both clients' sparse vectors have in common."""

    @property
    def indices(self) -> Sequence[int]: ...
    @property
    def values(self) -> Sequence[float]: ...


def scored_ids(points: Iterable[EngineScoredPoint]) -> list[ScoredId]:
    """An engine's ranked list, in the form ``assemble_hits``/``assemble_candidates`` take."""
    return [ScoredId(str(p.id), float(p.score), p.payload) for p in points]


def stored_sparse(
    vector: object, engine_type: type[EngineSparseVector], name: str = SPARSE_VECTOR
) -> SparseVector | None:
    """A sparse named vector of a retrieved record, or None where it was not asked for or is absent."""
    stored = vector.get(name) if isinstance(vector, dict) else None
    return sparse_from_pairs(stored.indices, stored.values) if isinstance(stored, engine_type) else None


def stored_point(payload: Mapping[str, Any] | None, vector: object, engine_type: type[Any]) -> StoredPoint:
    """A retrieved or scrolled record of either client as a ``StoredPoint``."""
    dense = vector.get(DENSE_VECTOR) if isinstance(vector, dict) else None
    return StoredPoint(
        payload or {},
        stored_sparse(vector, engine_type),
        stored_sparse(vector, engine_type, BM25_VECTOR),
        [float(v) for v in dense] if isinstance(dense, list) else None,
    )


class QdrantIndexBase(ABC, Generic[FilterT]):
    """``VectorIndex`` over any Qdrant client; ``FilterT`` is the client's filter type.

    Subclasses implement the abstract engine calls. Every read builds its filter with ``_filter``, so the
    tenant condition cannot be left out by one backend only.
    """

    def __init__(self, label: str, *, component_scores: bool, lexical: bool = True) -> None:
        """``label`` names the storage in error messages (a path, or a collection on a server).
        ``lexical``: create collections with the ``bm25`` vector and write and search it (False: the
        two-vector layout of earlier releases, for deployments that turn BM25 off)."""
        self._label = label
        self.component_scores = component_scores
        self._lexical = lexical
        #: Whether the stored collection has the ``bm25`` vector (None: not known yet / none stored).
        self._stored_bm25: bool | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._dim: int | None = None

    # --- engine seam -----------------------------------------------------------------------------

    @abstractmethod
    def _attach(self, dense_dim: int) -> int:
        """Open the stored collection or create it (called under the lock); its dense dimension."""

    @abstractmethod
    def _match(self, key: str, value: str) -> Any:
        """A condition: payload ``key`` equals ``value``."""

    @abstractmethod
    def _has_id(self, point_ids: list[str]) -> Any:
        """A condition: the point id is one of ``point_ids``."""

    @abstractmethod
    def _all_of(self, conditions: list[Any]) -> FilterT:
        """A filter that every condition must pass."""

    @abstractmethod
    def _search(self, requests: Sequence[Search[FilterT] | Fused[FilterT]]) -> list[list[ScoredId]]:
        """Run the requests as one batch, results in order; empty lists while no collection exists."""

    @abstractmethod
    def _write(self, points: Sequence[NewPoint]) -> None:
        """Upsert points into the collection, which exists by then."""

    @abstractmethod
    def _delete(self, selection: FilterT) -> None:
        """Delete the points the filter selects (nothing while no collection exists)."""

    @abstractmethod
    def _count(self, selection: FilterT) -> int:
        """Exact count of the points the filter selects (0 while no collection exists)."""

    @abstractmethod
    def _fetch(
        self, point_ids: list[str], payload: bool | list[str], vectors: bool | list[str]
    ) -> list[StoredPoint]:
        """The stored points among ``point_ids``, whichever bot they belong to."""

    @abstractmethod
    def _stored_has_bm25(self) -> bool | None:
        """Whether the stored collection has the ``bm25`` vector; None while no collection exists."""

    @abstractmethod
    def _scroll(self, offset: Any, limit: int) -> tuple[list[StoredPoint], Any]:
        """One page of every point with payload and vectors, and the next page's offset (None: last)."""

    @abstractmethod
    def _rebuild(self, points: Iterator[list[NewPoint]]) -> int | None:
        """Stage ``points`` in a new collection of the current layout, then swap it in for the old one (an
        empty ``points`` leaves no collection); the new dense dimension (None when nothing was written)."""

    # --- layout ----------------------------------------------------------------------------------

    def has_bm25(self) -> bool:
        if not self._lexical:
            return False
        if self._stored_bm25 is None:
            self._check_open()
            stored = self._stored_has_bm25()
            if stored is None:
                return True  # no collection yet: it will be created with BM25
            with self._lock:
                if self._stored_bm25 is None:
                    self._stored_bm25 = stored
                    if not stored:
                        log.warning(LEGACY_WARNING, self._label)
        return self._stored_bm25

    # --- lifecycle -------------------------------------------------------------------------------

    def ensure_collection(self, dense_dim: int) -> None:
        if dense_dim < 1:
            raise IndexConfigError(f"dense dimension must be positive, got {dense_dim}")
        with self._lock:
            self._check_open()
            if self._dim is None:
                self._dim = self._attach(dense_dim)
            if self._dim != dense_dim:
                raise IndexConfigError(
                    f"{self._label} stores {self._dim}-d dense vectors, got {dense_dim}-d; "
                    "re-index into a new collection"
                )

    # --- writes ----------------------------------------------------------------------------------

    def upsert(self, items: Sequence[EncodedChunk]) -> None:
        if not items:
            return
        dim = len(items[0].dense)
        self.ensure_collection(dim)
        bm25 = self.has_bm25()
        # all validated before anything is written
        self._write([_new_point(item, dim, bm25=bm25) for item in items])

    def delete_source(self, bot_id: str, source_id: str) -> None:
        self._delete(self._filter(bot_id, source_id=source_id))

    def delete_chunks(self, bot_id: str, chunk_ids: Sequence[str]) -> None:
        if chunk_ids:
            self._delete(self._filter(bot_id, point_ids={point_id(c) for c in chunk_ids}))

    def delete_bot(self, bot_id: str) -> None:
        self._delete(self._filter(bot_id))

    # --- reads -----------------------------------------------------------------------------------

    def hybrid_search(
        self,
        bot_id: str,
        sparse: SparseVector,
        dense: Sequence[float],
        limit: int,
        prefetch_limit: int,
        fusion: FusionName = "rrf",
        rrf_k: int = 60,
        bm25: SparseVector | None = None,
    ) -> list[Hit]:
        check_search_limits(limit, prefetch_limit)
        check_sparse(sparse)
        tenant = self._filter(bot_id)
        sparse_top = Search(sparse, tenant, prefetch_limit)
        dense_top = Search(check_dense(dense, self._dim), tenant, prefetch_limit)
        tops = [sparse_top, dense_top]
        bm25_top = self._bm25_search(bm25, tenant, prefetch_limit)
        if bm25_top is not None:
            tops.append(bm25_top)
        engine_k = engine_rrf_k(rrf_k) if check_fusion(fusion) == "rrf" else None
        requests: list[Search[FilterT] | Fused[FilterT]] = [Fused(tuple(tops), engine_k, tenant, limit)]
        if not self.component_scores:
            return assemble_hits(self._search(requests)[0], [], [])
        # The single-vector queries ride in the same batch, to annotate each fused hit.
        annotate = [t for t in tops if not isinstance(t.vector, SparseVector) or t.vector.indices]
        fused, *lists = self._search([*requests, *annotate])
        by_name = dict(zip((t.using for t in annotate), lists, strict=True))
        return assemble_hits(
            fused,
            by_name.get(SPARSE_VECTOR, []),
            by_name.get(DENSE_VECTOR, []),
            by_name.get(BM25_VECTOR, []) if bm25_top is not None else None,
        )

    def hybrid_candidates(
        self,
        bot_id: str,
        sparse: SparseVector,
        dense: Sequence[float],
        limit: int,
        rescore: RescoreFilter | None = None,
        bm25: SparseVector | None = None,
    ) -> list[Candidate]:
        check_search_limits(limit)
        check_sparse(sparse)
        tenant = self._filter(bot_id)
        dense_q = check_dense(dense, self._dim)
        ids_only = [CHUNK_ID_FIELD]
        # The lists in fusion order: sparse, dense, bm25. A sparse query without terms finds nothing, so
        # it is not sent (its list is empty and every candidate scores 0.0 there).
        queries: list[tuple[str, QueryVector]] = [(SPARSE_VECTOR, sparse), (DENSE_VECTOR, dense_q)]
        bm25_on = bm25 is not None and self._bm25_search(bm25, tenant, limit) is not None
        if bm25 is not None and bm25_on:
            queries.append((BM25_VECTOR, bm25))
        sent = [(name, q) for name, q in queries if _has_terms(q)]
        results = self._search(
            [Search(q, tenant, limit, with_payload=ids_only, vector_name=name) for name, q in sent]
        )
        found = dict(zip((name for name, _ in sent), results, strict=True))
        lists = [found.get(name, []) for name, _ in queries]
        union: dict[str, ScoredId] = {}
        for ranked in lists:
            for scored in ranked:
                union.setdefault(scored.point_id, scored)
        # A chunk a list missed is rescored exactly by that retriever, restricted to those ids (and to the
        # ones ``rescore`` names, when given).
        missing = {
            name: sorted(union.keys() - {s.point_id for s in ranked})
            for (name, q), ranked in zip(queries, lists, strict=True)
            if _has_terms(q)
        }
        if rescore is not None and any(missing.values()):
            chunk_of = {pid: chunk_id_of(scored) for pid, scored in union.items()}
            wanted = set(rescore([[(chunk_of[s.point_id], s.score) for s in ranked] for ranked in lists]))
            missing = {name: [p for p in ids if chunk_of[p] in wanted] for name, ids in missing.items()}
        vector_of = dict(queries)
        asked = [(name, ids) for name, ids in missing.items() if ids]
        rescored = (
            self._search([self._exact(bot_id, vector_of[name], ids, name) for name, ids in asked])
            if asked
            else []
        )
        exact: dict[str, dict[str, float]] = {}
        for (name, ids), rescored_list in zip(asked, rescored, strict=True):
            got = {s.point_id: s.score for s in rescored_list}
            if name == DENSE_VECTOR and (lost := [p for p in ids if p not in got]):
                # Every point has a dense vector, so the engine must score each one it was asked about.
                raise ValueError(f"points {lost} were not rescored by the dense retriever")
            # No shared term, no sparse score: the engine returns nothing for it.
            exact[name] = {**dict.fromkeys(ids, 0.0), **got}
        for name, q in queries:
            if not _has_terms(q):
                exact[name] = dict.fromkeys(union, 0.0)  # a query without terms scores nothing anywhere
        return assemble_candidates(
            lists[0],
            lists[1],
            exact.get(SPARSE_VECTOR, {}),
            exact.get(DENSE_VECTOR, {}),
            lists[2] if bm25_on else None,
            exact.get(BM25_VECTOR, {}),
        )

    def search_sparse(self, bot_id: str, sparse: SparseVector, limit: int) -> list[Hit]:
        check_search_limits(limit)
        check_sparse(sparse)
        tenant = self._filter(bot_id)
        if not sparse.indices:
            return []
        [scored] = self._search([Search(sparse, tenant, limit, with_payload=True)])
        return assemble_hits(scored, scored, [])

    def search_dense(self, bot_id: str, dense: Sequence[float], limit: int) -> list[Hit]:
        check_search_limits(limit)
        tenant = self._filter(bot_id)
        query = check_dense(dense, self._dim)
        [scored] = self._search([Search(query, tenant, limit, with_payload=True)])
        return assemble_hits(scored, [], scored)

    def search_bm25(self, bot_id: str, bm25: SparseVector, limit: int) -> list[Hit]:
        check_search_limits(limit)
        check_sparse(bm25)
        search = self._bm25_search(bm25, self._filter(bot_id), limit, with_payload=True)
        if search is None or not bm25.indices:
            return []
        [scored] = self._search([search])
        return assemble_hits(scored, [], [], scored)

    def sparse_vectors(self, bot_id: str, chunk_ids: Sequence[str]) -> dict[str, SparseVector]:
        stored = self._retrieve(bot_id, chunk_ids, [TENANT_FIELD, CHUNK_ID_FIELD], [SPARSE_VECTOR])
        return {str(p.payload[CHUNK_ID_FIELD]): p.sparse for p in stored if p.sparse is not None}

    def bm25_vectors(self, bot_id: str, chunk_ids: Sequence[str]) -> dict[str, SparseVector]:
        if not self.has_bm25():
            return {}
        stored = self._retrieve(bot_id, chunk_ids, [TENANT_FIELD, CHUNK_ID_FIELD], [BM25_VECTOR])
        return {str(p.payload[CHUNK_ID_FIELD]): p.bm25 for p in stored if p.bm25 is not None}

    def export(self, batch_size: int = 256) -> Iterator[list[EncodedChunk]]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._check_open()
        offset: Any = None
        while True:
            page, offset = self._scroll(offset, batch_size)
            items = [
                EncodedChunk(payload_to_chunk(p.payload), p.sparse or _NO_TERMS, tuple(p.dense), p.bm25)
                for p in page
                if p.dense is not None
            ]
            if items:
                yield items
            if offset is None:
                return

    def rebuild(self, points: Iterator[list[EncodedChunk]]) -> int:
        self._check_open()
        written = 0

        def validated() -> Iterator[list[NewPoint]]:
            nonlocal written
            for batch in points:
                if batch:
                    dim = len(batch[0].dense)
                    yield [_new_point(item, dim, bm25=self._lexical) for item in batch]
                    written += len(batch)

        dim = self._rebuild(validated())
        with self._lock:
            self._stored_bm25 = None
            self._dim = dim
        return written

    def chunks(self, bot_id: str, chunk_ids: Sequence[str]) -> dict[str, Chunk]:
        found = (payload_to_chunk(p.payload) for p in self._retrieve(bot_id, chunk_ids, True, False))
        return {chunk.id: chunk for chunk in found}

    def count(self, bot_id: str, source_id: str | None = None) -> int:
        return self._count(self._filter(bot_id, source_id=source_id))

    # --- internals -------------------------------------------------------------------------------

    def _filter(self, bot_id: str, *, source_id: str | None = None, point_ids: Iterable[str] = ()) -> FilterT:
        """The tenant condition, and optionally one document or a set of point ids."""
        conditions = [self._match(TENANT_FIELD, check_bot_id(bot_id))]
        if source_id is not None:
            conditions.append(self._match(SOURCE_FIELD, source_id))
        ids = sorted(point_ids)
        if ids:
            conditions.append(self._has_id(ids))
        return self._all_of(conditions)

    def _exact(
        self, bot_id: str, vector: QueryVector, point_ids: list[str], vector_name: str | None = None
    ) -> Search[FilterT]:
        """Exact scores of exactly these points (they are few: the ids one top list missed)."""
        selection = self._filter(bot_id, point_ids=point_ids)
        return Search(vector, selection, len(point_ids), exact=True, vector_name=vector_name)

    def _bm25_search(
        self, bm25: SparseVector | None, tenant: FilterT, limit: int, with_payload: bool | list[str] = False
    ) -> Search[FilterT] | None:
        """The BM25 search, or None when there is none to run (no query, BM25 off or not stored)."""
        if bm25 is None or not self.has_bm25():
            return None
        check_sparse(bm25)
        return Search(bm25, tenant, limit, with_payload=with_payload, vector_name=BM25_VECTOR)

    def _retrieve(
        self, bot_id: str, chunk_ids: Sequence[str], payload: bool | list[str], vectors: bool | list[str]
    ) -> list[StoredPoint]:
        """Points by chunk id, keeping only the bot's own (a by-id read must not cross tenants)."""
        check_bot_id(bot_id)
        self._check_open()
        if not chunk_ids:
            return []
        ids = [point_id(c) for c in dict.fromkeys(chunk_ids)]
        return [p for p in self._fetch(ids, payload, vectors) if p.payload.get(TENANT_FIELD) == bot_id]

    def _check_open(self) -> None:
        if self._closed:
            raise IndexClosedError(f"the index on {self._label} is closed")


_NO_TERMS = SparseVector((), ())


def _has_terms(query: QueryVector) -> bool:
    return not isinstance(query, SparseVector) or bool(query.indices)


def _new_point(item: EncodedChunk, dim: int, *, bm25: bool) -> NewPoint:
    """Validate one item; the first bad one stops the whole batch before anything is written. ``bm25``:
    the collection stores BM25 vectors (an item without one gets an empty one, so it is still counted)."""
    check_bot_id(item.chunk.bot_id)
    check_sparse(item.sparse)
    dense = check_dense(item.dense, dim)
    lexical = (item.bm25 or _NO_TERMS) if bm25 else None
    if lexical is not None:
        check_sparse(lexical)
    return NewPoint(point_id(item.chunk.id), dense, item.sparse, chunk_to_payload(item.chunk), lexical)
