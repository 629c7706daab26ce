"""How long the analytics views take on a busy bot: 100k messages on PostgreSQL.

Fills a scratch schema (selected through ``search_path``, dropped afterwards unless ``--keep``) with a
generated history through COPY: conversations over ``--days`` days, visitor messages and bot answers
(grounded, ungrounded, refused, failed), four retrieval-log rows per answer, citations, ratings,
handoffs and leads, plus a second bot's traffic that every query must filter out. Then runs each view
``--runs`` times (after one warm-up) over the whole history and over the last 7 days, and prints p50 and
p95 per view. ``--indexes`` adds candidate indexes (``INDEXES``) and measures again.

    .venv/bin/python benchmarks/analytics.py                      # 100k messages, 7 runs per view
    .venv/bin/python benchmarks/analytics.py --indexes            # ... and again with the indexes
    .venv/bin/python benchmarks/analytics.py --messages 20000 --topic-runs 0
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from sqlalchemy import create_engine, make_url, text

from ragbot.analytics import views
from ragbot.analytics.windows import Window, parse_window
from ragbot.config import Settings
from ragbot.runtime import Runtime

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

#: Candidate indexes: time-window scans per bot, and the feedback export's keyset order. Measured on 100k
#: messages, only the feedback one pays (each export page stops sorting the bot's every rating); the
#: window scans help no view at this size (most time goes to the retrieval log and citation joins).
INDEXES = {
    "ix_messages_bot_created": "CREATE INDEX ix_messages_bot_created ON messages (bot_id, created_at)",
    "ix_conversations_bot_created": (
        "CREATE INDEX ix_conversations_bot_created ON conversations (bot_id, created_at)"
    ),
    "ix_feedback_bot_updated": "CREATE INDEX ix_feedback_bot_updated ON feedback (bot_id, updated_at, id)",
}

QUESTIONS = [
    "How do I return {item}?",
    "Where is my {item} order?",
    "Do you ship {item} to {country}?",
    "How much does shipping to {country} cost?",
    "Can I pay for {item} with {payment}?",
    "Is the {item} in stock?",
    "What is the warranty on the {item}?",
    "How do I cancel my {item} order?",
    "Do you have a store in {country}?",
    "Can I change the address for my {item}?",
]
FILL = {
    "item": ["jacket", "shoes", "lamp", "sofa", "bike", "phone case", "kettle", "desk"],
    "country": ["Austria", "France", "Italy", "Norway", "Japan", "Canada"],
    "payment": ["PayPal", "Klarna", "a gift card", "bank transfer"],
}


def question(rng: random.Random) -> str:
    template = rng.choice(QUESTIONS)
    return template.format(**{k: rng.choice(v) for k, v in FILL.items()})


class Rows:
    """The generated rows per table, in COPY column order."""

    def __init__(self) -> None:
        self.tables: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}

    def add(self, table: str, columns: Sequence[str], row: tuple[Any, ...]) -> None:
        self.tables.setdefault(table, (list(columns), []))[1].append(row)


MSG_COLS = [
    "id",
    "bot_id",
    "conversation_id",
    "seq",
    "sender_type",
    "content",
    "status",
    "created_at",
    "latency_ms",
    "first_token_ms",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "internal",
]


def generate(bots: dict[str, int], days: int, now: datetime, seed: int) -> Rows:
    """``bots``: bot id -> messages to write for it."""
    rng = random.Random(seed)
    rows = Rows()
    start = now - timedelta(days=days)
    for bot, target in bots.items():
        source_ids = [str(uuid.uuid4()) for _ in range(5)]
        for i, sid in enumerate(source_ids):
            rows.add(
                "sources",
                ("id", "bot_id", "kind", "scope", "options", "created_at"),
                (sid, bot, "web", f"https://{bot}.example/{i}", "{}", start),
            )
        docs = [f"{bot}-doc-{i}" for i in range(400)]
        for i, doc in enumerate(docs):
            rows.add(
                "documents",
                (
                    "id",
                    "bot_id",
                    "source_pk",
                    "uri",
                    "title",
                    "mime_type",
                    "content_hash",
                    "chunk_count",
                    "updated_at",
                ),
                (
                    doc,
                    bot,
                    source_ids[i % 5],
                    f"https://{bot}.example/p/{i}",
                    f"Page {i}",
                    "text/html",
                    "0" * 64,
                    12,
                    start,
                ),
            )
        used = docs[:360]  # the last 40 are never retrieved
        weights = [1 / (i + 1) for i in range(len(used))]  # a few pages carry most answers
        written = 0
        leads = 0
        while written < target:
            conv = str(uuid.uuid4())
            at = start + timedelta(seconds=rng.uniform(0, days * 86400))
            visitor = f"v{rng.randint(0, target // 8)}"
            is_test = rng.random() < 0.02
            rows.add(
                "conversations",
                (
                    "id",
                    "bot_id",
                    "visitor_id",
                    "created_at",
                    "updated_at",
                    "is_test",
                    "owner_mode",
                    "title",
                    "ungrounded_streak",
                ),
                (conv, bot, visitor, at, at, is_test, "bot", "", 0),
            )
            seq = 0
            answers: list[tuple[str, datetime, bool, str]] = []
            for _ in range(rng.randint(1, 4)):
                at += timedelta(seconds=rng.uniform(5, 600))
                seq += 1
                rows.add(
                    "messages",
                    MSG_COLS,
                    (
                        str(uuid.uuid4()),
                        bot,
                        conv,
                        seq,
                        "visitor",
                        question(rng),
                        "complete",
                        at,
                        None,
                        None,
                        None,
                        None,
                        None,
                        False,
                    ),
                )
                seq += 1
                answer = str(uuid.uuid4())
                r = rng.random()
                status = (
                    "complete" if r < 0.75 else "refused" if r < 0.9 else "failed" if r < 0.95 else "partial"
                )
                cited = status in ("complete", "partial") and rng.random() < 0.85
                ftt = rng.uniform(200, 2500) if status != "failed" else None
                full = (ftt or 0) + rng.uniform(300, 8000)
                usage = status in ("complete", "partial")
                prompt, completion = (rng.randint(300, 3000), rng.randint(20, 600)) if usage else (None, None)
                cost = prompt * 1.5e-7 + completion * 6e-7 if prompt and completion else None
                at += timedelta(milliseconds=full)
                rows.add(
                    "messages",
                    MSG_COLS,
                    (
                        answer,
                        bot,
                        conv,
                        seq,
                        "bot",
                        "An answer [1].",
                        status,
                        at,
                        full,
                        ftt,
                        prompt,
                        completion,
                        cost,
                        False,
                    ),
                )
                written += 2
                picked = rng.choices(used, weights=weights, k=4) if status != "failed" else []
                chosen = set(picked[: rng.randint(1, 2)]) if cited else set()
                for rank, doc in enumerate(picked, 1):
                    rows.add(
                        "retrieval_logs",
                        (
                            "id",
                            "bot_id",
                            "message_id",
                            "query",
                            "rank",
                            "chunk_id",
                            "source_id",
                            "uri",
                            "score",
                            "cited",
                        ),
                        (
                            str(uuid.uuid4()),
                            bot,
                            answer,
                            "q",
                            rank,
                            f"{doc}#{rank}",
                            doc,
                            "",
                            1 / rank,
                            doc in chosen,
                        ),
                    )
                for n, doc in enumerate(sorted(chosen), 1):
                    rows.add(
                        "citations",
                        (
                            "id",
                            "bot_id",
                            "message_id",
                            "n",
                            "chunk_id",
                            "source_id",
                            "url",
                            "title",
                            "snippet",
                            "score",
                            "matched_terms",
                        ),
                        (str(uuid.uuid4()), bot, answer, n, f"{doc}#c", doc, None, doc, "", 0.5, "[]"),
                    )
                answers.append((answer, at, cited, status))
            for answer, answered_at, cited, answer_status in answers:
                if answer_status != "failed" and rng.random() < 0.2:
                    rating = "up" if rng.random() < (0.8 if cited else 0.3) else "down"
                    rated = answered_at + timedelta(seconds=rng.uniform(5, 900))
                    rows.add(
                        "feedback",
                        (
                            "id",
                            "bot_id",
                            "message_id",
                            "conversation_id",
                            "rater",
                            "rating",
                            "comment",
                            "created_at",
                            "updated_at",
                        ),
                        (str(uuid.uuid4()), bot, answer, conv, visitor, rating, "", rated, rated),
                    )
            if rng.random() < 0.08:
                asked = answers[-1][1] + timedelta(seconds=2)
                rows.add(
                    "handoff_events",
                    (
                        "id",
                        "bot_id",
                        "conversation_id",
                        "from_mode",
                        "to_mode",
                        "reason",
                        "actor",
                        "note",
                        "created_at",
                    ),
                    (
                        str(uuid.uuid4()),
                        bot,
                        conv,
                        "bot",
                        "pending_human",
                        "visitor_request",
                        "visitor",
                        "",
                        asked,
                    ),
                )
            if rng.random() < 0.05:
                leads += 1
                rows.add(
                    "leads",
                    (
                        "id",
                        "bot_id",
                        "conversation_id",
                        "visitor_id",
                        "email",
                        "custom",
                        "consent_text",
                        "consent_version",
                        "utm",
                        "created_at",
                        "updated_at",
                    ),
                    (
                        str(uuid.uuid4()),
                        bot,
                        conv,
                        visitor,
                        f"lead{leads}@{bot}.example",
                        "{}",
                        "",
                        "",
                        "{}",
                        at,
                        at,
                    ),
                )
    return rows


def copy_in(engine: Any, rows: Rows) -> dict[str, int]:
    """COPY every table (parents first); returns the row counts."""
    order = [
        "sources",
        "documents",
        "conversations",
        "messages",
        "retrieval_logs",
        "citations",
        "feedback",
        "handoff_events",
        "leads",
    ]
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        with conn.cursor() as cur:
            for table in order:
                if table not in rows.tables:
                    continue
                columns, data = rows.tables[table]
                with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in data:
                        copy.write_row(row)
            cur.execute("ANALYZE")
        conn.commit()
    finally:
        raw.close()
    return {t: len(d) for t, (_, d) in rows.tables.items()}


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * p / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def measure(label: str, fn: Callable[[], Any], runs: int) -> tuple[float, float]:
    fn()  # warm-up: plans, caches, the connection pool
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    p50, p95 = statistics.median(times), percentile(times, 95)
    print(f"  {label:<28} p50 {p50:8.1f} ms   p95 {p95:8.1f} ms   ({runs} runs)", flush=True)
    return p50, p95


def run_views(runtime: Runtime, bot: str, windows: dict[str, Window], runs: int, topic_runs: int) -> None:
    sessions = runtime.session_factory
    has_topics = importlib.util.find_spec("ragbot.analytics.topics") is not None
    for name, window in windows.items():
        print(
            f"window {name}: {window.since:%Y-%m-%d %H:%M} .. {window.until:%Y-%m-%d %H:%M} ({window.bucket})"
        )
        summary = views.summary(sessions, bot, window)
        print(
            f"  ({summary['visitor_messages'] + summary['answers']} messages, "
            f"{summary['conversations']} conversations, "
            f"{summary['feedback_up'] + summary['feedback_down']} ratings in the window)"
        )
        measure("summary", lambda w=window: views.summary(sessions, bot, w), runs)
        measure("timeseries", lambda w=window: views.timeseries(sessions, bot, w), runs)
        measure("sources", lambda w=window: views.sources(sessions, bot, w), runs)
        measure(
            "feedback export (all)",
            lambda w=window: list(views.feedback(runtime.feedback, sessions, bot, w)),
            runs,
        )
        if has_topics and topic_runs > 0:
            from ragbot.analytics import topics

            measure(
                "top-questions",
                lambda w=window: topics.top_questions(runtime, bot, w.since, w.until, 20),
                topic_runs,
            )
            measure(
                "content-gaps",
                lambda w=window: topics.content_gaps(runtime, bot, w.since, w.until, 20),
                topic_runs,
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=os.environ.get("RAGBOT_BENCH_POSTGRES_URL", DEFAULT_URL))
    parser.add_argument("--messages", type=int, default=100_000, help="for the measured bot")
    parser.add_argument("--other", type=int, default=20_000, help="messages of a second bot")
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--topic-runs", type=int, default=1, help="top-questions/content-gaps encode text")
    parser.add_argument("--indexes", action="store_true", help="measure again with the proposed indexes")
    parser.add_argument("--keep", action="store_true", help="keep the scratch schema")
    parser.add_argument("--schema", help="measure a schema kept by --keep instead of filling a new one")
    args = parser.parse_args()

    reuse = args.schema is not None
    schema = args.schema or f"ragbot_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(args.url)
    if not reuse:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(args.url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        with tempfile.TemporaryDirectory() as tmp:
            runtime = Runtime(
                Settings(data_dir=Path(tmp), database_url=url.render_as_string(hide_password=False))
            )
            try:
                if reuse:
                    bot, now = loaded(runtime)
                else:
                    bot, now = fill(runtime, schema, args)
                windows = {
                    "all": parse_window(f"{args.days + 1}d", None, now),
                    "7d": parse_window("7d", None, now),
                }
                run_views(runtime, bot, windows, args.runs, args.topic_runs)
                if args.indexes:
                    with runtime.engine.begin() as connection:
                        for ddl in INDEXES.values():
                            connection.execute(
                                text(ddl.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS"))
                            )
                        connection.execute(text("ANALYZE"))
                    print("with " + ", ".join(INDEXES))
                    run_views(runtime, bot, windows, args.runs, 0)
            finally:
                runtime.close()
    finally:
        if not args.keep and not reuse:
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def fill(runtime: Runtime, schema: str, args: argparse.Namespace) -> tuple[str, datetime]:
    bot = runtime.bots.create("Bench shop", actor="bench")["id"]
    other = runtime.bots.create("Other shop", actor="bench")["id"]
    now = datetime.now(UTC)
    started = time.perf_counter()
    rows = generate({bot: args.messages, other: args.other}, args.days, now, seed=7)
    generated = time.perf_counter() - started
    counts = copy_in(runtime.engine, rows)
    print(
        f"schema {schema}: generated in {generated:.1f} s, loaded in "
        f"{time.perf_counter() - started - generated:.1f} s: "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
    )
    return bot, now


def loaded(runtime: Runtime) -> tuple[str, datetime]:
    """The busiest bot of a kept schema, and the time its history ends."""
    with runtime.engine.connect() as connection:
        bot, last = connection.execute(
            text(
                "SELECT bot_id, max(created_at) FROM messages GROUP BY bot_id ORDER BY count(*) DESC LIMIT 1"
            )
        ).one()
    return str(bot), last + timedelta(minutes=1)


if __name__ == "__main__":
    main()
