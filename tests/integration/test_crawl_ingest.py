"""Crawl the fixture site into Qdrant Edge with the real encoders, then re-sync after edits and deletions.

Encoder calls are counted by a thin wrapper around the real encoders, so "re-encodes nothing else" is
measured, not assumed; the site's request log proves no disallowed URL was ever requested.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.encoders import CountingEncoder
from fixtures.site import FixtureSite
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ragbot.chunking import document_id
from ragbot.config import Settings
from ragbot.db.models import DocumentRow, Source
from ragbot.db.session import make_engine, make_session_factory, migrate
from ragbot.index.edge import EdgeIndex
from ragbot.services.ingest import IngestService, ProgressEvent, connector_for
from ragbot.services.jobs import IngestJobs

pytestmark = pytest.mark.integration

BOT = "crawl-bot"


@pytest.fixture(scope="module")
def encoders(real_sparse_encoder: Any, real_dense_encoder: Any) -> tuple[Any, Any]:
    return real_sparse_encoder, real_dense_encoder


@pytest.fixture
def stack(tmp_path: Path, encoders: tuple[Any, Any]) -> Iterator[dict[str, Any]]:
    url = f"sqlite:///{tmp_path / 'ragbot.db'}"
    migrate(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    index = EdgeIndex(tmp_path / "edge")
    sparse, dense = CountingEncoder(encoders[0]), CountingEncoder(encoders[1])
    settings = Settings(data_dir=tmp_path)
    service = IngestService(
        index,
        sparse,
        dense,
        sessions,
        chunk_max_tokens=settings.chunk_max_tokens,
        chunk_overlap_tokens=settings.chunk_overlap_tokens,
        batch_size=settings.encode_batch_size,
    )
    yield {
        "service": service,
        "index": index,
        "sessions": sessions,
        "sparse": sparse,
        "dense": dense,
        "settings": settings,
    }
    index.close()
    engine.dispose()


def document_rows(sessions: sessionmaker[Session]) -> dict[str, DocumentRow]:
    with sessions() as session:
        return {row.uri: row for row in session.scalars(select(DocumentRow).where(DocumentRow.bot_id == BOT))}


def page_requests(site: FixtureSite) -> list[str]:
    return [p for p in site.fetched_paths() if p != "/robots.txt" and not p.startswith("/sitemap")]


def test_crawl_then_resync_touches_only_what_changed(stack: dict[str, Any]) -> None:
    service: IngestService = stack["service"]
    index: EdgeIndex = stack["index"]
    sparse: CountingEncoder = stack["sparse"]
    settings: Settings = stack["settings"]
    events: list[ProgressEvent] = []
    # About 200 short pages: the crawl is under test here, not the encoders' speed.
    with FixtureSite(articles_per_topic=24, sections=1) as site:
        expected = site.expected_urls()
        assert len(expected) > 200

        report = service.ingest(
            BOT,
            connector_for(site.url("/"), settings, allow_private=True, max_pages=1000),
            progress=events.append,
        )

        # Every allowed page once; broken links counted as failures with a reason; nothing else.
        rows = document_rows(stack["sessions"])
        assert set(rows) == expected
        assert report.added == len(expected)
        assert (report.updated, report.unchanged, report.removed) == (0, 0, 0)
        assert {f["uri"] for f in report.failures} == site.broken_urls()
        assert report.failed == len(site.broken_urls())
        assert any("HTTP 404" in f["reason"] for f in report.failures)
        assert any("HTTP 500" in f["reason"] for f in report.failures)
        assert index.count(BOT) == report.chunks == sum(row.chunk_count for row in rows.values())
        assert len(sparse.texts) == report.chunks

        # robots.txt obeyed: no disallowed URL requested, not even the ones a sitemap or redirect points to.
        requested = page_requests(site)
        assert not [p for p in requested if p.startswith("/private/secret") or "print=" in p]
        assert "/private/public-note.html" in requested  # Allow beats the broader Disallow
        assert "/static/logo.png" not in requested
        assert max(Counter(requested).values()) == 1  # no page fetched twice

        # Progress was reported with a rate for the CLI bar.
        assert events[-1].done == report.added + report.failed
        assert events[-1].pages_per_s > 0
        assert events[-1].total is not None

        # PDF chunks cite their page; the heading path comes from the outline.
        hits = index.search_sparse(
            BOT, sparse.encode_query("bronze gyroscopes certified by the metrology bureau"), 3
        )
        assert hits[0].chunk.uri == site.url("/files/handbook.pdf")
        assert hits[0].chunk.page == 2
        assert hits[0].chunk.heading_path == ("Sprockets",)

        # --- re-sync after edits and deletions -----------------------------------------------------
        edited = ["/topics/1/article-3.html", "/topics/4/article-17.html", "/orphans/2.html"]
        deleted = {"/topics/2/article-4.html": 404, "/unlisted/1.html": 410}
        for path in edited:
            site.edit(path, "This sentence was added by an editor after the first crawl.")
        for path, status in deleted.items():
            site.delete(path, status)
        site.clear_log()
        sparse.texts.clear()
        stack["dense"].texts.clear()

        resync = service.ingest(
            BOT, connector_for(site.url("/"), settings, allow_private=True, max_pages=1000)
        )

        assert resync.updated == len(edited)
        assert resync.removed == len(deleted)
        assert resync.added == 0
        assert resync.unchanged == len(expected) - len(edited) - len(deleted)
        edited_chunks = sum(index.count(BOT, document_id(BOT, site.url(p))) for p in edited)
        assert resync.chunks == edited_chunks
        assert len(sparse.texts) == len(stack["dense"].texts) == edited_chunks  # nothing else re-encoded
        assert all(index.count(BOT, document_id(BOT, site.url(p))) == 0 for p in deleted)
        assert set(document_rows(stack["sessions"])) == expected - {site.url(p) for p in deleted}
        downloaded = {path for _, path, status in site.log if status == 200}
        assert {p for p in downloaded if not p.startswith(("/robots", "/sitemap"))} == set(edited)

        # A third pass with nothing changed does no encoding at all.
        sparse.texts.clear()
        steady = service.ingest(
            BOT, connector_for(site.url("/"), settings, allow_private=True, max_pages=1000)
        )
        assert (steady.added, steady.updated, steady.removed) == (0, 0, 0)
        assert sparse.texts == []


def test_background_job_reports_progress_and_result(stack: dict[str, Any]) -> None:
    jobs = IngestJobs(lambda: stack["service"], stack["sessions"], stack["settings"], progress_interval_s=0.0)
    try:
        with FixtureSite(topics=2, articles_per_topic=6, sections=1) as site:
            started = jobs.submit(BOT, site.url("/"), options={"allow_private": True})
            assert started.status == "queued"
            finished = jobs.wait(BOT, started.id, timeout_s=120)
        assert finished is not None
        assert finished.status == "succeeded", finished.error
        assert finished.attempts == 1
        assert finished.report["added"] == len(site.expected_urls())
        assert finished.report["progress"]["pages_per_s"] > 0
        assert finished.processed == finished.report["added"] + finished.report["failed"]
        assert jobs.get("another-bot", started.id) is None  # jobs are tenant-scoped
        assert [j.id for j in jobs.recent(BOT)] == [started.id]
        with stack["sessions"]() as session:  # the crawl options are kept for the source's re-syncs
            source = session.scalars(select(Source).where(Source.scope == site.url("/"))).one()
            assert source.options == {"allow_private": True}
    finally:
        jobs.shutdown()


def test_a_capped_resync_covers_the_same_pages_instead_of_growing(stack: dict[str, Any]) -> None:
    service: IngestService = stack["service"]
    settings: Settings = stack["settings"]
    with FixtureSite(topics=3, articles_per_topic=10, sections=1) as site:
        cap = 12
        assert len(site.expected_urls()) > 2 * cap
        first = service.ingest(BOT, connector_for(site.url("/"), settings, allow_private=True, max_pages=cap))
        assert first.added + first.failed <= cap
        again = service.ingest(BOT, connector_for(site.url("/"), settings, allow_private=True, max_pages=cap))
        # Pages proven unchanged count against the cap like fetched ones: the index does not grow.
        assert again.added + again.updated + again.unchanged + again.failed <= cap
        assert again.removed == 0
        assert len(document_rows(stack["sessions"])) <= cap
