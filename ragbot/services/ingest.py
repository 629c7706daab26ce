"""Ingest and re-sync: connector results -> chunks -> the encoders -> index, with SQL bookkeeping.

The ``documents`` table remembers, per bot and URI, the content hash and the validators (ETag,
Last-Modified) of what the index holds. A re-sync hands that to the connector (so it can skip work with
conditional requests) and compares hashes of whatever comes back, so only new or changed documents are
chunked and encoded; ``Gone`` removes a document from the index and the table.

Consistency between the index and SQL: the index is written first and the rows committed after, so a
crash in between leaves a row with the *old* hash (or none), which the next sync sees as changed and
repairs; deterministic chunk ids and a delete-by-document before every upsert make that repair idempotent.
When an index write fails, the affected rows are marked dirty (empty hash, no validators) for the same
reason. Chunks are encoded in batches across documents, so small pages still fill the encoders' batches.

What the encoders see: each chunk's page title and section headings, then its text
(``ragbot.chunking.context_text``), for SPLADE, the dense model and BM25 alike, so a later chunk of a page
still matches the page's subject. The stored chunk text, chunk ids and content hashes are unchanged by it
(the hash already covers the title, so a retitled page is re-encoded). BM25 analyses a document in its
language: the connector's, else the one detected on the document's opening text, once per document.
Collections written before BM25 or title context existed are upgraded from their stored payloads by
``reindex`` (``ragbot reindex``), without re-crawling.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connectors.base import (
    Connector,
    EstimatesTotal,
    Failed,
    Fetched,
    FetchResult,
    Gone,
    KnownDocument,
    Unchanged,
)
from ragbot.chunking import chunk_document, content_hash, context_text, document_id
from ragbot.db.models import Bot, DocumentRow, Source
from ragbot.encoders.base import DenseEncoder, SparseEncoder
from ragbot.index.base import VectorIndex
from ragbot.types import Chunk, EncodedChunk, IngestReport, SourceDocument, SparseVector

if TYPE_CHECKING:
    from ragbot.config import Settings
    from ragbot.encoders.lexical import Bm25Encoder

logger = logging.getLogger(__name__)

_Row = TypeVar("_Row", Bot, Source)
#: Characters of a document's opening its language is detected on (detection is linear in the text).
_LANGUAGE_SAMPLE_CHARS = 2000


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """Where an ingest stands, after each connector result."""

    done: int  # connector results handled (fetched, unchanged, gone, failed)
    total: int | None  # the connector's current estimate, None if it cannot tell
    elapsed_s: float
    pages_per_s: float
    report: IngestReport
    uri: str | None = None  # the document just handled


@dataclass(slots=True)
class _Pending:
    document: SourceDocument
    hash: str
    chunks: list[Chunk]
    row: DocumentRow | None


@dataclass(slots=True)
class _Run:
    bot_id: str
    source_pk: str
    rows: dict[str, DocumentRow]  # this source's documents by URI, detached snapshots
    report: IngestReport = field(default_factory=IngestReport)
    pending: list[_Pending] = field(default_factory=list)
    handled: set[str] = field(default_factory=set)
    done: int = 0

    @property
    def pending_chunks(self) -> int:
        return sum(len(p.chunks) for p in self.pending)


class IngestService:
    def __init__(
        self,
        index: VectorIndex,
        sparse: SparseEncoder,
        dense: DenseEncoder,
        session_factory: Callable[[], Session],
        *,
        chunk_max_tokens: int,
        chunk_overlap_tokens: int,
        batch_size: int,
        lexical: Bm25Encoder | None = None,
        title_context: bool = True,
    ) -> None:
        """``lexical``: the BM25 encoder (None: no BM25 vectors); ``title_context``: encode each chunk
        with its title and headings in front (``ragbot.chunking.context_text``)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self._index = index
        self._sparse = sparse
        self._dense = dense
        self._lexical = lexical
        self._title_context = title_context
        self._sessions = session_factory
        self._max_tokens = chunk_max_tokens
        self._overlap_tokens = chunk_overlap_tokens
        self._batch_size = batch_size

    def count_tokens(self, text: str) -> int:
        """The larger of both encoders' counts: a chunk must fit each model without truncation."""
        return max(self._sparse.count_tokens(text), self._dense.count_tokens(text))

    def ingest(
        self,
        bot_id: str,
        connector: Connector,
        *,
        kind: str | None = None,
        progress: Callable[[ProgressEvent], None] | None = None,
    ) -> IngestReport:
        """Sync one connector's scope into the bot's index; returns the counts and every failure's reason."""
        self._index.ensure_collection(self._dense.dim)
        run = self._open_run(bot_id, connector.scope, kind or str(getattr(connector, "kind", "files")))
        known = {
            uri: KnownDocument(uri, row.content_hash, row.etag, row.last_modified)
            for uri, row in run.rows.items()
        }
        started = time.monotonic()
        try:
            for result in connector.fetch(known):
                uri = self._handle(run, result)
                run.done += 1
                if run.pending_chunks >= self._batch_size:
                    self._flush(run)
                if progress is not None:
                    progress(self._progress(run, connector, started, uri))
        finally:
            self._flush(run)  # keep what was fetched even if the connector dies half-way
        with self._sessions() as session:
            source = session.get(Source, run.source_pk)
            if source is not None:
                source.last_synced_at = datetime.now(UTC)
                session.commit()
        logger.info("ingest of %s for bot %s: %s", connector.scope, bot_id, run.report.as_dict())
        return run.report

    def _progress(self, run: _Run, connector: Connector, started: float, uri: str) -> ProgressEvent:
        elapsed = time.monotonic() - started
        total = connector.expected_total if isinstance(connector, EstimatesTotal) else None
        return ProgressEvent(
            done=run.done,
            total=max(total, run.done) if total is not None else None,
            elapsed_s=elapsed,
            pages_per_s=run.done / elapsed if elapsed > 0 else 0.0,
            report=run.report,
            uri=uri,
        )

    # --- bookkeeping ---------------------------------------------------------------------------------

    def _open_run(self, bot_id: str, scope: str, kind: str) -> _Run:
        with self._sessions() as session:
            _get_or_create(session, Bot, {"id": bot_id}, {"name": bot_id})
            source = _get_or_create(session, Source, {"bot_id": bot_id, "scope": scope}, {"kind": kind})
            source_pk = source.id
            rows = session.scalars(
                select(DocumentRow).where(DocumentRow.bot_id == bot_id, DocumentRow.source_pk == source_pk)
            ).all()
            session.expunge_all()
        return _Run(bot_id=bot_id, source_pk=source_pk, rows={row.uri: row for row in rows})

    def _handle(self, run: _Run, result: FetchResult) -> str:
        if isinstance(result, Fetched):
            uri = result.document.uri
            if uri not in run.handled:
                run.handled.add(uri)
                self._take(run, result.document)
            return uri
        if result.uri in run.handled:
            return result.uri
        run.handled.add(result.uri)
        if isinstance(result, Unchanged):
            run.report.unchanged += 1
        elif isinstance(result, Gone):
            self._remove(run, result.uri, result.reason)
        elif isinstance(result, Failed):
            self._fail(run, result.uri, result.reason)
        return result.uri

    def _fail(self, run: _Run, uri: str, reason: str) -> None:
        run.report.failed += 1
        run.report.failures.append({"uri": uri, "reason": reason})

    def _take(self, run: _Run, document: SourceDocument) -> None:
        digest = content_hash(document)
        row = run.rows.get(document.uri)
        if row is not None and row.content_hash == digest:
            run.report.unchanged += 1
            if (row.etag, row.last_modified) != (document.etag, document.last_modified):
                self._refresh_validators(run.bot_id, document)
            return
        try:
            chunks = chunk_document(
                document,
                bot_id=run.bot_id,
                count_tokens=self.count_tokens,
                max_tokens=self._max_tokens,
                overlap_tokens=self._overlap_tokens,
            )
        except Exception as exc:  # a tokenizer choking on one document must not stop the batch
            logger.warning("cannot chunk %s", document.uri, exc_info=True)
            self._fail(run, document.uri, f"chunking failed: {type(exc).__name__}: {exc}")
            return
        if not chunks:
            self._fail(run, document.uri, "no text to index")
            return
        run.pending.append(_Pending(document, digest, chunks, row))

    def _refresh_validators(self, bot_id: str, document: SourceDocument) -> None:
        with self._sessions() as session:
            row = session.get(DocumentRow, document_id(bot_id, document.uri))
            if row is not None:
                row.etag, row.last_modified = document.etag, document.last_modified
                session.commit()

    def _remove(self, run: _Run, uri: str, reason: str) -> None:
        doc_id = document_id(run.bot_id, uri)
        with self._sessions() as session:
            row = session.get(DocumentRow, doc_id)
            if row is None or row.bot_id != run.bot_id:
                return  # never stored (or already removed): nothing to do
            try:
                self._index.delete_source(run.bot_id, doc_id)
            except Exception as exc:
                logger.warning("cannot remove %s from the index", uri, exc_info=True)
                self._fail(run, uri, f"removing from the index failed: {exc}")
                return
            session.delete(row)
            session.commit()
        logger.debug("removed %s: %s", uri, reason)
        run.report.removed += 1

    # --- encode + write ---------------------------------------------------------------------------------

    def _flush(self, run: _Run) -> None:
        pending, run.pending = run.pending, []
        if not pending:
            return
        pending = self._adopt_from_other_sources(run, pending)
        if not pending:
            return
        chunks = [chunk for item in pending for chunk in item.chunks]
        try:
            languages: dict[str, str | None] = {}
            for item in pending:
                language = item.document.language or self._document_language(item.document)
                languages.update(dict.fromkeys((chunk.id for chunk in item.chunks), language))
            encoded = self.encode(chunks, languages)
            for item in pending:
                self._index.delete_source(run.bot_id, document_id(run.bot_id, item.document.uri))
            self._index.upsert(encoded)
        except Exception as exc:
            logger.warning("encoding or indexing a batch of %d documents failed", len(pending), exc_info=True)
            self._mark_dirty(run.bot_id, [item.document.uri for item in pending if item.row is not None])
            for item in pending:
                self._fail(run, item.document.uri, f"indexing failed: {type(exc).__name__}: {exc}")
            return
        try:
            with self._sessions() as session:
                for item in pending:
                    self._store_row(session, run, item)
                session.commit()
        except Exception as exc:  # rows keep their old hash: the next sync re-encodes and repairs
            logger.warning("recording %d documents failed", len(pending), exc_info=True)
            for item in pending:
                self._fail(run, item.document.uri, f"recording the document failed: {exc}")
            return
        for item in pending:
            if item.row is None:
                run.report.added += 1
            else:
                run.report.updated += 1
            run.report.chunks += len(item.chunks)

    def encoding_text(self, chunk: Chunk) -> str:
        """The text the encoders see for a chunk (with its title and headings unless that is off)."""
        return context_text(chunk) if self._title_context else chunk.text

    def encode(
        self,
        chunks: Sequence[Chunk],
        languages: dict[str, str | None] | None = None,
        *,
        neural: Sequence[EncodedChunk | None] | None = None,
    ) -> list[EncodedChunk]:
        """Every encoder's vectors for the chunks. ``languages`` (chunk id -> ISO code or None) spares BM25
        the detection; ``neural`` (one per chunk, or None) reuses stored SPLADE and dense vectors where given.
        Identical texts (a repeated notice, a shared intro) are encoded once."""
        texts_of = [self.encoding_text(chunk) for chunk in chunks]
        reuse = list(neural) if neural is not None else [None] * len(chunks)
        texts = list(dict.fromkeys(t for t, kept in zip(texts_of, reuse, strict=True) if kept is None))
        sparse = self._sparse.encode_documents(texts) if texts else []
        dense = self._dense.encode_documents(texts) if texts else []
        if len(sparse) != len(texts) or len(dense) != len(texts):
            raise RuntimeError(f"encoders returned {len(sparse)}/{len(dense)} vectors for {len(texts)} texts")
        vectors = {text: (s, d) for text, s, d in zip(texts, sparse, dense, strict=True)}
        lexical: list[SparseVector | None] = [None] * len(chunks)
        if self._lexical is not None:
            langs = languages or {}
            lexical = list(
                self._lexical.encode_documents(texts_of, [langs.get(chunk.id) for chunk in chunks])
            )
        encoded = []
        for chunk, text, kept, bm25 in zip(chunks, texts_of, reuse, lexical, strict=True):
            s, d = (kept.sparse, kept.dense) if kept is not None else vectors[text]
            encoded.append(EncodedChunk(chunk, s, d, bm25))
        return encoded

    def _document_language(self, document: SourceDocument) -> str | None:
        """The document's language for BM25, detected once on its opening; None when undetermined."""
        if self._lexical is None:
            return None
        from ragbot.encoders.lexical import UNDETERMINED, detect_language

        language = detect_language(document.text[:_LANGUAGE_SAMPLE_CHARS])
        return None if language == UNDETERMINED else language

    def reindex(
        self, bot_id: str | None = None, *, keep_neural: bool = False, batch_size: int = 256
    ) -> ReindexReport:
        """Re-encode stored chunks from their payloads (no re-crawl): BM25 always, SPLADE and dense too
        unless ``keep_neural``; ``bot_id`` None for every bot.

        A collection created before BM25 existed is rebuilt whole into the current layout (the other bots'
        chunks keep their SPLADE and dense vectors and gain BM25 ones); otherwise the bot's points are
        overwritten in place under the same ids.
        """
        report = ReindexReport()
        rebuild = self._lexical is not None and not self._index.has_bm25()

        def batches() -> Iterator[list[EncodedChunk]]:
            for stored in self._index.export(batch_size):
                mine = [i for i, item in enumerate(stored) if bot_id is None or item.chunk.bot_id == bot_id]
                if not rebuild and not mine:
                    continue
                wanted = set(mine)
                report.bots.update(stored[i].chunk.bot_id for i in mine)
                neural = [item if keep_neural or i not in wanted else None for i, item in enumerate(stored)]
                selected = stored if rebuild else [stored[i] for i in mine]
                reuse = neural if rebuild else [neural[i] for i in mine]
                fresh = self.encode([item.chunk for item in selected], neural=reuse)
                report.chunks += len(mine)
                report.reencoded += sum(1 for kept in reuse if kept is None)
                yield fresh

        if rebuild:
            report.rebuilt = True
            self._index.rebuild(batches())
        else:
            for fresh in batches():
                self._index.upsert(fresh)
        logger.info("reindex: %s", report)
        return report

    def _adopt_from_other_sources(self, run: _Run, pending: list[_Pending]) -> list[_Pending]:
        """A document another source of this bot already holds is moved here; unchanged ones skip encoding."""
        strangers = {item.document.uri for item in pending if item.row is None}
        if not strangers:
            return pending
        with self._sessions() as session:
            found = {
                row.uri: row
                for row in session.scalars(
                    select(DocumentRow).where(
                        DocumentRow.bot_id == run.bot_id, DocumentRow.uri.in_(strangers)
                    )
                )
            }
            kept = []
            for item in pending:
                row = found.get(item.document.uri)
                if row is not None and row.content_hash == item.hash:
                    row.source_pk = run.source_pk
                    row.etag, row.last_modified = item.document.etag, item.document.last_modified
                    run.report.unchanged += 1
                    continue
                if row is not None:
                    item.row = row
                kept.append(item)
            session.commit()
            session.expunge_all()
        return kept

    def _store_row(self, session: Session, run: _Run, item: _Pending) -> None:
        doc = item.document
        values: dict[str, Any] = {
            "bot_id": run.bot_id,
            "source_pk": run.source_pk,
            "uri": doc.uri,
            "title": doc.title,
            "mime_type": doc.mime_type,
            "content_hash": item.hash,
            "etag": doc.etag,
            "last_modified": doc.last_modified,
            "chunk_count": len(item.chunks),
        }
        row = session.get(DocumentRow, document_id(run.bot_id, doc.uri))
        if row is None:
            session.add(DocumentRow(id=document_id(run.bot_id, doc.uri), **values))
        else:
            for key, value in values.items():
                setattr(row, key, value)

    def _mark_dirty(self, bot_id: str, uris: Iterable[str]) -> None:
        """Make the next sync re-fetch and re-encode these documents, whatever their hash was."""
        try:
            with self._sessions() as session:
                for uri in uris:
                    row = session.get(DocumentRow, document_id(bot_id, uri))
                    if row is not None:
                        row.content_hash, row.etag, row.last_modified = "", None, None
                session.commit()
        except Exception:
            logger.exception("cannot mark documents for repair; a later change will re-encode them")


