"""``VectorIndex`` on Qdrant Edge: the Qdrant engine in-process, one shard on local disk, no server.

Layout: one shard per collection at ``<path>/<collection>``, named vectors ``dense`` (cosine), ``sparse``
(dot product over SPLADE weights) and ``bm25`` (BM25 term weights; the engine's IDF modifier multiplies
each query term by its inverse document frequency over the shard, so the dot product is the BM25 score; a
shard created before it lacks it until ``rebuild``), keyword payload indexes on ``bot_id`` (marked as the
tenant key) and ``source_id``. Every read carries a ``bot_id`` filter. The query logic is shared with the
server backend (``ragbot.index.qdrant_base``); this module only translates it into ``qdrant_edge`` calls.

Concurrency: the shard is internally synchronised (queries, upserts and optimisation run side by side
without errors), so reads take no Python lock; one lock guards creating, optimising and closing the shard.

Optimisation: Edge has no background optimiser, and a shard left unoptimised searches its dense vectors by
brute force (about 23 ms at 100k points, against 6 ms once indexed, on 2 busy cores). After each upsert a
single background thread runs ``optimize()`` (a no-op while segments are under the indexing threshold), the
way a Qdrant server's optimisers would; ``close()`` waits for a run in progress (it cannot be interrupted).
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from ragbot.index.base import IndexConfigError
from ragbot.index.lock import lock_shard
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


class EdgeIndex(QdrantIndexBase[qe.Filter]):
    def __init__(
        self,
        path: Path,
        collection: str = "ragbot",
        *,
        background_optimize: bool = True,
        component_scores: bool = True,
        lexical: bool = True,
    ) -> None:
        """Open the shard at ``path/collection`` if it exists; otherwise it is created on first write.

        ``component_scores``: hybrid hits also carry the sparse and dense scores and ranks, at the price of
        running both single-vector queries beside the fused one (one batched call). ``lexical``: as in
        ``QdrantIndexBase``.
        """
        self._dir = Path(path) / check_collection_name(collection)
        super().__init__(str(self._dir), component_scores=component_scores, lexical=lexical)
        self._background_optimize = background_optimize
        self._optimizer: threading.Thread | None = None
        self._optimize_again = False
        self._shard: qe.EdgeShard | None = None
        self._shard_lock = lock_shard(self._dir)  # one process per shard: ShardInUseError otherwise
        try:
            if self._dir.is_dir() and any(self._dir.iterdir()):
                self._shard = qe.EdgeShard.load(str(self._dir))
        except BaseException:
            self._shard_lock.release()
            raise

    @property
    def path(self) -> Path:
        return self._dir

    def optimize(self) -> bool:
        """Build indexes and merge segments now, blocking; True if anything changed."""
        shard = self._shard_or_none()
        return bool(shard.optimize()) if shard is not None else False

    def close(self) -> None:
        """Wait for a running optimisation, flush and release the shard; calling it twice is harmless."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            optimizer = self._optimizer
        if optimizer is not None:
            optimizer.join()
        with self._lock:
            if self._shard is not None:
                self._shard.flush()
                self._shard.close()
                self._shard = None
        self._shard_lock.release()

    # --- engine seam -----------------------------------------------------------------------------

    def _attach(self, dense_dim: int) -> int:
        if self._shard is None:
            self._shard = self._create(dense_dim)
        else:
            self._verify_dim(self._shard, dense_dim)
        return dense_dim

    def _match(self, key: str, value: str) -> qe.FieldCondition:
        return qe.FieldCondition(key=key, match=qe.MatchValue(value))

    def _has_id(self, point_ids: list[str]) -> qe.HasIdCondition:
        ids: set[qe.PointId] = set(point_ids)
        return qe.HasIdCondition(ids)

    def _all_of(self, conditions: list[Any]) -> qe.Filter:
        return qe.Filter(must=conditions)

    def _search(self, requests: Sequence[Search[qe.Filter] | Fused[qe.Filter]]) -> list[list[ScoredId]]:
        shard = self._shard_or_none()
        if shard is None:
            return [[] for _ in requests]
        engine = [_request(r) for r in requests]
        if len(engine) == 1:
            return [scored_ids(shard.query(engine[0]))]
        return [scored_ids(points) for points in shard.query_batch(qe.QueryBatchRequest(engine))]

    def _write(self, points: Sequence[NewPoint]) -> None:
        self._require_shard().update(qe.UpdateOperation.upsert_points([_edge_point(p) for p in points]))
        if self._background_optimize:
            self._schedule_optimize()

    def _delete(self, selection: qe.Filter) -> None:
        shard = self._shard_or_none()
        if shard is not None:
            shard.update(qe.UpdateOperation.delete_points_by_filter(selection))

    def _count(self, selection: qe.Filter) -> int:
        shard = self._shard_or_none()
        return 0 if shard is None else int(shard.count(qe.CountRequest(exact=True, filter=selection)))

    def _fetch(
        self, point_ids: list[str], payload: bool | list[str], vectors: bool | list[str]
    ) -> list[StoredPoint]:
        shard = self._shard_or_none()
        if shard is None:
            return []
        ids: list[qe.PointId] = list(point_ids)
        records = shard.retrieve(ids, with_payload=payload, with_vector=vectors)
        return [stored_point(r.payload, r.vector, qe.SparseVector) for r in records]

    def _stored_has_bm25(self) -> bool | None:
        shard = self._shard_or_none()
        return None if shard is None else _has_vector(shard, BM25_VECTOR)

    def _scroll(self, offset: Any, limit: int) -> tuple[list[StoredPoint], Any]:
        shard = self._shard_or_none()
        if shard is None:
            return [], None
        records, after = shard.scroll(
            qe.ScrollRequest(offset=offset, limit=limit, with_payload=True, with_vector=True)
        )
        return [stored_point(r.payload, r.vector, qe.SparseVector) for r in records], after

    def _rebuild(self, points: Iterator[list[NewPoint]]) -> int | None:
        """Stage the points in a sibling shard, then swap directories: the old shard stays intact (and
        readable, for ``points`` that read it) until the staged one is complete and flushed."""
        staging = self._dir.with_name(self._dir.name + ".rebuild")
        retired = self._dir.with_name(self._dir.name + ".old")
        for leftover in (staging, retired):
            if leftover.exists():
                shutil.rmtree(leftover)
        new: qe.EdgeShard | None = None
        dim: int | None = None
        try:
            for batch in points:
                if new is None:
                    dim = len(batch[0].dense)
                    new = self._create(dim, staging)
                new.update(qe.UpdateOperation.upsert_points([_edge_point(p) for p in batch]))
            if new is not None:
                new.optimize()
                new.flush()
                new.close()
        except BaseException:
            if new is not None:
                new.close()
            shutil.rmtree(staging, ignore_errors=True)
            raise
        with self._lock:
            optimizer = self._optimizer
        if optimizer is not None:
            optimizer.join()  # the old shard must not be closed under a running optimisation
        with self._lock:
            self._check_open()
            if self._shard is not None:
                self._shard.flush()
                self._shard.close()
                self._shard = None
            if self._dir.exists():
                self._dir.rename(retired)
            if dim is not None:
                staging.rename(self._dir)
                self._shard = qe.EdgeShard.load(str(self._dir))
        shutil.rmtree(retired, ignore_errors=True)
        log.info("rebuilt Qdrant Edge shard at %s", self._dir)
        return dim

    # --- internals -------------------------------------------------------------------------------

    def _create(self, dense_dim: int, where: Path | None = None) -> qe.EdgeShard:
        sparse = {SPARSE_VECTOR: qe.EdgeSparseVectorParams()}
        if self._lexical:
            sparse[BM25_VECTOR] = qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)
        config = qe.EdgeConfig(
            vectors={DENSE_VECTOR: qe.EdgeVectorParams(size=dense_dim, distance=qe.Distance.Cosine)},
            sparse_vectors=sparse,
        )
        where = where or self._dir
        where.mkdir(parents=True, exist_ok=True)
        shard = qe.EdgeShard.create(str(where), config)
        shard.update(
            qe.UpdateOperation.create_field_index(TENANT_FIELD, qe.KeywordIndexParams(is_tenant=True))
        )
        shard.update(qe.UpdateOperation.create_field_index(SOURCE_FIELD, qe.PayloadSchemaType.Keyword))
        shard.flush()
        log.info("created Qdrant Edge shard at %s (dense dim %d)", where, dense_dim)
        return shard

    def _verify_dim(self, shard: qe.EdgeShard, dense_dim: int) -> None:
        """The shard exposes no config getter: a one-result query with a vector of the expected size is
        checked against the stored vector size by the engine itself."""
        probe = qe.QueryRequest(limit=1, query=qe.Query.Nearest([1.0] * dense_dim, using=DENSE_VECTOR))
        try:
            shard.query(probe)
        except Exception as exc:
            if "dimension" in str(exc).lower():
                raise IndexConfigError(f"{self._dir}: {exc}; re-index into a new collection") from exc
            raise

    def _shard_or_none(self) -> qe.EdgeShard | None:
        """The shard, or None before the first write to a new path (reads then find nothing)."""
        self._check_open()
        return self._shard

    def _require_shard(self) -> qe.EdgeShard:
        shard = self._shard_or_none()
        if shard is None:
            raise IndexConfigError("the collection does not exist yet: call ensure_collection() first")
        return shard

    def _schedule_optimize(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._optimize_again = True
            if self._optimizer is None:
                self._optimizer = threading.Thread(
                    target=self._optimize_loop, name="edge-optimize", daemon=True
                )
                self._optimizer.start()

    def _optimize_loop(self) -> None:
        while True:
            with self._lock:
                shard = self._shard
                if self._closed or not self._optimize_again or shard is None:
                    self._optimizer = None
                    return
                self._optimize_again = False
            try:
                shard.optimize()
            except Exception:
                # Unoptimised segments still answer correctly, only slower: log; the next upsert retries.
                log.exception("background optimisation of %s failed", self._dir)
                with self._lock:
                    self._optimizer = None
                return


def _request(request: Search[qe.Filter] | Fused[qe.Filter]) -> qe.QueryRequest:
    if isinstance(request, Fused):
        return qe.QueryRequest(
            limit=request.limit,
            prefetches=[_prefetch(p) for p in request.prefetch],
            query=_fusion_query(request.rrf_k),
            filter=request.filter,
            with_payload=True,
        )
    return qe.QueryRequest(
        limit=request.limit,
        query=_nearest(request),
        filter=request.filter,
        with_payload=request.with_payload,
        params=qe.SearchParams(exact=True) if request.exact else None,
    )


def _prefetch(search: Search[qe.Filter]) -> qe.Prefetch:
    return qe.Prefetch(limit=search.limit, query=_nearest(search), filter=search.filter)


def _nearest(search: Search[qe.Filter]) -> qe.Query:
    vector: QueryVector | qe.SparseVector = search.vector
    if isinstance(vector, SparseVector):
        vector = _edge_sparse(vector)
    return qe.Query.Nearest(vector, using=search.using)


def _edge_point(point: NewPoint) -> qe.Point:
    vectors: dict[str, Any] = {DENSE_VECTOR: point.dense, SPARSE_VECTOR: _edge_sparse(point.sparse)}
    if point.bm25 is not None:
        vectors[BM25_VECTOR] = _edge_sparse(point.bm25)
    return qe.Point(point.point_id, vectors, point.payload)


def _has_vector(shard: qe.EdgeShard, name: str) -> bool:
    """The shard exposes no config getter: a one-result query on the named vector tells."""
    probe = qe.QueryRequest(limit=1, query=qe.Query.Nearest(qe.SparseVector([0], [1.0]), using=name))
    try:
        shard.query(probe)
    except Exception as exc:
        if "not existing vector name" in str(exc).lower():
            return False
        raise
    return True


def _edge_sparse(sparse: SparseVector) -> qe.SparseVector:
    return qe.SparseVector(list(sparse.indices), list(sparse.values))


def _fusion_query(rrf_k: int | None) -> Any:  # the stub types Fusion.Rrf/Dbsf apart from Fusion
    return qe.Fusion.Dbsf() if rrf_k is None else qe.Fusion.Rrf(k=rrf_k)
