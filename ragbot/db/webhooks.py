"""SQL for webhooks: subscriptions, and the outbox queue the delivery workers share.

Workers coordinate through the rows alone, so any number of them (API processes, ``ragbot worker``) can
run, and one that dies loses nothing. Claiming a due delivery moves its ``next_attempt_at`` to the end of a
lease: other workers skip it until then, and if its worker dies the lease runs out and the row is due again.
The lease end doubles as the claim's token: a worker records its result only while the row still holds
that exact value, so a late result never overwrites a newer claim, a replay or a deletion.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from ragbot.db.models import WebhookDelivery, WebhookSubscription

__all__ = [
    "Claim",
    "add_subscription",
    "claim_due",
    "count_deliveries",
    "delete_subscription",
    "fail_exhausted",
    "finish",
    "get_delivery",
    "get_subscription",
    "list_deliveries",
    "list_subscriptions",
    "replay",
]

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery a worker holds until ``lease_until``: all it needs to send one attempt."""

    delivery_id: str
    bot_id: str
    event_type: str
    payload: dict[str, Any]
    attempt: int  # 1 for the first try
    url: str
    secret: str
    lease_until: datetime
    request_id: str | None = None  # the request that caused the event


def add_subscription(
    session: Session, *, bot_id: str, url: str, events: list[str], secret: str, now: datetime
) -> WebhookSubscription:
    row = WebhookSubscription(
        bot_id=bot_id, url=url, events=events, secret=secret, active=True, created_at=now
    )
    session.add(row)
    session.flush()
    return row


def get_subscription(session: Session, subscription_id: str) -> WebhookSubscription | None:
    return session.get(WebhookSubscription, subscription_id)


def list_subscriptions(session: Session, bot_id: str | None = None) -> list[WebhookSubscription]:
    """A bot's subscriptions, or every bot's (an unscoped key listing without a bot)."""
    query = select(WebhookSubscription).order_by(WebhookSubscription.created_at, WebhookSubscription.id)
    if bot_id is not None:
        query = query.where(WebhookSubscription.bot_id == bot_id)
    return list(session.scalars(query))


def delete_subscription(session: Session, subscription_id: str) -> int:
    """Remove a subscription with its deliveries (pending ones are never sent); how many deliveries went."""
    removed = _rowcount(
        session.execute(delete(WebhookDelivery).where(WebhookDelivery.subscription_id == subscription_id))
    )
    session.execute(delete(WebhookSubscription).where(WebhookSubscription.id == subscription_id))
    return removed


def get_delivery(session: Session, delivery_id: str) -> WebhookDelivery | None:
    return session.get(WebhookDelivery, delivery_id)


def list_deliveries(
    session: Session, subscription_id: str, *, status: str | None = None, limit: int = 100
) -> list[WebhookDelivery]:
    """Newest first."""
    query = (
        select(WebhookDelivery)
        .where(WebhookDelivery.subscription_id == subscription_id)
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
        .limit(limit)
    )
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    return list(session.scalars(query))


def count_deliveries(session: Session, *, status: str | None = None) -> int:
    query = select(func.count()).select_from(WebhookDelivery)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    return int(session.scalar(query) or 0)


def replay(session: Session, delivery: WebhookDelivery, *, now: datetime) -> None:
    """Queue a finished delivery again under the same ``webhook-id`` (receivers de-duplicate on it), with
    a full set of attempts. The last response stays visible until the next attempt replaces it."""
    delivery.status = PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = now
    delivery.delivered_at = None
    session.flush()


def fail_exhausted(session: Session, *, now: datetime, max_attempts: int) -> int:
    """Give up on due deliveries that already used every attempt: their worker died during the last one
    (its lease ran out), or ``webhook_max_attempts`` was lowered. They can be replayed. Reads first, so
    the usual round (nothing to give up) takes no write lock, which SQLite holds database-wide."""
    exhausted = (
        WebhookDelivery.status == PENDING,
        WebhookDelivery.next_attempt_at <= now,
        WebhookDelivery.attempts >= max_attempts,
    )
    if session.scalar(select(WebhookDelivery.id).where(*exhausted).limit(1)) is None:
        return 0
    result = session.execute(
        update(WebhookDelivery)
        .where(*exhausted)
        .values(
            status=FAILED,
            last_error=func.coalesce(WebhookDelivery.last_error, "no attempt left")
            + " (gave up after the last attempt)",
        )
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result)


def claim_due(
    session: Session, *, now: datetime, lease_until: datetime, limit: int, max_attempts: int
) -> list[Claim]:
    """Take up to ``limit`` due deliveries of active subscriptions, oldest due first, counting the attempt.

    PostgreSQL locks the candidates with ``FOR UPDATE SKIP LOCKED`` so concurrent workers take disjoint
    rows without waiting; SQLite has no row locks (the clause is dropped), so each row is taken with a
    compare-and-set UPDATE that only matches while the row is still pending and due: a row another worker
    claimed first now has a future ``next_attempt_at`` and is skipped. The same statement serves both.
    """
    candidates = session.execute(
        select(WebhookDelivery.id, WebhookSubscription.url, WebhookSubscription.secret)
        .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
        .where(
            WebhookDelivery.status == PENDING,
            WebhookDelivery.next_attempt_at <= now,
            WebhookDelivery.attempts < max_attempts,
            WebhookSubscription.active.is_(True),
        )
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=WebhookDelivery)
    ).all()
    claims: list[Claim] = []
    for delivery_id, url, secret in candidates:
        taken = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status == PENDING,
                WebhookDelivery.next_attempt_at <= now,
            )
            .values(
                next_attempt_at=lease_until,
                attempts=WebhookDelivery.attempts + 1,
                last_attempt_at=now,
            )
            .returning(
                WebhookDelivery.bot_id,
                WebhookDelivery.event_type,
                WebhookDelivery.payload,
                WebhookDelivery.attempts,
                WebhookDelivery.request_id,
            )
            .execution_options(synchronize_session=False)
        ).one_or_none()
        if taken is None:
            continue  # another worker got there first
        bot_id, event_type, payload, attempt, request_id = taken
        claims.append(
            Claim(
                delivery_id=delivery_id,
                bot_id=bot_id,
                event_type=event_type,
                payload=dict(payload or {}),
                attempt=int(attempt),
                url=url,
                secret=secret,
                lease_until=lease_until,
                request_id=request_id,
            )
        )
    return claims


def finish(
    session: Session,
    claim: Claim,
    *,
    status: str,
    next_attempt_at: datetime,
    status_code: int | None,
    error: str | None,
    delivered_at: datetime | None,
) -> bool:
    """Record an attempt's outcome; False when the claim was lost meanwhile (its lease ran out and another
    worker took the row, or it was replayed or deleted), in which case nothing is written."""
    result = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == claim.delivery_id,
            WebhookDelivery.status == PENDING,
            WebhookDelivery.next_attempt_at == claim.lease_until,
        )
        .values(
            status=status,
            next_attempt_at=next_attempt_at,
            last_status_code=status_code,
            last_error=error,
            delivered_at=delivered_at,
        )
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) > 0


def _rowcount(result: Any) -> int:
    """Rows an UPDATE or DELETE matched (``Result`` is typed without it; the cursor result has it)."""
    return int(result.rowcount or 0)
