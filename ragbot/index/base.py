"""The ``VectorIndex`` contract every backend (Qdrant Edge, qdrant-client) must satisfy.

Every call takes the bot (tenant) id and every read filters by it: tenancy is enforced here, not by callers.
The shared suite in ``tests/contract`` runs each backend through the same cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

from ragbot.types import EncodedChunk, Hit, SparseVector

FusionName = Literal["rrf", "dbsf"]


class IndexConfigError(ValueError):
    """The stored collection does not match what the caller expects (e.g. another dense dimension)."""


class IndexClosedError(RuntimeError):
    """The index was closed; open a new one."""


@runtime_checkable
class VectorIndex(Protocol):
    def ensure_collection(self, dense_dim: int) -> None:
        """Create the collection (named vectors ``sparse`` + ``dense``, payload indexes) if absent."""
        ...

    def upsert(self, items: Sequence[EncodedChunk]) -> None: ...

    def delete_source(self, bot_id: str, source_id: str) -> None:
        """Remove every chunk of one document."""
        ...

    def delete_chunks(self, bot_id: str, chunk_ids: Sequence[str]) -> None: ...

    def delete_bot(self, bot_id: str) -> None:
        """Remove every point of one tenant."""
        ...

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
        """Prefetch sparse + prefetch dense, fused inside the engine.

        ``rrf_k`` is the textbook constant of 1/(k + rank), ranks from 1, as in ``fusion.rrf``.
        Hits carry the sparse/dense component scores and ranks where the backend can give them.
        """
        ...

    def search_sparse(self, bot_id: str, sparse: SparseVector, limit: int) -> list[Hit]: ...

    def search_dense(self, bot_id: str, dense: Sequence[float], limit: int) -> list[Hit]: ...

    def sparse_vectors(self, bot_id: str, chunk_ids: Sequence[str]) -> dict[str, SparseVector]:
        """Stored document sparse vectors, for explaining which terms matched."""
        ...

    def count(self, bot_id: str, source_id: str | None = None) -> int: ...

    def close(self) -> None: ...
