"""One persistence suite, run on SQLite and on PostgreSQL: the schema, the repositories and the guarantees
the services rely on (tenant isolation, message order, cascades, durability, concurrent writers).

Schema tests get a fresh database each; data tests share one migrated database per backend and wipe it
after each test, which keeps the suite fast without letting tests see each other's rows.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from fixtures.threads import race
from sqlalchemy import Engine, String, func, inspect, select, text
from sqlalchemy.orm import Session, sessionmaker

from ragbot.db import repositories as repo
from ragbot.db.models import (
    Base,
    Bot,
    CitationRow,
    Conversation,
    DocumentRow,
    Message,
    RetrievalLog,
    UnansweredQuestion,
)
from ragbot.db.session import alembic_config, make_engine, make_session_factory, migrate, session_scope
from ragbot.retrieval.calibration import FusionCalibration
from ragbot.retrieval.fusion import top_z
from ragbot.services.calibration_store import SqlCalibrationStore
from ragbot.types import Chunk, Citation, Hit, MatchedTerm, MessageStatus, OwnerMode, SenderType

pytestmark = pytest.mark.integration

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session", params=BACKENDS)
def migrated_url(
    request: pytest.FixtureRequest, scratch_database: Callable[[str], AbstractContextManager[str]]
) -> Iterator[str]:
    with scratch_database(request.param) as url:
        migrate(url)
        yield url


@pytest.fixture
def engine(migrated_url: str) -> Iterator[Engine]:
    engine = make_engine(migrated_url)
    yield engine
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


def _chunk(n: int, *, bot_id: str = "bot-a", uri: str | None = None, page: int | None = None) -> Chunk:
    uri = uri or f"https://docs.example.org/page-{n}"
    return Chunk(
        id=f"chunk-{n}",
        bot_id=bot_id,
        source_id=f"doc-{n}",
        uri=uri,
        title=f"Page {n}",
        text=f"text of chunk {n}",
        chunk_index=0,
        page=page,
    )


def _hits(count: int) -> list[Hit]:
    return [
        Hit(
            chunk=_chunk(i),
            score=1.0 / i,
            sparse_score=2.0 / i,
            dense_score=0.5 / i,
            sparse_rank=i,
            dense_rank=i,
        )
        for i in range(1, count + 1)
    ]


def _conversation_with_answer(sessions: sessionmaker[Session], bot_id: str = "bot-a") -> tuple[str, str]:
    """A conversation holding one question and one cited answer with its retrieval log and a gap record."""
    hits = _hits(3)
    with session_scope(sessions) as s:
        conv = repo.create_conversation(s, bot_id, title="pricing")
        repo.add_message(s, bot_id, conv.id, SenderType.VISITOR, "What does it cost?")
        answer = repo.add_message(s, bot_id, conv.id, SenderType.BOT, "It is free [1].", model="m")
        repo.add_citations(
            s, bot_id, answer.id, [Citation(n=1, chunk=hits[0].chunk, score=0.9, snippet="free")]
        )
        repo.add_retrieval_log(s, bot_id, answer.id, "cost", hits, {hits[0].chunk.id})
        repo.record_unanswered(s, bot_id, conv.id, answer.id, "What does it cost?", 0.1)
        return conv.id, answer.id


# --------------------------------------------------------------------------- schema


def test_migrate_creates_the_models_schema_and_is_idempotent(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        migrate(engine)  # second call: already at head, nothing to do
        heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert set(context.get_current_heads()) == heads
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_downgrade_to_base_then_upgrade_again(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        command.downgrade(alembic_config(engine), "base")
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
        command.upgrade(alembic_config(engine), "head")
        assert set(inspect(engine).get_table_names()) == {*Base.metadata.tables, "alembic_version"}
    finally:
        engine.dispose()


FAILING_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "9999"
down_revision = {head!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("canary", sa.Column("id", sa.Integer(), primary_key=True))
    raise RuntimeError("migration bug")


def downgrade() -> None:
    op.drop_table("canary")
"""


def test_a_failing_migration_leaves_the_previous_schema(database_url: str, tmp_path: Path) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        config = alembic_config(engine)
        scripts = tmp_path / "alembic"
        shutil.copytree(config.get_main_option("script_location") or "", scripts)
        head = ScriptDirectory.from_config(config).get_current_head()
        (scripts / "versions" / "9999_failing.py").write_text(FAILING_REVISION.format(head=head))
        config.set_main_option("script_location", str(scripts))

        with pytest.raises(RuntimeError, match="migration bug"):
            command.upgrade(config, "head")

        assert "canary" not in inspect(engine).get_table_names()
        with engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_heads() == (head,)
    finally:
        engine.dispose()


