"""Document ingest on the real parts: every format, per-file failures, page and time citations, re-sync,
uploads and tenancy, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fixtures.documents import encrypt_pdf, make_docx, make_pdf
from fixtures.encoders import CountingEncoder
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from connectors.files import Upload, UploadConnector
from ragbot.chunking import chunk_document
from ragbot.config import Settings
from ragbot.db.models import DocumentRow, Source
from ragbot.db.session import make_engine, make_session_factory, migrate
from ragbot.index.edge import EdgeIndex
from ragbot.services.ingest import IngestService, connector_for
from ragbot.types import Segment, SourceDocument

pytestmark = pytest.mark.integration

VTT = """WEBVTT

00:00:01.000 --> 00:00:05.000
Welcome to the quarterly briefing about the observatory.

00:00:05.500 --> 00:00:09.000
First, the telescope mirror was resurfaced with silver nitrate.

00:01:10.000 --> 00:01:15.250
Next, the planetarium dome will reopen for school visits in April.
"""

SRT = """1
00:00:02,000 --> 00:00:04,000
Our pastry chef explains the croissant lamination.

2
00:00:04,500 --> 00:00:08,000
Butter must stay at twelve degrees during folding.
"""


@pytest.fixture(scope="module")
def encoders(real_sparse_encoder: Any, real_dense_encoder: Any) -> tuple[Any, Any]:
    return real_sparse_encoder, real_dense_encoder


@dataclass
class Stack:
    service: IngestService
    index: EdgeIndex
    sparse: CountingEncoder
    dense: CountingEncoder
    sessions: sessionmaker[Session]


@pytest.fixture
def stack(tmp_path: Path, database_url: str, encoders: tuple[Any, Any]) -> Iterator[Stack]:
    migrate(database_url)
    engine = make_engine(database_url)
    index = EdgeIndex(tmp_path / "edge")
    sparse, dense = CountingEncoder(encoders[0]), CountingEncoder(encoders[1])
    sessions = make_session_factory(engine)
    service = IngestService(
        index, sparse, dense, sessions, chunk_max_tokens=120, chunk_overlap_tokens=20, batch_size=16
    )
    yield Stack(service, index, sparse, dense, sessions)
    index.close()
    engine.dispose()


def make_folder(root: Path) -> Path:
    root.mkdir()
    (root / "handbook.pdf").write_bytes(
        make_pdf(
            [
                "Opening hours: the archive opens at nine.",
                "The reading room requires cotton gloves for manuscripts.",
                "Late returns cost two florins per day.",
            ],
            title="Archive handbook",
        )
    )
    (root / "talk.vtt").write_text(VTT)
    (root / "kitchen.srt").write_text(SRT)
    (root / "guide.docx").write_bytes(
        make_docx(
            [("title", "Visitor guide"), ("h1", "Parking"), ("p", "Bicycles park behind the greenhouse.")]
        )
    )
    (root / "notes.md").write_text(
        "# Notes\n\n## Wifi\n\nThe guest network password is printed on the kettle.\n"
    )
    (root / "page.html").write_text(
        "<html><head><title>Ferry times</title></head><body><main><h1>Ferry</h1>"
        "<p>The ferry to the lighthouse leaves hourly from pier seven.</p></main></body></html>"
    )
    (root / "faq.txt").write_bytes("Le café du musée ferme à dix-sept heures précises.".encode("cp1252"))
    (root / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj <<>>\nnot really a pdf")
    (root / "locked.pdf").write_bytes(encrypt_pdf(make_pdf(["classified budget"])))
    (root / "empty.md").write_text("")
    (root / "huge.txt").write_text("word " * 40_000)
    return root


def top(stack: Stack, bot: str, query: str) -> Any:
    hits = stack.index.search_sparse(bot, stack.sparse.encode_query(query), 3)
    assert hits, f"no hit for {query!r}"
    return hits[0].chunk


def test_folder_of_every_format_with_failures_citations_and_resync(tmp_path: Path, stack: Stack) -> None:
    service = stack.service
    folder = make_folder(tmp_path / "docs")
    settings = Settings(data_dir=tmp_path, max_upload_bytes=100_000)
    report = service.ingest("acme", connector_for(str(folder), settings))

    assert report.added == 7
    assert report.failed == 4
    reasons = {Path(f["uri"]).name: f["reason"] for f in report.failures}
    assert "malformed PDF" in reasons["broken.pdf"]
    assert "encrypted PDF" in reasons["locked.pdf"]
    assert reasons["empty.md"] == "empty file"
    assert "over the 100000-byte limit" in reasons["huge.txt"]

    pdf = top(stack, "acme", "reading room cotton gloves manuscripts")
    assert (Path(pdf.uri).name, pdf.page, pdf.title) == ("handbook.pdf", 2, "Archive handbook")
    cue = top(stack, "acme", "planetarium dome reopen school visits")
    assert Path(cue.uri).name == "talk.vtt"
    assert cue.start_s is not None
    assert cue.end_s is not None
    assert cue.start_s <= 70.0 < 75.25 <= cue.end_s  # the chunk spans the cue that says it
    srt = top(stack, "acme", "butter twelve degrees folding lamination")
    assert Path(srt.uri).name == "kitchen.srt"
    assert srt.end_s == 8.0
    docx = top(stack, "acme", "bicycles park behind the greenhouse")
    assert docx.heading_path == ("Visitor guide", "Parking")
    assert "café du musée" in top(stack, "acme", "musée café ferme heures").text  # cp1252 decoded

    # Re-sync: one file edited, one deleted; nothing else is encoded again.
    sparse = stack.sparse
    sparse.texts.clear()
    faq = folder / "faq.txt"
    faq.write_text("The museum cafe now closes at six sharp.")
    os.utime(faq, ns=(faq.stat().st_atime_ns, faq.stat().st_mtime_ns + 5_000_000_000))
    (folder / "notes.md").unlink()
    resync = service.ingest("acme", connector_for(str(folder), settings))
    assert (resync.added, resync.updated, resync.removed, resync.unchanged) == (0, 1, 1, 5)
    assert resync.failed == 4  # still broken, still reported, nothing lost
    # only the changed file is encoded again, with its title ("faq", from the file name) as context
    assert sparse.texts == ["faq\nThe museum cafe now closes at six sharp."]
    with stack.sessions() as session:
        uris = {
            Path(u).name for u in session.scalars(select(DocumentRow.uri).where(DocumentRow.bot_id == "acme"))
        }
        sources = session.scalars(select(Source).where(Source.bot_id == "acme")).all()
    assert "notes.md" not in uris
    assert len(uris) == 6
    assert [(s.kind, s.scope) for s in sources] == [("files", str(folder.resolve()))]
    assert sources[0].last_synced_at is not None

    # Another bot ingesting the same folder gets its own copy; each bot sees only its own chunks.
    other = service.ingest("globex", connector_for(str(folder), settings))
    assert other.added == 6
    assert stack.index.count("globex") == other.chunks
    assert stack.index.count("acme") != 0
    assert {Path(top(stack, "globex", "ferry lighthouse pier seven").uri).name} == {"page.html"}


def test_uploads_replace_by_name(stack: Stack) -> None:
    service = stack.service
    first = service.ingest(
        "acme",
        UploadConnector(
            [
                Upload("policy.md", b"# Policy\n\nRefunds within 30 days."),
                Upload("bad.pdf", b"%PDF-1.4 junk"),
            ],
            max_bytes=10_000,
        ),
    )
    assert (first.added, first.failed) == (1, 1)
    again = service.ingest(
        "acme",
        UploadConnector([Upload("policy.md", b"# Policy\n\nRefunds within 60 days.")], max_bytes=10_000),
    )
    assert (again.added, again.updated, again.removed) == (0, 1, 0)
    assert "60 days" in top(stack, "acme", "refunds days policy").text
    with stack.sessions() as session:
        kinds = session.scalars(select(Source.kind).where(Source.bot_id == "acme")).all()
    assert kinds == ["upload"]


def test_chunks_fit_the_real_encoders_without_truncation(stack: Stack) -> None:
    """Long paragraphs and a pathological token: every chunk fits both models' real token limits."""
    long_paragraph = " ".join(
        f"Sentence {i} mentions the aurora observatory budget of {i * 7} crowns." for i in range(300)
    )
    doc = SourceDocument(
        uri="/long.txt",
        title="long",
        segments=(Segment(long_paragraph + "\n\n" + "x" * 5000 + "\n\n" + "Überprüfung " * 400),),
    )
    chunks = chunk_document(
        doc, bot_id="acme", count_tokens=stack.service.count_tokens, max_tokens=120, overlap_tokens=20
    )
    assert len(chunks) > 20
    covered = "".join(doc.text[c.char_start : c.char_end] for c in chunks)
    assert "x" * 100 in covered
    for c in chunks:
        assert stack.sparse.count_tokens(c.text) <= 120
        assert stack.dense.count_tokens(c.text) <= 120
        assert c.text == doc.text[c.char_start : c.char_end]
