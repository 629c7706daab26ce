"""The ``VectorIndex`` contract every backend (Qdrant Edge, qdrant-client) must satisfy.

Every call takes the bot (tenant) id and every read filters by it: tenancy is enforced here, not by callers.
The shared suite in ``tests/contract`` runs each backend through the same cases.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from ragbot.types import Chunk, EncodedChunk, Hit, SparseVector

FusionName = Literal["rrf", "dbsf"]
#: Which chunks a top list missed are worth an exact rescoring: given the top lists as ``(chunk_id, score)``
#: pairs, in the order sparse, dense (and bm25 when it ran), the chunk ids to rescore.
RescoreFilter = Callable[[Sequence[list[tuple[str, float]]]], Collection[str]]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A chunk from the sparse, the dense or the BM25 top list of one query, with every retriever's score.

    Candidates carry no text: client-side fusion ranks them, and only the winners' chunks are fetched.
    A score from a list that missed the chunk is exact when the caller had it rescored; otherwise
    (``exact`` false) it is that list's lowest score, an upper bound of the real one.
    """

    chunk_id: str
    sparse_score: float  # 0.0 when the chunk shares no term with the query
    dense_score: float
    sparse_rank: int | None  # position in the sparse top list, from 1; None when not in it
    dense_rank: int | None
    exact: bool = True
    bm25_score: float | None = None  # None when BM25 did not run (off, or a collection without it)
    bm25_rank: int | None = None

    def scores(self, lists: int) -> tuple[float, ...]:
        """``(sparse, dense)`` or, for three lists, ``(sparse, dense, bm25)``: the fusion's columns."""
        if lists == 2:
            return self.sparse_score, self.dense_score
        return self.sparse_score, self.dense_score, self.bm25_score or 0.0


class IndexConfigError(ValueError):
    """The stored collection does not match what the caller expects (e.g. another dense dimension)."""


class IndexClosedError(RuntimeError):
    """The index was closed; open a new one."""


@runtime_checkable
class VectorIndex(Protocol):
    def ensure_collection(self, dense_dim: int) -> None:
        """Create the collection (named vectors ``sparse``, ``dense`` and ``bm25`` with the engine's IDF
        modifier, payload indexes) if absent."""
        ...

    def has_bm25(self) -> bool:
        """Whether BM25 vectors are stored and searched: False when the index was opened without them, or
        on a collection created before them (``rebuild`` adds them); True for one not created yet."""
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
        bm25: SparseVector | None = None,
    ) -> list[Hit]:
        """Prefetch sparse + prefetch dense (+ prefetch BM25 when ``bm25`` is given), fused inside the engine.

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
        bm25: SparseVector | None = None,
    ) -> list[Candidate]:
        """The union of the sparse, the dense (and, given ``bm25`` and ``has_bm25``, the BM25) top-``limit``
        lists, for fusion computed by the caller.

        A chunk a list missed is rescored exactly by that retriever; ``rescore``, given the lists as
        ``(chunk_id, score)`` pairs, may narrow that to the chunks it names (the others get the list's
        lowest score as a bound, ``exact=False``), sparing a round trip when none is named.
        """
        ...

    def chunks(self, bot_id: str, chunk_ids: Sequence[str]) -> dict[str, Chunk]:
        """Stored chunks by id (ids of other bots or unknown ids are left out)."""
        ...

    def search_sparse(self, bot_id: str, sparse: SparseVector, limit: int) -> list[Hit]: ...

    def search_dense(self, bot_id: str, dense: Sequence[float], limit: int) -> list[Hit]: ...

    def search_bm25(self, bot_id: str, bm25: SparseVector, limit: int) -> list[Hit]:
        """BM25 alone (IDF applied by the engine); empty when the collection has no BM25 vectors."""
        ...

    def sparse_vectors(self, bot_id: str, chunk_ids: Sequence[str]) -> dict[str, SparseVector]:
        """Stored document sparse vectors, for explaining which terms matched."""
        ...

    def bm25_vectors(self, bot_id: str, chunk_ids: Sequence[str]) -> dict[str, SparseVector]:
        """Stored document BM25 vectors (empty without BM25), for explaining exact-term matches."""
        ...

    def export(self, batch_size: int = 256) -> Iterator[list[EncodedChunk]]:
        """Every stored point of every bot, in batches, as written (``bm25`` None where absent)."""
        ...

    def rebuild(self, points: Iterator[list[EncodedChunk]]) -> int:
        """Replace the whole collection by ``points`` in the current layout (with ``bm25`` when enabled);
        the points written. ``points`` may read this index's ``export``: the old data stays readable until
        everything is staged, then the new collection takes its place."""
        ...

    def count(self, bot_id: str, source_id: str | None = None) -> int: ...

    def close(self) -> None: ...
