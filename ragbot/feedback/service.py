"""Thumbs up or down on a bot answer: one rating per answer per rater, changeable, tied to the answer's
citations and retrieval log through its message id.

A rating and its ``feedback.created`` webhook commit together. Repeated thumbs-down can hand the
conversation to a person (the bot's ``handoff_after_thumbs_down``); that move runs after the rating
commits, in the handoff service's own locked transaction.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from ragbot.db import feedback as feedback_sql
from ragbot.db import repositories as repo
from ragbot.db.models import Bot, Feedback, new_id, utcnow
from ragbot.db.session import session_scope
from ragbot.handoff.states import IllegalTransitionError, Reason
from ragbot.leads.service import csv_chunks
from ragbot.types import OwnerMode
from ragbot.webhooks.outbox import enqueue

if TYPE_CHECKING:
    from ragbot.handoff.service import HandoffService

__all__ = [
    "MAX_COMMENT_LENGTH",
    "RATINGS",
    "REASONS",
    "AnswerNotFoundError",
    "FeedbackService",
    "FeedbackValidationError",
    "Rated",
    "check_feedback",
    "feedback_to_dict",
]

RATINGS = ("up", "down")
#: Why an answer was bad: a short fixed list, so analytics can count reasons instead of parsing prose.
REASONS = ("incorrect", "incomplete", "irrelevant", "unclear", "other")
MAX_COMMENT_LENGTH = 2000
EXPORT_COLUMNS = (
    "created_at",
    "updated_at",
    "rating",
    "reason",
    "comment",
    "question",
    "answer",
    "citations",
    "sources",
    "message_id",
    "conversation_id",
    "rater",
)


class AnswerNotFoundError(LookupError):
    """No bot answer with this id that the caller may rate (other bots' and visitors' look the same)."""


class FeedbackValidationError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass
class Rated:
    feedback: dict[str, Any]
    created: bool
    changed: bool
    handoff: bool = False
    owner_mode: str | None = None


def feedback_to_dict(row: Feedback) -> dict[str, Any]:
    return {
        "id": row.id,
        "bot_id": row.bot_id,
        "message_id": row.message_id,
        "conversation_id": row.conversation_id,
        "rater": row.rater,
        "rating": row.rating,
        "reason": row.reason,
        "comment": row.comment,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def check_feedback(rating: str, reason: str | None, comment: str | None) -> tuple[str, str | None, str]:
    """(rating, reason, comment) cleaned, or ``FeedbackValidationError`` naming the field."""
    if rating not in RATINGS:
        raise FeedbackValidationError("rating", "use 'up' or 'down'")
    if reason is not None:
        reason = reason.strip() or None
    if reason is not None:
        if reason not in REASONS:
            raise FeedbackValidationError("reason", f"use one of {', '.join(REASONS)}, or leave it out")
        if rating == "up":
            raise FeedbackValidationError("reason", "reasons explain a thumbs-down; leave it out for 'up'")
    text = (comment or "").strip()
    if len(text) > MAX_COMMENT_LENGTH:
        raise FeedbackValidationError("comment", f"at most {MAX_COMMENT_LENGTH} characters")
    for ch in text:
        if ch not in "\n\r\t" and unicodedata.category(ch) in ("Cc", "Cs"):
            raise FeedbackValidationError("comment", "must not contain control characters")
    return rating, reason, text


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in data.items()}


class FeedbackService:
    def __init__(self, sessions: sessionmaker[Session], handoff: Callable[[], HandoffService]) -> None:
        self._sessions = sessions
        self._handoff = handoff  # a factory: most ratings never hand anything over

    def rate(
        self,
        bot_id: str,
        message_id: str,
        rating: str,
        *,
        rater: str,
        visitor_id: str | None = None,
        reason: str | None = None,
        comment: str | None = "",
    ) -> Rated:
        """Rate a bot answer, or change the rating given before (a new rating replaces rating, reason
        and comment). ``visitor_id``: the answer must be in that visitor's conversation. Raises
        ``FeedbackValidationError`` and ``AnswerNotFoundError``."""
        rating, reason, text = check_feedback(rating, reason, comment)
        with session_scope(self._sessions) as s:
            found = feedback_sql.find_answer(s, bot_id, message_id)
            if found is None:
                raise AnswerNotFoundError(message_id)
            answer, conv = found
            if visitor_id is not None and conv.visitor_id != visitor_id:
                raise AnswerNotFoundError(message_id)
            now = utcnow()
            inserted = feedback_sql.insert_if_new(
                s,
                {
                    "id": new_id(),
                    "bot_id": bot_id,
                    "message_id": answer.id,
                    "conversation_id": conv.id,
                    "rater": rater[:200],
                    "rating": rating,
                    "reason": reason,
                    "comment": text,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            row = feedback_sql.lock_feedback(s, answer.id, rater[:200])
            if row is None:  # the answer was deleted between the insert and the lock
                raise AnswerNotFoundError(message_id)
            previous = None if inserted is not None else row.rating
            changed = inserted is not None or (row.rating, row.reason, row.comment) != (rating, reason, text)
            if inserted is None and changed:
                row.rating, row.reason, row.comment, row.updated_at = rating, reason, text, now
                s.flush()
            data = feedback_to_dict(row)
            if changed:
                enqueue(s, bot_id, "feedback.created", {**_jsonable(data), "previous_rating": previous})
            hand_over = (
                rating == "down"
                and previous != "down"
                and self._enough_thumbs_down(s, bot_id, conv.id, conv.owner_mode, conv.visitor_id, rater)
            )
        result = Rated(data, created=inserted is not None, changed=changed)
        if hand_over:
            result.handoff, result.owner_mode = self._hand_over(bot_id, conv.id, rater, visitor_id)
        return result

    def _enough_thumbs_down(
        self,
        session: Session,
        bot_id: str,
        conversation_id: str,
        owner_mode: str,
        owner: str | None,
        rater: str,
    ) -> bool:
        """Whether this rater's last N rated answers (N: the bot's ``handoff_after_thumbs_down``) are
        all thumbs-down. Only the person chatting counts (the conversation's visitor, or an API caller
        in a conversation without one): a reviewer rating old answers must not hand a visitor over."""
        bot = session.get(Bot, bot_id)
        if bot is None or not bot.handoff_enabled or bot.handoff_after_thumbs_down <= 0:
            return False
        if owner_mode != OwnerMode.BOT.value or (owner is not None and owner != rater):
            return False
        limit = bot.handoff_after_thumbs_down
        since = feedback_sql.last_returned_to_bot(session, bot_id, conversation_id)
        ratings = feedback_sql.last_ratings(
            session, bot_id, conversation_id, rater, limit=limit, answered_after=since
        )
        return len(ratings) == limit and all(r == "down" for r in ratings)

    def _hand_over(
        self, bot_id: str, conversation_id: str, rater: str, visitor_id: str | None
    ) -> tuple[bool, str | None]:
        try:
            moved = self._handoff().request(
                bot_id,
                conversation_id,
                reason=Reason.THUMBS_DOWN,
                actor="visitor" if visitor_id is not None else rater,
                note="repeated thumbs-down on the bot's answers",
                visitor_id=visitor_id,
            )
        except (repo.ConversationNotFoundError, IllegalTransitionError):
            return False, None  # deleted, or moved by someone else in between: nothing to hand over
        return moved.from_mode != moved.to_mode, moved.to_mode

    # ------------------------------------------------------------------ reads
    def export(
        self,
        bot_id: str,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        limit: int | None = None,
        page: int = 200,
    ) -> Iterator[dict[str, Any]]:
        """Ratings rated or changed in ``[since, until)``, oldest first, each with the question (the
        visitor's message just before the answer), the answer, its citations and the retrieval log
        behind it (``sources``), for analytics that tie feedback to content. Read page by page."""
        after = None
        sent = 0
        while limit is None or sent < limit:
            size = page if limit is None else min(page, limit - sent)
            with session_scope(self._sessions) as s:
                rows = feedback_sql.export_page(s, bot_id, since=since, until=until, after=after, limit=size)
                ids = {row[1].id for row in rows}
                citations: dict[str, list[dict[str, Any]]] = {}
                for c in feedback_sql.citations_for(s, bot_id, ids):
                    citations.setdefault(c.message_id, []).append(
                        {
                            "n": c.n,
                            "title": c.title,
                            "url": c.url,
                            "path": c.path,
                            "page": c.page,
                            "chunk_id": c.chunk_id,
                            "source_id": c.source_id,
                            "score": c.score,
                        }
                    )
                sources: dict[str, list[dict[str, Any]]] = {}
                for r in feedback_sql.retrieval_for(s, bot_id, ids):
                    sources.setdefault(r.message_id, []).append(
                        {
                            "rank": r.rank,
                            "chunk_id": r.chunk_id,
                            "source_id": r.source_id,
                            "uri": r.uri,
                            "score": r.score,
                            "cited": r.cited,
                        }
                    )
                items = [
                    {
                        **feedback_to_dict(fb),
                        "question": question,
                        "answer": answer.content,
                        "answer_status": answer.status,
                        "answered_at": answer.created_at,
                        "citations": citations.get(answer.id, []),
                        "sources": sources.get(answer.id, []),
                    }
                    for fb, answer, question in rows
                ]
            yield from items
            sent += len(items)
            if len(rows) < size:
                return
            last = rows[-1][0]
            after = (last.updated_at, last.id)

    def export_csv(
        self, bot_id: str, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[str]:
        """``export`` as CSV: citations as ``[n] title <url or path>`` and sources as the cited URIs,
        each joined with `` | ``."""
        rows = (_csv_row(item) for item in self.export(bot_id, since, until))
        yield from csv_chunks(list(EXPORT_COLUMNS), rows)


def _csv_row(item: dict[str, Any]) -> dict[str, Any]:
    cited = [
        f"[{c['n']}] {c['title']}" + (f" <{c['url'] or c['path']}>" if c["url"] or c["path"] else "")
        for c in item["citations"]
    ]
    uris = list(dict.fromkeys(s["uri"] for s in item["sources"] if s["cited"] and s["uri"]))
    return {**item, "citations": " | ".join(cited), "sources": " | ".join(uris)}
