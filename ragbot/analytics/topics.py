"""Top questions and content gaps: a bot's visitor questions grouped by meaning, with how each group fared.

A *question* is a visitor message the bot answered (the next message in the conversation is the bot's);
messages sent while people own the conversation are conversations with people, not questions. Test and
preview conversations never count. A follow-up is grouped by its condensed standalone form (the bot
answer's ``standalone_query``), so "and on Windows?" lands with the question it continues.

A question's outcome is the bot message that follows it. It was *answered* when that message is complete
or partial with at least one citation (``views.classify``, the same classes as the summary). It *failed*
when it was not answered (refused, uncited, failed), or the conversation was handed to a person before the
visitor's next question (a move from the bot to ``pending_human``: the visitor asked, a rule fired, or an
agent stepped in), or the answer got a thumbs-down. The agent reply that resolved it is the first message
an agent wrote to the visitor (not an internal note) after the answer: the text a writer turns into the
missing page.

Vectors come from the product's dense encoder, so the groups mean what retrieval means by "similar";
grouping and ranking are ``ragbot.analytics.clusters``.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ragbot.analytics.clusters import Cluster, Gap, Grouping, group
from ragbot.analytics.views import AnswerClass, classify
from ragbot.db.models import CitationRow, Conversation, Feedback, HandoffEvent, Message
from ragbot.db.session import session_scope
from ragbot.types import OwnerMode, SenderType

if TYPE_CHECKING:
    from ragbot.encoders.base import DenseEncoder
    from ragbot.runtime import Runtime

__all__ = [
    "MAX_QUESTIONS",
    "Analysis",
    "Question",
    "analyse",
    "content_gaps",
    "content_gaps_of",
    "encode_questions",
    "load_questions",
    "top_questions",
    "top_questions_of",
]

log = logging.getLogger(__name__)

#: Clustering is quadratic in memory: past this many questions in a window, the latest ones are grouped.
MAX_QUESTIONS = 5000
#: Distinct example questions shown per group.
EXAMPLES = 5
#: Documents listed per group ("the sources that answered it").
SOURCES = 3
_ENCODE_BATCH = 64
_IN_CHUNK = 500  # ids per IN (...) list: well under SQLite's and PostgreSQL's parameter limits


@dataclass(frozen=True, slots=True)
class SourceRef:
    document_id: str
    title: str
    url: str | None
    path: str | None


@dataclass(slots=True)
class Question:
    """One visitor question and its outcome."""

    message_id: str
    conversation_id: str
    asked: str  # the visitor's own words
    text: str  # the standalone form, what is grouped and shown
    asked_at: datetime
    answer_id: str
    answer_seq: int
    answer_class: AnswerClass
    sources: list[SourceRef] = field(default_factory=list)
    up: int = 0
    down: int = 0
    handed_off: bool = False
    agent_reply: str | None = None

    @property
    def answered(self) -> bool:
        return self.answer_class == "answered"

    @property
    def reasons(self) -> list[str]:
        """Why it counts as failed (empty: it did not fail)."""
        out: list[str] = [] if self.answered else [self.answer_class]
        if self.handed_off:
            out.append("handed_off")
        if self.down:
            out.append("thumbs_down")
        return out

    @property
    def failed(self) -> bool:
        return bool(self.reasons)


@dataclass(frozen=True)
class Analysis:
    """A window's questions and their grouping: computed once, read by both views and the report."""

    questions: list[Question]
    grouping: Grouping | None = None
    truncated: bool = False  # more than MAX_QUESTIONS were asked: only the latest were grouped

    @cached_property
    def gaps(self) -> list[Gap]:
        if self.grouping is None:
            return []
        return self.grouping.gaps([q.failed for q in self.questions])

    @cached_property
    def clusters(self) -> list[Cluster]:
        """Top-question groups: the cut, with each gap a group of its own."""
        return self.grouping.clusters(apart=self.gaps) if self.grouping is not None else []


# ------------------------------------------------------------------------------------------ loading


def _chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), _IN_CHUNK):
        yield ids[start : start + _IN_CHUNK]


