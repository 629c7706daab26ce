"""Value types passed between pipeline stages: connect -> chunk -> encode -> index -> retrieve -> generate.

They are frozen dataclasses with no behaviour beyond small derived properties, so every stage can be
tested with plain values and no servers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of text inside a document that keeps where it came from (page, time span, heading path)."""

    text: str
    heading_path: tuple[str, ...] = ()
    page: int | None = None
    start_s: float | None = None
    end_s: float | None = None


@dataclass(frozen=True, slots=True)
class SourceDocument:
    """One fetched file or web page, as a connector hands it to the ingest service."""

    uri: str  # canonical URL or absolute path: the document's identity inside a bot
    title: str
    segments: tuple[Segment, ...]
    mime_type: str = "text/plain"
    language: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.segments)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A retrievable span of a document; ``id`` is deterministic so re-ingesting creates no duplicates."""

    id: str
    bot_id: str
    source_id: str  # stable id of the document (derived from bot + uri)
    uri: str
    title: str
    text: str
    chunk_index: int
    heading_path: tuple[str, ...] = ()
    page: int | None = None
    start_s: float | None = None
    end_s: float | None = None
    char_start: int = 0
    char_end: int = 0

    @property
    def url(self) -> str | None:
        return self.uri if self.uri.startswith(("http://", "https://")) else None

    @property
    def path(self) -> str | None:
        return None if self.url else self.uri


@dataclass(frozen=True, slots=True)
class SparseVector:
    """SPLADE output: vocabulary ids with positive weights, ids strictly increasing."""

    indices: tuple[int, ...]
    values: tuple[float, ...]

    def as_dict(self) -> dict[int, float]:
        return dict(zip(self.indices, self.values, strict=True))


@dataclass(frozen=True, slots=True)
class EncodedChunk:
    chunk: Chunk
    sparse: SparseVector
    dense: tuple[float, ...]
    bm25: SparseVector | None = None  # the exact-term (BM25) vector; None where BM25 is off


@dataclass(frozen=True, slots=True)
class MatchedTerm:
    """One vocabulary term's share of a sparse score: query weight x document weight."""

    term: str
    contribution: float
    in_text: bool = True  # False for SPLADE expansion terms absent from the chunk's text


@dataclass(frozen=True, slots=True)
class Hit:
    chunk: Chunk
    score: float  # fused score, higher is better
    sparse_score: float | None = None
    dense_score: float | None = None
    sparse_rank: int | None = None
    dense_rank: int | None = None
    matched_terms: tuple[MatchedTerm, ...] = ()
    bm25_score: float | None = None  # the exact-term (BM25) retriever's score, where it ran
    bm25_rank: int | None = None


@dataclass(frozen=True, slots=True)
class Citation:
    n: int  # the [n] marker as shown to the user
    chunk: Chunk
    score: float
    snippet: str
    matched_terms: tuple[MatchedTerm, ...] = ()


class OwnerMode(StrEnum):
    BOT = "bot"
    PENDING_HUMAN = "pending_human"
    HUMAN = "human"
    RESOLVED = "resolved"


class SenderType(StrEnum):
    VISITOR = "visitor"
    BOT = "bot"
    AGENT = "agent"
    SYSTEM = "system"


class MessageStatus(StrEnum):
    COMPLETE = "complete"
    PARTIAL = "partial"  # the stream was cut: the stored text is what arrived
    FAILED = "failed"  # no answer could be produced; the visitor's message is still stored
    REFUSED = "refused"  # retrieval found nothing relevant enough; no LLM call was made


class EventType(StrEnum):
    START = "start"
    DELTA = "delta"
    CITATION = "citation"
    ERROR = "error"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class ChatEvent:
    """A typed server-sent event of one chat turn."""

    type: EventType
    data: dict[str, Any]


@dataclass(slots=True)
class IngestReport:
    """Counts of one ingest or re-sync, plus each failure with its reason."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: int = 0
    chunks: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "failed": self.failed,
            "chunks": self.chunks,
            "failures": list(self.failures),
        }
