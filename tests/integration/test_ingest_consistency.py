"""Index/SQL consistency under failures: a failed index write leaves the document marked for repair, and
work done before a connector breaks is kept. Real encoders, Qdrant Edge and SQLite; faults are injected by
thin wrappers around the real parts."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from connectors.base import Fetched, FetchResult, KnownDocument
from connectors.files import FileConnector
from ragbot.chunking import document_id
from ragbot.db.models import Bot, DocumentRow
from ragbot.db.session import make_engine, make_session_factory, migrate
from ragbot.index.edge import EdgeIndex
from ragbot.services.ingest import IngestService
from ragbot.types import EncodedChunk, Segment, SourceDocument

pytestmark = pytest.mark.integration


class FlakyIndex:
    """The real index, except that the next ``fail_upserts`` upserts raise."""

    def __init__(self, inner: EdgeIndex) -> None:
        self.inner = inner
        self.fail_upserts = 0

    def upsert(self, items: Sequence[EncodedChunk]) -> None:
        if self.fail_upserts:
            self.fail_upserts -= 1
            raise OSError("no space left on device")
        self.inner.upsert(items)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class BreaksHalfway:
    """A connector that hands over two documents and then fails (a crawl thread dying, a disk going away)."""

    scope = "breaks-halfway"

    def fetch(self, known: Mapping[str, KnownDocument]) -> Iterator[FetchResult]:
        for name in ("one", "two"):
            yield Fetched(
                SourceDocument(uri=f"/virtual/{name}.txt", title=name, segments=(Segment(f"Text {name}."),))
            )
        raise ConnectionError("connector lost its source")


@pytest.fixture(scope="module")
def encoders(real_sparse_encoder: Any, real_dense_encoder: Any) -> tuple[Any, Any]:
    return real_sparse_encoder, real_dense_encoder


@pytest.fixture
def parts(tmp_path: Path, encoders: tuple[Any, Any]) -> Iterator[tuple[IngestService, FlakyIndex, Any]]:
    url = f"sqlite:///{tmp_path / 'ragbot.db'}"
    migrate(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    index = FlakyIndex(EdgeIndex(tmp_path / "edge"))
    service = IngestService(
        index, encoders[0], encoders[1], sessions, chunk_max_tokens=100, chunk_overlap_tokens=10, batch_size=8
    )
    yield service, index, sessions
    index.inner.close()
    engine.dispose()


def test_failed_index_write_marks_the_document_for_repair(tmp_path: Path, parts: Any) -> None:
    service, index, sessions = parts
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in {
        "a.md": "# A\n\nAlpha facts.",
        "b.md": "# B\n\nBeta facts.",
        "c.md": "# C\n\nGamma.",
    }.items():
        (folder / name).write_text(text)
    first = service.ingest("bot", FileConnector(folder, max_bytes=10_000))
    assert first.added == 3
    a = folder / "a.md"
    a_id = document_id("bot", str(a.resolve()))
    original_chunks = index.count("bot", a_id)

    def touch(path: Path, text: str) -> None:
        stamp = path.stat().st_mtime_ns
        path.write_text(text)
        os.utime(path, ns=(stamp + 2_000_000_000, stamp + 2_000_000_000))

    touch(a, "# A\n\nAlpha facts, revised.")
    index.fail_upserts = 1
    broken = service.ingest("bot", FileConnector(folder, max_bytes=10_000))
    assert broken.failed == 1
    assert broken.failures[0]["uri"] == str(a.resolve())
    assert "indexing failed: OSError: no space left on device" in broken.failures[0]["reason"]
    with sessions() as session:
        row = session.get(DocumentRow, a_id)
        assert row is not None
        assert (row.content_hash, row.etag) == ("", None)  # marked dirty, validators dropped

    # The file goes back to its first text: same hash as the first sync, yet the dirty mark forces repair.
    touch(a, "# A\n\nAlpha facts.")
    repaired = service.ingest("bot", FileConnector(folder, max_bytes=10_000))
    assert (repaired.updated, repaired.failed) == (1, 0)
    assert index.count("bot", a_id) == original_chunks
    with sessions() as session:
        assert session.get(DocumentRow, a_id).content_hash != ""


def test_documents_fetched_before_a_connector_breaks_are_kept(parts: Any) -> None:
    service, index, sessions = parts
    with pytest.raises(ConnectionError, match="lost its source"):
        service.ingest("new-bot", BreaksHalfway())
    with sessions() as session:
        assert session.get(Bot, "new-bot") is not None  # the tenant row is created on first ingest
        uris = session.scalars(select(DocumentRow.uri).where(DocumentRow.bot_id == "new-bot")).all()
    assert sorted(uris) == ["/virtual/one.txt", "/virtual/two.txt"]
    assert index.count("new-bot") == 2
