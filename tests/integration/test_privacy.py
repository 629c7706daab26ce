"""Privacy on both databases: questions stored redacted, retention purges what is past it (and only
that), and forgetting one visitor removes them everywhere, webhook outbox included."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fixtures.auth import admin_headers
from sqlalchemy import func, select
from typer.testing import CliRunner

from ragbot.api.app import create_app
from ragbot.cli import app as cli
from ragbot.config import Settings, get_settings
from ragbot.db import repositories as repo
from ragbot.db.models import (
    CitationRow,
    Conversation,
    Feedback,
    Lead,
    Message,
    UnansweredQuestion,
    WebhookDelivery,
    WebhookSubscription,
    utcnow,
)
from ragbot.db.session import session_scope
from ragbot.index.edge import EdgeIndex
from ragbot.privacy.retention import forget_visitor, purge_expired
from ragbot.runtime import Runtime
from ragbot.tenancy.bots import BotChanges
from ragbot.types import MessageStatus, SenderType
from ragbot.webhooks.outbox import enqueue

pytestmark = pytest.mark.integration


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    rt = Runtime(Settings(data_dir=tmp_path, database_url=database_url))
    yield rt
    rt.close()


def _count(rt: Runtime, model: Any, *where: Any) -> int:
    with session_scope(rt.session_factory) as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _conversation(
    rt: Runtime, bot_id: str, visitor_id: str | None, *, age_days: float = 0, rated: bool = True
) -> str:
    """A conversation with a question, a cited answer and (optionally) the visitor's thumbs-down,
    last active ``age_days`` ago."""
    with session_scope(rt.session_factory) as s:
        conv = repo.create_conversation(s, bot_id, title="q", visitor_id=visitor_id)
        repo.add_message(s, bot_id, conv.id, SenderType.VISITOR, "How do refunds work?")
        answer = repo.add_message(s, bot_id, conv.id, SenderType.BOT, "Within 14 days [1].")
        s.add(
            CitationRow(
                bot_id=bot_id, message_id=answer.id, n=1, chunk_id="c1", source_id="d1", title="Refunds"
            )
        )
        if rated:
            s.add(
                Feedback(
                    bot_id=bot_id,
                    message_id=answer.id,
                    conversation_id=conv.id,
                    rater=visitor_id or "admin",
                    rating="down",
                )
            )
        enqueue(s, bot_id, "message.created", {"conversation_id": conv.id, "visitor_id": visitor_id})
        s.flush()
        when = utcnow() - timedelta(days=age_days)
        conv.updated_at = conv.created_at = when
        for m in repo.list_messages(s, bot_id, conv.id):
            m.created_at = when
        return conv.id


def _subscribe(rt: Runtime, bot_id: str) -> None:
    with session_scope(rt.session_factory) as s:
        s.add(
            WebhookSubscription(
                bot_id=bot_id, url="https://hooks.example.test/x", events=["message.created"], secret="s"
            )
        )


def _lead(
    rt: Runtime, bot_id: str, email: str, visitor_id: str, conv_id: str, *, age_days: float = 0
) -> None:
    when = utcnow() - timedelta(days=age_days)
    with session_scope(rt.session_factory) as s:
        s.add(
            Lead(
                bot_id=bot_id,
                email=email,
                visitor_id=visitor_id,
                conversation_id=conv_id,
                created_at=when,
                updated_at=when,
            )
        )
        enqueue(s, bot_id, "lead.created", {"email": email, "conversation_id": conv_id})


def test_questions_are_stored_redacted_when_the_bot_says_so(
    runtime: Runtime, tmp_path: Path, real_sparse_encoder: Any, real_dense_encoder: Any
) -> None:
    """An empty index declines without any model call, so the whole stored trail of a turn is visible:
    the visitor's message, the conversation title, the retrieval log query and the unanswered question."""
    rt = Runtime(
        runtime.settings,
        engine=runtime.engine,
        index=EdgeIndex(tmp_path / "edge", "ragbot"),
        sparse_encoder=real_sparse_encoder,
        dense_encoder=real_dense_encoder,
    )
    masked = rt.bots.create("Masked", BotChanges(redact_questions=True), actor="tests")
    plain = rt.bots.create("Plain", BotChanges(), actor="tests")
    question = "I paid with 4111 1111 1111 1111, write to jane@example.com or +1 415 555 0100"
    try:
        for bot in (masked, plain):
            result = rt.chat_service.ask(bot["id"], question)
            assert result.status == MessageStatus.REFUSED
            with session_scope(rt.session_factory) as s:
                stored = [m.content for m in repo.list_messages(s, bot["id"], result.conversation_id)]
                title = s.get(Conversation, result.conversation_id).title  # type: ignore[union-attr]
                unanswered = s.scalars(
                    select(UnansweredQuestion.question).where(UnansweredQuestion.bot_id == bot["id"])
                ).one()
            if bot is masked:
                text = " ".join([*stored, title, unanswered])
                for secret in ("4111", "jane@example.com", "555 0100"):
                    assert secret not in text
                assert stored[0] == "I paid with [card], write to [email] or [phone]"
            else:
                assert stored[0] == question and unanswered == question
    finally:
        rt.index.close()


