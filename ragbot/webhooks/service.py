"""Webhook subscriptions and their deliveries, for the admin API and the CLI.

A subscription's URL is checked when it is created (syntax, http/https, and where its host resolves, with
the crawler's SSRF policy), so a mistake or an internal target is refused at once instead of failing
quietly in the outbox; the worker checks again before every send (DNS can change; see ``worker``).
Scope (which bots a key may see) is the caller's business: this service takes bot ids as given.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from connectors.net import AddressRefusedError, FetchError, Resolver, SafeHttpClient
from ragbot import __version__
from ragbot.config import Settings
from ragbot.db import bots as bots_sql
from ragbot.db import repositories as repo
from ragbot.db import webhooks as sql
from ragbot.db.models import WebhookDelivery, WebhookSubscription, utcnow
from ragbot.db.session import session_scope
from ragbot.webhooks.outbox import EVENT_TYPES
from ragbot.webhooks.signing import new_secret

__all__ = [
    "DeliveryNotFoundError",
    "DeliveryPendingError",
    "InvalidSubscriptionError",
    "SubscriptionNotFoundError",
    "UrlRefusedError",
    "WebhookService",
    "delivery_to_dict",
    "subscription_to_dict",
    "webhook_http_client",
]

#: Long enough for any real endpoint (query strings included), short enough to keep rows and logs sane.
MAX_URL_LENGTH = 2000
_CRAWL_HINT = "RAGBOT_CRAWL_ALLOW_PRIVATE=true or --allow-private"
_WEBHOOK_HINT = "RAGBOT_WEBHOOK_ALLOW_PRIVATE=true"


class SubscriptionNotFoundError(LookupError):
    pass


class DeliveryNotFoundError(LookupError):
    pass


class DeliveryPendingError(ValueError):
    """A replay of a delivery that is still queued: it will be sent anyway."""


class InvalidSubscriptionError(ValueError):
    """Events or URL that cannot make a subscription; ``str()`` says why."""


class UrlRefusedError(InvalidSubscriptionError):
    """The URL points at an address the SSRF policy forbids."""


def webhook_http_client(
    settings: Settings, *, resolver: Resolver | None = None, allowed_networks: Iterable[str] = ()
) -> SafeHttpClient:
    """The crawler's SSRF-safe client configured for webhooks: its ``vet`` is the address policy both at
    subscription time and before each send."""
    return SafeHttpClient(
        user_agent=f"ragbot-webhooks/{__version__}",
        timeout_s=settings.webhook_timeout_s,
        max_bytes=64 * 1024,
        max_redirects=0,
        allow_private=settings.webhook_allow_private,
        allowed_networks=allowed_networks,
        resolver=resolver,
        max_connections=1,
    )


def refusal_message(exc: FetchError) -> str:
    """The policy's reason, naming the webhook setting that lifts it rather than the crawler's."""
    return str(exc).replace(_CRAWL_HINT, _WEBHOOK_HINT)


def subscription_to_dict(row: WebhookSubscription) -> dict[str, Any]:
    """A subscription without its secret (shown once, at creation)."""
    return {
        "id": row.id,
        "bot_id": row.bot_id,
        "url": row.url,
        "events": list(row.events or []),
        "active": row.active,
        "created_at": row.created_at,
    }


def delivery_to_dict(row: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": row.id,
        "subscription_id": row.subscription_id,
        "bot_id": row.bot_id,
        "event_type": row.event_type,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": row.next_attempt_at if row.status == sql.PENDING else None,
        "last_attempt_at": row.last_attempt_at,
        "last_status_code": row.last_status_code,
        "last_error": row.last_error,
        "delivered_at": row.delivered_at,
        "created_at": row.created_at,
        "payload": row.payload,
    }


def check_events(events: Sequence[str]) -> list[str]:
    """The events asked for, de-duplicated in the order given; every one must be a known event type."""
    if not events:
        raise InvalidSubscriptionError(f"name at least one event: {', '.join(EVENT_TYPES)}")
    unknown = [e for e in events if e not in EVENT_TYPES]
    if unknown:
        raise InvalidSubscriptionError(
            f"unknown event type {unknown[0]!r}; known events: {', '.join(EVENT_TYPES)}"
        )
    return list(dict.fromkeys(events))


class WebhookService:
    """``resolver`` and ``allowed_networks`` are the SSRF seams tests use (no DNS, no real internal hosts)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        *,
        resolver: Resolver | None = None,
        allowed_networks: Iterable[str] = (),
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._http = webhook_http_client(settings, resolver=resolver, allowed_networks=allowed_networks)

    def close(self) -> None:
        self._http.close()

    def check_url(self, url: str) -> str:
        """``url`` if the worker may send to it; ``InvalidSubscriptionError`` (or ``UrlRefusedError`` for an
        internal address) otherwise. Resolves the host, so it does I/O."""
        url = url.strip()
        if not url or len(url) > MAX_URL_LENGTH:
            raise InvalidSubscriptionError(f"a webhook URL has 1 to {MAX_URL_LENGTH} characters")
        if not repo.is_storable(url) or any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
            raise InvalidSubscriptionError("a webhook URL must not contain control characters")
        try:
            self._http.vet(url)
        except AddressRefusedError as exc:
            raise UrlRefusedError(refusal_message(exc)) from None
        except FetchError as exc:
            raise InvalidSubscriptionError(str(exc)) from None
        return url

    def create(self, bot_id: str, url: str, events: Sequence[str]) -> tuple[str, dict[str, Any]]:
        """A new subscription and its signing secret; the secret is never shown again."""
        wanted = check_events(events)
        checked = self.check_url(url)
        secret = new_secret()
        with session_scope(self._sessions) as s:
            if bots_sql.get_bot(s, bot_id) is None:
                raise LookupError(f"no bot with id {bot_id!r}")
            row = sql.add_subscription(
                s, bot_id=bot_id, url=checked, events=wanted, secret=secret, now=utcnow()
            )
            return secret, subscription_to_dict(row)

    def list_subscriptions(self, bot_id: str | None = None) -> list[dict[str, Any]]:
        with session_scope(self._sessions) as s:
            return [subscription_to_dict(r) for r in sql.list_subscriptions(s, bot_id)]

    def get(self, subscription_id: str) -> dict[str, Any] | None:
        with session_scope(self._sessions) as s:
            row = sql.get_subscription(s, subscription_id) if repo.is_storable(subscription_id) else None
            return subscription_to_dict(row) if row else None

    def delete(self, subscription_id: str) -> int:
        """Delete a subscription and its deliveries (pending ones are never sent); how many went."""
        with session_scope(self._sessions) as s:
            if not repo.is_storable(subscription_id) or sql.get_subscription(s, subscription_id) is None:
                raise SubscriptionNotFoundError(subscription_id)
            return sql.delete_subscription(s, subscription_id)

    def deliveries(
        self, subscription_id: str, *, status: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """A subscription's deliveries, newest first, with their attempts and last response."""
        with session_scope(self._sessions) as s:
            if not repo.is_storable(subscription_id) or sql.get_subscription(s, subscription_id) is None:
                raise SubscriptionNotFoundError(subscription_id)
            rows = sql.list_deliveries(s, subscription_id, status=status, limit=limit)
            return [delivery_to_dict(r) for r in rows]

    def get_delivery(self, delivery_id: str) -> dict[str, Any] | None:
        with session_scope(self._sessions) as s:
            row = sql.get_delivery(s, delivery_id) if repo.is_storable(delivery_id) else None
            return delivery_to_dict(row) if row else None

    def replay(self, delivery_id: str) -> dict[str, Any]:
        """Send a delivered or failed event again: same ``webhook-id``, fresh attempts, a new signature."""
        with session_scope(self._sessions) as s:
            row = sql.get_delivery(s, delivery_id) if repo.is_storable(delivery_id) else None
            if row is None:
                raise DeliveryNotFoundError(delivery_id)
            if row.status == sql.PENDING:
                raise DeliveryPendingError(f"delivery {delivery_id!r} is still pending; it will be sent")
            sql.replay(s, row, now=utcnow())
            return delivery_to_dict(row)
