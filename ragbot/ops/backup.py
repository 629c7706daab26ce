"""``ragbot backup PATH`` and ``ragbot restore PATH``: the SQL database and the vector index, together.

What is in an archive (``ragbot.ops.archive``): every table of the schema (``ragbot.ops.sqldump``) and
every point of the collection with its payload and its dense, SPLADE and BM25 vectors
(``ragbot.ops.vectors``), read through the ``VectorIndex`` protocol's ``export`` and written back with
``rebuild``. Why points and not a Qdrant snapshot file: Qdrant Edge cannot create snapshots (its API only
unpacks a server's), a server snapshot covers one node (a cluster needs one per node, restored node by
node), and qdrant-client's local mode, which stands in for a server in our tests, has no snapshots at
all. Points read through the client work the same on Edge, on one server and on a cluster, are tested on
each here, and restore into either backend, so an archive also moves a deployment from the embedded
index to a server. The cost: a restore rebuilds the vector indexes instead of loading them.

Consistency. The SQL snapshot is taken first, the points are read after it. Ingest writes points before
it commits their ``documents`` row and deletes points before the row, so a row in the snapshot always
has its points in the index when the export starts. With Qdrant Edge this process holds the shard's lock,
so no other process writes the index meanwhile (a running ``ragbot serve`` makes the backup stop with an
error saying so). With a Qdrant server, documents changed while the points were read can disagree with
their row; the restore compares each document's ``chunk_count`` with the points it restored and marks a
document that disagrees for repair (empty hash), as ingest does after a failed write, so the next re-sync
re-encodes it; points of a document without a row (an ingest in flight) are restored and counted.

Refusals, before anything is written: a backup never overwrites a file; a restore needs a well-formed
archive whose checksums match, made at this ragbot's schema revision, and an empty database and index.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, update

from ragbot.index.base import VectorIndex
from ragbot.ops import sqldump
from ragbot.ops.archive import (
    ArchiveError,
    ArchiveReader,
    ArchiveWriter,
    Manifest,
    TargetExistsError,
)
from ragbot.ops.vectors import PointLineError, decode_point, encode_point
from ragbot.types import EncodedChunk

__all__ = [
    "ArchiveError",
    "RestoreReport",
    "SchemaMismatchError",
    "TargetExistsError",
    "TargetNotEmptyError",
    "backup",
    "index_kind",
    "restore",
]

log = logging.getLogger(__name__)

POINTS = "index/points.jsonl.gz"


class SchemaMismatchError(RuntimeError):
    """The archive was made at another schema revision than this ragbot's."""


class TargetNotEmptyError(RuntimeError):
    """A restore goes into an empty database and an empty collection only."""


@dataclass(slots=True)
class RestoreReport:
    tables: dict[str, int]
    points: int
    #: documents whose points disagreed with their row, marked so the next re-sync re-encodes them
    documents_marked_for_repair: list[str] = field(default_factory=list)
    #: points whose document has no row (an ingest was in flight when the backup was taken)
    points_without_document: int = 0


def index_kind(index: VectorIndex) -> str:
    """A name for the manifest: which engine the points came from."""
    name = type(index).__name__
    return {"EdgeIndex": "qdrant-edge", "QdrantServerIndex": "qdrant"}.get(name, name)


def _sql_member(table: str) -> str:
    return f"sql/{table}.jsonl.gz"


def backup(
    path: Path, *, engine: Engine, index: VectorIndex, collection: str, batch_size: int = 256
) -> Manifest:
    """Write the archive to ``path`` (which must not exist); its manifest is returned."""
    writer = ArchiveWriter(path)
    try:
        counts: dict[str, int] = {}
        with sqldump.snapshot(engine, writer.stage) as connection:
            heads = sqldump.schema_heads(connection)
            for table in sqldump.tables():
                with writer.lines(_sql_member(table.name)) as out:
                    counts[table.name] = sqldump.dump_table(connection, table, out)
        points, dim, bm25 = 0, None, False
        with writer.lines(POINTS) as out:
            for batch in index.export(batch_size):
                for item in batch:
                    out.write(encode_point(item) + "\n")
                    dim = len(item.dense)
                    bm25 = bm25 or item.bm25 is not None
                points += len(batch)
        manifest = Manifest(
            created_at=datetime.now(UTC).isoformat(),
            ragbot_version=_version(),
            schema_revision=heads,
            database_backend=engine.dialect.name,
            tables=counts,
            index_backend=index_kind(index),
            collection=collection,
            points=points,
            dense_dim=dim,
            bm25=bm25,
        )
        writer.commit(manifest)
    except BaseException:
        writer.abort()
        raise
    log.info("backup written to %s: %d rows, %d points", path, sum(counts.values()), points)
    return manifest


