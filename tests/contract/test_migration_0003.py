"""Migration 0003 on a database that already holds data: bots and conversations written by the 0002
schema survive the upgrade (and a downgrade), and old bots come out with the deployment's defaults.

Rows are written with table definitions of the 0002 schema, not the current models, which describe
columns that do not exist yet.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from ragbot.config import Settings
from ragbot.db.models import Bot, Conversation, Message, UTCDateTime
from ragbot.db.session import alembic_config, make_engine, make_session_factory, session_scope
from ragbot.tenancy.bots import BotService

pytestmark = pytest.mark.integration

CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
OLD_BOTS = ("legacy-a", "legacy-b")  # two, so the unique index on public_key must accept several NULLs
CONVERSATION = "11111111-1111-1111-1111-111111111111"
MESSAGE = "22222222-2222-2222-2222-222222222222"

_META = sa.MetaData()
BOTS_0002 = sa.Table(
    "bots",
    _META,
    sa.Column("id", sa.String(64)),
    sa.Column("name", sa.String(200)),
    sa.Column("persona", sa.Text),
    sa.Column("created_at", UTCDateTime()),
)
CONVERSATIONS_0002 = sa.Table(
    "conversations",
    _META,
    sa.Column("id", sa.String(36)),
    sa.Column("bot_id", sa.String(64)),
    sa.Column("owner_mode", sa.String(20)),
    sa.Column("title", sa.String(300)),
    sa.Column("created_at", UTCDateTime()),
    sa.Column("updated_at", UTCDateTime()),
)
MESSAGES_0002 = sa.Table(
    "messages",
    _META,
    sa.Column("id", sa.String(36)),
    sa.Column("bot_id", sa.String(64)),
    sa.Column("conversation_id", sa.String(36)),
    sa.Column("seq", sa.Integer),
    sa.Column("sender_type", sa.String(20)),
    sa.Column("content", sa.Text),
    sa.Column("status", sa.String(20)),
    sa.Column("created_at", UTCDateTime()),
)

#: What a bot that existed before 0003 holds afterwards: the defaults new bots get.
DEFAULTS: dict[str, Any] = {
    "title": "",
    "welcome_message": "",
    "starter_questions": [],
    "accent_color": "#2563eb",
    "decline_message": "",
    "language_policy": "match",
    "allowed_origins": [],
    "llm_model": None,
    "llm_fallbacks": None,
    "min_relevance": None,
    "public_key": None,
    "rate_visitor_per_minute": None,
    "rate_ip_per_minute": None,
    "daily_message_budget": None,
    "updated_at": None,
    "updated_by": None,
}


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def _revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _seed_0002(engine: Engine) -> None:
    command.upgrade(alembic_config(engine), "0002")
    assert _revision(engine) == "0002"
    with engine.begin() as connection:
        connection.execute(
            BOTS_0002.insert(),
            [{"id": b, "name": f"Bot {b}", "persona": "terse", "created_at": CREATED} for b in OLD_BOTS],
        )
        connection.execute(
            CONVERSATIONS_0002.insert(),
            {
                "id": CONVERSATION,
                "bot_id": OLD_BOTS[0],
                "owner_mode": "bot",
                "title": "pricing",
                "created_at": CREATED,
                "updated_at": CREATED,
            },
        )
        connection.execute(
            MESSAGES_0002.insert(),
            {
                "id": MESSAGE,
                "bot_id": OLD_BOTS[0],
                "conversation_id": CONVERSATION,
                "seq": 1,
                "sender_type": "visitor",
                "content": "What does it cost?",
                "status": "complete",
                "created_at": CREATED,
            },
        )


def _assert_0002_rows_kept(engine: Engine) -> None:
    with engine.connect() as connection:
        bots = connection.execute(BOTS_0002.select().order_by(BOTS_0002.c.id)).mappings().all()
        assert [(b["id"], b["name"], b["persona"], b["created_at"]) for b in bots] == [
            (b, f"Bot {b}", "terse", CREATED) for b in OLD_BOTS
        ]
        conversation = connection.execute(CONVERSATIONS_0002.select()).mappings().one()
        assert (conversation["id"], conversation["bot_id"], conversation["title"]) == (
            CONVERSATION,
            OLD_BOTS[0],
            "pricing",
        )
        message = connection.execute(MESSAGES_0002.select()).mappings().one()
        assert (message["id"], message["conversation_id"], message["content"]) == (
            MESSAGE,
            CONVERSATION,
            "What does it cost?",
        )


def _assert_defaults(engine: Engine) -> None:
    """The columns 0003 added, read by reflection (today's models may describe later revisions too)."""
    meta = sa.MetaData()
    bots = sa.Table("bots", meta, autoload_with=engine)
    conversations = sa.Table("conversations", meta, autoload_with=engine)
    with engine.connect() as connection:
        rows = connection.execute(sa.select(bots).order_by(bots.c.id)).mappings().all()
        assert [{field: row[field] for field in DEFAULTS} for row in rows] == [DEFAULTS, DEFAULTS]
        visitor = connection.execute(sa.select(conversations.c.visitor_id)).scalar_one()
        assert visitor is None


def _assert_read_by_the_models(engine: Engine) -> None:
    """At head, old rows read through today's models with the defaults filled in."""
    sessions = make_session_factory(engine)
    with session_scope(sessions) as s:
        for bot_id in OLD_BOTS:
            bot = s.get(Bot, bot_id)
            assert bot is not None
            assert (bot.name, bot.persona, bot.created_at) == (f"Bot {bot_id}", "terse", CREATED)
            assert {field: getattr(bot, field) for field in DEFAULTS} == DEFAULTS
        conversation = s.get(Conversation, CONVERSATION)
        assert conversation is not None
        assert (conversation.bot_id, conversation.title, conversation.visitor_id) == (
            OLD_BOTS[0],
            "pricing",
            None,
        )
        assert [m.id for m in conversation.messages] == [MESSAGE]
        assert s.get(Message, MESSAGE) is not None


def test_0003_keeps_bots_and_conversations_and_gives_old_bots_defaults(engine: Engine) -> None:
    _seed_0002(engine)
    command.upgrade(alembic_config(engine), "0003")
    assert _revision(engine) == "0003"
    _assert_0002_rows_kept(engine)
    _assert_defaults(engine)
    tables = set(inspect(engine).get_table_names())
    assert {"api_keys", "bot_audit"} <= tables


def test_0003_downgrades_without_losing_the_older_rows(engine: Engine) -> None:
    """On SQLite the downgrade rebuilds ``conversations``; its messages must not be cascaded away."""
    _seed_0002(engine)
    command.upgrade(alembic_config(engine), "0003")
    command.downgrade(alembic_config(engine), "0002")
    assert _revision(engine) == "0002"
    _assert_0002_rows_kept(engine)
    columns = {c["name"] for c in inspect(engine).get_columns("bots")}
    assert columns == {"id", "name", "persona", "created_at"}
    assert "visitor_id" not in {c["name"] for c in inspect(engine).get_columns("conversations")}
    assert not {"api_keys", "bot_audit"} & set(inspect(engine).get_table_names())


def test_an_upgraded_database_serves_old_bots_at_head(engine: Engine) -> None:
    """After ``head``: an old bot reads with the deployment's defaults, gets its widget key on first use,
    and bots created afterwards sit beside it."""
    _seed_0002(engine)
    command.upgrade(alembic_config(engine), "head")
    _assert_0002_rows_kept(engine)
    _assert_defaults(engine)
    _assert_read_by_the_models(engine)

    settings = Settings(persona="", llm_model="openai/deployment-model", min_relevance=0.25)
    service = BotService(make_session_factory(engine), settings)
    profile = service.profile(OLD_BOTS[0])
    assert profile is not None
    assert (profile.title, profile.persona, profile.llm_model, profile.min_relevance) == (
        f"Bot {OLD_BOTS[0]}",
        "terse",
        "openai/deployment-model",
        0.25,
    )
    assert profile.public_key is None  # no widget until it has a key
    ensured = service.ensure(OLD_BOTS[0], actor="test")
    assert ensured["public_key"].startswith("pk_")
    assert [e["action"] for e in service.audit(OLD_BOTS[0])] == ["rotate_key"]
    untouched = service.get(OLD_BOTS[1])
    assert untouched is not None and untouched["public_key"] is None

    new = service.create("New bot", actor="test")
    assert new["public_key"] != ensured["public_key"]
    assert [b["id"] for b in service.list_bots()] == [*OLD_BOTS, new["id"]]
