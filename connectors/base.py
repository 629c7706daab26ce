"""The ``Connector`` seam: anything that yields documents for the ingest service.

A connector is told what it saw last time (``KnownDocument``) so it can skip unchanged content cheaply
(conditional requests, mtimes, sitemap lastmod) and report documents that vanished. The ingest service
owns chunking, encoding, indexing and bookkeeping; connectors only fetch and parse.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ragbot.types import SourceDocument


@dataclass(frozen=True, slots=True)
class KnownDocument:
    """What the last sync stored about one document."""

    uri: str
    content_hash: str
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True, slots=True)
class Fetched:
    """New or possibly changed content; the ingest service compares hashes before re-encoding."""

    document: SourceDocument


@dataclass(frozen=True, slots=True)
class Unchanged:
    """The connector proved the document unchanged without downloading it (304, same mtime+size, ...)."""

    uri: str


@dataclass(frozen=True, slots=True)
class Gone:
    """A previously known document no longer exists (404/410, deleted file, dropped from the sitemap)."""

    uri: str
    reason: str


@dataclass(frozen=True, slots=True)
class Failed:
    """This document could not be read; the rest of the batch goes on."""

    uri: str
    reason: str


FetchResult = Fetched | Unchanged | Gone | Failed


@runtime_checkable
class Connector(Protocol):
    #: Identifies the sync scope (a folder path, a start URL); documents of one scope are synced together.
    @property
    def scope(self) -> str: ...

    def fetch(self, known: Mapping[str, KnownDocument]) -> Iterator[FetchResult]: ...


@runtime_checkable
class EstimatesTotal(Protocol):
    """Optional for a connector: how many results it expects so far, for progress bars (None: unknown)."""

    @property
    def expected_total(self) -> int | None: ...
