"""The agent side (admin keys; the key's name is the agent's identity): the queue, a conversation with
the retrieval behind each answer, claim, reply, internal notes, resolve, reopen, return to the bot."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ragbot.api.deps import RuntimeDep
from ragbot.api.errors import ApiError
from ragbot.api.schemas import error_responses
from ragbot.db.models import Conversation
from ragbot.handoff.service import Moved
from ragbot.handoff.states import Action, IllegalTransitionError
from ragbot.runtime import Runtime
from ragbot.tenancy.deps import AdminDep, admin_bot_id, owned_bot
from ragbot.tenancy.principals import AdminPrincipal
from ragbot.types import OwnerMode

router = APIRouter(prefix="/v1/agent", tags=["agent"])

_ERRORS = error_responses(401, 403, 404, 409, 422)


class ReplyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str = Field(min_length=1, max_length=8000)
    internal: bool = Field(default=False, description="A note for colleagues; the visitor never sees it.")


class ClaimRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    assignee: str | None = Field(default=None, max_length=200, description="Assign to someone else.")


def _conversation_bot(admin: AdminPrincipal, conversation_id: str, runtime: Runtime) -> str:
    """The bot of a conversation the key may see; another bot's conversation is simply not found."""
    bot_id = owned_bot(admin, Conversation, conversation_id, runtime)
    if bot_id is None:
        raise ApiError(404, "conversation_not_found", f"no conversation with id {conversation_id!r}")
    return bot_id


def _moved(moved: Moved) -> dict[str, Any]:
    return {
        "conversation_id": moved.conversation_id,
        "from_mode": moved.from_mode,
        "owner_mode": moved.to_mode,
        "reason": moved.reason,
        "system_message": moved.system_message,
    }


def _act(admin: AdminPrincipal, conversation_id: str, action: Action, runtime: Runtime, **kw: Any) -> Any:
    bot = _conversation_bot(admin, conversation_id, runtime)
    try:
        return _moved(runtime.handoff.act(bot, conversation_id, action, actor=admin.agent, **kw))
    except IllegalTransitionError as exc:
        raise ApiError(409, "illegal_transition", str(exc)) from None


@router.get("/conversations", responses=_ERRORS)
async def agent_queue(
    admin: AdminDep,
    runtime: RuntimeDep,
    mode: OwnerMode | None = Query(default=None, description="Default: waiting or with a person."),
    bot_id: str | None = Query(default=None),
    assignee: str | None = Query(default=None),
    waiting_since: datetime | None = Query(default=None, description="Waiting since at least this time."),
    limit: int = Query(default=100, ge=1, le=500),
) -> list[dict[str, Any]]:
    """The queue: longest-waiting first."""
    if bot_id is not None:
        bots: list[str] | None = [await run_in_threadpool(admin_bot_id, admin, bot_id, runtime)]
    else:
        bots = None if admin.bot_id is None else [admin.bot_id]
    return await run_in_threadpool(
        lambda: runtime.handoff.queue(
            bots,
            mode=mode.value if mode else None,
            assignee=assignee,
            waiting_before=waiting_since,
            limit=limit,
        )
    )


@router.get("/conversations/{conversation_id}", responses=_ERRORS)
async def agent_conversation(conversation_id: str, admin: AdminDep, runtime: RuntimeDep) -> dict[str, Any]:
    """The conversation with internal notes, each answer's citations and retrieval log, and its handoffs."""
    bot = await run_in_threadpool(_conversation_bot, admin, conversation_id, runtime)
    detail = await run_in_threadpool(runtime.handoff.detail, bot, conversation_id)
    if detail is None:
        raise ApiError(404, "conversation_not_found", f"no conversation with id {conversation_id!r}")
    return detail


@router.post("/conversations/{conversation_id}/claim", responses=_ERRORS)
async def claim(
    conversation_id: str, admin: AdminDep, runtime: RuntimeDep, body: ClaimRequest | None = None
) -> dict[str, Any]:
    """Take a waiting conversation (or reassign one a person has)."""
    assignee = body.assignee if body else None
    return await run_in_threadpool(
        lambda: _act(admin, conversation_id, Action.CLAIM, runtime, assignee=assignee)
    )


@router.post("/conversations/{conversation_id}/messages", status_code=201, responses=_ERRORS)
async def reply(
    conversation_id: str, body: ReplyRequest, admin: AdminDep, runtime: RuntimeDep
) -> dict[str, Any]:
    """Write to the visitor (taking the conversation if it was waiting) or an internal note."""
    bot = await run_in_threadpool(_conversation_bot, admin, conversation_id, runtime)
    content = body.content.strip()
    if not content:
        raise ApiError(422, "empty_message", "content must not be empty")
    return await run_in_threadpool(
        lambda: runtime.handoff.reply(
            bot, conversation_id, actor=admin.agent, content=content, internal=body.internal
        )
    )


@router.post("/conversations/{conversation_id}/resolve", responses=_ERRORS)
async def resolve(conversation_id: str, admin: AdminDep, runtime: RuntimeDep) -> dict[str, Any]:
    return await run_in_threadpool(_act, admin, conversation_id, Action.RESOLVE, runtime)


@router.post("/conversations/{conversation_id}/reopen", responses=_ERRORS)
async def reopen(conversation_id: str, admin: AdminDep, runtime: RuntimeDep) -> dict[str, Any]:
    return await run_in_threadpool(_act, admin, conversation_id, Action.REOPEN, runtime)


@router.post("/conversations/{conversation_id}/release", responses=_ERRORS)
async def release(conversation_id: str, admin: AdminDep, runtime: RuntimeDep) -> dict[str, Any]:
    """Back to the bot (the visitor is told)."""
    return await run_in_threadpool(_act, admin, conversation_id, Action.RELEASE, runtime)
