"""``VectorIndex`` on a Qdrant server or cluster through ``qdrant-client`` (Query API: prefetch + fusion).

Same collection layout and semantics as the Edge backend (``ragbot.index.edge``), so a deployment can move
from the embedded shard to a server by setting ``RAGBOT_QDRANT_URL`` and re-ingesting: the query logic is
shared (``ragbot.index.qdrant_base``), and this module only translates it into ``qdrant-client`` calls. An
existing ``QdrantClient`` can be passed instead of a URL; the tests pass one in local mode, which runs the
same API in pure Python (about 0.7 s per hybrid query at 20k points: a stand-in for tests, not for serving).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client.http import models as qm

from ragbot.index.base import IndexConfigError
from ragbot.index.points import (
    BM25_VECTOR,
    DENSE_VECTOR,
    SOURCE_FIELD,
    SPARSE_VECTOR,
    TENANT_FIELD,
    check_collection_name,
)
from ragbot.index.qdrant_base import (
    Fused,
    NewPoint,
    QdrantIndexBase,
    QueryVector,
    Search,
    StoredPoint,
    scored_ids,
    stored_point,
)
from ragbot.index.scoring import ScoredId
from ragbot.types import SparseVector

log = logging.getLogger(__name__)


class QdrantServerIndex(QdrantIndexBase[qm.Filter]):
    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        collection: str = "ragbot",
        client: QdrantClient | None = None,
        timeout_s: float | None = None,
        component_scores: bool = True,
        lexical: bool = True,
    ) -> None:
        """Connect lazily to ``url`` (or use ``client``); ``component_scores`` and ``lexical`` as in
        ``EdgeIndex``."""
        if (url is None) == (client is None):
            raise ValueError("pass exactly one of url or client")
        self._owns_client = client is None
        timeout = None if timeout_s is None else int(max(1, round(timeout_s)))
        # No version probe at construction: it would dial the server before the first real call (and warn
        # from a background thread when the server is not up yet); the first call reports a down server.
        self._client = (
            client
            if client is not None
            else QdrantClient(url=url, api_key=api_key, timeout=timeout, check_compatibility=False)
        )
        self._collection = check_collection_name(collection)
        super().__init__(
            f"collection {self._collection!r}", component_scores=component_scores, lexical=lexical
        )

    def close(self) -> None:
        """Release the client if this index created it; a client passed in stays the caller's."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._owns_client:
            self._client.close()

    # --- engine seam -----------------------------------------------------------------------------

    def _attach(self, dense_dim: int) -> int:
        if self._client.collection_exists(self._collection):
            return self._stored_dim()
        self._create(dense_dim)
        return dense_dim

    def _match(self, key: str, value: str) -> qm.FieldCondition:
        return qm.FieldCondition(key=key, match=qm.MatchValue(value=value))

    def _has_id(self, point_ids: list[str]) -> qm.HasIdCondition:
        ids: list[qm.ExtendedPointId] = list(point_ids)
        return qm.HasIdCondition(has_id=ids)

    def _all_of(self, conditions: list[Any]) -> qm.Filter:
        return qm.Filter(must=conditions)

    def _search(self, requests: Sequence[Search[qm.Filter] | Fused[qm.Filter]]) -> list[list[ScoredId]]:
        if not self._ready():
            return [[] for _ in requests]
        results = self._client.query_batch_points(self._collection, requests=[_request(r) for r in requests])
        return [scored_ids(r.points) for r in results]

    def _write(self, points: Sequence[NewPoint]) -> None:
        self._write_to(self._collection, points)

    def _delete(self, selection: qm.Filter) -> None:
        if self._ready():
            self._client.delete(
                self._collection, points_selector=qm.FilterSelector(filter=selection), wait=True
            )

    def _count(self, selection: qm.Filter) -> int:
        if not self._ready():
            return 0
        return int(self._client.count(self._collection, count_filter=selection, exact=True).count)

    def _fetch(
        self, point_ids: list[str], payload: bool | list[str], vectors: bool | list[str]
    ) -> list[StoredPoint]:
        if not self._ready():
            return []
        ids: list[qm.ExtendedPointId] = list(point_ids)
        records = self._client.retrieve(self._collection, ids=ids, with_payload=payload, with_vectors=vectors)
        return [stored_point(r.payload, r.vector, qm.SparseVector) for r in records]

    def _stored_has_bm25(self) -> bool | None:
        if not self._client.collection_exists(self._collection):
            return None
        sparse = self._client.get_collection(self._collection).config.params.sparse_vectors or {}
        return BM25_VECTOR in sparse

    def _scroll(self, offset: Any, limit: int) -> tuple[list[StoredPoint], Any]:
        if not self._ready():
            return [], None
        records, after = self._client.scroll(
            self._collection, offset=offset, limit=limit, with_payload=True, with_vectors=True
        )
        return [stored_point(r.payload, r.vector, qm.SparseVector) for r in records], after

    def _rebuild(self, points: Iterator[list[NewPoint]]) -> int | None:
        """Stage the points in a sibling collection, then recreate this one from it: a server cannot
        rename collections, and until the staging copy is complete the old collection is untouched."""
        staging = f"{self._collection}__rebuild"
        if self._client.collection_exists(staging):
            self._client.delete_collection(staging)
        dim: int | None = None
        for batch in points:
            if dim is None:
                dim = len(batch[0].dense)
                self._create(dim, staging)
            self._write_to(staging, batch)
        with self._lock:
            self._check_open()
            if self._client.collection_exists(self._collection):
                self._client.delete_collection(self._collection)
            if dim is None:
                return None
            self._create(dim)
            offset: Any = None
            while True:
                records, offset = self._client.scroll(
                    staging, offset=offset, limit=256, with_payload=True, with_vectors=True
                )
                if records:
                    copies = [
                        qm.PointStruct(id=r.id, vector=_as_vectors(r.vector), payload=r.payload)
                        for r in records
                    ]
                    self._client.upsert(self._collection, points=copies, wait=True)
                if offset is None:
                    break
        self._client.delete_collection(staging)
        log.info("rebuilt Qdrant collection %r", self._collection)
        return dim

    # --- internals -------------------------------------------------------------------------------

    def _create(self, dense_dim: int, name: str | None = None) -> None:
        name = name or self._collection
        sparse = {SPARSE_VECTOR: qm.SparseVectorParams()}
        if self._lexical:
            sparse[BM25_VECTOR] = qm.SparseVectorParams(modifier=qm.Modifier.IDF)
        self._client.create_collection(
            name,
            vectors_config={DENSE_VECTOR: qm.VectorParams(size=dense_dim, distance=qm.Distance.COSINE)},
            sparse_vectors_config=sparse,
        )
        self._client.create_payload_index(
            name,
            TENANT_FIELD,
            field_schema=qm.KeywordIndexParams(type=qm.KeywordIndexType.KEYWORD, is_tenant=True),
        )
        self._client.create_payload_index(name, SOURCE_FIELD, field_schema=qm.PayloadSchemaType.KEYWORD)
        log.info("created Qdrant collection %r (dense dim %d)", name, dense_dim)

    def _write_to(self, collection: str, points: Sequence[NewPoint]) -> None:
        engine = [qm.PointStruct(id=p.point_id, vector=_client_vectors(p), payload=p.payload) for p in points]
        self._client.upsert(collection, points=engine, wait=True)

    def _stored_dim(self) -> int:
        vectors = self._client.get_collection(self._collection).config.params.vectors
        params = vectors.get(DENSE_VECTOR) if isinstance(vectors, dict) else None
        if params is None:
            raise IndexConfigError(f"collection {self._collection!r} has no named vector {DENSE_VECTOR!r}")
        return int(params.size)

    def _ready(self) -> bool:
        """Whether the collection exists; before the first write reads find nothing instead of failing."""
        self._check_open()
        if self._dim is not None:
            return True
        with self._lock:
            if self._dim is None and self._client.collection_exists(self._collection):
                self._dim = self._stored_dim()
        return self._dim is not None


