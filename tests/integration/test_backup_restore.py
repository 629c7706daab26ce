"""``ragbot backup`` / ``ragbot restore`` round trips on real parts: a real ingest with the packaged
encoders into Qdrant Edge or qdrant-client (the Qdrant-server code path, in local mode), on SQLite and on
PostgreSQL; after the restore every table holds the same rows and the same searches return the same hits.
Then the refusals: an archive from another schema revision, a target that already holds data, a backup
that fails half way, and the CLI's exit codes (a shard held by another process included)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import textwrap
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from connectors.files import FileConnector
from ragbot.config import Settings, get_settings
from ragbot.db.models import Conversation, ConversationEvent, IngestJob, JobFile, Message
from ragbot.db.session import session_scope
from ragbot.index.base import IndexClosedError, VectorIndex
from ragbot.ops import sqldump
from ragbot.ops.archive import MANIFEST
from ragbot.ops.backup import SchemaMismatchError, TargetNotEmptyError, backup, restore
from ragbot.runtime import Runtime
from ragbot.types import Chunk, EncodedChunk, SparseVector

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant"),
    pytest.mark.filterwarnings("ignore:Local mode performs exact"),
]

DOCS = {
    "default": {
        "refunds.md": "# Refunds\n\nRefunds are paid within 14 days of the return reaching our warehouse.\n",
        "shipping.md": "# Shipping\n\nWe ship to Norway, Sweden and Denmark; parcels arrive in 3 days.\n",
        "warranty.md": "# Warranty\n\n## Bikes\n\nEvery frame has a lifetime warranty.\n\n## Batteries\n\n"
        "Batteries are covered for two years or 800 charge cycles.\n",
    },
    "shop": {"hours.md": "# Opening hours\n\nThe shop in Bergen opens at 9 and closes at 17 on weekdays.\n"},
}
QUESTIONS = [
    ("default", "how long until I get my refund"),
    ("default", "battery warranty cycles"),
    ("default", "do you deliver to Denmark"),
    ("shop", "when does the Bergen shop open"),
]


def _open_index(kind: str, data_dir: Path, stack: ExitStack) -> VectorIndex:
    if kind == "edge":
        from ragbot.index.edge import EdgeIndex

        index: VectorIndex = EdgeIndex(data_dir / "qdrant-edge", "ragbot")
    else:
        from qdrant_client import QdrantClient

        from ragbot.index.remote import QdrantServerIndex

        client = QdrantClient(location=":memory:")
        stack.callback(client.close)
        index = QdrantServerIndex(client=client, collection="ragbot")
    stack.callback(index.close)
    return index


def _runtime(
    url: str, data_dir: Path, index: VectorIndex, encoders: tuple[Any, Any], stack: ExitStack
) -> Runtime:
    runtime = Runtime(
        Settings(data_dir=data_dir, database_url=url),
        index=index,
        sparse_encoder=encoders[0],
        dense_encoder=encoders[1],
    )
    stack.callback(runtime.close)
    return runtime


def _fill(runtime: Runtime, docs_root: Path) -> None:
    """A real ingest for two bots, and a conversation with messages and live events (integer ids)."""
    for bot_id, files in DOCS.items():
        runtime.bots.ensure(bot_id, actor="test")
        folder = docs_root / bot_id
        folder.mkdir(parents=True)
        for name, body in files.items():
            (folder / name).write_text(body, encoding="utf-8")
        report = runtime.ingest_service.ingest(bot_id, FileConnector(folder, max_bytes=1 << 20))
        assert report.failed == 0
    at = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    with session_scope(runtime.session_factory) as session:
        conversation = Conversation(
            bot_id="default", visitor_id="v-1", title="Refund question", created_at=at
        )
        session.add(conversation)
        session.flush()
        for seq, (sender, text) in enumerate(
            [("visitor", "Where is my refund? 💸"), ("bot", "Within 14 days.")]
        ):
            session.add(
                Message(
                    bot_id="default",
                    conversation_id=conversation.id,
                    seq=seq,
                    sender_type=sender,
                    content=text,
                    latency_ms=412.5 if sender == "bot" else None,
                    grounded=sender == "bot",
                    created_at=at + timedelta(seconds=seq),
                )
            )
        job = IngestJob(bot_id="default", target="upload")  # an upload waiting for a worker: binary data
        session.add(job)
        session.flush()
        session.add(
            JobFile(bot_id="default", job_id=job.id, position=0, filename="a.bin", data=bytes(range(256)))
        )
        for n in range(3):
            session.add(
                ConversationEvent(
                    bot_id="default", conversation_id=conversation.id, type="note", data={"n": n, "x": [1.5]}
                )
            )


def _rows(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    with engine.connect() as connection:
        return {
            t.name: [dict(r._mapping) for r in connection.execute(select(t).order_by(*t.primary_key.columns))]
            for t in sqldump.tables()
        }


def _searches(runtime: Runtime) -> list[list[tuple[str, float]]]:
    return [[(h.chunk.id, h.score) for h in runtime.retriever.retrieve(b, q, 5)] for b, q in QUESTIONS]


COMBOS = [
    pytest.param(("sqlite", "edge"), ("sqlite", "edge"), id="sqlite+edge"),
    pytest.param(
        ("postgresql", "edge"), ("postgresql", "edge"), id="postgresql+edge", marks=pytest.mark.postgres
    ),
    pytest.param(
        ("postgresql", "qdrant"),
        ("postgresql", "qdrant"),
        id="postgresql+qdrant-client",
        marks=pytest.mark.postgres,
    ),
    pytest.param(
        ("sqlite", "edge"),
        ("postgresql", "qdrant"),
        id="sqlite+edge-to-postgresql+qdrant",
        marks=pytest.mark.postgres,
    ),
]


@pytest.mark.parametrize(("source", "target"), COMBOS)
def test_a_restored_deployment_has_the_same_rows_and_answers_the_same_searches(
    source: tuple[str, str],
    target: tuple[str, str],
    tmp_path: Path,
    scratch_database: Callable[[str], AbstractContextManager[str]],
    real_sparse_encoder: Any,
    real_dense_encoder: Any,
) -> None:
    encoders = (real_sparse_encoder, real_dense_encoder)
    archive = tmp_path / "backups" / "ragbot.tar"
    with ExitStack() as stack:
        source_url = stack.enter_context(scratch_database(source[0]))
        target_url = stack.enter_context(scratch_database(target[0]))
        before = _runtime(
            source_url, tmp_path / "a", _open_index(source[1], tmp_path / "a", stack), encoders, stack
        )
        _fill(before, tmp_path / "docs")
        expected_rows = _rows(before.engine)
        expected_hits = _searches(before)
        manifest = backup(archive, engine=before.engine, index=before.index, collection="ragbot")
        assert manifest.points == sum(before.index.count(b) for b in DOCS) > 4
        assert manifest.tables["documents"] == 4 and manifest.tables["conversation_events"] == 3

        after = _runtime(
            target_url, tmp_path / "b", _open_index(target[1], tmp_path / "b", stack), encoders, stack
        )
        report = restore(archive, engine=after.engine, index=after.index)

        assert report.points == manifest.points
        assert report.tables == manifest.tables
        assert (report.documents_marked_for_repair, report.points_without_document) == ([], 0)
        assert _rows(after.engine) == expected_rows
        assert {b: after.index.count(b) for b in DOCS} == {b: before.index.count(b) for b in DOCS}
        restored_hits = _searches(after)
        assert [[c for c, _ in hits] for hits in restored_hits] == [
            [c for c, _ in hits] for hits in expected_hits
        ]
        for got, want in zip(restored_hits, expected_hits, strict=True):
            assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-4, abs=1e-6)

        # ids keep counting after the restored ones (PostgreSQL's sequences were moved past them)
        with session_scope(after.session_factory) as session:
            conversation_id = session.scalars(select(Conversation.id)).one()
            event = ConversationEvent(bot_id="default", conversation_id=conversation_id, type="note")
            session.add(event)
            session.flush()
            assert event.id == max(r["id"] for r in expected_rows["conversation_events"]) + 1

        # a document whose points disagree with its row is marked for the next re-sync to repair
        refund = next(r for r in expected_rows["documents"] if r["uri"].endswith("refunds.md"))
        before.index.delete_source("default", refund["id"])
        partial = tmp_path / "backups" / "partial.tar"
        backup(partial, engine=before.engine, index=before.index, collection="ragbot")
        third = _runtime(
            f"sqlite:///{tmp_path / 'c.db'}",
            tmp_path / "c",
            _open_index("edge", tmp_path / "c", stack),
            encoders,
            stack,
        )
        repaired = restore(partial, engine=third.engine, index=third.index)
        assert repaired.documents_marked_for_repair == [refund["id"]]
        rows = {r["id"]: r for r in _rows(third.engine)["documents"]}
        assert rows[refund["id"]]["content_hash"] == ""
        assert all(r["content_hash"] for i, r in rows.items() if i != refund["id"])


def _tiny_point(bot_id: str = "default") -> EncodedChunk:
    chunk = Chunk(
        id="c-1", bot_id=bot_id, source_id="doc-1", uri="/doc-1", title="t", text="text", chunk_index=0
    )
    return EncodedChunk(chunk, SparseVector((1,), (1.0,)), (1.0, 0.0, 0.0, 0.0))


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_restore_refuses_a_foreign_schema_and_a_target_that_holds_data(
    backend: str, tmp_path: Path, scratch_database: Callable[[str], AbstractContextManager[str]]
) -> None:
    from ragbot.index.edge import EdgeIndex

    with ExitStack() as stack:
        url = stack.enter_context(scratch_database(backend))
        source = Runtime(Settings(data_dir=tmp_path / "a", database_url=url))
        stack.callback(source.close)
        source.bots.ensure("default", actor="test")
        source.index.ensure_collection(4)
        source.index.upsert([_tiny_point()])
        good = tmp_path / "good.tar"
        backup(good, engine=source.engine, index=source.index, collection="ragbot")

        # the same deployment: it already holds rows
        with pytest.raises(TargetNotEmptyError, match="database already holds data"):
            restore(good, engine=source.engine, index=source.index)

        # an empty database beside a collection that holds points
        target_url = f"sqlite:///{tmp_path / 'b.db'}"
        target = Runtime(Settings(data_dir=tmp_path / "b", database_url=target_url))
        stack.callback(target.close)
        target.index.ensure_collection(4)
        target.index.upsert([_tiny_point("other")])
        with pytest.raises(TargetNotEmptyError, match="collection already holds points"):
            restore(good, engine=target.engine, index=target.index)
        with target.engine.connect() as connection:
            assert sqldump.nonempty_tables(connection) == []

        # an archive from another schema revision, into an empty deployment
        foreign = tmp_path / "foreign.tar"
        with tarfile.open(good) as tar, tarfile.open(foreign, "w") as out:
            for member in tar.getmembers():
                body = tar.extractfile(member)
                assert body is not None
                if member.name == MANIFEST:
                    manifest = json.loads(body.read())
                    manifest["schema_revision"] = ["9999_from_the_future"]
                    raw = json.dumps(manifest).encode()
                    member.size = len(raw)
                    body = io.BytesIO(raw)
                out.addfile(member, body)
        empty = Runtime(Settings(data_dir=tmp_path / "c", database_url=f"sqlite:///{tmp_path / 'c.db'}"))
        stack.callback(empty.close)
        with pytest.raises(SchemaMismatchError, match="9999_from_the_future"):
            restore(foreign, engine=empty.engine, index=empty.index)
        assert next(iter(empty.index.export(1)), None) is None
        report = restore(good, engine=empty.engine, index=empty.index)  # the refusals wrote nothing
        assert report.points == 1
        assert isinstance(empty.index, EdgeIndex)


def test_a_failed_backup_leaves_no_file_behind(tmp_path: Path) -> None:
    runtime = Runtime(Settings(data_dir=tmp_path / "a", database_url=f"sqlite:///{tmp_path / 'a.db'}"))
    try:
        runtime.bots.ensure("default", actor="test")
        runtime.index.close()
        with pytest.raises(IndexClosedError):
            backup(
                tmp_path / "out" / "b.tar", engine=runtime.engine, index=runtime.index, collection="ragbot"
            )
    finally:
        runtime.close()
    assert list((tmp_path / "out").iterdir()) == []


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    from ragbot.cli import app

    monkeypatch.delenv("RAGBOT_DATABASE_URL", raising=False)
    monkeypatch.delenv("RAGBOT_QDRANT_URL", raising=False)

    def run(data_dir: str, *args: str) -> Any:
        monkeypatch.setenv("RAGBOT_DATA_DIR", str(tmp_path / data_dir))
        get_settings.cache_clear()
        return CliRunner().invoke(app, list(args))

    yield run
    get_settings.cache_clear()


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from ragbot.index.edge import EdgeIndex
    index = EdgeIndex(Path(sys.argv[1]), "ragbot")
    print("ready", flush=True)
    sys.stdin.readline()
    index.close()
    """
)


