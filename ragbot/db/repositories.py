"""The queries behind the services. Every function takes the session and the tenant (``bot_id``) and
filters on it, so an id that leaks from one bot reads nothing and changes nothing in another.

Functions flush but never commit: the caller's ``session_scope`` decides what one unit of work is.
A row of another bot and a missing row look the same (``None`` or a ``NotFoundError``), on purpose.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import CursorResult, String, and_, delete, func, or_, select, update
from sqlalchemy.orm import DeclarativeBase, Session, selectinload

from ragbot.db.models import (
    Bot,
    CitationRow,
    Conversation,
    DocumentRow,
    FusionCalibrationRow,
    IngestJob,
    Message,
    RetrievalLog,
    Source,
    UnansweredQuestion,
    utcnow,
)
from ragbot.generation.base import ChatMessage
from ragbot.types import Citation, Hit, MessageStatus, OwnerMode, SenderType

__all__ = [
    "BOT_ID_MAX_LENGTH",
    "INGEST_JOB_STATUSES",
    "ConversationNotFoundError",
    "IngestJobNotFoundError",
    "MessageNotFoundError",
    "NotFoundError",
    "add_citations",
    "add_fusion_observations",
    "add_message",
    "add_retrieval_log",
    "check_bot_id",
    "count_messages",
    "create_conversation",
    "create_ingest_job",
    "delete_conversation",
    "delete_document",
    "ensure_bot",
    "get_conversation",
    "get_fusion_calibration",
    "get_ingest_job",
    "get_message",
    "get_or_create_source",
    "history",
    "is_storable",
    "known_documents",
    "list_conversations",
    "list_messages",
    "list_unanswered",
    "lock_conversation",
    "mark_source_synced",
    "record_unanswered",
    "require_conversation",
    "reset_fusion_calibration",
    "set_owner_mode",
    "update_ingest_job",
    "update_message",
    "upsert_document",
]

_Row = TypeVar("_Row", bound=DeclarativeBase)

#: Message kinds the LLM sees as the conversation so far; failed and refused turns are left out.
_HISTORY_ROLES = {SenderType.VISITOR.value: "user", SenderType.BOT.value: "assistant"}
_HISTORY_BOT_STATUSES = (MessageStatus.COMPLETE.value, MessageStatus.PARTIAL.value)

INGEST_JOB_STATUSES = ("queued", "running", "succeeded", "failed")


class NotFoundError(LookupError):
    """No such row for this bot (it may not exist, or belong to another bot: callers cannot tell)."""


class ConversationNotFoundError(NotFoundError):
    pass


class MessageNotFoundError(NotFoundError):
    pass


class IngestJobNotFoundError(NotFoundError):
    pass


# --------------------------------------------------------------------------- helpers


def check_bot_id(bot_id: str) -> str:
    """``bot_id`` if a bot row can have it; a ``ValueError`` saying why not otherwise."""
    if not bot_id or not bot_id.strip():
        raise ValueError("bot_id must not be empty")
    if BOT_ID_MAX_LENGTH is not None and len(bot_id) > BOT_ID_MAX_LENGTH:
        raise ValueError(f"bot_id has {len(bot_id)} characters; the limit is {BOT_ID_MAX_LENGTH}")
    return bot_id


def _max_length(column: Any) -> int | None:
    type_ = column.property.columns[0].type
    return type_.length if isinstance(type_, String) else None


#: The longest bot id the ``bots`` table stores.
BOT_ID_MAX_LENGTH = _max_length(Bot.id)


def _clean_text(value: str) -> str:
    """Make text storable on every backend: drop NUL (PostgreSQL rejects it in text) and turn lone
    surrogates (which JSON ``\\ud800`` escapes produce and UTF-8 cannot encode) into U+FFFD."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def _fit(column: Any, value: str) -> str:
    """Cut ``value`` to the column's length: PostgreSQL rejects longer strings, SQLite would keep them."""
    limit = _max_length(column)
    value = _clean_text(value)
    return value if limit is None else value[:limit]