def load_questions(session: Session, bot_id: str, since: datetime, until: datetime) -> list[Question]:
    """Every question asked in ``[since, until)`` (by the visitor message's time), oldest first."""
    asked_here = (
        select(Message.conversation_id)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(
            Message.bot_id == bot_id,
            Conversation.bot_id == bot_id,
            Conversation.is_test.is_(False),
            Message.sender_type == SenderType.VISITOR,
            Message.created_at >= since,
            Message.created_at < until,
        )
        .distinct()
    )
    rows = session.execute(
        select(
            Message.id,
            Message.conversation_id,
            Message.seq,
            Message.sender_type,
            Message.content,
            Message.status,
            Message.standalone_query,
            Message.internal,
            Message.created_at,
        )
        .where(Message.bot_id == bot_id, Message.conversation_id.in_(asked_here))
        .order_by(Message.conversation_id, Message.seq)
    ).all()
    by_conversation: dict[str, list[Any]] = {}
    for row in rows:
        by_conversation.setdefault(row.conversation_id, []).append(row)

    pairs: list[tuple[Any, Any]] = []  # (visitor message, the bot answer right after it)
    agent_replies: dict[str, tuple[list[int], list[str]]] = {}
    for conv_id, messages in by_conversation.items():
        seqs, texts = agent_replies.setdefault(conv_id, ([], []))
        for i, m in enumerate(messages):
            if m.sender_type == SenderType.AGENT and not m.internal and m.content.strip():
                seqs.append(m.seq)
                texts.append(m.content)
            nxt = messages[i + 1] if i + 1 < len(messages) else None
            if (
                m.sender_type == SenderType.VISITOR
                and nxt is not None
                and nxt.sender_type == SenderType.BOT
                and since <= m.created_at < until
            ):
                pairs.append((m, nxt))
    if not pairs:
        return []

    answer_ids = [answer.id for _, answer in pairs]
    sources = _citations(session, bot_id, answer_ids)
    ratings = _ratings(session, bot_id, answer_ids)
    handoffs = _handoffs(session, bot_id, list(by_conversation))

    questions: list[Question] = []
    for visitor, answer in pairs:
        asked = visitor.content.strip()
        text = (answer.standalone_query or "").strip() or asked
        if not text:
            continue
        cited = sources.get(answer.id, [])
        up, down = ratings.get(answer.id, (0, 0))
        questions.append(
            Question(
                message_id=visitor.id,
                conversation_id=visitor.conversation_id,
                asked=asked,
                text=text,
                asked_at=visitor.created_at,
                answer_id=answer.id,
                answer_seq=answer.seq,
                answer_class=classify(str(answer.status), bool(cited)),
                sources=cited,
                up=up,
                down=down,
            )
        )
    _attribute_handoffs(questions, handoffs)
    for question in questions:
        seqs, texts = agent_replies.get(question.conversation_id, ([], []))
        at = bisect.bisect_right(seqs, question.answer_seq)
        question.agent_reply = texts[at] if at < len(texts) else None
    questions.sort(key=lambda q: (q.asked_at, q.conversation_id, q.answer_seq))
    return questions


def _citations(session: Session, bot_id: str, answer_ids: Sequence[str]) -> dict[str, list[SourceRef]]:
    """Each answer's cited documents, distinct, in citation order."""
    out: dict[str, list[SourceRef]] = {}
    for chunk in _chunks(answer_ids):
        rows = session.execute(
            select(
                CitationRow.message_id,
                CitationRow.source_id,
                CitationRow.title,
                CitationRow.url,
                CitationRow.path,
            )
            .where(CitationRow.bot_id == bot_id, CitationRow.message_id.in_(chunk))
            .order_by(CitationRow.message_id, CitationRow.n)
        ).all()
        for message_id, source_id, title, url, path in rows:
            refs = out.setdefault(message_id, [])
            if all(r.document_id != source_id for r in refs):
                refs.append(SourceRef(source_id, title or "", url, path))
    return out