def test_the_commands_round_trip_and_refuse_with_clear_exit_codes(
    cli: Callable[..., Any], tmp_path: Path
) -> None:
    migrated = cli("a", "migrate")
    assert migrated.exit_code == 0 and "database schema at" in migrated.output
    assert cli("a", "bots", "create", "Shop", "--origin", "https://shop.example.com").exit_code == 0
    archive = str(tmp_path / "shop.tar")
    made = cli("a", "backup", archive, "--json")
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout)["tables"]["bots"] == 1

    again = cli("a", "backup", archive)
    assert again.exit_code == 2 and "never overwrites" in again.output

    restored = cli("b", "restore", archive, "--json")
    assert restored.exit_code == 0, restored.output
    assert json.loads(restored.stdout)["tables"]["bots"] == 1
    listed = cli("b", "bots", "list", "--json")
    assert [b["name"] for b in json.loads(listed.stdout)] == ["Shop"]

    twice = cli("b", "restore", archive)
    assert twice.exit_code == 2 and "already holds data" in twice.output

    (tmp_path / "junk.tar").write_bytes(b"junk" * 200)
    junk = cli("c", "restore", str(tmp_path / "junk.tar"))
    assert junk.exit_code == 2 and "not a ragbot backup archive" in junk.output

    # the embedded shard open in another process (a running `ragbot serve`): stop it first
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "a" / "qdrant-edge")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        busy = cli("a", "backup", str(tmp_path / "busy.tar"))
        assert busy.exit_code == 3
        assert "stop `ragbot serve` first" in busy.output and "RAGBOT_QDRANT_URL" in busy.output
        assert not (tmp_path / "busy.tar").exists()
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=30)