def _insert_ignoring_conflicts(session: Session, model: type[_Row], values: dict[str, Any]) -> None:
    """``INSERT ... ON CONFLICT DO NOTHING``: a race between two creators ends with one row, no error."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        session.execute(pg_insert(model).values(**values).on_conflict_do_nothing())
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        session.execute(sqlite_insert(model).values(**values).on_conflict_do_nothing())
    else:
        raise NotImplementedError(f"ragbot supports SQLite and PostgreSQL, not {dialect}")


def _is_storable(value: str) -> bool:
    """Whether every supported database can bind ``value``: PostgreSQL rejects NUL in text, and a lone
    surrogate (which a JSON ``\\ud800`` escape produces) cannot be encoded as UTF-8 by any driver.

    A row can never have such an id, so a lookup with one is simply "not found".
    """
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


is_storable = _is_storable


def _one_for_bot(session: Session, model: type[_Row], bot_id: str, row_id: str) -> _Row | None:
    if not (_is_storable(bot_id) and _is_storable(row_id)):
        return None  # no row can have such an id, and PostgreSQL would refuse the query
    # By primary key: a row this session already holds (a message it just added) costs no round trip.
    row = session.get(model, row_id)
    return row if row is not None and row.bot_id == bot_id else None  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- bots and conversations


def ensure_bot(session: Session, bot_id: str, *, name: str | None = None) -> Bot:
    """The bot row, created on first use so a new tenant needs no setup step."""
    check_bot_id(bot_id)
    bot = session.get(Bot, bot_id)
    if bot is None:
        _insert_ignoring_conflicts(session, Bot, {"id": bot_id, "name": _fit(Bot.name, name or bot_id)})
        bot = session.get_one(Bot, bot_id)
    return bot


def create_conversation(
    session: Session,
    bot_id: str,
    *,
    title: str = "",
    owner_mode: OwnerMode | str = OwnerMode.BOT,
    visitor_id: str | None = None,
    page_url: str | None = None,
    is_test: bool = False,
) -> Conversation:
    ensure_bot(session, bot_id)
    conversation = Conversation(
        bot_id=bot_id,
        title=_fit(Conversation.title, title),
        owner_mode=OwnerMode(owner_mode).value,
        visitor_id=visitor_id,
        page_url=None if page_url is None else _clean_text(page_url)[:2000],
        is_test=is_test,
    )
    session.add(conversation)
    session.flush()
    return conversation


def get_conversation(session: Session, bot_id: str, conversation_id: str) -> Conversation | None:
    return _one_for_bot(session, Conversation, bot_id, conversation_id)


def require_conversation(session: Session, bot_id: str, conversation_id: str) -> Conversation:
    conversation = get_conversation(session, bot_id, conversation_id)
    if conversation is None:
        raise ConversationNotFoundError(conversation_id)
    return conversation


def list_conversations(
    session: Session, bot_id: str, *, owner_mode: OwnerMode | str | None = None, limit: int = 50
) -> list[Conversation]:
    """Most recently active first; ``owner_mode`` picks e.g. the conversations waiting for a human."""
    query = select(Conversation).where(Conversation.bot_id == bot_id)
    if owner_mode is not None:
        query = query.where(Conversation.owner_mode == OwnerMode(owner_mode).value)
    query = query.order_by(Conversation.updated_at.desc(), Conversation.id).limit(limit)
    return list(session.scalars(query))


def lock_conversation(session: Session, bot_id: str, conversation_id: str) -> Conversation:
    """The conversation, locked until the caller's transaction ends, so its mode cannot change under
    it: ``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite the database write lock, taken by a no-op
    ``UPDATE`` (SQLite has no row locks, and a plain read takes no lock at all)."""
    if not (_is_storable(bot_id) and _is_storable(conversation_id)):
        raise ConversationNotFoundError(conversation_id)
    dialect = session.get_bind().dialect.name
    query = select(Conversation).where(Conversation.id == conversation_id, Conversation.bot_id == bot_id)
    if dialect == "sqlite":
        touched = session.execute(
            update(Conversation)
            .where(Conversation.id == conversation_id, Conversation.bot_id == bot_id)
            .values(owner_mode=Conversation.owner_mode)
        )
        if _rowcount(touched) == 0:
            raise ConversationNotFoundError(conversation_id)
        found = session.scalars(query.execution_options(populate_existing=True)).one_or_none()
    else:
        found = session.scalars(
            query.with_for_update().execution_options(populate_existing=True)
        ).one_or_none()
    if found is None:
        raise ConversationNotFoundError(conversation_id)
    return found


def set_owner_mode(
    session: Session, bot_id: str, conversation_id: str, mode: OwnerMode | str
) -> Conversation:
    """Hand a conversation to a human, back to the bot, or close it."""
    conversation = require_conversation(session, bot_id, conversation_id)
    conversation.owner_mode = OwnerMode(mode).value
    conversation.updated_at = utcnow()
    session.flush()
    return conversation


def delete_conversation(session: Session, bot_id: str, conversation_id: str) -> bool:
    """Delete a conversation; the database cascades to its messages, citations and logs."""
    conversation = get_conversation(session, bot_id, conversation_id)
    if conversation is None:
        return False
    session.delete(conversation)
    session.flush()
    return True


def _rowcount(result: Any) -> int:
    assert isinstance(result, CursorResult)
    return result.rowcount


# --------------------------------------------------------------------------- messages


def add_message(
    session: Session,
    bot_id: str,
    conversation_id: str,
    sender_type: SenderType | str,
    content: str,
    *,
    status: MessageStatus | str = MessageStatus.COMPLETE,
    error: str | None = None,
    standalone_query: str | None = None,
    model: str | None = None,
    latency_ms: float | None = None,
    internal: bool = False,
    author: str | None = None,
    first_token_ms: float | None = None,
    usage: dict[str, Any] | None = None,
) -> Message:
    """Append a message with the next ``seq`` of its conversation.

    The ``UPDATE`` of the conversation comes first and takes its lock (a row lock on PostgreSQL, the
    write lock on SQLite) until commit, so two writers to one conversation queue up instead of reading
    the same ``max(seq)``; the unique ``(conversation_id, seq)`` constraint backs this up.
    """
    sender = SenderType(sender_type)
    message_status = MessageStatus(status)
    now = utcnow()
    touched = session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id, Conversation.bot_id == bot_id)
        .values(updated_at=now)
    )
    if _rowcount(touched) == 0:
        raise ConversationNotFoundError(conversation_id)
    last_seq = session.scalar(
        select(func.max(Message.seq)).where(
            Message.conversation_id == conversation_id, Message.bot_id == bot_id
        )
    )
    message = Message(
        bot_id=bot_id,
        conversation_id=conversation_id,
        seq=(last_seq or 0) + 1,
        sender_type=sender.value,
        content=_clean_text(content),
        status=message_status.value,
        error=error,
        standalone_query=None if standalone_query is None else _clean_text(standalone_query),
        model=model,
        latency_ms=latency_ms,
        created_at=now,
        internal=internal,
        author=None if author is None else _fit(Message.author, author),
        first_token_ms=first_token_ms,
        prompt_tokens=(usage or {}).get("prompt_tokens"),
        completion_tokens=(usage or {}).get("completion_tokens"),
        cost_usd=(usage or {}).get("cost_usd"),
    )
    session.add(message)
    session.flush()
    return message


def get_message(session: Session, bot_id: str, message_id: str) -> Message | None:
    return _one_for_bot(session, Message, bot_id, message_id)


def _require_message(session: Session, bot_id: str, message_id: str) -> Message:
    message = get_message(session, bot_id, message_id)
    if message is None:
        raise MessageNotFoundError(message_id)
    return message


def update_message(
    session: Session,
    bot_id: str,
    message_id: str,
    *,
    content: str | None = None,
    status: MessageStatus | str | None = None,
    error: str | None = None,
    standalone_query: str | None = None,
    model: str | None = None,
    latency_ms: float | None = None,
) -> Message:
    """Change the given fields (``None`` leaves a field as it is), e.g. to finish a streamed answer."""
    message = _require_message(session, bot_id, message_id)
    if content is not None:
        message.content = _clean_text(content)
    if status is not None:
        message.status = MessageStatus(status).value
    if error is not None:
        message.error = error
    if standalone_query is not None:
        message.standalone_query = standalone_query
    if model is not None:
        message.model = model
    if latency_ms is not None:
        message.latency_ms = latency_ms
    session.flush()
    return message


def count_messages(
    session: Session, bot_id: str, conversation_id: str, sender_type: SenderType | str | None = None
) -> int:
    query = (
        select(func.count())
        .select_from(Message)
        .where(Message.bot_id == bot_id, Message.conversation_id == conversation_id)
    )
    if sender_type is not None:
        query = query.where(Message.sender_type == SenderType(sender_type).value)
    return int(session.scalar(query) or 0)


def list_messages(session: Session, bot_id: str, conversation_id: str) -> list[Message]:
    """The conversation's messages in order, each with its citations loaded (one extra query in all)."""
    query = (
        select(Message)
        .where(Message.bot_id == bot_id, Message.conversation_id == conversation_id)
        .order_by(Message.seq)
        .options(selectinload(Message.citations))
    )
    return list(session.scalars(query))


