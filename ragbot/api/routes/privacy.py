"""Erasure on request (admin key): forget one visitor of a bot, by visitor id or email."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ragbot.api.deps import RuntimeDep
from ragbot.api.errors import ApiError
from ragbot.api.schemas import ErrorOut
from ragbot.privacy.retention import forget_visitor
from ragbot.tenancy.deps import AdminDep, admin_bot_id

router = APIRouter(prefix="/v1/visitors", tags=["privacy"])


class ForgetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bot_id: str = Field(min_length=1, max_length=64)
    visitor: str = Field(min_length=1, max_length=320, description="A visitor id or an email address.")


@router.post(
    "/forget",
    responses={
        401: {"model": ErrorOut},
        403: {"model": ErrorOut},
        404: {"model": ErrorOut},
        422: {"model": ErrorOut},
    },
)
async def forget(body: ForgetRequest, admin: AdminDep, runtime: RuntimeDep) -> dict[str, Any]:
    """Erase a person's conversations, messages, feedback, leads and the webhook deliveries that mention
    them; says what was removed."""
    bot = await run_in_threadpool(admin_bot_id, admin, body.bot_id, runtime)
    try:
        removed = await run_in_threadpool(forget_visitor, runtime.session_factory, bot, body.visitor)
    except ValueError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
    return {"bot_id": bot, "visitor": body.visitor, "removed": removed}