class PausedAfterUpsert:
    """The real index, except that its first upsert, once written, waits for ``resume``: the moment an
    ingest has replaced a batch's points and not yet committed their rows, held open for a backup."""

    def __init__(self, inner: VectorIndex) -> None:
        self.inner = inner
        self.written = threading.Event()
        self.resume = threading.Event()

    def upsert(self, items: Any) -> None:
        self.inner.upsert(items)
        if not self.written.is_set():
            self.written.set()
            self.resume.wait(timeout=120)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.postgres
def test_a_backup_taken_during_an_ingest_restores_to_a_deployment_one_re_sync_makes_whole(
    tmp_path: Path,
    scratch_database: Callable[[str], AbstractContextManager[str]],
    real_sparse_encoder: Any,
    real_dense_encoder: Any,
) -> None:
    """Online backup on PostgreSQL in the worst moment of a re-sync that rewrites every page (new points
    written, rows not yet committed): the restore marks those pages for repair, and one re-sync of the
    restored deployment gives exactly the source's documents, each with its own points and no orphans."""
    encoders = (real_sparse_encoder, real_dense_encoder)
    folder = tmp_path / "site"
    folder.mkdir()
    for n in range(6):
        (folder / f"page{n}.md").write_text(f"# Page {n}\n\nShort text number {n}.\n", encoding="utf-8")
    with ExitStack() as stack:
        index = PausedAfterUpsert(_open_index("edge", tmp_path / "a", stack))
        source = _runtime(
            stack.enter_context(scratch_database("postgresql")),
            tmp_path / "a",
            index,  # type: ignore[arg-type]
            encoders,
            stack,
        )
        source.bots.ensure("default", actor="test")
        index.written.set()  # the first ingest passes straight through
        source.ingest_service.ingest("default", FileConnector(folder, max_bytes=1 << 20))
        index.written.clear()
        for n in range(6):  # every page grows to several chunks
            body = "".join(
                f"\n## Part {p}\n\n" + f"Section {p} of page {n} says something else. " * 12 for p in range(2)
            )
            (folder / f"page{n}.md").write_text(f"# Page {n}\n{body}", encoding="utf-8")
        errors: list[BaseException] = []

        def resync() -> None:
            try:
                source.ingest_service.ingest("default", FileConnector(folder, max_bytes=1 << 20))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                index.written.set()

        worker = threading.Thread(target=resync)
        worker.start()
        try:
            assert index.written.wait(timeout=120)
            archive = tmp_path / "online.tar"
            backup(archive, engine=source.engine, index=source.index, collection="ragbot")
        finally:
            index.resume.set()
            worker.join(timeout=300)
        assert not errors

        target = _runtime(
            stack.enter_context(scratch_database("postgresql")),
            tmp_path / "b",
            _open_index("edge", tmp_path / "b", stack),
            encoders,
            stack,
        )
        report = restore(archive, engine=target.engine, index=target.index)
        assert report.documents_marked_for_repair  # caught between its points and its rows
        target.ingest_service.ingest("default", FileConnector(folder, max_bytes=1 << 20))

        def documents(runtime: Runtime) -> dict[str, tuple[str, str, int]]:
            rows = _rows(runtime.engine)["documents"]
            return {r["id"]: (r["uri"], r["content_hash"], r["chunk_count"]) for r in rows}

        restored = documents(target)
        assert restored == documents(source)
        for doc_id, (_, _, chunk_count) in restored.items():
            assert target.index.count("default", source_id=doc_id) == chunk_count > 1
        assert target.index.count("default") == sum(c for _, _, c in restored.values())  # no orphan points
