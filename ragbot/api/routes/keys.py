"""Admin API keys over the API: an unscoped key manages every key; a scoped key sees its bot's keys."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from ragbot.api.deps import RuntimeDep
from ragbot.api.errors import ApiError
from ragbot.api.schemas import ApiKeyCreated, ApiKeyOut, ApiKeyRequest, error_responses
from ragbot.tenancy.api_keys import KeyNotFoundError
from ragbot.tenancy.deps import AdminDep, admin_bot_id

router = APIRouter(prefix="/v1/keys", tags=["keys"])

_ERRORS = error_responses(401, 403, 404, 422)


@router.get("", response_model=list[ApiKeyOut], responses=_ERRORS)
async def list_keys(admin: AdminDep, runtime: RuntimeDep) -> list[dict[str, Any]]:
    """Keys without their secret: every key for an unscoped key, the bot's own for a scoped one."""
    return await run_in_threadpool(runtime.api_keys.list_keys, admin.bot_id)


@router.post("", status_code=201, response_model=ApiKeyCreated, responses=_ERRORS)
async def create_key(body: ApiKeyRequest, admin: AdminDep, runtime: RuntimeDep) -> dict[str, Any]:
    """A new key, shown once. A scoped key can only create keys for its own bot."""
    if body.bot_id is None and admin.bot_id is not None:
        raise ApiError(403, "forbidden", "a scoped key cannot create an unscoped key")
    bot_id = None
    if body.bot_id is not None:
        bot_id = await run_in_threadpool(admin_bot_id, admin, body.bot_id, runtime)
    expires = timedelta(days=body.expires_in_days) if body.expires_in_days else None
    try:
        key, row = await run_in_threadpool(
            lambda: runtime.api_keys.create(name=body.name, bot_id=bot_id, expires_in=expires)
        )
    except LookupError as exc:
        raise ApiError(404, "bot_not_found", str(exc)) from None
    return {**row, "key": key}


@router.delete("/{key_id}", response_model=ApiKeyOut, responses=_ERRORS)
async def revoke_key(key_id: str, admin: AdminDep, runtime: RuntimeDep) -> dict[str, Any]:
    """Revoke a key at once (kept in the list, marked revoked)."""
    found = await run_in_threadpool(runtime.api_keys.get, key_id)
    if found is None or (admin.bot_id is not None and found["bot_id"] != admin.bot_id):
        raise ApiError(404, "key_not_found", f"no API key with id {key_id!r}")
    try:
        return await run_in_threadpool(runtime.api_keys.revoke, key_id)
    except KeyNotFoundError:
        raise ApiError(404, "key_not_found", f"no API key with id {key_id!r}") from None
