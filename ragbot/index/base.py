"""The ``VectorIndex`` contract every backend (Qdrant Edge, qdrant-client) must satisfy.

Every call takes the bot (tenant) id and every read filters by it: tenancy is enforced here, not by callers.
The shared suite in ``tests/contract`` runs each backend through the same cases.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from ragbot.types import Chunk, EncodedChunk, Hit, SparseVector

FusionName = Literal["rrf", "dbsf"]
#: Which chunks one top list missed are worth an exact rescoring: ``(sparse, dense) -> chunk ids``.
RescoreFilter = Callable[[list[tuple[str, float]], list[tuple[str, float]]], Collection[str]]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A chunk from the sparse or the dense top list of one query, with both retrievers' scores.

    Candidates carry no text: client-side fusion ranks them, and only the winners' chunks are fetched.
    A score from the list that missed the chunk is exact when the caller had it rescored; otherwise
    (``exact`` false) it is that list's lowest score, an upper bound of the real one.
    """

    chunk_id: str
    sparse_score: float  # 0.0 when the chunk shares no term with the query
    dense_score: float
    sparse_rank: int | None  # position in the sparse top list, from 1; None when not in it
    dense_rank: int | None
    exact: bool = True


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

    def hybrid_candidates(
        self,
        bot_id: str,
        sparse: SparseVector,
        dense: Sequence[float],
        limit: int,
        rescore: RescoreFilter | None = None,
    ) -> list[Candidate]:
        """The union of the sparse and the dense top-``limit`` lists, for fusion computed by the caller.

        A chunk only one list found is rescored exactly by the other retriever; ``rescore``, given the
        two lists as ``(chunk_id, score)`` pairs, may narrow that to the chunks it names (the others get
        the list's lowest score as a bound, ``exact=False``), sparing a round trip when none is named.
        """
        ...

    def chunks(self, bot_id: str, chunk_ids: Sequence[str]) -> dict[str, Chunk]:
        """Stored chunks by id (ids of other bots or unknown ids are left out)."""
        ...

    def search_sparse(self, bot_id: str, sparse: SparseVector, limit: int) -> list[Hit]: ...

    def search_dense(self, bot_id: str, dense: Sequence[float], limit: int) -> list[Hit]: ...

    def sparse_vectors(self, bot_id: str, chunk_ids: Sequence[str]) -> dict[str, SparseVector]:
        """Stored document sparse vectors, for explaining which terms matched."""
        ...

    def count(self, bot_id: str, source_id: str | None = None) -> int: ...

    def close(self) -> None: ...
