"""``VectorIndex`` on a Qdrant server or cluster through ``qdrant-client`` (Query API: prefetch + fusion).

Same collection layout and semantics as the Edge backend (``ragbot.index.edge``), so a deployment can move
from the embedded shard to a server by setting ``RAGBOT_QDRANT_URL`` and re-ingesting. An existing
``QdrantClient`` can be passed instead of a URL; the tests pass one in local mode, which runs the same API
in pure Python (about 0.7 s per hybrid query at 20k points: a stand-in for tests, not for serving).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client.http import models as qm

from ragbot.index.base import Candidate, FusionName, IndexClosedError, IndexConfigError
from ragbot.index.points import (
    CHUNK_ID_FIELD,
    DENSE_VECTOR,
    SOURCE_FIELD,
    SPARSE_VECTOR,
    TENANT_FIELD,
    check_bot_id,
    check_collection_name,
    check_dense,
    check_search_limits,
    check_sparse,
    chunk_to_payload,
    payload_to_chunk,
    point_id,
    sparse_from_pairs,
)
from ragbot.index.scoring import ScoredId, assemble_candidates, assemble_hits, check_fusion, engine_rrf_k
from ragbot.types import Chunk, EncodedChunk, Hit, SparseVector

log = logging.getLogger(__name__)


class QdrantServerIndex:
    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        collection: str = "ragbot",
        client: QdrantClient | None = None,
        timeout_s: float | None = None,
        component_scores: bool = True,
    ) -> None:
        """Connect lazily to ``url`` (or use ``client``). ``component_scores`` as in ``EdgeIndex``."""
        if (url is None) == (client is None):
            raise ValueError("pass exactly one of url or client")
        self._owns_client = client is None
        timeout = None if timeout_s is None else int(max(1, round(timeout_s)))
        self._client = (
            client if client is not None else QdrantClient(url=url, api_key=api_key, timeout=timeout)
        )
        self._collection = check_collection_name(collection)
        self.component_scores = component_scores
        self._lock = threading.Lock()
        self._dim: int | None = None
        self._closed = False

    # --- lifecycle -------------------------------------------------------------------------------

    def ensure_collection(self, dense_dim: int) -> None:
        if dense_dim < 1:
            raise IndexConfigError(f"dense dimension must be positive, got {dense_dim}")
        with self._lock:
            self._check_open()
            if self._dim is None and self._client.collection_exists(self._collection):
                self._dim = self._stored_dim()
            if self._dim is None:
                self._create(dense_dim)
                self._dim = dense_dim
            elif self._dim != dense_dim:
                raise IndexConfigError(
                    f"collection {self._collection!r} stores {self._dim}-d dense vectors, got {dense_dim}-d; "
                    "re-index into a new collection"
                )

    def close(self) -> None:
        """Release the client if this index created it; a client passed in stays the caller's."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._owns_client:
            self._client.close()

    # --- writes ----------------------------------------------------------------------------------

    def upsert(self, items: Sequence[EncodedChunk]) -> None:
        if not items:
            return
        dim = len(items[0].dense)
        self.ensure_collection(dim)
        points = []
        for item in items:
            check_bot_id(item.chunk.bot_id)
            check_sparse(item.sparse)
            vectors: dict[str, Any] = {
                DENSE_VECTOR: check_dense(item.dense, dim),
                SPARSE_VECTOR: qm.SparseVector(
                    indices=list(item.sparse.indices), values=list(item.sparse.values)
                ),
            }
            points.append(
                qm.PointStruct(
                    id=point_id(item.chunk.id), vector=vectors, payload=chunk_to_payload(item.chunk)
                )
            )
        self._client.upsert(self._collection, points=points, wait=True)

    def delete_source(self, bot_id: str, source_id: str) -> None:
        self._delete(self._filter(bot_id, source_id=source_id))

    def delete_chunks(self, bot_id: str, chunk_ids: Sequence[str]) -> None:
        if chunk_ids:
            ids: list[Any] = [point_id(c) for c in chunk_ids]
            self._delete(self._filter(bot_id, extra=[qm.HasIdCondition(has_id=ids)]))

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
        sparse_q = qm.SparseVector(indices=list(sparse.indices), values=list(sparse.values))
        dense_q = check_dense(dense, self._dim)
        query: Any = (
            qm.RrfQuery(rrf=qm.Rrf(k=engine_rrf_k(rrf_k)))
            if check_fusion(fusion) == "rrf"
            else qm.FusionQuery(fusion=qm.Fusion.DBSF)
        )
        fused = qm.QueryRequest(
            prefetch=[
                qm.Prefetch(query=sparse_q, using=SPARSE_VECTOR, filter=tenant, limit=prefetch_limit),
                qm.Prefetch(query=dense_q, using=DENSE_VECTOR, filter=tenant, limit=prefetch_limit),
            ],
            query=query,
            filter=tenant,
            limit=limit,
            with_payload=True,
        )
        if not self._ready():
            return []
        requests = [fused]
        if self.component_scores:
            if sparse.indices:
                requests.append(self._plain(sparse_q, SPARSE_VECTOR, tenant, prefetch_limit))
            requests.append(self._plain(dense_q, DENSE_VECTOR, tenant, prefetch_limit))
        results = self._client.query_batch_points(self._collection, requests=requests)
        lists = [_scored(r.points) for r in results]
        if not self.component_scores:
            return assemble_hits(lists[0], [], [])
        sparse_list = lists[1] if sparse.indices else []
        return assemble_hits(lists[0], sparse_list, lists[-1])

    def hybrid_candidates(
        self, bot_id: str, sparse: SparseVector, dense: Sequence[float], limit: int
    ) -> list[Candidate]:
        check_search_limits(limit)
        check_sparse(sparse)
        tenant = self._filter(bot_id)
        sparse_q = qm.SparseVector(indices=list(sparse.indices), values=list(sparse.values))
        dense_q = check_dense(dense, self._dim)
        if not self._ready():
            return []
        ids_only = [CHUNK_ID_FIELD]
        tops = [self._plain(dense_q, DENSE_VECTOR, tenant, limit, with_payload=ids_only)]
        if sparse.indices:
            tops.append(self._plain(sparse_q, SPARSE_VECTOR, tenant, limit, with_payload=ids_only))
        results = self._client.query_batch_points(self._collection, requests=tops)
        dense_list = _scored(results[0].points)
        sparse_list = _scored(results[1].points) if sparse.indices else []
        need_dense = {s.point_id for s in sparse_list} - {s.point_id for s in dense_list}
        need_sparse = {s.point_id for s in dense_list} - {s.point_id for s in sparse_list}
        if not sparse.indices:
            need_sparse = set()
        rescore = []
        for ids, query, using in (
            (need_dense, dense_q, DENSE_VECTOR),
            (need_sparse, sparse_q, SPARSE_VECTOR),
        ):
            if ids:
                only: list[Any] = sorted(ids)
                rescore.append(
                    qm.QueryRequest(
                        query=query,
                        using=using,
                        filter=self._filter(bot_id, extra=[qm.HasIdCondition(has_id=only)]),
                        limit=len(ids),
                        params=qm.SearchParams(exact=True),
                        with_payload=False,
                    )
                )
        rescored = iter(
            self._client.query_batch_points(self._collection, requests=rescore) if rescore else []
        )
        dense_exact = {s.point_id: s.score for s in _scored(next(rescored).points)} if need_dense else {}
        sparse_exact = {s.point_id: s.score for s in _scored(next(rescored).points)} if need_sparse else {}
        return assemble_candidates(sparse_list, dense_list, sparse_exact, dense_exact)

    def search_sparse(self, bot_id: str, sparse: SparseVector, limit: int) -> list[Hit]:
        check_search_limits(limit)
        check_sparse(sparse)
        tenant = self._filter(bot_id)
        if not sparse.indices or not self._ready():
            return []
        query = qm.SparseVector(indices=list(sparse.indices), values=list(sparse.values))
        scored = self._query(query, SPARSE_VECTOR, tenant, limit)
        return assemble_hits(scored, scored, [])

    def search_dense(self, bot_id: str, dense: Sequence[float], limit: int) -> list[Hit]:
        check_search_limits(limit)
        tenant = self._filter(bot_id)
        query = check_dense(dense, self._dim)
        if not self._ready():
            return []
        scored = self._query(query, DENSE_VECTOR, tenant, limit)
        return assemble_hits(scored, [], scored)

    def sparse_vectors(self, bot_id: str, chunk_ids: Sequence[str]) -> dict[str, SparseVector]:
        found: dict[str, SparseVector] = {}
        for record in self._retrieve(bot_id, chunk_ids, [TENANT_FIELD, CHUNK_ID_FIELD], [SPARSE_VECTOR]):
            stored = record.vector.get(SPARSE_VECTOR) if isinstance(record.vector, dict) else None
            if isinstance(stored, qm.SparseVector):
                found[str(_payload(record)[CHUNK_ID_FIELD])] = sparse_from_pairs(
                    stored.indices, stored.values
                )
        return found

    def chunks(self, bot_id: str, chunk_ids: Sequence[str]) -> dict[str, Chunk]:
        found: dict[str, Chunk] = {}
        for record in self._retrieve(bot_id, chunk_ids, True, False):
            chunk = payload_to_chunk(_payload(record))
            found[chunk.id] = chunk
        return found

    def count(self, bot_id: str, source_id: str | None = None) -> int:
        tenant = self._filter(bot_id, source_id=source_id)
        if not self._ready():
            return 0
        return int(self._client.count(self._collection, count_filter=tenant, exact=True).count)

    # --- internals -------------------------------------------------------------------------------

    def _create(self, dense_dim: int) -> None:
        self._client.create_collection(
            self._collection,
            vectors_config={DENSE_VECTOR: qm.VectorParams(size=dense_dim, distance=qm.Distance.COSINE)},
            sparse_vectors_config={SPARSE_VECTOR: qm.SparseVectorParams()},
        )
        self._client.create_payload_index(
            self._collection,
            TENANT_FIELD,
            field_schema=qm.KeywordIndexParams(type=qm.KeywordIndexType.KEYWORD, is_tenant=True),
        )
        self._client.create_payload_index(
            self._collection, SOURCE_FIELD, field_schema=qm.PayloadSchemaType.KEYWORD
        )
        log.info("created Qdrant collection %r (dense dim %d)", self._collection, dense_dim)

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

    def _retrieve(
        self, bot_id: str, chunk_ids: Sequence[str], payload: bool | list[str], vectors: bool | list[str]
    ) -> list[qm.Record]:
        """Points by chunk id, keeping only the bot's own (a by-id read must not cross tenants)."""
        check_bot_id(bot_id)
        if not chunk_ids or not self._ready():
            return []
        ids: list[Any] = [point_id(c) for c in dict.fromkeys(chunk_ids)]
        records = self._client.retrieve(self._collection, ids=ids, with_payload=payload, with_vectors=vectors)
        return [r for r in records if _payload(r).get(TENANT_FIELD) == bot_id]

    def _check_open(self) -> None:
        if self._closed:
            raise IndexClosedError(f"the index on collection {self._collection!r} is closed")

    def _plain(
        self, query: Any, using: str, tenant: qm.Filter, limit: int, *, with_payload: bool | list[str] = False
    ) -> qm.QueryRequest:
        return qm.QueryRequest(
            query=query, using=using, filter=tenant, limit=limit, with_payload=with_payload
        )

    def _query(self, query: Any, using: str, tenant: qm.Filter, limit: int) -> list[ScoredId]:
        response = self._client.query_points(
            self._collection, query=query, using=using, query_filter=tenant, limit=limit, with_payload=True
        )
        return _scored(response.points)

    def _delete(self, selection: qm.Filter) -> None:
        if self._ready():
            self._client.delete(
                self._collection, points_selector=qm.FilterSelector(filter=selection), wait=True
            )

    def _filter(self, bot_id: str, *, source_id: str | None = None, extra: Sequence[Any] = ()) -> qm.Filter:
        conditions: list[Any] = [
            qm.FieldCondition(key=TENANT_FIELD, match=qm.MatchValue(value=check_bot_id(bot_id)))
        ]
        if source_id is not None:
            conditions.append(qm.FieldCondition(key=SOURCE_FIELD, match=qm.MatchValue(value=source_id)))
        conditions.extend(extra)
        return qm.Filter(must=conditions)


def _payload(record: qm.Record) -> dict[str, Any]:
    return record.payload or {}


def _scored(points: Sequence[qm.ScoredPoint]) -> list[ScoredId]:
    return [ScoredId(str(p.id), float(p.score), p.payload) for p in points]