def _ratings(session: Session, bot_id: str, answer_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    """(thumbs up, thumbs down) per answer, as the ratings stand now."""
    out: dict[str, tuple[int, int]] = {}
    for chunk in _chunks(answer_ids):
        rows = session.execute(
            select(Feedback.message_id, Feedback.rating, func.count())
            .where(Feedback.bot_id == bot_id, Feedback.message_id.in_(chunk))
            .group_by(Feedback.message_id, Feedback.rating)
        ).all()
        for message_id, rating, count in rows:
            up, down = out.get(message_id, (0, 0))
            if rating == "up":
                up += int(count)
            elif rating == "down":
                down += int(count)
            out[message_id] = (up, down)
    return out


def _handoffs(session: Session, bot_id: str, conversation_ids: Sequence[str]) -> dict[str, list[datetime]]:
    """When each conversation left the bot for people (bot -> pending_human), in order. Moves out of
    ``resolved`` are people's conversations reopening, not the bot failing a question."""
    out: dict[str, list[datetime]] = {}
    for chunk in _chunks(conversation_ids):
        rows = session.execute(
            select(HandoffEvent.conversation_id, HandoffEvent.created_at).where(
                HandoffEvent.bot_id == bot_id,
                HandoffEvent.conversation_id.in_(chunk),
                HandoffEvent.from_mode == OwnerMode.BOT,
                HandoffEvent.to_mode == OwnerMode.PENDING_HUMAN,
            )
        ).all()
        for conv_id, at in rows:
            out.setdefault(conv_id, []).append(at)
    for times in out.values():
        times.sort()
    return out


def _attribute_handoffs(questions: Sequence[Question], handoffs: dict[str, list[datetime]]) -> None:
    """A handoff belongs to the question it followed: asked at or before it, and before the visitor's
    next question in that conversation (a typed "let me talk to a person" is no question: the bot does
    not answer it, so it does not end the turn)."""
    by_conversation: dict[str, list[Question]] = {}
    for q in questions:
        by_conversation.setdefault(q.conversation_id, []).append(q)
    for conv_id, asked in by_conversation.items():
        times = handoffs.get(conv_id)
        if not times:
            continue
        asked.sort(key=lambda q: q.answer_seq)
        for i, q in enumerate(asked):
            end = asked[i + 1].asked_at if i + 1 < len(asked) else None
            q.handed_off = any(q.asked_at <= t and (end is None or t < end) for t in times)


# ------------------------------------------------------------------------------------------ vectors


def encode_questions(encoder: DenseEncoder, texts: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """The questions' dense vectors. A model whose queries carry an instruction of their own (e5, bge)
    gets each question through ``encode_query``; for the others (MiniLM) the query and document forms are
    the same text, so the batched document path gives the same vectors several times faster."""
    query_prefix = getattr(encoder, "query_prefix", "")
    batched = query_prefix == getattr(encoder, "document_prefix", "")
    vectors: list[Sequence[float]] = []
    for start in range(0, len(texts), _ENCODE_BATCH):
        batch = list(texts[start : start + _ENCODE_BATCH])
        if batched:
            vectors.extend(encoder.encode_documents(batch))
        else:
            vectors.extend(encoder.encode_query(text) for text in batch)
    return np.asarray(vectors, dtype=np.float64).reshape(len(texts), -1)


# ------------------------------------------------------------------------------------------ views


def analyse(runtime: Runtime, bot_id: str, since: datetime, until: datetime) -> Analysis:
    """Load, encode and group the window's questions once (both views and the report read the result)."""
    with session_scope(runtime.session_factory) as s:
        questions = load_questions(s, bot_id, since, until)
    truncated = len(questions) > MAX_QUESTIONS
    if truncated:
        log.warning(
            "bot %s asked %d questions in the window; grouping the latest %d",
            bot_id,
            len(questions),
            MAX_QUESTIONS,
        )
        questions = questions[-MAX_QUESTIONS:]
    if not questions:
        return Analysis([])
    vectors = encode_questions(runtime.dense_encoder, [q.text for q in questions])
    return Analysis(questions, group(vectors), truncated)


def top_questions(
    runtime: Runtime, bot_id: str, since: datetime, until: datetime, limit: int = 20
) -> list[dict[str, Any]]:
    """What visitors ask most: groups of questions by meaning, largest first, each with its
    representative question (closest to the group's centroid), answer rate, feedback and the documents
    its answers cited."""
    return top_questions_of(analyse(runtime, bot_id, since, until), limit)


def content_gaps(
    runtime: Runtime, bot_id: str, since: datetime, until: datetime, limit: int = 20
) -> list[dict[str, Any]]:
    """What the content misses: groups of questions that mostly failed (``clusters.Grouping.gaps``),
    ranked by volume x failure rate, each with examples and the agent reply that resolved one, where
    there is one."""
    return content_gaps_of(analyse(runtime, bot_id, since, until), limit)


def top_questions_of(analysis: Analysis, limit: int = 20) -> list[dict[str, Any]]:
    out = []
    for cluster in analysis.clusters[: max(limit, 0)]:
        members = [analysis.questions[i] for i in cluster.members]
        answered = sum(q.answered for q in members)
        failed = sum(q.failed for q in members)
        out.append(
            {
                **_common(cluster, members),
                "answered": answered,
                "answer_rate": _rate(answered, len(members)),
                "failed": failed,
                "failure_rate": _rate(failed, len(members)),
                "sources": _top_sources(members),
                "questions": _distinct_texts(members),
            }
        )
    return out


def content_gaps_of(analysis: Analysis, limit: int = 20) -> list[dict[str, Any]]:
    out = []
    for gap in analysis.gaps[: max(limit, 0)]:
        members = [analysis.questions[i] for i in gap.cluster.members]
        failures = [q for q in members if q.failed]  # closest to the centroid first
        resolved = next((q for q in failures if q.agent_reply), None)
        reasons: Counter[str] = Counter(r for q in failures for r in q.reasons)
        out.append(
            {
                **_common(gap.cluster, members),
                "answered": sum(q.answered for q in members),
                "answer_rate": _rate(sum(q.answered for q in members), len(members)),
                "failed": gap.failed,
                "failure_rate": round(gap.failure_rate, 4),
                "score": round(gap.score, 4),
                "reasons": dict(sorted(reasons.items())),
                "examples": [_example(q) for q in _distinct(failures)[:EXAMPLES]],
                "agent_reply": resolved.agent_reply if resolved else None,
                "agent_reply_conversation_id": resolved.conversation_id if resolved else None,
            }
        )
    return out


def _common(cluster: Cluster, members: Sequence[Question]) -> dict[str, Any]:
    ids = sorted(q.message_id for q in members)
    asked = [q.asked_at for q in members]
    conversations = list(dict.fromkeys(q.conversation_id for q in members))
    return {
        "id": hashlib.sha256("\n".join(ids).encode()).hexdigest()[:12],
        "representative": members[0].text,
        "count": len(members),
        "feedback": {"up": sum(q.up for q in members), "down": sum(q.down for q in members)},
        "handed_off": sum(q.handed_off for q in members),
        "conversation_ids": conversations,
        "first_asked": min(asked).isoformat(),
        "last_asked": max(asked).isoformat(),
        "cohesion": round(float(np.mean(cluster.similarity)), 4),
    }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _distinct(questions: Iterable[Question]) -> list[Question]:
    """One question per wording (case and spacing aside), in the given order."""
    seen: set[str] = set()
    out = []
    for q in questions:
        key = " ".join(q.text.lower().split())
        if key not in seen:
            seen.add(key)
            out.append(q)
    return out


def _distinct_texts(members: Sequence[Question]) -> list[str]:
    return [q.text for q in _distinct(members)[:EXAMPLES]]


def _example(q: Question) -> dict[str, Any]:
    return {
        "question": q.text,
        "asked": q.asked,
        "conversation_id": q.conversation_id,
        "message_id": q.message_id,
        "asked_at": q.asked_at.isoformat(),
        "outcome": q.reasons,
        "agent_reply": q.agent_reply,
    }


def _top_sources(members: Sequence[Question]) -> list[dict[str, Any]]:
    """The documents the group's answered questions cited, most often first."""
    counts: Counter[str] = Counter()
    refs: dict[str, SourceRef] = {}
    for q in members:
        if not q.answered:
            continue
        for ref in q.sources:
            counts[ref.document_id] += 1
            refs.setdefault(ref.document_id, ref)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], refs[item[0]].title, item[0]))
    return [
        {
            "document_id": doc,
            "title": refs[doc].title,
            "url": refs[doc].url,
            "path": refs[doc].path,
            "answers": n,
        }
        for doc, n in ranked[:SOURCES]
    ]