def history(
    session: Session, bot_id: str, conversation_id: str, *, limit: int = 20, before_seq: int | None = None
) -> list[ChatMessage]:
    """The last ``limit`` turns as LLM chat messages, oldest first.

    Only the visitor's messages and the bot's complete or partial answers count: a failed or refused
    turn, an agent's or a system note would teach the model words it never said.
    """
    query = select(Message.sender_type, Message.content).where(
        Message.bot_id == bot_id,
        Message.conversation_id == conversation_id,
        or_(
            Message.sender_type == SenderType.VISITOR.value,
            and_(Message.sender_type == SenderType.BOT.value, Message.status.in_(_HISTORY_BOT_STATUSES)),
        ),
    )
    if before_seq is not None:
        query = query.where(Message.seq < before_seq)
    rows = session.execute(query.order_by(Message.seq.desc()).limit(limit)).all()
    return [ChatMessage(role=_HISTORY_ROLES[sender], content=content) for sender, content in reversed(rows)]


# --------------------------------------------------------------------------- answer provenance


def add_citations(
    session: Session, bot_id: str, message_id: str, citations: Sequence[Citation]
) -> list[CitationRow]:
    """Store the sources an answer cited, as the user saw them ([n], title, URL or path, snippet)."""
    _require_message(session, bot_id, message_id)
    rows = [
        CitationRow(
            bot_id=bot_id,
            message_id=message_id,
            n=c.n,
            chunk_id=c.chunk.id,
            source_id=c.chunk.source_id,
            url=c.chunk.url,
            path=c.chunk.path,
            title=c.chunk.title,
            page=c.chunk.page,
            start_s=c.chunk.start_s,
            end_s=c.chunk.end_s,
            snippet=_clean_text(c.snippet),
            score=c.score,
            matched_terms=[
                {"term": t.term, "contribution": t.contribution, "in_text": t.in_text}
                for t in c.matched_terms
            ],
        )
        for c in citations
    ]
    session.add_all(rows)
    session.flush()
    return rows


