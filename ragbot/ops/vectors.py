"""One index point as one JSON line, and back: pure, so the archive's point format is tested alone.

The payload goes through the index's own ``chunk_to_payload``/``payload_to_chunk``, so a point restored from
an archive is exactly what ingest would have written. Vector values are the engines' float32, kept bit for
bit as base64 of little-endian float32 (a decimal float list would be 3x larger and round differently).
"""

from __future__ import annotations

import base64
import json
import sys
from array import array
from collections.abc import Sequence
from typing import Any

from ragbot.index.points import chunk_to_payload, payload_to_chunk, sparse_from_pairs
from ragbot.types import EncodedChunk, SparseVector

__all__ = ["PointLineError", "decode_point", "encode_point"]


class PointLineError(ValueError):
    """A line of the archive's point file is not a point."""


def _floats(values: Sequence[float]) -> str:
    packed = array("f", values)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def _unfloats(text: str) -> tuple[float, ...]:
    packed = array("f")
    packed.frombytes(base64.b64decode(text, validate=True))
    if sys.byteorder == "big":
        packed.byteswap()
    return tuple(packed)


def _sparse(vector: SparseVector | None) -> dict[str, Any] | None:
    if vector is None:
        return None
    return {"i": list(vector.indices), "v": _floats(vector.values)}


def _unsparse(data: Any) -> SparseVector | None:
    if data is None:
        return None
    indices = [int(i) for i in data["i"]]
    values = _unfloats(data["v"])
    if len(indices) != len(values):
        raise PointLineError("sparse vector with different numbers of indices and values")
    return sparse_from_pairs(indices, values)


def encode_point(item: EncodedChunk) -> str:
    """One line (without the newline) holding the chunk's payload and its three vectors."""
    record = {
        "payload": chunk_to_payload(item.chunk),
        "dense": _floats(item.dense),
        "sparse": _sparse(item.sparse),
        "bm25": _sparse(item.bm25),
    }
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def decode_point(line: str | bytes) -> EncodedChunk:
    """The point ``encode_point`` wrote; ``PointLineError`` for anything else."""
    try:
        record = json.loads(line)
        sparse = _unsparse(record["sparse"])
        if sparse is None:
            raise PointLineError("point without a sparse vector")
        return EncodedChunk(
            payload_to_chunk(record["payload"]), sparse, _unfloats(record["dense"]), _unsparse(record["bm25"])
        )
    except PointLineError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise PointLineError(f"not a point: {exc}") from exc
