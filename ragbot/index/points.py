"""Pure conversions between pipeline values and what a Qdrant point holds; shared by every backend.

Point ids: Qdrant accepts only UUIDs and unsigned integers. ``chunk_point_id`` makes ``Chunk.id`` a
deterministic UUID string (uuid5 of bot, document, position and text), so the chunk id *is* the point id,
re-ingesting unchanged text overwrites the same points, and two bots indexing the same URL never collide.
Any other string a caller uses as a chunk id is mapped through uuid5 as well (``point_id``); the original id
travels in the payload (``chunk_id``), so hits always carry exactly the id the caller stored.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from ragbot.types import Chunk, SparseVector

#: Fixed namespace: changing it would orphan every stored point, so it is part of the on-disk format.
CHUNK_NAMESPACE = uuid.UUID("b4606562-3526-4137-bad4-0bb8260b778c")

#: Payload fields that get a keyword index; every read filters on ``bot_id``.
TENANT_FIELD = "bot_id"
SOURCE_FIELD = "source_id"
CHUNK_ID_FIELD = "chunk_id"

_COLLECTION_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")

#: Named vectors of the collection. ``bm25`` (the exact-term retriever, IDF applied by the engine) arrived
#: after the first two: a collection created before it has only ``sparse`` and ``dense`` until rebuilt.
SPARSE_VECTOR = "sparse"
DENSE_VECTOR = "dense"
BM25_VECTOR = "bm25"


class PointFormatError(ValueError):
    """A vector or payload cannot be stored or read back; the message says which field and why."""


def chunk_point_id(bot_id: str, uri: str, chunk_index: int, text: str) -> str:
    """Deterministic UUID string for a chunk: same bot, document, position and text give the same id."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    name = json.dumps([bot_id, uri, chunk_index, digest])  # unambiguous, unlike joining with a separator
    return str(uuid.uuid5(CHUNK_NAMESPACE, name))


def point_id(chunk_id: str) -> str:
    """The Qdrant point id for a chunk id: the canonical UUID itself, or a uuid5 of any other string."""
    if not chunk_id:
        raise PointFormatError("chunk id must be a non-empty string")
    try:
        return str(uuid.UUID(chunk_id))
    except ValueError:
        return str(uuid.uuid5(CHUNK_NAMESPACE, chunk_id))


def check_bot_id(bot_id: str) -> str:
    """Tenancy is enforced by filtering on ``bot_id``, so an empty one must never reach a query or a point."""
    if not isinstance(bot_id, str) or not bot_id:
        raise PointFormatError(f"bot_id must be a non-empty string, got {bot_id!r}")
    return bot_id


def check_collection_name(name: str) -> str:
    """Collection names become directory names (Edge) and URL segments (server): keep them plain."""
    if not _COLLECTION_NAME.fullmatch(name):
        raise PointFormatError(f"collection name {name!r} must be 1-64 letters, digits, '_', '-' or '.'")
    return name


def check_search_limits(limit: int, prefetch_limit: int | None = None) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if prefetch_limit is not None and prefetch_limit < 1:
        raise ValueError(f"prefetch_limit must be at least 1, got {prefetch_limit}")


def chunk_to_payload(chunk: Chunk) -> dict[str, Any]:
    """Everything needed to rebuild and cite the chunk, plus ``url``/``path`` for readers of the raw store."""
    check_bot_id(chunk.bot_id)
    return {
        CHUNK_ID_FIELD: chunk.id,
        TENANT_FIELD: chunk.bot_id,
        SOURCE_FIELD: chunk.source_id,
        "uri": chunk.uri,
        "url": chunk.url,
        "path": chunk.path,
        "title": chunk.title,
        "text": chunk.text,
        "chunk_index": chunk.chunk_index,
        "heading_path": list(chunk.heading_path),
        "page": chunk.page,
        "start_s": chunk.start_s,
        "end_s": chunk.end_s,
        "char_start": chunk.char_start,
        "char_end": chunk.char_end,
    }


def payload_to_chunk(payload: Mapping[str, Any]) -> Chunk:
    try:
        return Chunk(
            id=str(payload[CHUNK_ID_FIELD]),
            bot_id=str(payload[TENANT_FIELD]),
            source_id=str(payload[SOURCE_FIELD]),
            uri=str(payload["uri"]),
            title=str(payload.get("title") or ""),
            text=str(payload["text"]),
            chunk_index=int(payload["chunk_index"]),
            heading_path=tuple(str(h) for h in payload.get("heading_path") or ()),
            page=_optional_int(payload.get("page")),
            start_s=_optional_float(payload.get("start_s")),
            end_s=_optional_float(payload.get("end_s")),
            char_start=int(payload.get("char_start") or 0),
            char_end=int(payload.get("char_end") or 0),
        )
    except KeyError as exc:
        raise PointFormatError(f"stored point lacks payload field {exc.args[0]!r}") from None


def sparse_from_pairs(indices: Sequence[int], values: Sequence[float]) -> SparseVector:
    """Build a ``SparseVector`` from a store's lists, which need not come back sorted by index."""
    if len(indices) != len(values):
        raise PointFormatError(f"sparse vector has {len(indices)} indices but {len(values)} values")
    pairs = sorted(zip((int(i) for i in indices), (float(v) for v in values), strict=True))
    return SparseVector(indices=tuple(i for i, _ in pairs), values=tuple(v for _, v in pairs))


def check_sparse(vector: SparseVector) -> None:
    """Reject what Qdrant would reject later with a vaguer message, or store as garbage (NaN)."""
    if len(vector.indices) != len(vector.values):
        raise PointFormatError(
            f"sparse vector has {len(vector.indices)} indices but {len(vector.values)} values"
        )
    previous = -1
    for index, value in zip(vector.indices, vector.values, strict=True):
        if index <= previous:
            raise PointFormatError("sparse vector indices must be non-negative and strictly increasing")
        if not math.isfinite(value):
            raise PointFormatError(f"sparse vector has a non-finite weight at index {index}")
        previous = index


def check_dense(vector: Sequence[float], dim: int | None = None) -> list[float]:
    """A plain float list of the expected size with finite, not-all-zero values (cosine needs a norm)."""
    values = [float(v) for v in vector]
    if dim is not None and len(values) != dim:
        raise PointFormatError(f"dense vector has {len(values)} dimensions, the collection has {dim}")
    if not values:
        raise PointFormatError("dense vector is empty")
    if not all(math.isfinite(v) for v in values):
        raise PointFormatError("dense vector has a non-finite value")
    if not any(values):
        raise PointFormatError("dense vector is all zeros, so its cosine similarity is undefined")
    return values


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
