"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from ragbot.db.repositories import BOT_ID_MAX_LENGTH

#: What ``ragbot.api.deps.resolve_bot_id`` accepts (anything else is a 422 ``invalid_bot_id``).
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
    message: str = Field(min_length=1, description="The visitor's message.")
    conversation_id: str | None = None
    stream: bool = False
    bot_id: str | None = Field(
        default=None, description=f"Tenant; defaults to the deployment's bot. {BOT_ID_RULES}"
    )


class ChatResponse(BaseModel):
    conversation_id: str
    message_id: str
    answer: str
    status: str
    citations: list[CitationOut]
    standalone_query: str | None = None


class MessageOut(BaseModel):
    id: str
    seq: int
    sender_type: str
    content: str
    status: str
    error: str | None = None
    created_at: datetime
    citations: list[CitationOut] = Field(default_factory=list)


class ConversationOut(BaseModel):
    id: str
    bot_id: str
    owner_mode: str
    title: str
    created_at: datetime
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


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody
