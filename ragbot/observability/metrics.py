"""Prometheus metrics: every metric object, the small functions that record them, and ``render()``.

Two kinds of figures:

- **Events** counted where they happen (HTTP requests, chat turns, time to first token, retrieval and LLM
  latency, webhook attempts, job outcomes), through the functions below: each is one dictionary lookup
  and an add, cheap enough for every request and every streamed turn.
- **State** read from the database when ``/metrics`` is scraped (``StoreCollector``): the webhook outbox
  backlog and its oldest pending event, deliveries and ingest jobs by status. The database is shared by
  every process, so these are right however many API processes and workers run, and need no process to
  have seen the event.

Several processes (``ragbot serve --workers N``): set ``PROMETHEUS_MULTIPROC_DIR`` to an empty folder
before the processes start (``ragbot serve`` does so under the data folder when N > 1): each process then
writes its counters to memory-mapped files there, and ``render()`` merges all of them, so a scrape that
lands on any process sees the whole deployment. The folder must be emptied when the deployment restarts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = [
    "MULTIPROC_ENV",
    "StoreCollector",
    "chat_turn",
    "first_token",
    "http_request",
    "in_flight",
    "job_finished",
    "llm_call",
    "multiprocess_enabled",
    "prepare_multiprocess_dir",
    "process_exiting",
    "render",
    "retrieval",
    "time_retrieval",
    "webhook_attempt",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Time to first token: the issue's goals are p50 <= 300 ms and p99 <= 1 s, so the buckets are dense there.
TTFT_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
RETRIEVAL_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
LLM_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 180.0)

HTTP_REQUESTS = Counter(
    "ragbot_http_requests", "HTTP requests answered, by route template.", ["method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "ragbot_http_request_duration_seconds",
    "From the request's arrival to its last body byte (a streamed chat: the whole stream).",
    ["method", "route"],
    buckets=HTTP_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "ragbot_http_requests_in_flight",
    "Requests being answered now (open chat streams included).",
    multiprocess_mode="livesum",
)
CHAT_TURNS = Counter(
    "ragbot_chat_turns",
    "Chat turns by how they ended: complete, partial, refused, failed, forwarded (people own the "
    "conversation), disconnected (the client left before the end).",
    ["outcome", "stream"],
)
CHAT_TTFT = Histogram(
    "ragbot_chat_time_to_first_token_seconds",
    "From the chat request's arrival to the first answer text sent to the client (streamed turns).",
    buckets=TTFT_BUCKETS,
)
RETRIEVAL_DURATION = Histogram(
    "ragbot_retrieval_duration_seconds",
    "One retrieval: query encoding, index search and fusion.",
    buckets=RETRIEVAL_BUCKETS,
)
LLM_DURATION = Histogram(
    "ragbot_llm_request_duration_seconds",
    "One LLM call, from the request to its last token, by outcome (ok, error, interrupted).",
    ["outcome"],
    buckets=LLM_BUCKETS,
)
LLM_TTFT = Histogram(
    "ragbot_llm_time_to_first_token_seconds",
    "The LLM's own share of the time to first token: from the request to its first streamed delta.",
    buckets=TTFT_BUCKETS,
)
WEBHOOK_ATTEMPTS = Counter(
    "ragbot_webhook_delivery_attempts",
    "Webhook send attempts by outcome: delivered, retry (will try again), failed (gave up).",
    ["outcome"],
)
JOBS = Counter("ragbot_jobs", "Background jobs finished, by kind and outcome.", ["kind", "outcome"])
GC_PAUSE = Histogram(
    "ragbot_gc_pause_seconds",
    "Python's cyclic garbage collector: how long each collection held the interpreter, by generation.",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def prepare_multiprocess_dir(path: Path) -> Path:
    """Create ``path`` (or empty it of a previous run's files) and name it in ``PROMETHEUS_MULTIPROC_DIR``
    for the processes started after this. Counters start again from zero, as after any restart."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(path.resolve())
    return path


def process_exiting() -> None:
    """Drop this process's live gauges (requests in flight) from the shared folder as it stops cleanly.
    A process that crashes leaves its last value there until the folder is emptied on the next start."""
    if multiprocess_enabled():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


# --- recording ---------------------------------------------------------------------------------------


def http_request(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_DURATION.labels(method, route).observe(seconds)


def in_flight(delta: int) -> None:
    HTTP_IN_FLIGHT.inc(delta)


def chat_turn(outcome: str, *, stream: bool) -> None:
    CHAT_TURNS.labels(outcome, "true" if stream else "false").inc()


def first_token(seconds: float) -> None:
    CHAT_TTFT.observe(seconds)


def retrieval(seconds: float) -> None:
    RETRIEVAL_DURATION.observe(seconds)


@contextmanager
def time_retrieval() -> Iterator[None]:
    """``with time_retrieval(): hits = retriever.retrieve(...)``: records only retrievals that returned."""
    started = time.perf_counter()
    yield
    RETRIEVAL_DURATION.observe(time.perf_counter() - started)


def llm_call(seconds: float, outcome: str = "ok", *, first_token_s: float | None = None) -> None:
    LLM_DURATION.labels(outcome).observe(seconds)
    if first_token_s is not None:
        LLM_TTFT.observe(first_token_s)


def webhook_attempt(outcome: str) -> None:
    WEBHOOK_ATTEMPTS.labels(outcome).inc()


def gc_pause(generation: int, seconds: float) -> None:
    GC_PAUSE.labels(str(generation)).observe(seconds)


def job_finished(kind: str, outcome: str) -> None:
    JOBS.labels(kind, outcome).inc()


# --- state read at scrape time -----------------------------------------------------------------------


class StoreCollector(Collector):
    """Queue depth and job state, read from the shared database on each scrape (a few indexed counts).

    A database that does not answer is reported as ``ragbot_metrics_store_up 0``: the other metrics are
    still served, so a scrape never fails because of it.
    """

    def __init__(self, sessions: Callable[[], Session], now: Callable[[], datetime]) -> None:
        self._sessions = sessions
        self._now = now

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration: collect() runs only on a scrape

    def collect(self) -> Iterable[Metric]:
        from sqlalchemy import func, select

        from ragbot.db.models import IngestJob, WebhookDelivery

        up = GaugeMetricFamily("ragbot_metrics_store_up", "1 when the database answered this scrape.")
        try:
            with self._sessions() as session:
                deliveries = session.execute(
                    select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
                ).all()
                oldest = session.scalar(
                    select(func.min(WebhookDelivery.created_at)).where(WebhookDelivery.status == "pending")
                )
                due = session.scalar(
                    select(func.count())
                    .select_from(WebhookDelivery)
                    .where(
                        WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= self._now()
                    )
                )
                jobs = session.execute(
                    select(IngestJob.status, func.count()).group_by(IngestJob.status)
                ).all()
        except Exception:
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        by_status = GaugeMetricFamily(
            "ragbot_webhook_deliveries", "Webhook deliveries stored, by status.", labels=["status"]
        )
        counts = {"pending": 0, "delivered": 0, "failed": 0} | {str(s): int(n) for s, n in deliveries}
        for status, n in sorted(counts.items()):
            by_status.add_metric([status], float(n))
        yield by_status
        yield GaugeMetricFamily(
            "ragbot_webhook_queue_depth",
            "Webhook deliveries waiting to be sent (pending), due now or later.",
            value=float(counts["pending"]),
        )
        yield GaugeMetricFamily(
            "ragbot_webhook_queue_due",
            "Pending webhook deliveries whose next attempt is due now.",
            value=due or 0,
        )
        age = (self._now() - oldest).total_seconds() if oldest is not None else 0.0
        yield GaugeMetricFamily(
            "ragbot_webhook_oldest_pending_seconds",
            "Age of the oldest pending webhook delivery (0 when none): the outbox's lag.",
            value=max(age, 0.0),
        )
        job_family = GaugeMetricFamily(
            "ragbot_ingest_jobs",
            "Ingest jobs stored, by status (queued and running: the job queue).",
            labels=["status"],
        )
        job_counts = {"queued": 0, "running": 0, "succeeded": 0, "failed": 0} | {
            str(s): int(n) for s, n in jobs
        }
        for status, n in sorted(job_counts.items()):
            job_family.add_metric([status], float(n))
        yield job_family


class _Registered(Collector):
    """This process's registry as one collector of the scrape's registry."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def render(accept: str | None = None, extra: Iterable[Collector] = ()) -> tuple[bytes, str]:
    """The exposition (Prometheus text, or OpenMetrics when ``accept`` asks for it) and its content type:
    this process's metrics (every process's in multiprocess mode), then ``extra``."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_enabled():
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Registered())
    for collector in extra:
        registry.register(collector)
    encode, content_type = choose_encoder(accept or "")
    return encode(registry), content_type
