"""The SQL behind the analytics views: grouped counts per time bucket, the answer timings, and how
often each document was retrieved and cited. Every query is one bot's, over ``[since, until)``, and
leaves out preview/test conversations (``Conversation.is_test``).

Buckets are grouped in SQL (a ``YYYY-MM-DD[ HH]`` UTC key, see ``windows.bucket_key``) so a busy bot's
rows never travel to Python just to be counted; only the timings do, for exact percentiles that are the
same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    case,
    distinct,
    func,
    literal,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy.engine import Result
from sqlalchemy.orm import Session

from ragbot.analytics.windows import Bucket
from ragbot.db.models import (
    CitationRow,
    Conversation,
    DocumentRow,
    Feedback,
    HandoffEvent,
    Lead,
    Message,
    RetrievalLog,
    Source,
)
from ragbot.types import MessageStatus, OwnerMode, SenderType

__all__ = [
    "answer_timings",
    "bucket_expr",
    "citations",
    "conversations_by_bucket",
    "dialect",
    "distinct_visitors",
    "documents",
    "feedback_by_bucket",
    "first_handoffs_by_bucket",
    "leads_by_bucket",
    "messages_by_bucket",
    "rated_test_conversations",
    "retrievals",
    "sources",
    "timing_percentiles",
]


def bucket_expr(column: Any, bucket: Bucket, dialect: str) -> ColumnElement[str]:
    """The UTC bucket key of a timestamp column. SQLite stores ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC, see
    ``UTCDateTime``), so a prefix is the key; PostgreSQL formats the instant in UTC whatever the
    session's time zone."""
    if dialect == "postgresql":
        pattern = "YYYY-MM-DD HH24" if bucket == "hour" else "YYYY-MM-DD"
        return func.to_char(func.timezone("UTC", column), pattern, type_=String)
    return func.substr(column, 1, 13 if bucket == "hour" else 10, type_=String)


def _rows(result: Result[Any]) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in result]


def dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _live(bot_id: str) -> ColumnElement[bool]:
    """The bot's real conversations: test and preview traffic never reaches a figure."""
    return and_(Conversation.bot_id == bot_id, Conversation.is_test.is_(False))


def _within(column: Any, since: datetime, until: datetime) -> ColumnElement[bool]:
    return and_(column >= since, column < until)


def conversations_by_bucket(
    session: Session, bot_id: str, since: datetime, until: datetime, bucket: Bucket
) -> list[tuple[Any, ...]]:
    """``(key, conversations)``: conversations started in each bucket."""
    key = bucket_expr(Conversation.created_at, bucket, dialect(session)).label("key")
    query = (
        select(key, func.count())
        .where(_live(bot_id), _within(Conversation.created_at, since, until))
        .group_by(key)
    )
    return _rows(session.execute(query))


def distinct_visitors(session: Session, bot_id: str, since: datetime, until: datetime) -> int:
    """Widget visitors who started a conversation in the window (server-to-server ones have none)."""
    query = select(func.count(distinct(Conversation.visitor_id))).where(
        _live(bot_id), _within(Conversation.created_at, since, until)
    )
    return int(session.scalar(query) or 0)


def _cited_messages(bot_id: str) -> Any:
    """Ids of the bot's messages with at least one citation (a subquery to outer-join)."""
    return (
        select(CitationRow.message_id.label("message_id"))
        .where(CitationRow.bot_id == bot_id)
        .group_by(CitationRow.message_id)
        .subquery("cited")
    )


def messages_by_bucket(
    session: Session, bot_id: str, since: datetime, until: datetime, bucket: Bucket
) -> list[tuple[Any, ...]]:
    """``(key, sender_type, status, cited, messages, prompt_tokens, completion_tokens, cost_usd,
    with_usage)`` for visitor messages and bot answers; ``cited``: the answer has a citation."""
    cited = _cited_messages(bot_id)
    key = bucket_expr(Message.created_at, bucket, dialect(session)).label("key")
    is_cited = case((cited.c.message_id.is_not(None), 1), else_=0).label("is_cited")
    reported = or_(
        Message.prompt_tokens.is_not(None),
        Message.completion_tokens.is_not(None),
        Message.cost_usd.is_not(None),
    )
    query = (
        select(
            key,
            Message.sender_type,
            Message.status,
            is_cited,
            func.count(),
            func.sum(Message.prompt_tokens),
            func.sum(Message.completion_tokens),
            func.sum(Message.cost_usd),
            func.count(case((reported, 1))),
        )
        .join(Conversation, Conversation.id == Message.conversation_id)
        .outerjoin(cited, cited.c.message_id == Message.id)
        .where(
            Message.bot_id == bot_id,
            _live(bot_id),
            _within(Message.created_at, since, until),
            Message.sender_type.in_([SenderType.VISITOR.value, SenderType.BOT.value]),
        )
        .group_by(key, Message.sender_type, Message.status, is_cited)
    )
    return _rows(session.execute(query))


