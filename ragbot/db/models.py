"""SQLAlchemy 2 models. Every row carries ``bot_id`` (the tenant) and every repository query filters on it.

Types are portable between SQLite and PostgreSQL: string UUIDs, JSON, timezone-aware UTC timestamps.
Constraint names follow one convention so Alembic can alter them later, SQLite batch mode included.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is stored in UTC and always read back timezone-aware.

    SQLite keeps no offset, so a plain ``DateTime(timezone=True)`` returns naive values there and aware
    ones on PostgreSQL; this type makes both backends return the same thing.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware value")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        list[Any]: JSON,
        datetime: UTCDateTime,
    }


class Bot(Base):
    """An assistant with its own content and settings. A NULL setting means "the deployment's default"
    (``ragbot.config.Settings``), so changing a default reaches every bot that did not override it."""

    __tablename__ = "bots"
    __table_args__ = (Index("uq_bots_public_key", "public_key", unique=True),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    persona: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # the widget
    title: Mapped[str] = mapped_column(String(200), default="")
    welcome_message: Mapped[str] = mapped_column(Text, default="")
    starter_questions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    accent_color: Mapped[str] = mapped_column(String(7), default="#2563eb")
    decline_message: Mapped[str] = mapped_column(Text, default="")
    # answering
    llm_model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    llm_fallbacks: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    language_policy: Mapped[str] = mapped_column(String(16), default="match")
    min_relevance: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: calibrated per bot
    answer_max_words: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: the deployment's
    # who may use it, and how much
    public_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    allowed_origins: Mapped[list[Any]] = mapped_column(JSON, default=list)
    rate_visitor_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rate_ip_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    daily_message_budget: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[datetime | None] = mapped_column(nullable=True)
    updated_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # human handoff
    handoff_enabled: Mapped[bool] = mapped_column(default=True)
    # Automatic handoffs are off until a bot has people to hand over to (0 / False: never).
    handoff_after_ungrounded: Mapped[int] = mapped_column(Integer, default=0)
    handoff_after_thumbs_down: Mapped[int] = mapped_column(Integer, default=0)
    handoff_on_llm_outage: Mapped[bool] = mapped_column(default=False)
    agent_claim_timeout_s: Mapped[int] = mapped_column(Integer, default=300)
    office_hours: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # None: always open
    # leads: fields, required ones, consent text and version, when to ask
    lead_form: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # None: no form
    # privacy
    retention_days: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: keep
    redact_questions: Mapped[bool] = mapped_column(default=False)


class BotAuditEntry(Base):
    """Who changed which bot setting, when, from what to what. No foreign key: the record of a deleted
    bot outlives it."""

    __tablename__ = "bot_audit"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    bot_id: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(20))  # create | update | rotate_key | delete
    actor: Mapped[str] = mapped_column(String(200))
    changes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """An admin API key. Only its SHA-256 is stored; the key itself is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(16))  # the key's first characters, to recognise it in lists
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    bot_id: Mapped[str | None] = mapped_column(
        ForeignKey("bots.id", ondelete="CASCADE"), nullable=True, index=True
    )  # None: every bot
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        Index("ix_conversations_bot_updated", "bot_id", "updated_at"),
        Index("ix_conversations_bot_visitor", "bot_id", "visitor_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id"))  # indexed by ix_conversations_bot_updated
    #: The widget visitor who owns it (None: started server-to-server with an admin key).
    visitor_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: The agent who claimed it (their key's name), while a human owns it.
    assignee: Mapped[str | None] = mapped_column(String(200), nullable=True)
    #: When it last asked for a human (pending_human since), for the queue's order and the claim timeout.
    waiting_since: Mapped[datetime | None] = mapped_column(nullable=True)
    #: Bot answers in a row that could not be grounded (declined), for the automatic handoff.
    ungrounded_streak: Mapped[int] = mapped_column(Integer, default=0)
    #: Where the visitor was when the conversation started (widget), for agents and leads.
    page_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: Preview or test traffic (the demo page, a test flag): left out of analytics.
    is_test: Mapped[bool] = mapped_column(default=False)
    owner_mode: Mapped[str] = mapped_column(String(20), default="bot")  # types.OwnerMode
    title: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    messages: Mapped[list[Message]] = relationship(
        back_populates="conversation",
        order_by="Message.seq",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("conversation_id", "seq", name="uq_messages_conversation_seq"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id"), index=True)
    # No separate index: the (conversation_id, seq) unique constraint already serves lookups by conversation.
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    sender_type: Mapped[str] = mapped_column(String(20))  # types.SenderType
    content: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), default="complete")  # types.MessageStatus
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    standalone_query: Mapped[str | None] = mapped_column(Text, nullable=True)
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: Time to the first answer token, from the visitor's message (bot answers; for analytics).
    first_token_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: What the provider reported for this answer, where it reports it.
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: An agent's note to colleagues: stored with the conversation, never shown to the visitor.
    internal: Mapped[bool] = mapped_column(default=False)
    #: Who wrote it when a person did (the agent's identity).
    author: Mapped[str | None] = mapped_column(String(200), nullable=True)
    #: A bot answer whose every shown sentence its cited passages support (``ragbot.generation.grounding``).
    grounded: Mapped[bool] = mapped_column(default=False, server_default=false())
    #: generated | extractive | declined (bot answers; None for others and for failed turns).
    answer_kind: Mapped[str | None] = mapped_column(String(20), nullable=True)

    conversation: Mapped[Conversation] = relationship(back_populates="messages")
    citations: Mapped[list[CitationRow]] = relationship(
        back_populates="message", order_by="CitationRow.n", cascade="all, delete-orphan", passive_deletes=True
    )
    retrievals: Mapped[list[RetrievalLog]] = relationship(
        back_populates="message",
        order_by="RetrievalLog.rank",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class CitationRow(Base):
    """A source the answer actually cited, as the [n] shown to the user."""

    __tablename__ = "citations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id"), index=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    n: Mapped[int] = mapped_column(Integer)
    chunk_id: Mapped[str] = mapped_column(String(64))
    source_id: Mapped[str] = mapped_column(String(64))
    url: Mapped[str | None] = mapped_column(Text, nullable=True)
    path: Mapped[str | None] = mapped_column(Text, nullable=True)
    title: Mapped[str] = mapped_column(Text, default="")
    page: Mapped[int | None] = mapped_column(Integer, nullable=True)
    start_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    end_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    snippet: Mapped[str] = mapped_column(Text, default="")
    score: Mapped[float] = mapped_column(Float, default=0.0)
    matched_terms: Mapped[list[Any]] = mapped_column(JSON, default=list)

    message: Mapped[Message] = relationship(back_populates="citations")


class RetrievalLog(Base):
    """Every chunk handed to the LLM for an answer, with its scores: the audit trail behind each answer."""

    __tablename__ = "retrieval_logs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id"), index=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    query: Mapped[str] = mapped_column(Text)
    rank: Mapped[int] = mapped_column(Integer)
    chunk_id: Mapped[str] = mapped_column(String(64))
    source_id: Mapped[str] = mapped_column(String(64))
    uri: Mapped[str] = mapped_column(Text, default="")
    score: Mapped[float] = mapped_column(Float)
    sparse_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    dense_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    cited: Mapped[bool] = mapped_column(default=False)

    message: Mapped[Message] = relationship(back_populates="retrievals")