def add_retrieval_log(
    session: Session,
    bot_id: str,
    message_id: str,
    query: str,
    hits: Sequence[Hit],
    cited_chunk_ids: Collection[str],
) -> list[RetrievalLog]:
    """Record every chunk the model was given for an answer, its scores and whether the answer cited it."""
    _require_message(session, bot_id, message_id)
    rows = [
        RetrievalLog(
            bot_id=bot_id,
            message_id=message_id,
            query=_clean_text(query),
            rank=rank,
            chunk_id=hit.chunk.id,
            source_id=hit.chunk.source_id,
            uri=hit.chunk.uri,
            score=hit.score,
            sparse_score=hit.sparse_score,
            dense_score=hit.dense_score,
            cited=hit.chunk.id in cited_chunk_ids,
        )
        for rank, hit in enumerate(hits, start=1)
    ]
    session.add_all(rows)
    session.flush()
    return rows


def record_unanswered(
    session: Session,
    bot_id: str,
    conversation_id: str,
    message_id: str,
    question: str,
    top_score: float | None = None,
) -> UnansweredQuestion:
    """Note a question the content could not answer, for content-gap reports."""
    message = _require_message(session, bot_id, message_id)
    if message.conversation_id != conversation_id:
        raise MessageNotFoundError(message_id)
    row = UnansweredQuestion(
        bot_id=bot_id,
        conversation_id=conversation_id,
        message_id=message_id,
        question=_clean_text(question),
        top_score=top_score,
    )
    session.add(row)
    session.flush()
    return row