def _answers_written(bot_id: str, since: datetime, until: datetime) -> ColumnElement[bool]:
    """Answers the model wrote (complete or partial) in the window: the ones timings describe."""
    return and_(
        Message.bot_id == bot_id,
        _live(bot_id),
        _within(Message.created_at, since, until),
        Message.sender_type == SenderType.BOT.value,
        Message.status.in_([MessageStatus.COMPLETE.value, MessageStatus.PARTIAL.value]),
    )


def answer_timings(
    session: Session, bot_id: str, since: datetime, until: datetime, bucket: Bucket
) -> list[tuple[Any, ...]]:
    """``(key, first_token_ms, latency_ms)`` of every answer the model wrote, for percentiles in Python
    (SQLite has no ``percentile_cont``)."""
    key = bucket_expr(Message.created_at, bucket, dialect(session)).label("key")
    query = (
        select(key, Message.first_token_ms, Message.latency_ms)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(
            _answers_written(bot_id, since, until),
            or_(Message.first_token_ms.is_not(None), Message.latency_ms.is_not(None)),
        )
    )
    return _rows(session.execute(query))


def timing_percentiles(
    session: Session, bot_id: str, since: datetime, until: datetime, bucket: Bucket | None
) -> list[tuple[Any, ...]]:
    """PostgreSQL only: ``(key, first_token p50, p95, latency p50, p95)`` per bucket (``bucket`` None:
    one row for the window, key None), by ``percentile_cont``: the same linear interpolation as
    ``views.percentile``, without sending every answer's timings over the wire."""
    key: ColumnElement[Any] = (
        bucket_expr(Message.created_at, bucket, dialect(session)) if bucket else null()
    ).label("key")
    figures = [
        func.percentile_cont(p).within_group(column)
        for column in (Message.first_token_ms, Message.latency_ms)
        for p in (0.5, 0.95)
    ]
    query = (
        select(key, *figures)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(_answers_written(bot_id, since, until))
    )
    if bucket:
        query = query.group_by(key)
    return _rows(session.execute(query))


def first_handoffs_by_bucket(
    session: Session, bot_id: str, since: datetime, until: datetime, bucket: Bucket
) -> list[tuple[Any, ...]]:
    """``(key, conversations)``: conversations that asked for a person in the window, each counted once,
    in the bucket of its first request in the window (so the buckets add up to the window's figure)."""
    first = (
        select(HandoffEvent.conversation_id, func.min(HandoffEvent.created_at).label("at"))
        .join(Conversation, Conversation.id == HandoffEvent.conversation_id)
        .where(
            HandoffEvent.bot_id == bot_id,
            _live(bot_id),
            HandoffEvent.to_mode == OwnerMode.PENDING_HUMAN.value,
            _within(HandoffEvent.created_at, since, until),
        )
        .group_by(HandoffEvent.conversation_id)
        .subquery("first")
    )
    key = bucket_expr(first.c.at, bucket, dialect(session)).label("key")
    return _rows(session.execute(select(key, func.count()).group_by(key)))


def leads_by_bucket(
    session: Session, bot_id: str, since: datetime, until: datetime, bucket: Bucket
) -> list[tuple[Any, ...]]:
    """``(key, leads)``: contacts first left in each bucket, except from test conversations."""
    key = bucket_expr(Lead.created_at, bucket, dialect(session)).label("key")
    query = (
        select(key, func.count())
        .outerjoin(Conversation, Conversation.id == Lead.conversation_id)
        .where(
            Lead.bot_id == bot_id,
            _within(Lead.created_at, since, until),
            or_(Lead.conversation_id.is_(None), Conversation.is_test.is_(False)),
        )
        .group_by(key)
    )
    return _rows(session.execute(query))


def feedback_by_bucket(
    session: Session, bot_id: str, since: datetime, until: datetime, bucket: Bucket
) -> list[tuple[Any, ...]]:
    """``(key, rating, count)`` by when each rating was given or last changed (as the feedback export
    selects them), so a changed rating counts once, as what it is now."""
    key = bucket_expr(Feedback.updated_at, bucket, dialect(session)).label("key")
    query = (
        select(key, Feedback.rating, func.count())
        .join(Conversation, Conversation.id == Feedback.conversation_id)
        .where(Feedback.bot_id == bot_id, _live(bot_id), _within(Feedback.updated_at, since, until))
        .group_by(key, Feedback.rating)
    )
    return _rows(session.execute(query))


def rated_test_conversations(session: Session, bot_id: str, since: datetime, until: datetime) -> set[str]:
    """Test or preview conversations with ratings given or changed in the window: the feedback export's
    rows to leave out (one query, usually empty)."""
    query = (
        select(Feedback.conversation_id)
        .join(Conversation, Conversation.id == Feedback.conversation_id)
        .where(
            Feedback.bot_id == bot_id,
            _within(Feedback.updated_at, since, until),
            Conversation.bot_id == bot_id,
            Conversation.is_test.is_(True),
        )
        .distinct()
    )
    return set(session.scalars(query))