def _request(request: Search[qm.Filter] | Fused[qm.Filter]) -> qm.QueryRequest:
    if isinstance(request, Fused):
        fusion: Any = (
            qm.FusionQuery(fusion=qm.Fusion.DBSF)
            if request.rrf_k is None
            else qm.RrfQuery(rrf=qm.Rrf(k=request.rrf_k))
        )
        prefetch = [
            qm.Prefetch(query=_client_vector(p.vector), using=p.using, filter=p.filter, limit=p.limit)
            for p in request.prefetch
        ]
        return qm.QueryRequest(
            prefetch=prefetch, query=fusion, filter=request.filter, limit=request.limit, with_payload=True
        )
    return qm.QueryRequest(
        query=_client_vector(request.vector),
        using=request.using,
        filter=request.filter,
        limit=request.limit,
        with_payload=request.with_payload,
        params=qm.SearchParams(exact=True) if request.exact else None,
    )


def _as_vectors(stored: Any) -> dict[str, Any]:
    """A scrolled record's named vectors, as an upsert takes them."""
    return dict(stored) if isinstance(stored, dict) else {}


def _client_vectors(point: NewPoint) -> dict[str, Any]:
    vectors: dict[str, Any] = {DENSE_VECTOR: point.dense, SPARSE_VECTOR: _client_sparse(point.sparse)}
    if point.bm25 is not None:
        vectors[BM25_VECTOR] = _client_sparse(point.bm25)
    return vectors


def _client_vector(vector: QueryVector) -> qm.SparseVector | list[float]:
    return _client_sparse(vector) if isinstance(vector, SparseVector) else vector


def _client_sparse(sparse: SparseVector) -> qm.SparseVector:
    return qm.SparseVector(indices=list(sparse.indices), values=list(sparse.values))
