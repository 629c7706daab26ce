"""Webhooks out, with real parts: SQLite and PostgreSQL outboxes, a real HTTP receiver on loopback that
fails on purpose, the reference Standard Webhooks verifier, and the admin routes.

Only loopback is ever dialed. Internal targets (10.0.0.7, metadata) are reached through the resolver
seam (``StaticResolver``), and the conftest guard fails any test that connects outside 127.0.0.0/8; the
loopback receiver itself needs ``webhook_allow_private=True`` (or 127.0.0.1/32 as an allowed network).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from fixtures.auth import admin_headers
from fixtures.webhook_receiver import Plan, Received, Receiver
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook

from connectors.net import StaticResolver
from ragbot.api.app import create_app
from ragbot.api.routes import webhooks as webhook_routes
from ragbot.config import Settings
from ragbot.db import webhooks as sql
from ragbot.db.models import WebhookDelivery, utcnow
from ragbot.db.session import make_engine, make_session_factory, migrate, session_scope
from ragbot.observability.context import bound_request_id, current_request_id
from ragbot.runtime import Runtime
from ragbot.tenancy.bots import BotService
from ragbot.webhooks.outbox import EVENT_TYPES, enqueue
from ragbot.webhooks.service import WebhookService
from ragbot.webhooks.worker import WebhookWorker

pytestmark = pytest.mark.integration

BOT_A, BOT_B = "bot-a", "bot-b"
LOOPBACK_AS_PUBLIC = ["127.0.0.1/32"]


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(plan: Plan = lambda _id, _n: 200, **options: Any) -> Receiver:
        receiver = Receiver(plan, **options).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


# --------------------------------------------------------------------------- ragbot pieces over one database


@dataclass
class Deployment:
    """One database and what a ragbot process builds over it; ``restart()`` builds them afresh."""

    url: str
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    workers: list[WebhookWorker] = field(default_factory=list)
    services: list[WebhookService] = field(default_factory=list)

    def service(self, **options: Any) -> WebhookService:
        service = WebhookService(self.sessions, options.pop("settings", self.settings), **options)
        self.services.append(service)
        return service

    def worker(self, **options: Any) -> WebhookWorker:
        options.setdefault("poll_s", 0.02)
        worker = WebhookWorker(self.sessions, options.pop("settings", self.settings), **options)
        self.workers.append(worker)
        return worker

    def restart(self) -> None:
        """What a crash and a new process leave behind: the database, nothing else."""
        for worker in self.workers:
            worker.stop()
        self.engine.dispose()
        self.engine = make_engine(self.url)
        migrate(self.engine)
        self.sessions = make_session_factory(self.engine)

    def enqueue(self, bot_id: str, event_type: str, data: dict[str, Any]) -> list[str]:
        with session_scope(self.sessions) as s:
            return enqueue(s, bot_id, event_type, data)

    def delivery(self, delivery_id: str) -> WebhookDelivery:
        with session_scope(self.sessions) as s:
            row = s.get(WebhookDelivery, delivery_id)
            assert row is not None
            return row

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        for service in self.services:
            service.close()
        self.engine.dispose()


def _settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "database_url": database_url,
        "webhook_allow_private": True,  # the receiver is on loopback
        "webhook_backoff_s": 0.05,
        "webhook_max_attempts": 8,
        "webhook_timeout_s": 0.5,
    }
    return Settings(**{**values, **overrides})


@pytest.fixture
def deployment(tmp_path: Path, database_url: str) -> Iterator[Deployment]:
    settings = _settings(tmp_path, database_url)
    engine = make_engine(database_url)
    migrate(engine)
    sessions = make_session_factory(engine)
    bots = BotService(sessions, settings)
    bots.ensure(BOT_A)
    bots.ensure(BOT_B)
    deployed = Deployment(database_url, settings, engine, sessions)
    yield deployed
    deployed.close()


def wait_until(predicate: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def drain(worker: WebhookWorker, done: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Run the worker round by round (no thread) until ``done()``."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError("the worker did not finish in time")
        if not worker.run_once():
            time.sleep(0.01)


def statuses(deployment: Deployment, ids: list[str]) -> dict[str, str]:
    with session_scope(deployment.sessions) as s:
        return {i: row.status for i in ids if (row := s.get(WebhookDelivery, i)) is not None}


def make_due(deployment: Deployment, delivery_id: str) -> None:
    """Skip the wait before the next retry."""
    with session_scope(deployment.sessions) as s:
        row = s.get(WebhookDelivery, delivery_id)
        assert row is not None
        row.next_attempt_at = utcnow()


def verify(secret: str, request: Received) -> Any:
    """What a receiver does: the reference verifier over the raw body and headers (raises if forged)."""
    return Webhook(secret).verify(request.body, request.headers)


# ------------------------------------------------------------------------ at-least-once, exactly-once by id


def test_every_event_arrives_once_through_failures_timeouts_and_a_restart(
    deployment: Deployment, receiver_factory: Callable[..., Receiver]
) -> None:
    """500, 500, a timeout, then 200 for every event; ragbot 'restarts' after the two 500s, leaving one
    row claimed by a worker that died (its lease must run out before anyone retries it)."""
    script = {1: 500, 2: 500, 3: "timeout"}
    receiver = receiver_factory(lambda _id, n: script.get(n, 200), hang_s=1.2)
    secret, sub = deployment.service().create(BOT_A, receiver.url, list(EVENT_TYPES))
    ids: list[str] = []
    for n, event in enumerate([*EVENT_TYPES, "message.created", "lead.created"]):
        ids += deployment.enqueue(BOT_A, event, {"n": n, "conversation_id": f"c{n}"})
    assert len(ids) == 8 and len(set(ids)) == 8

    # Before the restart: both 500s for every event.
    first = deployment.worker()
    drain(first, lambda: all(len(receiver.of(i)) >= 2 for i in ids))
    assert not receiver.accepted()

    # A worker claims a row and dies before sending: nothing but its lease is left.
    deployment.restart()
    lease_s = 1.5
    wait_until(lambda: deployment.delivery(ids[0]).next_attempt_at <= utcnow(), what="the retry to be due")
    with session_scope(deployment.sessions) as s:
        now = claimed_at = utcnow()
        orphans = sql.claim_due(
            s, now=now, lease_until=now + timedelta(seconds=lease_s), limit=1, max_attempts=8
        )
    assert len(orphans) == 1
    orphan = orphans[0]

    # A new ragbot over the same database, its worker in the background thread as the API runs it.
    second = deployment.worker()
    second.start()
    try:
        wait_until(lambda: len(receiver.accepted()) >= len(ids), timeout_s=30, what="all deliveries")
        wait_until(lambda: set(statuses(deployment, ids).values()) == {"delivered"}, what="rows recorded")
    finally:
        second.stop()

    accepted = Counter(r.msg_id for r in receiver.accepted())
    assert accepted == Counter(ids), "every event accepted exactly once by webhook-id"
    for request in receiver.requests:  # failed attempts too: every send is signed and verifiable
        body = verify(secret, request)
        assert body["bot_id"] == BOT_A and body["type"] in EVENT_TYPES
    by_id = {r.msg_id: verify(secret, r) for r in receiver.accepted()}
    assert sorted(b["data"]["n"] for b in by_id.values()) == list(range(8))
    for msg_id in ids:
        assert [r.action for r in receiver.of(msg_id)] == [500, 500, "timeout", 200]

    # Nobody touched the orphan until its lease ran out; the attempt its worker lost still counts.
    after_claim = [r for r in receiver.of(orphan.delivery_id) if r.at >= claimed_at]
    assert after_claim and after_claim[0].at >= orphan.lease_until
    deliveries = {d["id"]: d for d in deployment.service().deliveries(sub["id"])}
    assert set(deliveries) == set(ids)
    for msg_id, row in deliveries.items():
        assert row["status"] == "delivered" and row["last_status_code"] == 200 and row["last_error"] is None
        assert row["delivered_at"] is not None and row["next_attempt_at"] is None
        assert row["attempts"] == (5 if msg_id == orphan.delivery_id else 4)

    sent = len(receiver.requests)
    figures = {
        "events": len(ids),
        "http_requests": sent,
        "retried": sent - len(ids),
        "accepted": sum(accepted.values()),
        "duplicates": sum(accepted.values()) - len(accepted),
    }
    print(f"\nwebhook figures ({deployment.url.split(':')[0]}): {figures}")
    assert figures["duplicates"] == 0 and figures["retried"] == 3 * len(ids)


def test_two_workers_share_the_outbox_without_sending_twice(
    deployment: Deployment, receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory()
    secret, _ = deployment.service().create(BOT_A, receiver.url, ["message.created"])
    ids = [i for n in range(40) for i in deployment.enqueue(BOT_A, "message.created", {"n": n})]
    workers = [deployment.worker(concurrency=3), deployment.worker(concurrency=3)]
    for worker in workers:
        worker.start()
    try:
        wait_until(lambda: set(statuses(deployment, ids).values()) == {"delivered"}, timeout_s=30)
    finally:
        for worker in workers:
            worker.stop()
    assert Counter(r.msg_id for r in receiver.requests) == Counter(ids)
    assert all(verify(secret, r) for r in receiver.requests)

    workers[0].start()  # a stopped worker starts again (an app's lifespan can run twice)
    try:
        (later,) = deployment.enqueue(BOT_A, "message.created", {"n": 40})
        wait_until(lambda: statuses(deployment, [later]) == {later: "delivered"})
    finally:
        workers[0].stop()


# --------------------------------------------------------------------------- retries, giving up, replay


def test_backoff_doubles_until_max_attempts_then_replay_resends_the_same_id(
    deployment: Deployment, receiver_factory: Callable[..., Receiver], tmp_path: Path
) -> None:
    failing = {"on": True}
    receiver = receiver_factory(lambda _id, _n: 500 if failing["on"] else 204)
    settings = _settings(tmp_path, deployment.url, webhook_backoff_s=0.25, webhook_max_attempts=4)
    service = deployment.service(settings=settings)
    secret, sub = service.create(BOT_A, receiver.url, ["lead.created"])
    (msg_id,) = deployment.enqueue(BOT_A, "lead.created", {"email": "ana@example.com"})
    worker = deployment.worker(settings=settings)
    scheduled: list[float] = []  # the wait the worker chose after each failed attempt

    def failed_for_good() -> bool:
        row = deployment.delivery(msg_id)
        if row.status == "pending" and row.attempts > len(scheduled) and row.last_attempt_at is not None:
            scheduled.append((row.next_attempt_at - row.last_attempt_at).total_seconds())
        return row.status != "pending"

    drain(worker, failed_for_good)

    row = deployment.delivery(msg_id)
    assert row.status == "failed" and row.attempts == 4
    assert row.last_status_code == 500 and row.last_error == "HTTP 500: receiver says no"
    times = [r.at for r in receiver.of(msg_id)]
    assert len(times) == 4
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    print(f"\nretry waits scheduled: {[round(g, 3) for g in scheduled]}, seen: {[round(g, 3) for g in gaps]}")
    assert len(scheduled) == 3 and scheduled[0] < scheduled[1] < scheduled[2]  # doubling, plus jitter
    for n, (wait, gap) in enumerate(zip(scheduled, gaps, strict=True)):
        assert 0.25 * 2**n <= wait <= 0.25 * 2**n * 1.2 + 0.3  # + the time the attempt took
        assert gap >= 0.25 * 2**n  # never retried before its time
    assert worker.run_once() == 0  # failed is final

    # Replay: same webhook-id, attempts start over, a fresh timestamp and signature.
    last = receiver.of(msg_id)[-1]
    wait_until(lambda: int(time.time()) > int(last.headers["webhook-timestamp"]), what="the next second")
    failing["on"] = False
    replayed = service.replay(msg_id)
    assert replayed["status"] == "pending" and replayed["attempts"] == 0 and replayed["id"] == msg_id
    drain(worker, lambda: deployment.delivery(msg_id).status == "delivered")
    resent = receiver.of(msg_id)[-1]
    assert resent.accepted and resent.msg_id == msg_id
    assert resent.headers["webhook-signature"] != last.headers["webhook-signature"]
    assert int(resent.headers["webhook-timestamp"]) > int(last.headers["webhook-timestamp"])
    assert verify(secret, resent)["data"] == {"email": "ana@example.com"}
    row = deployment.delivery(msg_id)
    assert (row.attempts, row.last_status_code, row.last_error) == (1, 204, None)
    assert [d["id"] for d in service.deliveries(sub["id"])] == [msg_id]


def test_a_worker_that_died_on_the_last_attempt_leaves_a_failed_delivery(
    deployment: Deployment, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, deployment.url, webhook_max_attempts=1)
    deployment.service().create(BOT_A, "http://127.0.0.1:9/never", ["feedback.created"])
    (msg_id,) = deployment.enqueue(BOT_A, "feedback.created", {"rating": "down"})
    with session_scope(deployment.sessions) as s:
        now = utcnow()
        assert sql.claim_due(s, now=now, lease_until=now + timedelta(seconds=0.2), limit=5, max_attempts=1)
    time.sleep(0.3)
    assert deployment.worker(settings=settings).run_once() == 0  # nothing sent: no attempt left
    row = deployment.delivery(msg_id)
    assert row.status == "failed" and row.attempts == 1 and "gave up" in (row.last_error or "")


def test_network_errors_are_recorded_without_a_status_code(deployment: Deployment) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        assert request.headers["host"] == "hook.example"  # the name travels in Host, the IP is dialed
        assert request.url.host == "127.0.0.1"
        raise httpx.ConnectError("connection refused", request=request)

    resolver = StaticResolver({"hook.example": ["127.0.0.1"]})
    deployment.service(resolver=resolver).create(BOT_A, "http://hook.example/in", ["handoff.requested"])
    (msg_id,) = deployment.enqueue(BOT_A, "handoff.requested", {"conversation_id": "c1"})
    worker = deployment.worker(transport=httpx.MockTransport(refuse), resolver=resolver)
    assert worker.run_once() == 1
    row = deployment.delivery(msg_id)
    assert row.status == "pending" and row.attempts == 1
    assert row.last_status_code is None and "connection refused" in (row.last_error or "")
    assert row.last_attempt_at is not None and row.next_attempt_at > row.last_attempt_at


def test_a_delivery_logs_under_the_id_of_the_request_that_caused_it(deployment: Deployment) -> None:
    seen: list[str | None] = []

    def accept(request: httpx.Request) -> httpx.Response:
        seen.append(current_request_id())
        return httpx.Response(204)

    resolver = StaticResolver({"hook.example": ["127.0.0.1"]})
    deployment.service(resolver=resolver).create(BOT_A, "http://hook.example/in", ["handoff.requested"])
    with bound_request_id("req-7f3a"):
        (msg_id,) = deployment.enqueue(BOT_A, "handoff.requested", {"conversation_id": "c1"})
    assert deployment.delivery(msg_id).request_id == "req-7f3a"
    worker = deployment.worker(transport=httpx.MockTransport(accept), resolver=resolver)
    assert worker.run_once() == 1
    assert seen == ["req-7f3a"] and current_request_id() is None  # bound for the send, then restored


# --------------------------------------------------------------------------- what is queued, and what is not


def test_only_subscribed_events_are_enqueued_and_deleting_stops_pending_ones(
    deployment: Deployment, receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory()
    service = deployment.service()
    _, leads = service.create(BOT_A, receiver.url, ["lead.created", "lead.created"])
    assert leads["events"] == ["lead.created"]
    _, other_bot = service.create(BOT_B, receiver.url, list(EVENT_TYPES))
    assert deployment.enqueue(BOT_A, "message.created", {"text": "hi"}) == []
    with session_scope(deployment.sessions) as s:
        assert sql.count_deliveries(s) == 0
    queued = deployment.enqueue(BOT_A, "lead.created", {"email": "a@example.com"})
    queued += deployment.enqueue(BOT_A, "lead.created", {"email": "b@example.com"})
    assert len(queued) == 2
    with pytest.raises(ValueError, match="unknown webhook event"):
        deployment.enqueue(BOT_A, "lead.deleted", {})

    assert service.delete(leads["id"]) == 2
    assert deployment.worker().run_once() == 0
    assert receiver.requests == []
    assert service.get(leads["id"]) is None
    assert [s["id"] for s in service.list_subscriptions(BOT_B)] == [other_bot["id"]]
    with session_scope(deployment.sessions) as s:
        assert sql.count_deliveries(s) == 0


# ------------------------------------------------------------------------ SSRF: at subscription and at send


def test_delivery_time_checks_refuse_internal_addresses_unless_allowed(
    deployment: Deployment, receiver_factory: Callable[..., Receiver], tmp_path: Path
) -> None:
    """The host resolved to loopback (standing in for a public address) when subscribing, then DNS
    changes: every send re-vets and dials the vetted address, so nothing internal is ever reached."""
    receiver = receiver_factory()
    strict = _settings(tmp_path, deployment.url, webhook_allow_private=False)
    url = f"http://hook.example:{receiver.port}/hooks"
    public = StaticResolver({"hook.example": ["127.0.0.1"]})
    service = deployment.service(settings=strict, resolver=public, allowed_networks=LOOPBACK_AS_PUBLIC)
    secret, _ = service.create(BOT_A, url, ["message.created"])

    (rebound,) = deployment.enqueue(BOT_A, "message.created", {"n": 1})
    rebinding = StaticResolver({"hook.example": ["10.0.0.7"]})
    assert deployment.worker(settings=strict, resolver=rebinding).run_once() == 1
    row = deployment.delivery(rebound)
    assert row.status == "pending" and row.last_status_code is None
    assert "10.0.0.7" in (row.last_error or "") and "private address" in (row.last_error or "")
    assert "RAGBOT_WEBHOOK_ALLOW_PRIVATE=true" in (row.last_error or "")

    metadata = StaticResolver({"hook.example": ["169.254.169.254"]})
    make_due(deployment, rebound)
    assert deployment.worker(resolver=metadata).run_once() == 1  # allow_private never opens metadata
    assert "metadata" in (deployment.delivery(rebound).last_error or "")

    make_due(deployment, rebound)
    assert deployment.worker(settings=strict, resolver=public).run_once() == 1  # loopback is private here
    assert "loopback" in (deployment.delivery(rebound).last_error or "")
    assert receiver.requests == []

    make_due(deployment, rebound)
    assert deployment.worker(resolver=public).run_once() == 1  # RAGBOT_WEBHOOK_ALLOW_PRIVATE=true
    assert deployment.delivery(rebound).status == "delivered"
    (request,) = receiver.requests
    assert request.headers["host"] == f"hook.example:{receiver.port}"
    assert verify(secret, request)["data"] == {"n": 1}


# --------------------------------------------------------------------------- the admin routes


@pytest.fixture
def api(deployment: Deployment, tmp_path: Path) -> tuple[TestClient, Runtime]:
    """The real app over this database with the webhook routes, its service seeing 'public.example' as a
    public host and 'intranet.example' as an internal one (no DNS; nothing is sent: no worker runs)."""
    settings = _settings(tmp_path, deployment.url, webhook_allow_private=False)
    runtime = Runtime(settings, engine=deployment.engine, session_factory=deployment.sessions)
    resolver = StaticResolver({"public.example": ["93.184.215.14"], "intranet.example": ["10.0.0.7"]})
    runtime.__dict__["webhooks"] = deployment.service(settings=settings, resolver=resolver)
    app = create_app(runtime=runtime, warmup=False)
    if not any(getattr(route, "path", "") == "/v1/webhooks" for route in app.routes):
        app.include_router(webhook_routes.router)
    app.state.runtime = runtime  # no lifespan: a background worker must not start here
    return TestClient(app), runtime


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body["error"]) == {"code", "message"} and body["error"]["code"] == code, body
    return str(body["error"]["message"])


def test_routes_create_list_deliveries_replay_delete(
    api: tuple[TestClient, Runtime], deployment: Deployment
) -> None:
    client, runtime = api
    admin = admin_headers(runtime)
    created = client.post(
        "/v1/webhooks",
        json={"bot_id": BOT_A, "url": "https://public.example/in", "events": ["lead.created"]},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    sub = created.json()
    assert sub["secret"].startswith("whsec_") and sub["bot_id"] == BOT_A and sub["events"] == ["lead.created"]

    listed = client.get("/v1/webhooks", params={"bot_id": BOT_A}, headers=admin).json()
    assert [s["id"] for s in listed] == [sub["id"]] and "secret" not in listed[0]

    (msg_id,) = deployment.enqueue(BOT_A, "lead.created", {"email": "x@example.com"})
    deliveries = client.get(f"/v1/webhooks/{sub['id']}/deliveries", headers=admin)
    assert deliveries.status_code == 200, deliveries.text
    (delivery,) = deliveries.json()
    assert delivery["id"] == msg_id and delivery["status"] == "pending" and delivery["attempts"] == 0
    assert delivery["payload"]["data"] == {"email": "x@example.com"}
    _error(client.post(f"/v1/webhooks/deliveries/{msg_id}/replay", headers=admin), 409, "delivery_pending")

    with session_scope(deployment.sessions) as s:  # as the worker leaves it after the last attempt
        row = s.get(WebhookDelivery, msg_id)
        assert row is not None
        row.status, row.attempts, row.last_status_code, row.last_error = "failed", 8, 503, "HTTP 503"
    replayed = client.post(f"/v1/webhooks/deliveries/{msg_id}/replay", headers=admin)
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["status"] == "pending" and replayed.json()["attempts"] == 0
    failed_only = client.get(f"/v1/webhooks/{sub['id']}/deliveries?status=failed", headers=admin).json()
    assert failed_only == []

    deleted = client.delete(f"/v1/webhooks/{sub['id']}", headers=admin)
    assert deleted.status_code == 200 and deleted.json() == {
        "id": sub["id"],
        "deleted": True,
        "removed_deliveries": 1,
    }
    _error(client.delete(f"/v1/webhooks/{sub['id']}", headers=admin), 404, "webhook_not_found")
    _error(client.get(f"/v1/webhooks/{sub['id']}/deliveries", headers=admin), 404, "webhook_not_found")
    _error(client.post("/v1/webhooks/deliveries/msg_nope/replay", headers=admin), 404, "delivery_not_found")
    _error(client.get("/v1/webhooks", headers={"Authorization": "Bearer rb_wrong"}), 401, "invalid_api_key")


#: (url, events, error code, a phrase of the message): one database for all, migrations are the slow part.
REFUSED: list[tuple[str, list[str], str, str]] = [
    ("http://127.0.0.1:8080/in", ["lead.created"], "webhook_url_refused", "loopback"),
    ("http://intranet.example/in", ["lead.created"], "webhook_url_refused", "10.0.0.7"),
    ("http://[::ffff:10.0.0.1]/in", ["lead.created"], "webhook_url_refused", "private"),
    ("http://169.254.169.254/latest/", ["lead.created"], "webhook_url_refused", "metadata"),
    ("http://metadata.google.internal/", ["lead.created"], "webhook_url_refused", "metadata"),
    ("ftp://public.example/in", ["lead.created"], "invalid_webhook", "scheme"),
    ("not a url", ["lead.created"], "invalid_webhook", ""),
    ("http://nowhere.example/in", ["lead.created"], "invalid_webhook", "cannot resolve"),
    ("https://public.example/in", ["lead.deleted"], "invalid_webhook", "unknown event type"),
    ("https://public.example/in", [], "invalid_request", "events"),
]


def test_routes_refuse_bad_and_internal_urls_at_subscription_time(api: tuple[TestClient, Runtime]) -> None:
    client, runtime = api
    headers = admin_headers(runtime)
    for url, events, code, needle in REFUSED:
        response = client.post(
            "/v1/webhooks", json={"bot_id": BOT_A, "url": url, "events": events}, headers=headers
        )
        message = _error(response, 422, code)
        assert needle in message, (url, message)
    assert "RAGBOT_WEBHOOK_ALLOW_PRIVATE=true" in _error(
        client.post(
            "/v1/webhooks", json={"url": "http://10.1.2.3/", "events": ["lead.created"]}, headers=headers
        ),
        422,
        "webhook_url_refused",
    )
    assert runtime.webhooks.list_subscriptions() == []


def test_a_scoped_key_never_sees_another_bots_webhooks(
    api: tuple[TestClient, Runtime], deployment: Deployment
) -> None:
    client, runtime = api
    unscoped = admin_headers(runtime)
    key_a, key_b = admin_headers(runtime, bot_id=BOT_A), admin_headers(runtime, bot_id=BOT_B)
    body = {"url": "https://public.example/a", "events": ["message.created"]}
    sub_a = client.post("/v1/webhooks", json=body, headers=key_a).json()  # bot_id from the key
    assert sub_a["bot_id"] == BOT_A
    sub_b = client.post("/v1/webhooks", json={**body, "bot_id": BOT_B}, headers=unscoped).json()
    (msg_a,) = deployment.enqueue(BOT_A, "message.created", {"text": "hello"})
    with session_scope(deployment.sessions) as s:
        row = s.get(WebhookDelivery, msg_a)
        assert row is not None
        row.status = "failed"

    assert [s["id"] for s in client.get("/v1/webhooks", headers=key_b).json()] == [sub_b["id"]]
    assert {s["id"] for s in client.get("/v1/webhooks", headers=unscoped).json()} == {
        sub_a["id"],
        sub_b["id"],
    }
    _error(client.get("/v1/webhooks", params={"bot_id": BOT_A}, headers=key_b), 403, "forbidden")
    _error(client.post("/v1/webhooks", json={**body, "bot_id": BOT_A}, headers=key_b), 403, "forbidden")
    _error(client.get(f"/v1/webhooks/{sub_a['id']}/deliveries", headers=key_b), 404, "webhook_not_found")
    _error(client.post(f"/v1/webhooks/deliveries/{msg_a}/replay", headers=key_b), 404, "delivery_not_found")
    _error(client.delete(f"/v1/webhooks/{sub_a['id']}", headers=key_b), 404, "webhook_not_found")
    _error(
        client.post("/v1/webhooks", json={**body, "bot_id": "no-such-bot"}, headers=unscoped),
        404,
        "bot_not_found",
    )

    assert runtime.webhooks.get(sub_a["id"]) is not None  # untouched by bot B's key
    assert deployment.delivery(msg_a).status == "failed"
    assert client.get(f"/v1/webhooks/{sub_a['id']}/deliveries", headers=key_a).json()[0]["id"] == msg_a