# --------------------------------------------------------------------------- sources


def _answers_in_window(query: Any, message_id: Any, bot_id: str, since: datetime, until: datetime) -> Any:
    return (
        query.join(Message, Message.id == message_id)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(Message.bot_id == bot_id, _live(bot_id), _within(Message.created_at, since, until))
    )


def _thumbs_down(bot_id: str) -> Any:
    """Ids of the bot's answers that someone currently rates thumbs-down."""
    return (
        select(Feedback.message_id.label("message_id"))
        .where(Feedback.bot_id == bot_id, Feedback.rating == "down")
        .group_by(Feedback.message_id)
        .subquery("down")
    )


def _pairs_by_source(pairs: Any, bot_id: str) -> Any:
    """``(source_pk, message_id)`` once each, from ``(document_id, message_id)`` pairs: a plain grouping
    the database can hash instead of the sort ``count(DISTINCT ...)`` needs."""
    return (
        select(DocumentRow.source_pk.label("source_pk"), pairs.c.message_id)
        .join(DocumentRow, and_(DocumentRow.id == pairs.c.document_id, DocumentRow.bot_id == bot_id))
        .group_by(DocumentRow.source_pk, pairs.c.message_id)
        .subquery("by_source")
    )


def retrievals(session: Session, bot_id: str, since: datetime, until: datetime) -> list[tuple[Any, ...]]:
    """``(level, id, answers, uri)``: answers in the window whose retrieval included the document
    (``level`` "document", ``id`` its id, ``uri`` as logged) or any document of the source (``level``
    "source", ``id`` the source's). One statement: the joined log is read once for both levels."""
    pairs = _answers_in_window(
        select(
            RetrievalLog.source_id.label("document_id"),
            RetrievalLog.message_id.label("message_id"),
            func.max(RetrievalLog.uri).label("uri"),
        ).where(RetrievalLog.bot_id == bot_id),
        RetrievalLog.message_id,
        bot_id,
        since,
        until,
    )
    pairs = pairs.group_by(RetrievalLog.source_id, RetrievalLog.message_id).cte("pairs")
    per_document = select(
        literal("document", String).label("level"), pairs.c.document_id, func.count(), func.max(pairs.c.uri)
    ).group_by(pairs.c.document_id)
    by_source = _pairs_by_source(pairs, bot_id)
    per_source = select(literal("source", String), by_source.c.source_pk, func.count(), null()).group_by(
        by_source.c.source_pk
    )
    return _rows(session.execute(union_all(per_document, per_source)))


def citations(session: Session, bot_id: str, since: datetime, until: datetime) -> list[tuple[Any, ...]]:
    """``(level, id, answers, answers_thumbs_down, title, uri)``: answers in the window citing the
    document or any document of the source, and how many of them someone rates thumbs-down."""
    pairs = _answers_in_window(
        select(
            CitationRow.source_id.label("document_id"),
            CitationRow.message_id.label("message_id"),
            func.max(CitationRow.title).label("title"),
            func.max(func.coalesce(CitationRow.url, CitationRow.path)).label("uri"),
        ).where(CitationRow.bot_id == bot_id),
        CitationRow.message_id,
        bot_id,
        since,
        until,
    )
    pairs = pairs.group_by(CitationRow.source_id, CitationRow.message_id).cte("cited_pairs")
    down = _thumbs_down(bot_id)
    per_document = (
        select(
            literal("document", String).label("level"),
            pairs.c.document_id,
            func.count(),
            func.count(down.c.message_id),
            func.max(pairs.c.title),
            func.max(pairs.c.uri),
        )
        .outerjoin(down, down.c.message_id == pairs.c.message_id)
        .group_by(pairs.c.document_id)
    )
    by_source = _pairs_by_source(pairs, bot_id)
    per_source = (
        select(
            literal("source", String),
            by_source.c.source_pk,
            func.count(),
            func.count(down.c.message_id),
            null(),
            null(),
        )
        .outerjoin(down, down.c.message_id == by_source.c.message_id)
        .group_by(by_source.c.source_pk)
    )
    return _rows(session.execute(union_all(per_document, per_source)))


def documents(session: Session, bot_id: str) -> list[tuple[Any, ...]]:
    """``(document_id, uri, title, source_pk)`` of every document the bot holds now."""
    query = (
        select(DocumentRow.id, DocumentRow.uri, DocumentRow.title, DocumentRow.source_pk)
        .where(DocumentRow.bot_id == bot_id)
        .order_by(DocumentRow.uri, DocumentRow.id)
    )
    return _rows(session.execute(query))


def sources(session: Session, bot_id: str) -> list[tuple[Any, ...]]:
    """``(source_pk, kind, scope)`` of every source the bot syncs."""
    query = (
        select(Source.id, Source.kind, Source.scope)
        .where(Source.bot_id == bot_id)
        .order_by(Source.scope, Source.id)
    )
    return _rows(session.execute(query))