def list_unanswered(session: Session, bot_id: str, *, limit: int = 100) -> list[UnansweredQuestion]:
    query = (
        select(UnansweredQuestion)
        .where(UnansweredQuestion.bot_id == bot_id)
        .order_by(UnansweredQuestion.created_at.desc(), UnansweredQuestion.id)
        .limit(limit)
    )
    return list(session.scalars(query))


# --------------------------------------------------------------------------- sources and documents


def get_or_create_source(
    session: Session, bot_id: str, kind: str, scope: str, *, options: dict[str, Any] | None = None
) -> Source:
    """The sync scope (folder, site, upload), created on first ingest; re-ingesting it is a re-sync."""
    ensure_bot(session, bot_id)
    query = select(Source).where(Source.bot_id == bot_id, Source.scope == scope)
    source = session.scalars(query).one_or_none()
    if source is None:
        _insert_ignoring_conflicts(
            session,
            Source,
            {"bot_id": bot_id, "kind": kind, "scope": scope, "options": options or {}},
        )
        source = session.scalars(query).one()
    return source


def mark_source_synced(session: Session, bot_id: str, source_pk: str, at: datetime | None = None) -> None:
    session.execute(
        update(Source)
        .where(Source.id == source_pk, Source.bot_id == bot_id)
        .values(last_synced_at=at or utcnow())
    )


def known_documents(session: Session, bot_id: str, source_pk: str) -> dict[str, DocumentRow]:
    """What the index holds for a source, by URI: the baseline a re-sync compares against."""
    query = select(DocumentRow).where(DocumentRow.bot_id == bot_id, DocumentRow.source_pk == source_pk)
    return {row.uri: row for row in session.scalars(query)}


def upsert_document(
    session: Session,
    bot_id: str,
    source_pk: str,
    *,
    document_id: str,
    uri: str,
    content_hash: str,
    chunk_count: int,
    title: str = "",
    mime_type: str = "text/plain",
    etag: str | None = None,
    last_modified: str | None = None,
) -> DocumentRow:
    """Insert or refresh a document's row; ``document_id`` is the ``source_id`` in its chunks' payload."""
    row = session.scalars(
        select(DocumentRow).where(DocumentRow.bot_id == bot_id, DocumentRow.uri == uri)
    ).one_or_none()
    if row is None:
        row = DocumentRow(id=document_id, bot_id=bot_id, uri=uri)
        session.add(row)
    row.id = document_id
    row.source_pk = source_pk
    row.title = title
    row.mime_type = _fit(DocumentRow.mime_type, mime_type)
    row.content_hash = content_hash
    row.etag = etag
    row.last_modified = last_modified
    row.chunk_count = chunk_count
    row.updated_at = utcnow()
    session.flush()
    return row


def delete_document(session: Session, bot_id: str, document_id: str) -> bool:
    result = session.execute(
        delete(DocumentRow).where(DocumentRow.id == document_id, DocumentRow.bot_id == bot_id)
    )
    return _rowcount(result) > 0


# --------------------------------------------------------------------------- ingest jobs


def create_ingest_job(session: Session, bot_id: str, target: str) -> IngestJob:
    ensure_bot(session, bot_id)
    job = IngestJob(bot_id=bot_id, target=target)
    session.add(job)
    session.flush()
    return job


