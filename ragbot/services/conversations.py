"""Read side of conversations: a conversation with its messages and their citations."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ragbot.db import events as events_sql
from ragbot.db import repositories as repo
from ragbot.db.models import CitationRow, Message
from ragbot.db.session import session_scope


def citation_row_to_dict(c: CitationRow) -> dict[str, Any]:
    return {
        "n": c.n,
        "chunk_id": c.chunk_id,
        "source_id": c.source_id,
        "title": c.title,
        "url": c.url,
        "path": c.path,
        "page": c.page,
        "start_s": c.start_s,
        "end_s": c.end_s,
        "snippet": c.snippet,
        "score": c.score,
        "matched_terms": list(c.matched_terms or []),
    }


def message_to_dict(m: Message) -> dict[str, Any]:
    return {
        "id": m.id,
        "seq": m.seq,
        "sender_type": m.sender_type,
        "author": m.author if m.sender_type == "agent" else None,
        "content": m.content,
        "status": m.status,
        "error": m.error,
        "created_at": m.created_at,
        "grounded": bool(m.grounded),
        "answer_kind": m.answer_kind,
        "citations": [citation_row_to_dict(c) for c in m.citations],
    }


def get_conversation(
    sessions: sessionmaker[Session], bot_id: str, conversation_id: str, *, visitor_id: str | None = None
) -> dict[str, Any] | None:
    """The conversation as plain data, or None when it does not exist for this bot (or, given a
    ``visitor_id``, is not that visitor's)."""
    with session_scope(sessions) as s:
        conv = repo.get_conversation(s, bot_id, conversation_id)
        if conv is None or (visitor_id is not None and conv.visitor_id != visitor_id):
            return None
        messages = repo.list_messages(s, bot_id, conversation_id)
        if visitor_id is not None:  # agents' internal notes never reach the visitor
            messages = [m for m in messages if not m.internal]
        last_event = events_sql.last_event_id(s, bot_id, conversation_id)
        return {
            "id": conv.id,
            "bot_id": conv.bot_id,
            "visitor_id": conv.visitor_id,
            "owner_mode": conv.owner_mode,
            "title": conv.title,
            "created_at": conv.created_at,
            "last_event_id": last_event,
            "messages": [message_to_dict(m) for m in messages],
        }
