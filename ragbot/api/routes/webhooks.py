"""Webhook subscriptions over the API (admin keys). A scoped key sees and changes only its bot's
subscriptions and deliveries; another bot's are simply not found."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ragbot.api.deps import RuntimeDep
from ragbot.api.errors import ApiError
from ragbot.api.schemas import ErrorOut, error_responses
from ragbot.runtime import Runtime
from ragbot.tenancy.deps import AdminDep, admin_bot_id
from ragbot.tenancy.principals import AdminPrincipal
from ragbot.webhooks.outbox import EVENT_TYPES
from ragbot.webhooks.service import (
    DeliveryNotFoundError,
    DeliveryPendingError,
    InvalidSubscriptionError,
    SubscriptionNotFoundError,
    UrlRefusedError,
)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

_ERRORS = error_responses(401, 403, 404, 422)


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bot_id: str | None = Field(default=None, description="The bot whose events to send; omit for the key's.")
    url: str = Field(min_length=1, max_length=2000, description="http(s) endpoint receiving POSTs.")
    events: list[str] = Field(min_length=1, max_length=len(EVENT_TYPES), description=", ".join(EVENT_TYPES))


class WebhookOut(BaseModel):
    id: str
    bot_id: str
    url: str
    events: list[str]
    active: bool
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="The whsec_ signing secret for Standard Webhooks verification: shown once, never again."
    )


class WebhookDeletedOut(BaseModel):
    id: str
    deleted: bool
    removed_deliveries: int


class DeliveryOut(BaseModel):
    id: str = Field(description="The webhook-id header: the same on every retry and replay.")
    subscription_id: str
    bot_id: str
    event_type: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    payload: dict[str, Any]


def _not_found(subscription_id: str) -> ApiError:
    return ApiError(404, "webhook_not_found", f"no webhook subscription with id {subscription_id!r}")


def _visible(admin: AdminPrincipal, runtime: Runtime, subscription_id: str) -> dict[str, Any]:
    """The subscription if this key may see it; another bot's looks exactly like a missing one."""
    found = runtime.webhooks.get(subscription_id)
    if found is None or not admin.may_access(found["bot_id"]):
        raise _not_found(subscription_id)
    return found


@router.post("", status_code=201, response_model=WebhookCreated, responses=_ERRORS)
async def create_webhook(body: WebhookCreate, admin: AdminDep, runtime: RuntimeDep) -> dict[str, Any]:
    """Subscribe a URL to some of a bot's events. Deliveries are signed per Standard Webhooks with the
    returned secret (shown once). Private, loopback and metadata addresses are refused (422) unless the
    deployment sets RAGBOT_WEBHOOK_ALLOW_PRIVATE=true (metadata addresses never)."""
    bot_id = await run_in_threadpool(admin_bot_id, admin, body.bot_id, runtime)
    try:
        secret, row = await run_in_threadpool(runtime.webhooks.create, bot_id, body.url, body.events)
    except UrlRefusedError as exc:
        raise ApiError(422, "webhook_url_refused", str(exc)) from None
    except InvalidSubscriptionError as exc:
        raise ApiError(422, "invalid_webhook", str(exc)) from None
    except LookupError as exc:
        raise ApiError(404, "bot_not_found", str(exc)) from None
    return {**row, "secret": secret}


@router.get("", response_model=list[WebhookOut], responses=_ERRORS)
async def list_webhooks(
    admin: AdminDep, runtime: RuntimeDep, bot_id: str | None = Query(default=None)
) -> list[dict[str, Any]]:
    """Subscriptions without their secrets: one bot's, or (an unscoped key naming no bot) every bot's."""
    scope: str | None = admin.bot_id
    if bot_id:
        scope = await run_in_threadpool(admin_bot_id, admin, bot_id, runtime)
    return await run_in_threadpool(runtime.webhooks.list_subscriptions, scope)


@router.delete("/{subscription_id}", response_model=WebhookDeletedOut, responses=_ERRORS)
async def delete_webhook(subscription_id: str, admin: AdminDep, runtime: RuntimeDep) -> dict[str, Any]:
    """Unsubscribe at once: the subscription and its deliveries go, pending ones are never sent."""
    await run_in_threadpool(_visible, admin, runtime, subscription_id)
    try:
        removed = await run_in_threadpool(runtime.webhooks.delete, subscription_id)
    except SubscriptionNotFoundError:
        raise _not_found(subscription_id) from None
    return {"id": subscription_id, "deleted": True, "removed_deliveries": removed}


@router.get("/{subscription_id}/deliveries", response_model=list[DeliveryOut], responses=_ERRORS)
async def list_deliveries(
    subscription_id: str,
    admin: AdminDep,
    runtime: RuntimeDep,
    status: Literal["pending", "delivered", "failed"] | None = Query(default=None),
    limit: int = Query(default=100, ge=1, le=1000),
) -> list[dict[str, Any]]:
    """Newest first, each with its attempts and the last response (status code, error)."""
    await run_in_threadpool(_visible, admin, runtime, subscription_id)
    try:
        return await run_in_threadpool(
            lambda: runtime.webhooks.deliveries(subscription_id, status=status, limit=limit)
        )
    except SubscriptionNotFoundError:
        raise _not_found(subscription_id) from None


@router.post(
    "/deliveries/{delivery_id}/replay",
    response_model=DeliveryOut,
    responses={**_ERRORS, 409: {"model": ErrorOut}},
)
async def replay_delivery(delivery_id: str, admin: AdminDep, runtime: RuntimeDep) -> dict[str, Any]:
    """Queue a failed (or delivered) event again with the same webhook-id, so receivers that already
    have it can tell; its attempts start over and it gets a fresh signature. 409 while still pending."""
    found = await run_in_threadpool(runtime.webhooks.get_delivery, delivery_id)
    missing = ApiError(404, "delivery_not_found", f"no webhook delivery with id {delivery_id!r}")
    if found is None or not admin.may_access(found["bot_id"]):
        raise missing
    try:
        return await run_in_threadpool(runtime.webhooks.replay, delivery_id)
    except DeliveryNotFoundError:
        raise missing from None
    except DeliveryPendingError as exc:
        raise ApiError(409, "delivery_pending", str(exc)) from None