def get_ingest_job(session: Session, bot_id: str, job_id: str) -> IngestJob | None:
    return _one_for_bot(session, IngestJob, bot_id, job_id)


def update_ingest_job(
    session: Session,
    bot_id: str,
    job_id: str,
    *,
    status: str | None = None,
    processed: int | None = None,
    report: dict[str, Any] | None = None,
    error: str | None = None,
) -> IngestJob:
    job = get_ingest_job(session, bot_id, job_id)
    if job is None:
        raise IngestJobNotFoundError(job_id)
    if status is not None:
        if status not in INGEST_JOB_STATUSES:
            raise ValueError(f"unknown ingest job status {status!r}; expected one of {INGEST_JOB_STATUSES}")
        job.status = status
    if processed is not None:
        job.processed = processed
    if report is not None:
        job.report = report
    if error is not None:
        job.error = error
    job.updated_at = utcnow()
    session.flush()
    return job


# --------------------------------------------------------------------------- fusion calibration


#: ``fusion_calibrations``' summed columns, in ``ragbot.retrieval.calibration.Totals`` field order.
FUSION_TOTALS = (
    "queries",
    "sparse_sum",
    "dense_sum",
    "bm25_sum",
    "sparse_mean_sum",
    "dense_mean_sum",
    "bm25_mean_sum",
    "sparse_square_sum",
    "dense_square_sum",
    "bm25_square_sum",
)


def add_fusion_observations(session: Session, bot_id: str, delta: Sequence[float]) -> tuple[float, ...]:
    """Add one process's new observations (``FUSION_TOTALS`` order; missing trailing ones count 0) to the
    bot's shared totals and return the totals after it, every column.

    One ``INSERT ... ON CONFLICT DO UPDATE SET queries = queries + excluded.queries ... RETURNING``: the
    database adds under the row's lock (PostgreSQL) or its write lock (SQLite), so two processes flushing
    at once both count, and what comes back includes everyone's observations.
    """
    if len(delta) > len(FUSION_TOTALS):
        raise ValueError(f"{len(delta)} values for {len(FUSION_TOTALS)} calibration columns")
    ensure_bot(session, bot_id)
    row = FusionCalibrationRow
    padded = [*delta, *[0.0] * (len(FUSION_TOTALS) - len(delta))]
    values: dict[str, Any] = {"bot_id": bot_id, **dict(zip(FUSION_TOTALS, padded, strict=True))}
    values["queries"] = int(values["queries"])
    values["updated_at"] = utcnow()
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        insert_stmt: Any = pg_insert(row).values(**values)
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        insert_stmt = sqlite_insert(row).values(**values)
    else:
        raise NotImplementedError(f"ragbot supports SQLite and PostgreSQL, not {dialect}")
    excluded = insert_stmt.excluded
    statement = insert_stmt.on_conflict_do_update(
        index_elements=[row.bot_id],
        set_={
            **{name: getattr(row, name) + getattr(excluded, name) for name in FUSION_TOTALS},
            "updated_at": excluded.updated_at,
        },
    ).returning(*(getattr(row, name) for name in FUSION_TOTALS))
    return _fusion_totals(session.execute(statement).one())


def get_fusion_calibration(session: Session, bot_id: str) -> tuple[float, ...] | None:
    """The bot's shared totals (``FUSION_TOTALS`` order), or ``None`` before its first flush."""
    found = session.execute(
        select(*(getattr(FusionCalibrationRow, name) for name in FUSION_TOTALS)).where(
            FusionCalibrationRow.bot_id == bot_id
        )
    ).one_or_none()
    return None if found is None else _fusion_totals(found)


def _fusion_totals(values: Sequence[Any]) -> tuple[float, ...]:
    return (int(values[0]), *(float(v) for v in values[1:]))


def reset_fusion_calibration(session: Session, bot_id: str) -> bool:
    """Drop the bot's totals, so it learns its fusion weights afresh; ``False`` when there were none."""
    result = session.execute(delete(FusionCalibrationRow).where(FusionCalibrationRow.bot_id == bot_id))
    return _rowcount(result) > 0
