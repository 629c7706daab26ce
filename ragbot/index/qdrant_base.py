"""The client-independent half of the Qdrant adapters: every ``VectorIndex`` method, written once.

Qdrant Edge (``ragbot.index.edge``) and a Qdrant server (``ragbot.index.remote``) share one data model (named
vectors, payload filters, prefetch + fusion); only the client objects differ. So validation, tenant filters,
component scores, candidate rescoring and payload mapping live here, where the two backends cannot drift
apart, and each adapter supplies the seam: filter conditions, running a batch of neutral ``Search``/``Fused``
requests, and writing, deleting, counting and retrieving points.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from ragbot.index.base import Candidate, FusionName, IndexClosedError, IndexConfigError, RescoreFilter
from ragbot.index.points import (
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


@dataclass(frozen=True, slots=True)
class Search(Generic[FilterT]):
    """A nearest-neighbour query on one named vector, in the neutral form each adapter translates."""

    vector: QueryVector
    filter: FilterT
    limit: int
    with_payload: bool | list[str] = False
    exact: bool = False  # exact scoring, to rescore a few known ids

    @property
    def using(self) -> str:
        """The named vector to search: the query vector's type says which."""
        return SPARSE_VECTOR if isinstance(self.vector, SparseVector) else DENSE_VECTOR


@dataclass(frozen=True, slots=True)
class Fused(Generic[FilterT]):
    """The sparse and dense searches as prefetches, fused inside the engine; hits come with their payload."""

    prefetch: tuple[Search[FilterT], Search[FilterT]]
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


@dataclass(frozen=True, slots=True)
class StoredPoint:
    """A point read back by id: its payload and, where it was asked for, its sparse vector."""

    payload: Mapping[str, Any]
    sparse: SparseVector | None = None


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


def stored_sparse(vector: object, engine_type: type[EngineSparseVector]) -> SparseVector | None:
    """The ``sparse`` named vector of a retrieved record, or None where it was not asked for or is absent."""
    stored = vector.get(SPARSE_VECTOR) if isinstance(vector, dict) else None
    return sparse_from_pairs(stored.indices, stored.values) if isinstance(stored, engine_type) else None


class QdrantIndexBase(ABC, Generic[FilterT]):
    """``VectorIndex`` over any Qdrant client; ``FilterT`` is the client's filter type.

    Subclasses implement the abstract engine calls. Every read builds its filter with ``_filter``, so the
    tenant condition cannot be left out by one backend only.
    """

    def __init__(self, label: str, *, component_scores: bool) -> None:
        """``label`` names the storage in error messages (a path, or a collection on a server)."""
        self._label = label
        self.component_scores = component_scores
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
        self._write([_new_point(item, dim) for item in items])  # all validated before anything is written

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
    ) -> list[Hit]:
        check_search_limits(limit, prefetch_limit)
        check_sparse(sparse)
        tenant = self._filter(bot_id)
        sparse_top = Search(sparse, tenant, prefetch_limit)
        dense_top = Search(check_dense(dense, self._dim), tenant, prefetch_limit)
        engine_k = engine_rrf_k(rrf_k) if check_fusion(fusion) == "rrf" else None
        requests: list[Search[FilterT] | Fused[FilterT]] = [
            Fused((sparse_top, dense_top), engine_k, tenant, limit)
        ]
        if not self.component_scores:
            return assemble_hits(self._search(requests)[0], [], [])
        # The single-vector queries ride in the same batch, to annotate each fused hit.
        if sparse.indices:
            requests.append(sparse_top)
        requests.append(dense_top)
        results = self._search(requests)
        return assemble_hits(results[0], results[1] if sparse.indices else [], results[-1])

    def hybrid_candidates(
        self,
        bot_id: str,
        sparse: SparseVector,
        dense: Sequence[float],
        limit: int,
        rescore: RescoreFilter | None = None,
    ) -> list[Candidate]:
        check_search_limits(limit)
        check_sparse(sparse)
        tenant = self._filter(bot_id)
        dense_q = check_dense(dense, self._dim)
        ids_only = [CHUNK_ID_FIELD]
        tops: list[Search[FilterT] | Fused[FilterT]] = [Search(dense_q, tenant, limit, with_payload=ids_only)]
        if sparse.indices:
            tops.append(Search(sparse, tenant, limit, with_payload=ids_only))
        results = self._search(tops)
        dense_list = results[0]
        sparse_list = results[1] if sparse.indices else []
        in_dense = {s.point_id for s in dense_list}
        in_sparse = {s.point_id for s in sparse_list}
        # A chunk only one list found is rescored exactly by the other retriever, restricted to those ids
        # (and to the ones ``rescore`` names, when given).
        need_dense = sorted(in_sparse - in_dense)
        need_sparse = sorted(in_dense - in_sparse) if sparse.indices else []
        if rescore is not None and (need_dense or need_sparse):
            chunk_of = {s.point_id: chunk_id_of(s) for s in (*sparse_list, *dense_list)}
            wanted = set(
                rescore(
                    [(chunk_of[s.point_id], s.score) for s in sparse_list],
                    [(chunk_of[s.point_id], s.score) for s in dense_list],
                )
            )
            need_dense = [p for p in need_dense if chunk_of[p] in wanted]
            need_sparse = [p for p in need_sparse if chunk_of[p] in wanted]
        rescore_requests: list[Search[FilterT] | Fused[FilterT]] = []
        if need_dense:
            rescore_requests.append(self._exact(bot_id, dense_q, need_dense))
        if need_sparse:
            rescore_requests.append(self._exact(bot_id, sparse, need_sparse))
        rescored = iter(self._search(rescore_requests) if rescore_requests else [])
        dense_exact = {s.point_id: s.score for s in next(rescored)} if need_dense else {}
        if lost := [p for p in need_dense if p not in dense_exact]:
            # Every point has a dense vector, so the engine must score each one it was asked about.
            raise ValueError(f"points {lost} were not rescored by the dense retriever")
        # No shared term, no sparse score: the engine returns nothing for it (and an empty query has none).
        sparse_exact = dict.fromkeys(need_sparse if sparse.indices else in_dense, 0.0)
        sparse_exact.update({s.point_id: s.score for s in next(rescored)} if need_sparse else {})
        return assemble_candidates(sparse_list, dense_list, sparse_exact, dense_exact)

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

    def sparse_vectors(self, bot_id: str, chunk_ids: Sequence[str]) -> dict[str, SparseVector]:
        stored = self._retrieve(bot_id, chunk_ids, [TENANT_FIELD, CHUNK_ID_FIELD], [SPARSE_VECTOR])
        return {str(p.payload[CHUNK_ID_FIELD]): p.sparse for p in stored if p.sparse is not None}

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

    def _exact(self, bot_id: str, vector: QueryVector, point_ids: list[str]) -> Search[FilterT]:
        """Exact scores of exactly these points (they are few: the ids one top list missed)."""
        return Search(vector, self._filter(bot_id, point_ids=point_ids), len(point_ids), exact=True)

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


def _new_point(item: EncodedChunk, dim: int) -> NewPoint:
    """Validate one item; the first bad one stops the whole batch before anything is written."""
    check_bot_id(item.chunk.bot_id)
    check_sparse(item.sparse)
    dense = check_dense(item.dense, dim)
    return NewPoint(point_id(item.chunk.id), dense, item.sparse, chunk_to_payload(item.chunk))
