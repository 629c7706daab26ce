"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ragbot.db.repositories import BOT_ID_MAX_LENGTH

#: What ``ragbot.tenancy.deps.admin_bot_id`` accepts (anything else is a 422 ``invalid_bot_id``).
BOT_ID_RULES = (
    f"At most {BOT_ID_MAX_LENGTH} characters, not blank, no control characters; empty means the default."
)


class MatchedTermOut(BaseModel):
    term: str
    contribution: float
    in_text: bool


class CitationOut(BaseModel):
    n: int
    chunk_id: str
    source_id: str
    title: str
    url: str | None = None
    path: str | None = None
    page: int | None = None
    start_s: float | None = None
    end_s: float | None = None
    snippet: str
    score: float
    matched_terms: list[MatchedTermOut] = Field(default_factory=list)


class ChatRequest(BaseModel):
    """Unknown fields are refused: no client can set the prompt, the model or the temperature."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, description="The visitor's message.")
    conversation_id: str | None = None
    stream: bool = False
    page_url: str | None = Field(
        default=None,
        max_length=20000,
        description="The page the visitor is on (kept with a new conversation; the first 2000 characters).",
    )
    test: bool = Field(
        default=False,
        description=(
            "Preview/test traffic, left out of analytics: admin keys, or the widget on ragbot's demo page."
        ),
    )
    bot_id: str | None = Field(
        default=None,
        description=(
            f"Admin keys: the bot (default: the key's own bot, else the deployment's). Visitor sessions: "
            f"omit it (the session's bot). {BOT_ID_RULES}"
        ),
    )


class ChatResponse(BaseModel):
    conversation_id: str
    message_id: str | None = Field(description="The bot's message; the visitor's when forwarded to people.")
    answer: str
    status: str = Field(
        description="complete | partial | refused | forwarded (people own the conversation) | superseded"
    )
    owner_mode: str = "bot"
    citations: list[CitationOut]
    grounded: bool = Field(
        default=False,
        description="Every sentence shown is supported by the passages it cites; false for a decline.",
    )
    answer_kind: str | None = Field(
        default=None,
        description=(
            "generated (the model's verified sentences) | extractive (source sentences quoted, the model's "
            "could not be verified) | declined; null when no answer was produced"
        ),
    )
    handoff_offered: bool = Field(default=False, description="A declined answer offers a person.")
    standalone_query: str | None = None


class MessageOut(BaseModel):
    id: str
    seq: int
    sender_type: str
    author: str | None = None
    content: str
    status: str
    error: str | None = None
    created_at: datetime
    grounded: bool = False
    answer_kind: str | None = None
    citations: list[CitationOut] = Field(default_factory=list)


class ConversationOut(BaseModel):
    id: str
    bot_id: str
    visitor_id: str | None = None
    owner_mode: str
    title: str
    created_at: datetime
    last_event_id: int = Field(default=0, description="Resume the live events after this id.")
    messages: list[MessageOut]


class SourceRequest(BaseModel):
    target: str = Field(min_length=1, description="A server-side path or an http(s) URL.")
    bot_id: str | None = Field(
        default=None, description=f"Tenant; defaults to the deployment's bot. {BOT_ID_RULES}"
    )
    max_pages: int | None = Field(default=None, ge=1)
    max_depth: int | None = Field(default=None, ge=0)
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)


class JobOut(BaseModel):
    id: str
    bot_id: str
    target: str
    status: str
    processed: int
    report: dict[str, Any]
    error: str | None = None
    created_at: datetime
    updated_at: datetime
    attempts: int = Field(default=0, description="Runs started so far (a crashed worker's job runs again).")
    kind: str = Field(default="ingest", description="ingest (a crawl or a path) | upload | report")


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


class BotOut(BaseModel):
    """A bot's stored settings; ``null`` means the deployment's default applies."""

    id: str
    name: str
    title: str
    persona: str
    welcome_message: str
    starter_questions: list[str]
    accent_color: str
    decline_message: str
    llm_model: str | None
    llm_fallbacks: list[str] | None
    language_policy: str
    min_relevance: float | None
    answer_max_words: int | None = None
    public_key: str | None
    allowed_origins: list[str]
    rate_visitor_per_minute: int | None
    rate_ip_per_minute: int | None
    daily_message_budget: int | None
    handoff_enabled: bool
    handoff_after_ungrounded: int
    handoff_after_thumbs_down: int
    handoff_on_llm_outage: bool
    agent_claim_timeout_s: int
    office_hours: dict[str, Any] | None
    lead_form: dict[str, Any] | None
    retention_days: int | None = None
    redact_questions: bool = False
    created_at: datetime
    updated_at: datetime | None
    updated_by: str | None


class BotDeletedOut(BaseModel):
    id: str
    deleted: bool
    removed: dict[str, int]


class ApiKeyOut(BaseModel):
    id: str
    name: str
    prefix: str
    bot_id: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    active: bool


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The key itself: shown once, never again.")


class ApiKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", max_length=200)
    bot_id: str | None = Field(default=None, description="Scope the key to one bot; omit for every bot.")
    expires_in_days: float | None = Field(
        default=None, ge=1 / 1440, le=3650, description="At least one minute (1/1440 day), at most 10 years."
    )


class WidgetSessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    public_key: str = Field(min_length=1, max_length=200)
    token: str | None = Field(
        default=None, max_length=4096, description="A previous session token: renew it as the same visitor."
    )


class WidgetFeatures(BaseModel):
    feedback: bool = True
    handoff: bool = False
    lead_form: bool = False


class WidgetBotOut(BaseModel):
    id: str
    name: str
    title: str
    welcome_message: str
    starter_questions: list[str]
    accent_color: str
    features: WidgetFeatures = Field(default_factory=WidgetFeatures)
    lead_form: dict[str, Any] | None = Field(
        default=None, description="The contact form, when the bot has one (shown when the server says so)."
    )
    ask_lead_before_chat: bool = False


class WidgetSessionOut(BaseModel):
    token: str
    visitor_id: str
    expires_at: datetime
    bot: WidgetBotOut


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for errors in the one JSON error shape."""
    return {status: {"model": ErrorOut} for status in statuses}