def test_concurrent_first_starts_migrate_once(database_url: str) -> None:
    """Several processes starting on a fresh database (API workers, a CLI command) all succeed."""
    script = "import sys; from ragbot.db.session import migrate; migrate(sys.argv[1])"
    starts = [subprocess.Popen([sys.executable, "-c", script, database_url]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in starts] == [0, 0]
    engine = make_engine(database_url)
    try:
        assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_concurrent_threads_migrate_once(database_url: str) -> None:
    def start(_: int, barrier: threading.Barrier) -> None:
        barrier.wait()
        migrate(database_url)

    assert race(3, start) == []


# --------------------------------------------------------------------------- conversations


def test_conversation_messages_and_citations_round_trip(sessions: sessionmaker[Session]) -> None:
    hits = _hits(3)
    cited = Citation(
        n=1,
        chunk=_chunk(1, uri="/srv/docs/manual.pdf", page=4),
        score=0.87,
        snippet="the manual says",
        matched_terms=(MatchedTerm("manual", 1.25), MatchedTerm("guide", 0.5, in_text=False)),
    )
    with session_scope(sessions) as s:
        conv = repo.create_conversation(s, "bot-a", title="manual")
        question = repo.add_message(s, "bot-a", conv.id, SenderType.VISITOR, "Where is the manual?")
        answer = repo.add_message(
            s,
            "bot-a",
            conv.id,
            "bot",
            "See the manual [1].",
            standalone_query="manual?",
            model="m",
            latency_ms=12.5,
        )
        repo.add_citations(s, "bot-a", answer.id, [cited])
        repo.add_retrieval_log(s, "bot-a", answer.id, "manual?", hits, {"chunk-2"})
        conv_id, question_id, answer_id = conv.id, question.id, answer.id

    with session_scope(sessions) as s:
        conv_row = repo.get_conversation(s, "bot-a", conv_id)
        assert conv_row is not None
        assert (conv_row.title, conv_row.owner_mode) == ("manual", OwnerMode.BOT)
        messages = repo.list_messages(s, "bot-a", conv_id)
        logs = s.scalars(select(RetrievalLog).where(RetrievalLog.message_id == answer_id)).all()

    assert [(m.id, m.seq, m.sender_type, m.status) for m in messages] == [
        (question_id, 1, "visitor", "complete"),
        (answer_id, 2, "bot", "complete"),
    ]
    assert messages[0].citations == []  # loaded eagerly: readable after the session closed
    assert (messages[1].standalone_query, messages[1].model, messages[1].latency_ms) == ("manual?", "m", 12.5)
    [row] = messages[1].citations
    assert (row.n, row.chunk_id, row.source_id, row.title, row.snippet) == (
        1,
        "chunk-1",
        "doc-1",
        "Page 1",
        "the manual says",
    )
    assert (row.url, row.path, row.page, row.score) == (None, "/srv/docs/manual.pdf", 4, 0.87)
    assert row.matched_terms == [
        {"term": "manual", "contribution": 1.25, "in_text": True},
        {"term": "guide", "contribution": 0.5, "in_text": False},
    ]
    assert [(log.rank, log.chunk_id, log.uri, log.cited) for log in logs] == [
        (1, "chunk-1", "https://docs.example.org/page-1", False),
        (2, "chunk-2", "https://docs.example.org/page-2", True),
        (3, "chunk-3", "https://docs.example.org/page-3", False),
    ]
    assert (logs[1].score, logs[1].sparse_score, logs[1].dense_score) == (0.5, 1.0, 0.25)


def test_timestamps_are_timezone_aware_utc(sessions: sessionmaker[Session]) -> None:
    before = datetime.now(UTC)
    with session_scope(sessions) as s:
        conv = repo.create_conversation(s, "bot-a")
        repo.add_message(s, "bot-a", conv.id, SenderType.VISITOR, "hi")
        conv_id = conv.id
    with session_scope(sessions) as s:
        [message] = repo.list_messages(s, "bot-a", conv_id)
        stored = repo.require_conversation(s, "bot-a", conv_id)
        assert message.created_at.utcoffset() == timedelta(0)
        assert before - timedelta(seconds=5) <= message.created_at <= datetime.now(UTC) + timedelta(seconds=5)
        assert stored.updated_at >= stored.created_at
        # A non-UTC time is stored as the same instant; a naive one is refused rather than guessed.
        stored.created_at = datetime(2024, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    with session_scope(sessions) as s:
        assert repo.require_conversation(s, "bot-a", conv_id).created_at == datetime(
            2024, 1, 1, 10, tzinfo=UTC
        )
    with sessions() as s:
        repo.require_conversation(s, "bot-a", conv_id).created_at = datetime(2024, 1, 1)
        with pytest.raises(Exception, match="naive datetime"):
            s.flush()


def test_one_bot_cannot_reach_another_bots_rows(sessions: sessionmaker[Session]) -> None:
    conv_id, answer_id = _conversation_with_answer(sessions, "bot-a")
    with session_scope(sessions) as s:
        repo.ensure_bot(s, "bot-b")
        assert repo.get_conversation(s, "bot-b", conv_id) is None
        assert repo.get_message(s, "bot-b", answer_id) is None
        assert repo.list_messages(s, "bot-b", conv_id) == []
        assert repo.history(s, "bot-b", conv_id) == []
        assert repo.list_conversations(s, "bot-b") == []
        assert repo.list_unanswered(s, "bot-b") == []
        assert repo.delete_conversation(s, "bot-b", conv_id) is False
    for write in (
        lambda s: repo.add_message(s, "bot-b", conv_id, SenderType.VISITOR, "intruder"),
        lambda s: repo.set_owner_mode(s, "bot-b", conv_id, OwnerMode.HUMAN),
        lambda s: repo.update_message(s, "bot-b", answer_id, content="rewritten"),
        lambda s: repo.add_citations(s, "bot-b", answer_id, []),
        lambda s: repo.add_retrieval_log(s, "bot-b", answer_id, "q", [], set()),
        lambda s: repo.record_unanswered(s, "bot-b", conv_id, answer_id, "q"),
    ):
        with pytest.raises(repo.NotFoundError), session_scope(sessions) as s:
            write(s)
    with session_scope(sessions) as s:
        messages = repo.list_messages(s, "bot-a", conv_id)
        assert [m.content for m in messages] == ["What does it cost?", "It is free [1]."]
        assert repo.require_conversation(s, "bot-a", conv_id).owner_mode == OwnerMode.BOT
        assert [c.title for c in repo.list_conversations(s, "bot-a")] == ["pricing"]


def test_seq_orders_messages_per_conversation(sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as s:
        first = repo.create_conversation(s, "bot-a")
        second = repo.create_conversation(s, "bot-a")
        for i in range(5):
            repo.add_message(
                s, "bot-a", first.id, SenderType.VISITOR if i % 2 == 0 else SenderType.BOT, f"a{i}"
            )
            if i < 2:
                repo.add_message(s, "bot-a", second.id, SenderType.VISITOR, f"b{i}")
        first_id, second_id = first.id, second.id
    with session_scope(sessions) as s:
        repo.add_message(
            s, "bot-a", first_id, SenderType.AGENT, "a5"
        )  # a later transaction continues the count
        assert [(m.seq, m.content) for m in repo.list_messages(s, "bot-a", first_id)] == [
            (i + 1, f"a{i}") for i in range(6)
        ]
        assert [(m.seq, m.content) for m in repo.list_messages(s, "bot-a", second_id)] == [
            (1, "b0"),
            (2, "b1"),
        ]
        # Most recently active first.
        assert [c.id for c in repo.list_conversations(s, "bot-a")] == [first_id, second_id]


def test_unicode_and_hostile_text_round_trip(sessions: sessionmaker[Session]) -> None:
    texts = [
        "Grüße, naïve café — «ça va?»",
        "日本語のテキストと中文",
        "مرحبا بالعالم",  # right-to-left
        "emoji 👩🏽‍💻🚀 and math 𝔸 ∑",
        "e\u0301 combining, zero\u200bwidth",
        "x" * 20_000,
    ]
    with session_scope(sessions) as s:
        conv = repo.create_conversation(s, "bot-ü", title="Ünïcode ✓")
        for t in texts:
            repo.add_message(s, "bot-ü", conv.id, SenderType.VISITOR, t)
        # NUL is dropped (PostgreSQL cannot store it); a lone surrogate from a JSON "\ud800" escape
        # becomes U+FFFD (UTF-8 cannot encode it), on both backends alike.
        repo.add_message(s, "bot-ü", conv.id, SenderType.VISITOR, "nul\x00byte and \ud800 lone")
        conv_id = conv.id
    with session_scope(sessions) as s:
        stored = [m.content for m in repo.list_messages(s, "bot-ü", conv_id)]
        assert stored == [*texts, "nulbyte and \ufffd lone"]
        assert repo.require_conversation(s, "bot-ü", conv_id).title == "Ünïcode ✓"


def test_long_titles_are_cut_to_fit_every_backend(sessions: sessionmaker[Session]) -> None:
    title_type = Conversation.__table__.c.title.type
    assert isinstance(title_type, String)
    limit = title_type.length or 0
    with session_scope(sessions) as s:
        conv = repo.create_conversation(s, "bot-a", title="é" * (limit + 50))
        conv_id = conv.id
    with session_scope(sessions) as s:
        assert repo.require_conversation(s, "bot-a", conv_id).title == "é" * limit


def test_deleting_a_conversation_cascades_to_everything_below_it(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    doomed, doomed_answer = _conversation_with_answer(sessions)
    raw_deleted, _ = _conversation_with_answer(sessions)
    kept, kept_answer = _conversation_with_answer(sessions)

    with session_scope(sessions) as s:
        assert repo.delete_conversation(s, "bot-a", doomed) is True
    # The database enforces the cascade itself (on SQLite only with foreign keys on, on every connection).
    for _ in range(2):
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM conversations WHERE id = :id"), {"id": raw_deleted})

    def count(model: type[Base], **where: str) -> int:
        with sessions() as s:
            query = select(func.count()).select_from(model)
            for column, value in where.items():
                query = query.where(getattr(model, column) == value)
            return s.scalar(query) or 0

    for conv_id in (doomed, raw_deleted):
        assert count(Conversation, id=conv_id) == 0
        assert count(Message, conversation_id=conv_id) == 0
        assert count(UnansweredQuestion, conversation_id=conv_id) == 0
    assert count(CitationRow, message_id=doomed_answer) == 0
    assert count(RetrievalLog, message_id=doomed_answer) == 0
    assert count(Message) == 2
    assert count(CitationRow) == count(CitationRow, message_id=kept_answer) == 1
    assert count(RetrievalLog) == count(RetrievalLog, message_id=kept_answer) == 3
    assert count(UnansweredQuestion) == count(UnansweredQuestion, conversation_id=kept) == 1


# --------------------------------------------------------------------------- statuses, history, owner modes


def test_every_message_status_is_stored_and_history_keeps_only_what_was_said(
    sessions: sessionmaker[Session],
) -> None:
    turns: list[tuple[SenderType, str, MessageStatus | str]] = [
        (SenderType.SYSTEM, "conversation started", MessageStatus.COMPLETE),
        (SenderType.VISITOR, "q1", MessageStatus.COMPLETE),
        (SenderType.BOT, "a1", MessageStatus.COMPLETE),
        (SenderType.VISITOR, "q2", MessageStatus.COMPLETE),
        (SenderType.BOT, "", MessageStatus.FAILED),
        (SenderType.VISITOR, "q3", MessageStatus.COMPLETE),
        (SenderType.BOT, "I don't know.", MessageStatus.REFUSED),
        (SenderType.VISITOR, "q4", MessageStatus.COMPLETE),
        (SenderType.BOT, "a4 par", "partial"),  # plain strings are accepted too
        (SenderType.AGENT, "a human here", MessageStatus.COMPLETE),
    ]
    with session_scope(sessions) as s:
        conv = repo.create_conversation(s, "bot-a")
        stored = [
            repo.add_message(
                s,
                "bot-a",
                conv.id,
                sender,
                content,
                status=status,
                error="the language model is unavailable" if status == MessageStatus.FAILED else None,
            )
            for sender, content, status in turns
        ]
        conv_id, streaming_id = conv.id, stored[8].id

    with session_scope(sessions) as s:
        statuses = {(m.sender_type, m.status) for m in repo.list_messages(s, "bot-a", conv_id)}
        assert {status for _, status in statuses} == {status.value for status in MessageStatus}
        failed = [m for m in repo.list_messages(s, "bot-a", conv_id) if m.status == MessageStatus.FAILED]
        assert failed[0].error == "the language model is unavailable"
        assert repo.history(s, "bot-a", conv_id) == [
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"},
            {"role": "user", "content": "q3"},
            {"role": "user", "content": "q4"},
            {"role": "assistant", "content": "a4 par"},
        ]
        assert repo.history(s, "bot-a", conv_id, limit=2) == [
            {"role": "user", "content": "q4"},
            {"role": "assistant", "content": "a4 par"},
        ]
        assert repo.history(s, "bot-a", conv_id, limit=2, before_seq=4) == [
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"},
        ]
        updated = repo.update_message(
            s, "bot-a", streaming_id, content="a4 partial, then finished", status="complete"
        )
        assert (updated.status, updated.content) == ("complete", "a4 partial, then finished")

    with pytest.raises(ValueError, match="bogus"), session_scope(sessions) as s:
        repo.add_message(s, "bot-a", conv_id, SenderType.BOT, "x", status="bogus")
    with pytest.raises(ValueError, match="robot"), session_scope(sessions) as s:
        repo.add_message(s, "bot-a", conv_id, "robot", "x")
    with pytest.raises(repo.ConversationNotFoundError), session_scope(sessions) as s:
        repo.add_message(s, "bot-a", "no-such-conversation", SenderType.VISITOR, "x")
    with session_scope(sessions) as s:
        assert len(repo.list_messages(s, "bot-a", conv_id)) == 10


def test_owner_modes(sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as s:
        waiting = repo.create_conversation(s, "bot-a")
        other = repo.create_conversation(s, "bot-a")
        assert waiting.owner_mode == OwnerMode.BOT
        waiting_id, other_id = waiting.id, other.id
    for mode in OwnerMode:
        with session_scope(sessions) as s:
            repo.set_owner_mode(s, "bot-a", other_id, mode)
        with session_scope(sessions) as s:
            assert repo.require_conversation(s, "bot-a", other_id).owner_mode == mode.value
    with session_scope(sessions) as s:
        repo.set_owner_mode(s, "bot-a", waiting_id, "pending_human")
    with session_scope(sessions) as s:
        assert [c.id for c in repo.list_conversations(s, "bot-a", owner_mode=OwnerMode.PENDING_HUMAN)] == [
            waiting_id
        ]
    with pytest.raises(ValueError, match="robot"), session_scope(sessions) as s:
        repo.set_owner_mode(s, "bot-a", waiting_id, "robot")
    with pytest.raises(repo.ConversationNotFoundError), session_scope(sessions) as s:
        repo.set_owner_mode(s, "bot-a", "missing", OwnerMode.HUMAN)


# --------------------------------------------------------------------------- durability and concurrency


def test_data_survives_an_engine_restart(migrated_url: str, engine: Engine) -> None:
    conv_id, answer_id = _conversation_with_answer(make_session_factory(engine))
    engine.dispose()  # what a server restart does to the pool

    restarted = make_engine(migrated_url)
    try:
        migrate(restarted)  # every start calls it: must not touch existing data
        with session_scope(make_session_factory(restarted)) as s:
            messages = repo.list_messages(s, "bot-a", conv_id)
            assert [m.id for m in messages][-1] == answer_id
            assert [c.snippet for c in messages[-1].citations] == ["free"]
    finally:
        restarted.dispose()


def test_concurrent_writers_get_distinct_consecutive_seqs(sessions: sessionmaker[Session]) -> None:
    """Writers to one conversation queue on its lock, so no two messages ever share a ``seq``."""
    with session_scope(sessions) as s:
        conv_id = repo.create_conversation(s, "bot-a").id
    writers, per_writer = 4, 8

    def write(w: int, barrier: threading.Barrier) -> None:
        barrier.wait()
        for i in range(per_writer):
            with session_scope(sessions) as s:
                repo.add_message(s, "bot-a", conv_id, SenderType.VISITOR, f"{w}-{i}")

    assert race(writers, write) == []
    with session_scope(sessions) as s:
        messages = repo.list_messages(s, "bot-a", conv_id)
    assert [m.seq for m in messages] == list(range(1, writers * per_writer + 1))
    assert sorted(m.content for m in messages) == sorted(
        f"{w}-{i}" for w in range(writers) for i in range(per_writer)
    )


def test_concurrent_ensure_bot_creates_one_row(sessions: sessionmaker[Session]) -> None:
    def ensure(_: int, barrier: threading.Barrier) -> None:
        with session_scope(sessions) as s:
            barrier.wait()
            repo.ensure_bot(s, "new-bot")

    assert race(4, ensure) == []
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Bot).where(Bot.id == "new-bot")) == 1


@pytest.mark.parametrize("bad", ["", "   ", "b" * 65])
def test_unusable_bot_ids_are_refused(sessions: sessionmaker[Session], bad: str) -> None:
    with pytest.raises(ValueError, match="bot_id"), session_scope(sessions) as s:
        repo.create_conversation(s, bad)


# --------------------------------------------------------------------------- sources, documents, jobs


def test_sources_and_documents(sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as s:
        source = repo.get_or_create_source(s, "bot-a", "files", "/srv/docs", options={"glob": "*.md"})
        assert repo.get_or_create_source(s, "bot-a", "files", "/srv/docs").id == source.id
        other_bot_source = repo.get_or_create_source(s, "bot-b", "files", "/srv/docs")
        assert other_bot_source.id != source.id
        for name in ("a", "b"):
            uri = f"/srv/docs/{name}.md"
            repo.upsert_document(
                s, "bot-a", source.id, document_id=f"doc-{name}", uri=uri, content_hash="h1", chunk_count=2
            )
        repo.mark_source_synced(s, "bot-a", source.id)
        source_id = source.id
    with session_scope(sessions) as s:
        known = repo.known_documents(s, "bot-a", source_id)
        assert {uri: (d.id, d.content_hash, d.chunk_count) for uri, d in known.items()} == {
            "/srv/docs/a.md": ("doc-a", "h1", 2),
            "/srv/docs/b.md": ("doc-b", "h1", 2),
        }
        assert repo.known_documents(s, "bot-b", source_id) == {}
        assert repo.get_or_create_source(s, "bot-a", "files", "/srv/docs").last_synced_at is not None
        uri = "/srv/docs/a.md"
        repo.upsert_document(
            s, "bot-a", source_id, document_id="doc-a", uri=uri, content_hash="h2", chunk_count=5, etag='"v2"'
        )
        assert repo.delete_document(s, "bot-b", "doc-b") is False
        assert repo.delete_document(s, "bot-a", "doc-b") is True
    with session_scope(sessions) as s:
        [doc] = repo.known_documents(s, "bot-a", source_id).values()
        assert (doc.id, doc.content_hash, doc.chunk_count, doc.etag) == ("doc-a", "h2", 5, '"v2"')
        assert s.scalar(select(func.count()).select_from(DocumentRow)) == 1


def test_ingest_jobs(sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as s:
        job_id = repo.create_ingest_job(s, "bot-a", "/srv/docs").id
    with session_scope(sessions) as s:
        assert repo.get_ingest_job(s, "bot-b", job_id) is None
        repo.update_ingest_job(s, "bot-a", job_id, status="succeeded", processed=3, report={"added": 3})
    with session_scope(sessions) as s:
        job = repo.get_ingest_job(s, "bot-a", job_id)
        assert job is not None
        assert (job.status, job.processed, job.report) == ("succeeded", 3, {"added": 3})
    with pytest.raises(ValueError, match="done"), session_scope(sessions) as s:
        repo.update_ingest_job(s, "bot-a", job_id, status="done")
    with pytest.raises(repo.IngestJobNotFoundError), session_scope(sessions) as s:
        repo.update_ingest_job(s, "bot-b", job_id, status="failed")


# --------------------------------------------------------------------------- fusion calibration


def test_fusion_observations_add_up_per_bot(sessions: sessionmaker[Session]) -> None:
    pad = (0.0,) * 6  # the spread sums, left out of most calls below
    with session_scope(sessions) as s:
        assert repo.get_fusion_calibration(s, "bot-a") is None
        assert repo.add_fusion_observations(s, "bot-a", (3, 1.5, 0.75, 0.5)) == (3, 1.5, 0.75, 0.5, *pad)
    with session_scope(sessions) as s:
        assert repo.add_fusion_observations(s, "bot-a", (2, 0.5, 0.25)) == (5, 2.0, 1.0, 0.5, *pad)  # no BM25
        assert repo.add_fusion_observations(s, "bot-b", (1, 9.0, 9.0, 9.0)) == (1, 9.0, 9.0, 9.0, *pad)
        spreads = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
        assert repo.add_fusion_observations(s, "bot-c", (1, 0.0, 0.0, 0.0, *spreads)) == (
            1,
            0,
            0,
            0,
            *spreads,
        )
    with session_scope(sessions) as s:
        assert repo.get_fusion_calibration(s, "bot-a") == (5, 2.0, 1.0, 0.5, *pad)
        assert repo.get_fusion_calibration(s, "bot-b") == (1, 9.0, 9.0, 9.0, *pad)
        assert repo.get_fusion_calibration(s, "bot-c") == (1, 0.0, 0.0, 0.0, *spreads)
        assert repo.reset_fusion_calibration(s, "bot-b") is True
        assert repo.reset_fusion_calibration(s, "bot-b") is False
    with session_scope(sessions) as s:
        assert repo.get_fusion_calibration(s, "bot-b") is None
        assert repo.get_fusion_calibration(s, "bot-a") == (5, 2.0, 1.0, 0.5, *pad)
    with pytest.raises(ValueError, match="11 values"), session_scope(sessions) as s:
        repo.add_fusion_observations(s, "bot-a", (1,) * 11)


def test_concurrent_fusion_flushes_all_count(sessions: sessionmaker[Session]) -> None:
    """Processes flush deltas, not totals, into one row: concurrent flushes (separate sessions, first
    insert included) are all added, none overwrites another."""
    writers, per_writer = 4, 5

    def flush(_: int, barrier: threading.Barrier) -> None:
        barrier.wait()  # all race for the first insert of the row
        for _ in range(per_writer):
            with session_scope(sessions) as s:
                repo.add_fusion_observations(s, "bot-a", (2, 0.5, 0.25, 0.125, 1.0))

    assert race(writers, flush) == []
    with session_scope(sessions) as s:
        assert repo.get_fusion_calibration(s, "bot-a") == (40, 10.0, 5.0, 2.5, 20.0, 0, 0, 0, 0, 0)


def test_two_processes_learn_the_same_weights_through_the_sql_store(sessions: sessionmaker[Session]) -> None:
    sharp, soft = [10.0] * 10 + [1.0] * 40, [1.0 - 0.01 * i for i in range(50)]
    workers = [
        FusionCalibration(min_queries=4, store=SqlCalibrationStore(sessions), flush_every=2) for _ in range(2)
    ]
    for worker in workers:
        for _ in range(2):
            worker.observe("bot-a", soft, sharp, soft)
    workers[0].flush()  # nothing pending, nothing written: the view is from its last flush
    assert [w.queries("bot-a") for w in workers] == [2, 4]
    workers[0].observe("bot-a", soft, sharp, soft)
    workers[0].flush()
    assert workers[0].queries("bot-a") == 5
    restarted = FusionCalibration(min_queries=4, store=SqlCalibrationStore(sessions))
    assert restarted.queries("bot-a") == 5
    assert restarted.weights("bot-a") == pytest.approx(workers[0].weights("bot-a"))
    assert restarted.queries("bot-b") == 0
    stored = SqlCalibrationStore(sessions).load("bot-a")
    assert stored is not None
    assert stored.queries == 5
    assert (stored.sparse_sum, stored.dense_sum, stored.bm25_sum) == pytest.approx(
        (5 * top_z(soft), 5 * top_z(sharp), 5 * top_z(soft))
    )
    assert stored.dense_mean_sum == pytest.approx(5 * 10.0)  # the top 10 of ``sharp``
    assert restarted.scales("bot-a") == pytest.approx(workers[0].scales("bot-a"))
    restarted.forget("bot-a")
    with session_scope(sessions) as s:
        assert repo.get_fusion_calibration(s, "bot-a") is None


def test_runtime_close_stores_pending_observations(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    """A worker's last few queries (fewer than ``flush_every``) are not lost when it shuts down."""
    from ragbot.config import Settings
    from ragbot.runtime import Runtime

    settings = Settings(data_dir=tmp_path, fusion_calibration_flush_every=100)
    unused = object()  # the retriever is built, never asked to search
    runtime = Runtime(
        settings, session_factory=sessions, sparse_encoder=unused, dense_encoder=unused, index=unused
    )
    runtime.retriever.calibration.observe("bot-a", [4.0, 2.0, 1.0, 0.0], [5.0, 3.0, 1.0, 0.0])
    with session_scope(sessions) as s:
        assert repo.get_fusion_calibration(s, "bot-a") is None
    runtime.close()
    with session_scope(sessions) as s:
        stored = repo.get_fusion_calibration(s, "bot-a")
    assert stored is not None
    assert stored[0] == 1
