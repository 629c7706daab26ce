"""The analytics views as plain dicts and lists: a window's summary, its time series, how each source and
document served the answers, and the feedback export without test traffic.

Definitions (one bot, the window ``[since, until)``, test/preview conversations left out everywhere):

* ``conversations``: started in the window; ``visitors``: distinct widget visitors among them.
* ``visitor_messages``: messages visitors sent in the window (whenever their conversation started).
* ``answers``: bot messages in the window, each in exactly one class (``classify``):
  ``answered``: complete or partial with at least one citation; ``ungrounded``: refused, or complete
  without a citation; ``failed``: status failed; ``partial_uncited``: cut off before it cited anything
  (neither grounded nor a refusal, so it is counted apart rather than guessed into one).
* ``handed_off``: conversations with a request for a person (a move to ``pending_human``) in the window,
  counted once, in the bucket of their first such request; ``handoff_rate``: handed_off / conversations.
* ``leads``: contacts first left in the window (not from a test conversation).
* ``feedback_up`` / ``feedback_down``: ratings given or last changed in the window, as they stand now;
  ``feedback_ratio``: up / (up + down). A thumbs-down is never counted as satisfied.
* Timings: ``first_token_ms`` (from the visitor's message to the first answer text) and ``answer_ms``
  (to the full answer, ``Message.latency_ms``), p50 and p95 over the answers the model wrote (complete
  or partial): refusals skip the model and failures never finish, either would distort the figure.
  Percentiles interpolate linearly between ranks (PostgreSQL's ``percentile_cont``, numpy's default).
* Usage: ``prompt_tokens``, ``completion_tokens`` and ``cost_usd`` summed over the answers whose provider
  reported them; ``answers_with_usage`` says how many did.
* Sources: per document, ``retrieved`` = answers in the window whose retrieval included any of its
  chunks, ``cited`` = answers citing it, ``cited_thumbs_down`` = those answers someone rates thumbs-down;
  the same per source (distinct answers, so a source is not its documents' sum); ``never_retrieved``: the
  documents the bot holds that no answer in the window retrieved.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from ragbot.analytics import queries as q
from ragbot.analytics.windows import Window, bucket_key, bucket_starts
from ragbot.db.session import session_scope
from ragbot.feedback.service import FeedbackService
from ragbot.types import MessageStatus, SenderType

__all__ = [
    "AnswerClass",
    "classify",
    "feedback",
    "percentile",
    "sources",
    "summary",
    "timeseries",
]

AnswerClass = Literal["answered", "ungrounded", "failed", "partial_uncited"]

#: The counters of a summary and of every point of a series, in output order.
COUNTERS = (
    "conversations",
    "visitor_messages",
    "answers",
    "answered",
    "ungrounded",
    "failed",
    "partial_uncited",
    "handed_off",
    "leads",
    "feedback_up",
    "feedback_down",
    "answers_with_usage",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
)


def classify(status: str, cited: bool) -> AnswerClass:
    """Which class a bot answer falls in (see the module docstring)."""
    if status == MessageStatus.FAILED:
        return "failed"
    if status == MessageStatus.REFUSED:
        return "ungrounded"
    if cited:
        return "answered"
    return "ungrounded" if status == MessageStatus.COMPLETE else "partial_uncited"


def percentile(values: Sequence[float], p: float) -> float | None:
    """The ``p``-th percentile (0..100) with linear interpolation between ranks; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * p / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _ratio(part: float, whole: float, digits: int = 4) -> float | None:
    return round(part / whole, digits) if whole else None


def _ms(value: float | None) -> float | None:
    return None if value is None else round(float(value), 1)


#: Reporting queries sort and hash a whole window's rows; PostgreSQL's default 4 MB of work memory
#: would spill them to disk (measured: ``benchmarks/analytics.py``).
WORK_MEM = "64MB"