def restore(path: Path, *, engine: Engine, index: VectorIndex, batch_size: int = 256) -> RestoreReport:
    """Load the archive at ``path`` into ``engine``'s database (migrated to this ragbot's schema, empty)
    and ``index`` (empty). The SQL is one transaction, committed only once the points are in."""
    with ArchiveReader(path) as archive:
        manifest = archive.manifest
        known = {t.name for t in sqldump.tables()}
        with engine.begin() as connection:
            heads = sqldump.schema_heads(connection)
            if heads != manifest.schema_revision:
                raise SchemaMismatchError(
                    f"{path} was made at schema revision {manifest.schema_revision} by ragbot "
                    f"{manifest.ragbot_version}; this ragbot's database is at {heads}. Restore it with the "
                    "ragbot version that made it, then start the newer ragbot to upgrade the schema"
                )
            if set(manifest.tables) != known:
                raise ArchiveError(
                    f"{path} lists tables {sorted(manifest.tables)}, the schema has {sorted(known)}"
                )
            filled = sqldump.nonempty_tables(connection)
            if filled:
                raise TargetNotEmptyError(
                    f"the database already holds data (tables {', '.join(filled)}): restore into an "
                    "empty database (a new PostgreSQL database, or a new RAGBOT_DATA_DIR)"
                )
            if next(iter(index.export(1)), None):
                raise TargetNotEmptyError(
                    "the vector collection already holds points: restore into an empty one (a new "
                    "RAGBOT_DATA_DIR, or another RAGBOT_QDRANT_COLLECTION on the server)"
                )
            tables: dict[str, int] = {}
            for table in sqldump.tables():
                try:
                    tables[table.name] = sqldump.load_table(
                        connection, table, archive.lines(_sql_member(table.name))
                    )
                except ValueError as exc:
                    raise ArchiveError(f"{path}: {exc}") from None
                if tables[table.name] != manifest.tables[table.name]:
                    raise ArchiveError(
                        f"{path}: table {table.name} has {tables[table.name]} rows, its manifest says "
                        f"{manifest.tables[table.name]}"
                    )
            sqldump.reset_sequences(connection)
            per_document: Counter[tuple[str, str]] = Counter()
            written = index.rebuild(_points(archive, path, batch_size, per_document))
            if written != manifest.points:
                raise ArchiveError(f"{path}: {written} points restored, its manifest says {manifest.points}")
            report = RestoreReport(tables, written)
            _reconcile(connection, per_document, report)
    log.info("restored %s: %d rows, %d points", path, sum(tables.values()), written)
    return report


def _points(
    archive: ArchiveReader, path: Path, batch_size: int, per_document: Counter[tuple[str, str]]
) -> Iterator[list[EncodedChunk]]:
    batch: list[EncodedChunk] = []
    for number, line in enumerate(archive.lines(POINTS), 1):
        try:
            item = decode_point(line)
        except PointLineError as exc:
            raise ArchiveError(f"{path}: point {number}: {exc}") from None
        per_document[(item.chunk.bot_id, item.chunk.source_id)] += 1
        batch.append(item)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _reconcile(connection: Any, per_document: Counter[tuple[str, str]], report: RestoreReport) -> None:
    """Mark the documents whose restored points disagree with their row for repair (see the docstring)."""
    from ragbot.db.models import DocumentRow

    rows = connection.execute(select(DocumentRow.id, DocumentRow.bot_id, DocumentRow.chunk_count)).all()
    with_row = set()
    for doc_id, bot_id, chunk_count in rows:
        with_row.add((bot_id, doc_id))
        if per_document.get((bot_id, doc_id), 0) != chunk_count:
            report.documents_marked_for_repair.append(doc_id)
    if report.documents_marked_for_repair:
        connection.execute(
            update(DocumentRow)
            .where(DocumentRow.id.in_(report.documents_marked_for_repair))
            .values(content_hash="", etag=None, last_modified=None)
        )
        log.warning(
            "%d documents disagreed with their points and will be re-encoded by the next re-sync",
            len(report.documents_marked_for_repair),
        )
    report.points_without_document = sum(n for key, n in per_document.items() if key not in with_row)


def _version() -> str:
    from ragbot import __version__

    return __version__