def test_retention_purges_only_what_is_past_each_bots_limit(runtime: Runtime) -> None:
    keeper = runtime.bots.create("Keeps 30 days", BotChanges(retention_days=30), actor="tests")["id"]
    forever = runtime.bots.create("Keeps all", BotChanges(), actor="tests")["id"]
    for bot in (keeper, forever):
        _subscribe(runtime, bot)
    old = _conversation(runtime, keeper, "v-old", age_days=45)
    new = _conversation(runtime, keeper, "v-new", age_days=3)
    ancient = _conversation(runtime, forever, "v-x", age_days=400)
    _lead(runtime, keeper, "old@example.com", "v-old", old, age_days=45)
    _lead(runtime, keeper, "new@example.com", "v-new", new, age_days=1)
    with session_scope(runtime.session_factory) as s:  # a delivered outbox row from long ago
        for d in s.scalars(select(WebhookDelivery).where(WebhookDelivery.bot_id == keeper)):
            d.status = "delivered"
            d.created_at = utcnow() - timedelta(days=45)

    report = purge_expired(runtime.session_factory)

    assert report[keeper]["conversations"] == 1 and report[keeper]["leads"] == 1
    assert report[keeper]["messages"] == 2 and report[keeper]["feedback"] == 1
    assert report[keeper]["webhook_deliveries"] == 2
    assert forever not in report
    assert _count(runtime, Conversation, Conversation.id == old) == 0
    assert _count(runtime, Message, Message.conversation_id == old) == 0  # cascaded
    assert _count(runtime, CitationRow, CitationRow.bot_id == keeper) == 1  # only the new answer's
    assert _count(runtime, Conversation, Conversation.id.in_([new, ancient])) == 2
    assert _count(runtime, Lead, Lead.bot_id == keeper) == 1
    assert purge_expired(runtime.session_factory) == {}  # nothing left past the limit


def test_forgetting_a_visitor_by_email_removes_them_everywhere(runtime: Runtime) -> None:
    bot = runtime.bots.create("Shop", BotChanges(), actor="tests")["id"]
    other_bot = runtime.bots.create("Other", BotChanges(), actor="tests")["id"]
    for b in (bot, other_bot):
        _subscribe(runtime, b)
    mine = [_conversation(runtime, bot, "v-jane"), _conversation(runtime, bot, "v-jane")]
    theirs = _conversation(runtime, bot, "v-joe")
    elsewhere = _conversation(runtime, other_bot, "v-jane")  # same visitor id, another tenant
    _lead(runtime, bot, "jane@example.com", "v-jane", mine[0])
    _lead(runtime, bot, "joe@example.com", "v-joe", theirs)

    removed = forget_visitor(runtime.session_factory, bot, "Jane@Example.com")

    assert removed["conversations"] == 2 and removed["leads"] == 1
    assert removed["feedback"] == 2 and removed["messages"] == 4
    assert removed["webhook_deliveries"] == 2
    assert _count(runtime, Conversation, Conversation.id.in_(mine)) == 0
    assert _count(runtime, Conversation, Conversation.id.in_([theirs, elsewhere])) == 2
    assert _count(runtime, Lead, Lead.email == "joe@example.com") == 1
    with session_scope(runtime.session_factory) as s:
        payloads = [json.dumps(d.payload) for d in s.scalars(select(WebhookDelivery))]
    assert not any("v-jane" in p and bot in p for p in payloads)
    assert any(elsewhere in p for p in payloads)  # the other bot keeps its own


def test_forget_through_the_cli_and_the_api(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = runtime.bots.create("Shop", BotChanges(), actor="tests")["id"]
    _conversation(runtime, bot, "v-1")
    _conversation(runtime, bot, "v-2")
    monkeypatch.setenv("RAGBOT_DATA_DIR", str(runtime.settings.data_dir))
    monkeypatch.setenv("RAGBOT_DATABASE_URL", runtime.settings.resolved_database_url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["visitors", "forget", "v-1", "--bot", bot, "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["removed"]["conversations"] == 1
        unknown = CliRunner().invoke(cli, ["visitors", "forget", "v-1", "--bot", "no-such-bot"])
        assert unknown.exit_code == 2
    finally:
        get_settings.cache_clear()
    with TestClient(create_app(runtime=runtime, warmup=False)) as client:
        denied = client.post("/v1/visitors/forget", json={"bot_id": bot, "visitor": "v-2"})
        assert denied.status_code == 401
        response = client.post(
            "/v1/visitors/forget",
            json={"bot_id": bot, "visitor": "v-2"},
            headers=admin_headers(runtime),
        )
        assert response.status_code == 200, response.text
        assert response.json()["removed"]["conversations"] == 1
    assert _count(runtime, Conversation, Conversation.bot_id == bot) == 0
