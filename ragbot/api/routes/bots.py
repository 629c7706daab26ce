"""Bot management (admin keys): a scoped key sees and changes only its own bot; creating a bot takes an
unscoped key."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from ragbot.api.deps import RuntimeDep
from ragbot.api.errors import ApiError
from ragbot.api.schemas import BotDeletedOut, BotOut, error_responses
from ragbot.runtime import Runtime
from ragbot.tenancy.bots import BotChanges, BotNotFoundError, InvalidBotSettingError
from ragbot.tenancy.deps import AdminDep, admin_bot_id
from ragbot.tenancy.principals import AdminPrincipal

router = APIRouter(prefix="/v1/bots", tags=["bots"])

_ERRORS = error_responses(401, 403, 404, 422)


class BotCreate(BotChanges):
    name: str = Field(min_length=1, max_length=200)  # type: ignore[assignment]


def _require_unscoped(admin: AdminPrincipal) -> None:
    if admin.bot_id is not None:
        raise ApiError(
            403, "forbidden", "this API key is scoped to one bot; creating bots needs an unscoped key"
        )


def _existing(admin: AdminPrincipal, bot_id: str, runtime: Runtime) -> str:
    checked = admin_bot_id(admin, bot_id, runtime)
    if runtime.bots.get(checked) is None:
        raise ApiError(404, "bot_not_found", f"no bot with id {bot_id!r}")
    return checked


@router.get("", response_model=list[BotOut], responses=_ERRORS)
async def list_bots(admin: AdminDep, runtime: RuntimeDep) -> list[dict[str, Any]]:
    """Every bot the key may see."""
    scope = None if admin.bot_id is None else [admin.bot_id]
    return await run_in_threadpool(runtime.bots.list_bots, scope)


@router.post("", status_code=201, response_model=BotOut, responses=_ERRORS)
async def create_bot(body: BotCreate, admin: AdminDep, runtime: RuntimeDep) -> dict[str, Any]:
    """A new bot with its own content, settings and public widget key."""
    _require_unscoped(admin)
    try:
        return await run_in_threadpool(runtime.bots.create, body.name, body, actor=admin.actor)
    except InvalidBotSettingError as exc:
        raise ApiError(422, "invalid_setting", str(exc)) from None


@router.get("/{bot_id}", response_model=BotOut, responses=_ERRORS)
async def read_bot(bot_id: str, admin: AdminDep, runtime: RuntimeDep) -> dict[str, Any]:
    checked = await run_in_threadpool(_existing, admin, bot_id, runtime)
    bot = await run_in_threadpool(runtime.bots.get, checked)
    assert bot is not None
    return bot


@router.patch("/{bot_id}", response_model=BotOut, responses=_ERRORS)
async def update_bot(
    bot_id: str, admin: AdminDep, runtime: RuntimeDep, body: BotChanges = Body(...)
) -> dict[str, Any]:
    """Change some settings; fields left out keep their value, ``null`` restores the deployment's
    default. Every change is audited (who, when, from what to what)."""
    checked = await run_in_threadpool(_existing, admin, bot_id, runtime)
    try:
        return await run_in_threadpool(runtime.bots.update, checked, body, actor=admin.actor)
    except InvalidBotSettingError as exc:
        raise ApiError(422, "invalid_setting", str(exc)) from None
    except BotNotFoundError:
        raise ApiError(404, "bot_not_found", f"no bot with id {bot_id!r}") from None


@router.post("/{bot_id}/rotate-key", response_model=BotOut, responses=_ERRORS)
async def rotate_public_key(bot_id: str, admin: AdminDep, runtime: RuntimeDep) -> dict[str, Any]:
    """A new public widget key; the old one and its visitor sessions stop working at once."""
    checked = await run_in_threadpool(_existing, admin, bot_id, runtime)
    return await run_in_threadpool(runtime.bots.rotate_public_key, checked, actor=admin.actor)


@router.get("/{bot_id}/audit", responses=_ERRORS)
async def bot_audit(bot_id: str, admin: AdminDep, runtime: RuntimeDep) -> list[dict[str, Any]]:
    """Who changed what, newest first."""
    checked = await run_in_threadpool(_existing, admin, bot_id, runtime)
    return await run_in_threadpool(runtime.bots.audit, checked)


@router.delete("/{bot_id}", response_model=BotDeletedOut, responses=_ERRORS)
async def delete_bot(bot_id: str, admin: AdminDep, runtime: RuntimeDep) -> dict[str, Any]:
    """Delete the bot with its vectors, conversations, documents, keys and learned fusion weights."""
    checked = await run_in_threadpool(_existing, admin, bot_id, runtime)
    try:
        removed = await run_in_threadpool(runtime.delete_bot, checked, actor=admin.actor)
    except BotNotFoundError:
        raise ApiError(404, "bot_not_found", f"no bot with id {bot_id!r}") from None
    return {"id": checked, "deleted": True, "removed": removed}