@dataclass(slots=True)
class ReindexReport:
    """What ``IngestService.reindex`` did."""

    chunks: int = 0  # chunks of the selected bots re-encoded (BM25 at least)
    reencoded: int = 0  # of those, with fresh SPLADE and dense vectors
    rebuilt: bool = False  # the whole collection was rebuilt into the current layout
    bots: set[str] = field(default_factory=set)


def _get_or_create(
    session: Session, model: type[_Row], keys: dict[str, Any], defaults: dict[str, Any]
) -> _Row:
    """Select by ``keys`` or insert and commit; losing an insert race to another job is fine."""
    statement = select(model).filter_by(**keys)
    found = session.scalars(statement).first()
    if found is not None:
        return found
    created = model(**keys, **defaults)
    session.add(created)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return session.scalars(statement).one()
    return created


def connector_for(target: str, settings: Settings, **options: Any) -> Connector:
    """A ``WebsiteConnector`` for an http(s) URL, a ``FileConnector`` for a path.

    Web options (``max_pages``, ``max_depth``, ``include``, ``exclude``, ``allow_private``, ``sitemap``,
    ``resolver``...) override the settings when not None; they are ignored for paths.
    Raises ``ValueError`` for another URL scheme and ``FileNotFoundError`` for a missing path.
    """
    from connectors.files import FileConnector
    from connectors.website import WebsiteConnector

    if target.lower().startswith(("http://", "https://")):
        return WebsiteConnector.from_settings([target], settings, **options)
    if "://" in target:
        raise ValueError(f"unsupported target {target!r}: give an http(s) URL or a file/folder path")
    return FileConnector(target, max_bytes=settings.max_upload_bytes)
