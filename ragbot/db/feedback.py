"""SQL for feedback on bot answers: one rating per (answer, rater), created race-free, changed under a
row lock, and read back with the question, the answer, its citations and its retrieval log."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from ragbot.db.models import (
    CitationRow,
    Conversation,
    Feedback,
    HandoffEvent,
    Message,
    RetrievalLog,
)
from ragbot.db.repositories import is_storable
from ragbot.types import OwnerMode, SenderType

__all__ = [
    "citations_for",
    "export_page",
    "find_answer",
    "insert_if_new",
    "last_ratings",
    "last_returned_to_bot",
    "lock_feedback",
    "retrieval_for",
]


def find_answer(session: Session, bot_id: str, message_id: str) -> tuple[Message, Conversation] | None:
    """A bot answer of this bot, with its conversation; None for anything else (another bot's message,
    a visitor's or an agent's message, an id no row can have)."""
    if not (is_storable(bot_id) and is_storable(message_id)):
        return None
    row = session.execute(
        select(Message, Conversation)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(
            Message.id == message_id,
            Message.bot_id == bot_id,
            Message.sender_type == SenderType.BOT.value,
            Conversation.bot_id == bot_id,
        )
    ).one_or_none()
    return None if row is None else (row[0], row[1])


def insert_if_new(session: Session, values: dict[str, Any]) -> str | None:
    """Insert the rating unless this rater already rated this answer; the new id, or None."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        pg = (
            pg_insert(Feedback)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["message_id", "rater"])
        )
        new_id = session.execute(pg.returning(Feedback.id)).scalar_one_or_none()
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        lite = (
            sqlite_insert(Feedback)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["message_id", "rater"])
        )
        new_id = session.execute(lite.returning(Feedback.id)).scalar_one_or_none()
    else:
        raise NotImplementedError(f"ragbot supports SQLite and PostgreSQL, not {dialect}")
    return None if new_id is None else str(new_id)


def lock_feedback(session: Session, message_id: str, rater: str) -> Feedback | None:
    """The rater's rating of the answer, locked until the transaction ends (on SQLite the insert attempt
    already holds the database write lock)."""
    query = select(Feedback).where(Feedback.message_id == message_id, Feedback.rater == rater)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return session.scalars(query.execution_options(populate_existing=True)).one_or_none()


def last_returned_to_bot(session: Session, bot_id: str, conversation_id: str) -> datetime | None:
    """When a person last handed the conversation back to the bot: thumbs-down from before then were
    already dealt with and must not hand it over again."""
    return session.scalar(
        select(HandoffEvent.created_at)
        .where(
            HandoffEvent.bot_id == bot_id,
            HandoffEvent.conversation_id == conversation_id,
            HandoffEvent.to_mode == OwnerMode.BOT.value,
        )
        .order_by(HandoffEvent.created_at.desc())
        .limit(1)
    )


def last_ratings(
    session: Session,
    bot_id: str,
    conversation_id: str,
    rater: str,
    *,
    limit: int,
    answered_after: datetime | None = None,
) -> list[str]:
    """The rater's ratings of the conversation's latest rated answers, newest answer first."""
    query = (
        select(Feedback.rating)
        .join(Message, Message.id == Feedback.message_id)
        .where(
            Feedback.bot_id == bot_id,
            Feedback.conversation_id == conversation_id,
            Feedback.rater == rater,
        )
    )
    if answered_after is not None:
        query = query.where(Message.created_at > answered_after)
    return [str(r) for r in session.scalars(query.order_by(Message.seq.desc()).limit(limit))]


def export_page(
    session: Session,
    bot_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int = 200,
) -> list[tuple[Feedback, Message, str | None]]:
    """One page of ratings in ``(updated_at, id)`` order, each row ``(Feedback, answer, question)``:
    the answer message and the text of the visitor message just before it."""
    answer = aliased(Message)
    asked = aliased(Message)
    question = (
        select(asked.content)
        .where(
            asked.conversation_id == answer.conversation_id,
            asked.sender_type == SenderType.VISITOR.value,
            asked.seq < answer.seq,
        )
        .order_by(asked.seq.desc())
        .limit(1)
        .correlate(answer)
        .scalar_subquery()
    )
    query = (
        select(Feedback, answer, question.label("question"))
        .join(answer, answer.id == Feedback.message_id)
        .where(Feedback.bot_id == bot_id)
    )
    if since is not None:
        query = query.where(Feedback.updated_at >= since)
    if until is not None:
        query = query.where(Feedback.updated_at < until)
    if after is not None:
        at, last_id = after
        query = query.where(
            (Feedback.updated_at > at) | ((Feedback.updated_at == at) & (Feedback.id > last_id))
        )
    rows = session.execute(query.order_by(Feedback.updated_at, Feedback.id).limit(limit))
    return [(row[0], row[1], row[2]) for row in rows]


def citations_for(session: Session, bot_id: str, message_ids: Collection[str]) -> list[CitationRow]:
    if not message_ids:
        return []
    query = (
        select(CitationRow)
        .where(CitationRow.bot_id == bot_id, CitationRow.message_id.in_(list(message_ids)))
        .order_by(CitationRow.message_id, CitationRow.n)
    )
    return list(session.scalars(query))


def retrieval_for(session: Session, bot_id: str, message_ids: Collection[str]) -> list[RetrievalLog]:
    if not message_ids:
        return []
    query = (
        select(RetrievalLog)
        .where(RetrievalLog.bot_id == bot_id, RetrievalLog.message_id.in_(list(message_ids)))
        .order_by(RetrievalLog.message_id, RetrievalLog.rank)
    )
    return list(session.scalars(query))