class UnansweredQuestion(Base):
    """Questions retrieval could not ground: input for content-gap analytics."""

    __tablename__ = "unanswered_questions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id"), index=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    question: Mapped[str] = mapped_column(Text)
    top_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Source(Base):
    """A sync scope: a folder, a file, a site. Re-ingesting the same scope is a re-sync."""

    __tablename__ = "sources"
    __table_args__ = (UniqueConstraint("bot_id", "scope", name="uq_sources_bot_scope"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # files | web | upload | dataset
    scope: Mapped[str] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_synced_at: Mapped[datetime | None] = mapped_column(nullable=True)
    every_s: Mapped[int | None] = mapped_column(Integer, nullable=True)  # re-sync schedule, None: off
    next_sync_at: Mapped[datetime | None] = mapped_column(nullable=True)


class DocumentRow(Base):
    """What the index holds for one document, so a re-sync re-encodes only what changed."""

    __tablename__ = "documents"
    __table_args__ = (UniqueConstraint("bot_id", "uri", name="uq_documents_bot_uri"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # == chunk payload source_id
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id"), index=True)
    source_pk: Mapped[str] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), index=True)
    uri: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text, default="")
    mime_type: Mapped[str] = mapped_column(String(100), default="text/plain")
    content_hash: Mapped[str] = mapped_column(String(64))
    etag: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_modified: Mapped[str | None] = mapped_column(Text, nullable=True)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class IngestJob(Base):
    """A background ingest (from the API or a source's schedule), queued until a worker runs it; polled
    for progress."""

    __tablename__ = "ingest_jobs"
    __table_args__ = (
        Index("ix_ingest_jobs_due", "status", "run_after"),
        # One job per source and schedule slot, however many workers notice the slot is due.
        UniqueConstraint("source_id", "scheduled_for", name="uq_ingest_jobs_source_slot"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id"), index=True)
    target: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="queued")  # queued|running|succeeded|failed
    processed: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # The durable queue (ragbot.db.jobs): what to run, when, and which worker holds it until when.
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_after: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(nullable=True)
    lease_token: Mapped[str | None] = mapped_column(String(36), nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    source_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    scheduled_for: Mapped[datetime | None] = mapped_column(nullable=True)


class JobOutput(Base):
    """What a finished job produced for download (an analytics report's HTML): written in the same
    transaction that marks the job succeeded, so a re-run job leaves one output."""

    __tablename__ = "job_outputs"

    job_id: Mapped[str] = mapped_column(ForeignKey("ingest_jobs.id", ondelete="CASCADE"), primary_key=True)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id"), index=True)
    filename: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(200))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobFile(Base):
    """A file uploaded with an ingest job, kept in the database until the job ends so that whichever
    worker runs (or re-runs) the job can read it."""

    __tablename__ = "job_files"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id"))
    job_id: Mapped[str] = mapped_column(ForeignKey("ingest_jobs.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str | None] = mapped_column(String(200), nullable=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class FusionCalibrationRow(Base):
    """A bot's ``top_z`` and score-spread sums over its hybrid queries (``ragbot.retrieval.calibration``
    ``Totals``, column for field), shared by every
    process: each adds its own observations as deltas, so restarts and API workers learn together."""

    __tablename__ = "fusion_calibrations"

    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id"), primary_key=True)
    queries: Mapped[int] = mapped_column(Integer, default=0)
    sparse_sum: Mapped[float] = mapped_column(Float, default=0.0)
    dense_sum: Mapped[float] = mapped_column(Float, default=0.0)
    bm25_sum: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    sparse_mean_sum: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    dense_mean_sum: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    bm25_mean_sum: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    sparse_square_sum: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    dense_square_sum: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    bm25_square_sum: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class HandoffEvent(Base):
    """One move of a conversation between the bot and people, with why and by whom."""

    __tablename__ = "handoff_events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id"), index=True)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    from_mode: Mapped[str] = mapped_column(String(20))
    to_mode: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(40))  # handoff.states.Reason
    actor: Mapped[str] = mapped_column(String(200))
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConversationEvent(Base):
    """What a conversation's live stream carries (agent replies, system notes, mode changes, forms),
    in order. The integer id is the SSE event id, so a client resumes with ``Last-Event-ID``; pub/sub only
    wakes readers, the rows are the truth."""

    __tablename__ = "conversation_events"
    __table_args__ = (Index("ix_conversation_events_conversation_id", "conversation_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id"), index=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: False for what only agents see (internal notes).
    for_visitor: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Lead(Base):
    """A contact a visitor left: one per email per bot, updated without losing what was not resent."""

    __tablename__ = "leads"
    __table_args__ = (UniqueConstraint("bot_id", "email", name="uq_leads_bot_email"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id"), index=True)
    conversation_id: Mapped[str | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL"), nullable=True
    )
    visitor_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    phone: Mapped[str | None] = mapped_column(String(32), nullable=True)  # E.164
    company: Mapped[str | None] = mapped_column(String(200), nullable=True)
    custom: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    consent_text: Mapped[str] = mapped_column(Text, default="")
    consent_version: Mapped[str] = mapped_column(String(40), default="")
    consented_at: Mapped[datetime | None] = mapped_column(nullable=True)
    page_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    utm: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Feedback(Base):
    """A thumbs up or down on one bot answer, one per answer per visitor (changeable)."""

    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("message_id", "rater", name="uq_feedback_message_rater"),
        Index("ix_feedback_bot_updated", "bot_id", "updated_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id"), index=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    rater: Mapped[str] = mapped_column(String(200))  # the visitor id, or "key:<prefix>" for an admin
    rating: Mapped[str] = mapped_column(String(10))  # up | down
    reason: Mapped[str | None] = mapped_column(String(60), nullable=True)
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookSubscription(Base):
    """Where a bot's events go. The secret signs deliveries (Standard Webhooks), so it is kept."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id"), index=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[Any]] = mapped_column(JSON, default=list)
    secret: Mapped[str] = mapped_column(String(100))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """The outbox: one event for one subscription, written in the transaction of the change it reports
    and sent by a worker until it succeeds or runs out of attempts. ``id`` is the ``webhook-id``."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id"), index=True)
    subscription_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"), index=True
    )
    event_type: Mapped[str] = mapped_column(String(60))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # the request that caused the event: its id is on the delivery's log lines too
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
