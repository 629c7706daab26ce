"""Each bot's calibrated relevance floor (``ragbot.retrieval.scope``), computed and cached per content.

The off-topic null questions are encoded once per process (their vectors do not depend on the bot) and
kept on disk beside the data, so a restart does not pay for them again. A bot's floor is then one sparse
and one dense top-1 search per null question against its own index: fast, but not free, and it must
follow the content. It is cached under the bot's *content version* (its documents' count, chunk count and
last change, one small query), so an ingest that adds, changes or removes anything recalibrates on the
next turn, and nothing else does.

A first calibration runs in a background thread; a turn waits for it up to ``wait_s`` and otherwise uses
the fallback floor, so the first visitor of a freshly filled bot is never held for long.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ragbot.db.models import DocumentRow
from ragbot.db.session import session_scope
from ragbot.encoders.base import DenseEncoder, SparseEncoder
from ragbot.index.base import VectorIndex
from ragbot.retrieval.scope import NULL_QUESTIONS, FloorModel, calibrate
from ragbot.types import Hit, SparseVector

log = logging.getLogger(__name__)

__all__ = ["NullVectors", "RelevanceFloors"]


class NullVectors:
    """The null questions encoded by this deployment's encoders, memoised per process and on disk."""

    _memo: ClassVar[dict[tuple[int, int], tuple[list[SparseVector], list[tuple[float, ...]]]]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, sparse: SparseEncoder, dense: DenseEncoder, cache_path: Path | None = None) -> None:
        self._sparse, self._dense, self._path = sparse, dense, cache_path

    def get(self) -> tuple[list[SparseVector], list[tuple[float, ...]]]:
        key = (id(self._sparse), id(self._dense))
        with self._lock:
            if key not in self._memo:
                self._memo[key] = self._load() or self._encode()
            return self._memo[key]

    def _load(self) -> tuple[list[SparseVector], list[tuple[float, ...]]] | None:
        if self._path is None or not self._path.is_file():
            return None
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
            sparse = [SparseVector(tuple(i), tuple(v)) for i, v in data["sparse"]]
            dense = [tuple(v) for v in data["dense"]]
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("ignoring an unreadable null-question cache at %s", self._path)
            return None
        return (sparse, dense) if len(sparse) == len(dense) == len(NULL_QUESTIONS) else None

    def _encode(self) -> tuple[list[SparseVector], list[tuple[float, ...]]]:
        log.info("encoding %d off-topic questions for relevance calibration", len(NULL_QUESTIONS))
        sparse = [self._sparse.encode_query(q) for q in NULL_QUESTIONS]
        dense = [self._dense.encode_query(q) for q in NULL_QUESTIONS]
        if self._path is not None:
            try:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                payload = {"sparse": [[list(v.indices), list(v.values)] for v in sparse], "dense": dense}
                tmp = self._path.with_suffix(".tmp")
                tmp.write_text(json.dumps(payload), encoding="utf-8")
                tmp.replace(self._path)
            except OSError:
                log.warning("could not cache the null-question vectors at %s", self._path, exc_info=True)
        return sparse, dense


def null_cache_path(data_dir: Path, sparse_model: str, dense_model: str) -> Path:
    """One file per encoder pair and question set: changing either invalidates it by name."""
    key = hashlib.sha256(
        json.dumps([sparse_model, dense_model, list(NULL_QUESTIONS)]).encode("utf-8")
    ).hexdigest()[:16]
    return data_dir / "grounding" / f"null-vectors-{key}.json"


def _top(hits: Sequence[Hit], name: str) -> float | None:
    if not hits:
        return None
    value = getattr(hits[0], f"{name}_score", None)
    return float(value) if value is not None else float(hits[0].score)


class RelevanceFloors:
    """Per-bot ``FloorModel``s, keyed by content version."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        index: VectorIndex,
        nulls: NullVectors,
        *,
        k: float,
        wait_s: float,
    ) -> None:
        self._sessions = sessions
        self._index = index
        self._nulls = nulls
        self._k = k
        self._wait_s = wait_s
        self._models: dict[str, FloorModel] = {}
        self._running: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def version(self, bot_id: str) -> str:
        """What the bot's content is now: documents, chunks and the latest change."""
        with session_scope(self._sessions) as s:
            docs, chunks, latest = s.execute(
                select(
                    func.count(DocumentRow.id),
                    func.coalesce(func.sum(DocumentRow.chunk_count), 0),
                    func.max(DocumentRow.updated_at),
                ).where(DocumentRow.bot_id == bot_id)
            ).one()
        return f"{docs}:{chunks}:{latest.isoformat() if latest is not None else '-'}"

    def model(self, bot_id: str, *, wait_s: float | None = None) -> FloorModel | None:
        """The bot's floor for its current content; None while a calibration runs past ``wait_s``."""
        version = self.version(bot_id)
        with self._lock:
            cached = self._models.get(bot_id)
            if cached is not None and cached.version == version:
                return cached
            done = self._running.get(bot_id)
            if done is None:
                done = self._running[bot_id] = threading.Event()
                threading.Thread(
                    target=self._calibrate, args=(bot_id, version, done), name=f"floor-{bot_id}", daemon=True
                ).start()
        done.wait(self._wait_s if wait_s is None else wait_s)
        with self._lock:
            fresh = self._models.get(bot_id)
        if fresh is not None and fresh.version == version:
            return fresh
        return cached  # an older content's floor is a better guess than none; None on a first run

    def forget(self, bot_id: str) -> None:
        with self._lock:
            self._models.pop(bot_id, None)

    def describe(self, bot_id: str) -> dict[str, Any] | None:
        model = self._models.get(bot_id)
        return model.describe() if model is not None else None

    def _calibrate(self, bot_id: str, version: str, done: threading.Event) -> None:
        try:
            model = self.calibrate_now(bot_id, version)
            with self._lock:
                self._models[bot_id] = model
        except Exception:
            log.exception("relevance calibration failed for bot %s", bot_id)
        finally:
            with self._lock:
                self._running.pop(bot_id, None)
            done.set()

    def calibrate_now(self, bot_id: str, version: str = "") -> FloorModel:
        """Score every null question against the bot's index (top-1 per signal) and summarise."""
        sparse_vectors, dense_vectors = self._nulls.get()
        scores: dict[str, list[float | None]] = {"sparse": [], "dense": []}
        for sparse, dense in zip(sparse_vectors, dense_vectors, strict=True):
            scores["sparse"].append(_top(self._index.search_sparse(bot_id, sparse, 1), "sparse"))
            scores["dense"].append(_top(self._index.search_dense(bot_id, dense, 1), "dense"))
        model = calibrate(scores, k=self._k, version=version)
        log.info("relevance floor of bot %s: %s", bot_id, model.describe())
        return model