@contextmanager
def _reading(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A transaction for the views. On PostgreSQL, for this transaction only: more work memory, and
    a plan for each query's own window: psycopg prepares a statement run often, and the generic plan
    PostgreSQL then settles on cannot tell 7 days (an index range) from 90 (a full scan); measured 2x
    slower on 100k messages."""
    with session_scope(sessions) as s:
        if q.dialect(s) == "postgresql":
            s.execute(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))
            s.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        yield s


@dataclass
class _Tally:
    """The counters of one bucket (or of the whole window)."""

    conversations: int = 0
    visitor_messages: int = 0
    answers: int = 0
    answered: int = 0
    ungrounded: int = 0
    failed: int = 0
    partial_uncited: int = 0
    handed_off: int = 0
    leads: int = 0
    feedback_up: int = 0
    feedback_down: int = 0
    answers_with_usage: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, other: _Tally) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def figures(self, timings: _Timings) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in COUNTERS}
        out["cost_usd"] = round(self.cost_usd, 6)
        out["handoff_rate"] = _ratio(self.handed_off, self.conversations)
        out["feedback_ratio"] = _ratio(self.feedback_up, self.feedback_up + self.feedback_down)
        names = ("first_token_ms_p50", "first_token_ms_p95", "answer_ms_p50", "answer_ms_p95")
        out.update({name: _ms(value) for name, value in zip(names, timings, strict=True)})
        return out


#: (first token p50, p95, full answer p50, p95) in ms; None where no answer reported it.
_Timings = tuple[float | None, float | None, float | None, float | None]
_NO_TIMINGS: _Timings = (None, None, None, None)


def _collect(session: Session, bot_id: str, window: Window) -> dict[str, _Tally]:
    """Every counter per bucket key; keys with nothing in them are simply missing."""
    since, until, bucket = window.since, window.until, window.bucket
    tallies: dict[str, _Tally] = {}

    def at(key: str) -> _Tally:
        return tallies.setdefault(key, _Tally())

    for key, count in q.conversations_by_bucket(session, bot_id, since, until, bucket):
        at(key).conversations += int(count)
    for key, sender, status, cited, count, prompt, completion, cost, usage in q.messages_by_bucket(
        session, bot_id, since, until, bucket
    ):
        tally = at(key)
        if sender == SenderType.VISITOR:
            tally.visitor_messages += int(count)
            continue
        tally.answers += int(count)
        name = classify(str(status), bool(cited))
        setattr(tally, name, getattr(tally, name) + int(count))
        tally.prompt_tokens += int(prompt or 0)
        tally.completion_tokens += int(completion or 0)
        tally.cost_usd += float(cost or 0.0)
        tally.answers_with_usage += int(usage)
    for key, count in q.first_handoffs_by_bucket(session, bot_id, since, until, bucket):
        at(key).handed_off += int(count)
    for key, count in q.leads_by_bucket(session, bot_id, since, until, bucket):
        at(key).leads += int(count)
    for key, rating, count in q.feedback_by_bucket(session, bot_id, since, until, bucket):
        if rating == "up":
            at(key).feedback_up += int(count)
        elif rating == "down":
            at(key).feedback_down += int(count)
    return tallies


def _timings(
    session: Session, bot_id: str, window: Window, *, per_bucket: bool
) -> dict[str | None, _Timings]:
    """Timing percentiles per bucket key, or for the whole window under the key None. PostgreSQL
    computes them (``percentile_cont``); on SQLite the values come here, the same interpolation."""
    since, until = window.since, window.until
    if q.dialect(session) == "postgresql":
        rows = q.timing_percentiles(session, bot_id, since, until, window.bucket if per_bucket else None)
        return {key: (a, b, c, d) for key, a, b, c, d in rows}
    values: dict[str | None, tuple[list[float], list[float]]] = {}
    for key, first_token, latency in q.answer_timings(session, bot_id, since, until, window.bucket):
        first, full = values.setdefault(key if per_bucket else None, ([], []))
        if first_token is not None:
            first.append(float(first_token))
        if latency is not None:
            full.append(float(latency))
    return {
        key: (percentile(f, 50), percentile(f, 95), percentile(a, 50), percentile(a, 95))
        for key, (f, a) in values.items()
    }


def _frame(bot_id: str, window: Window) -> dict[str, Any]:
    return {"bot_id": bot_id, "since": window.since.isoformat(), "until": window.until.isoformat()}


def summary(sessions: sessionmaker[Session], bot_id: str, window: Window) -> dict[str, Any]:
    """The window in one flat record (one CSV row): counts, rates, timings, usage."""
    with _reading(sessions) as s:
        tallies = _collect(s, bot_id, window)
        timings = _timings(s, bot_id, window, per_bucket=False).get(None, _NO_TIMINGS)
        visitors = q.distinct_visitors(s, bot_id, window.since, window.until)
    total = _Tally()
    for tally in tallies.values():
        total.add(tally)
    return {**_frame(bot_id, window), "visitors": visitors, **total.figures(timings)}


def timeseries(sessions: sessionmaker[Session], bot_id: str, window: Window) -> dict[str, Any]:
    """The summary's figures per hour or per day (``window.bucket``), every bucket present, oldest
    first; ``t`` is the bucket's start. The counters of the points add up to the summary's."""
    with _reading(sessions) as s:
        tallies = _collect(s, bot_id, window)
        timings = _timings(s, bot_id, window, per_bucket=True)
    points = []
    for start in bucket_starts(window):
        key = bucket_key(start, window.bucket)
        tally = tallies.get(key) or _Tally()
        points.append({"t": start.isoformat(), **tally.figures(timings.get(key, _NO_TIMINGS))})
    return {**_frame(bot_id, window), "bucket": window.bucket, "points": points}


def sources(sessions: sessionmaker[Session], bot_id: str, window: Window) -> dict[str, Any]:
    """How each document and each source served the window's answers, most retrieved first, and the
    documents no answer retrieved. Documents deleted since still appear (``deleted: true``) when
    answers in the window used them."""
    since, until = window.since, window.until
    with _reading(sessions) as s:
        docs = q.documents(s, bot_id)
        kinds = {pk: (kind, scope) for pk, kind, scope in q.sources(s, bot_id)}
        retrieved: dict[str, tuple[int, str | None]] = {}
        source_retrieved: dict[str, int] = {}
        for level, key, n, uri in q.retrievals(s, bot_id, since, until):
            if level == "document":
                retrieved[key] = (int(n), uri)
            else:
                source_retrieved[key] = int(n)
        cited: dict[str, tuple[int, int, str | None, str | None]] = {}
        source_cited: dict[str, tuple[int, int]] = {}
        for level, key, n, down, title, uri in q.citations(s, bot_id, since, until):
            if level == "document":
                cited[key] = (int(n), int(down), title, uri)
            else:
                source_cited[key] = (int(n), int(down))
    documents: list[dict[str, Any]] = []
    held = set()
    per_source_docs: dict[str, int] = {}
    per_source_unused: dict[str, int] = {}
    for doc_id, uri, title, source_pk in docs:
        held.add(doc_id)
        kind, scope = kinds.get(source_pk, (None, None))
        n_cited, n_down, _, _ = cited.get(doc_id, (0, 0, None, None))
        n_retrieved = retrieved.get(doc_id, (0, None))[0]
        per_source_docs[source_pk] = per_source_docs.get(source_pk, 0) + 1
        if n_retrieved == 0:
            per_source_unused[source_pk] = per_source_unused.get(source_pk, 0) + 1
        where = {"source_id": source_pk, "source_kind": kind, "source_scope": scope}
        documents.append(_document(doc_id, uri, title, where, n_retrieved, n_cited, n_down, deleted=False))
    never = [
        {"document_id": d["document_id"], "uri": d["uri"], "title": d["title"], "source_id": d["source_id"]}
        for d in documents
        if not d["retrieved"]
    ]
    nowhere = {"source_id": None, "source_kind": None, "source_scope": None}
    for doc_id in sorted((set(retrieved) | set(cited)) - held):
        n_cited, n_down, title, cited_uri = cited.get(doc_id, (0, 0, "", None))
        n_retrieved, uri = retrieved.get(doc_id, (0, None))
        uri = uri or cited_uri or ""
        documents.append(
            _document(doc_id, uri, title or "", nowhere, n_retrieved, n_cited, n_down, deleted=True)
        )
    documents.sort(key=lambda d: (-d["retrieved"], -d["cited"], d["uri"], d["document_id"]))
    source_rows = []
    for pk, (kind, scope) in kinds.items():
        n_cited, n_down = source_cited.get(pk, (0, 0))
        source_rows.append(
            {
                "source_id": pk,
                "kind": kind,
                "scope": scope,
                "documents": per_source_docs.get(pk, 0),
                "never_retrieved": per_source_unused.get(pk, 0),
                "retrieved": source_retrieved.get(pk, 0),
                "cited": n_cited,
                "cited_thumbs_down": n_down,
                "cited_rate": _ratio(n_cited, source_retrieved.get(pk, 0)),
            }
        )
    source_rows.sort(key=lambda r: (-r["retrieved"], -r["cited"], r["scope"] or "", r["source_id"]))
    return {
        **_frame(bot_id, window),
        "documents": documents,
        "sources": source_rows,
        "never_retrieved": never,
    }


def _document(
    doc_id: str,
    uri: str,
    title: str,
    where: Mapping[str, str | None],
    retrieved: int,
    cited: int,
    down: int,
    *,
    deleted: bool,
) -> dict[str, Any]:
    return {
        "document_id": doc_id,
        "uri": uri,
        "title": title,
        **where,
        "retrieved": retrieved,
        "cited": cited,
        "cited_thumbs_down": down,
        "cited_rate": _ratio(cited, retrieved),
        "deleted": deleted,
    }


def feedback(
    service: FeedbackService,
    sessions: sessionmaker[Session],
    bot_id: str,
    window: Window,
    *,
    limit: int | None = None,
) -> Iterator[dict[str, Any]]:
    """``FeedbackService.export`` (the question, the answer, its citations and retrieval log, the
    comment) over the window, without ratings in test conversations; read lazily, page by page."""
    with session_scope(sessions) as s:
        tests = q.rated_test_conversations(s, bot_id, window.since, window.until)
    sent = 0
    for item in service.export(bot_id, window.since, window.until):
        if limit is not None and sent >= limit:
            return
        if item["conversation_id"] in tests:
            continue
        sent += 1
        yield item
