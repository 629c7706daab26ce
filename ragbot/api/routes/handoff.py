"""The visitor's side of handoff: ask for a person, and the conversation's live event stream."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ragbot.api.deps import RuntimeDep
from ragbot.api.errors import ApiError
from ragbot.api.schemas import error_responses
from ragbot.db import repositories as repo
from ragbot.db.session import session_scope
from ragbot.handoff.states import IllegalTransitionError, Reason
from ragbot.handoff.stream import event_stream
from ragbot.runtime import Runtime
from ragbot.tenancy.deps import CallerDep, VisitorActionQuota, admin_bot_id
from ragbot.tenancy.principals import AdminPrincipal, Caller

router = APIRouter(prefix="/v1/conversations", tags=["handoff"])

_ERRORS = error_responses(401, 403, 404, 409, 422)


class HandoffRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=500, description="Why, in the visitor's or caller's words.")


def _scope(caller: Caller, bot_id: str | None, runtime: Runtime) -> tuple[str, str | None]:
    """(bot, visitor) the caller may act for: an admin key's bot, or the visitor's own conversations."""
    if isinstance(caller, AdminPrincipal):
        return admin_bot_id(caller, bot_id, runtime), None
    return caller.bot_id, caller.visitor_id


def _check_conversation(runtime: Runtime, bot: str, visitor: str | None, conversation_id: str) -> None:
    with session_scope(runtime.session_factory) as s:
        conv = repo.get_conversation(s, bot, conversation_id)
        if conv is None or (visitor is not None and conv.visitor_id != visitor):
            raise ApiError(404, "conversation_not_found", f"no conversation with id {conversation_id!r}")


@router.post("/{conversation_id}/handoff", responses=_ERRORS, dependencies=[VisitorActionQuota])
async def request_handoff(
    conversation_id: str,
    caller: CallerDep,
    runtime: RuntimeDep,
    body: HandoffRequest | None = None,
    bot_id: str | None = Query(default=None),
) -> dict[str, Any]:
    """Ask for a person: the conversation waits in the agents' queue and the bot stays silent. Asking
    while already waiting (or with a person) changes nothing."""
    bot, visitor = await run_in_threadpool(_scope, caller, bot_id, runtime)
    profile = await run_in_threadpool(runtime.bots.profile, bot)
    if profile is None or not profile.handoff_enabled:
        raise ApiError(409, "handoff_disabled", "this bot does not hand conversations to people")
    reason = Reason.VISITOR_REQUEST if visitor is not None else Reason.ADMIN_REQUEST
    actor = caller.agent if isinstance(caller, AdminPrincipal) else "visitor"
    try:
        moved = await run_in_threadpool(
            lambda: runtime.handoff.request(
                bot,
                conversation_id,
                reason=reason,
                actor=actor,
                note=body.reason if body else "",
                visitor_id=visitor,
            )
        )
    except repo.ConversationNotFoundError:
        raise ApiError(
            404, "conversation_not_found", f"no conversation with id {conversation_id!r}"
        ) from None
    except IllegalTransitionError as exc:
        raise ApiError(409, "illegal_transition", str(exc)) from None
    return {
        "conversation_id": moved.conversation_id,
        "owner_mode": moved.to_mode,
        "changed": moved.from_mode != moved.to_mode,
        "system_message": moved.system_message,
        "lead_form": moved.lead_form,
    }


@router.get(
    "/{conversation_id}/events",
    responses={**_ERRORS, 200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
)
async def conversation_events(
    conversation_id: str,
    request: Request,
    caller: CallerDep,
    runtime: RuntimeDep,
    bot_id: str | None = Query(default=None),
    after: int | None = Query(default=None, ge=0, description="Resume after this event id."),
    last_event_id: str | None = Header(default=None),
) -> StreamingResponse:
    """Live events of a conversation (SSE): ``message`` (agent replies, system notes; for admin keys
    every message), ``handoff`` (mode changes), ``lead_form``. Each has an ``id``; reconnect with
    ``Last-Event-ID`` (or ``?after=``) to get what was missed."""
    bot, visitor = await run_in_threadpool(_scope, caller, bot_id, runtime)
    await run_in_threadpool(_check_conversation, runtime, bot, visitor, conversation_id)
    start = after or 0
    if last_event_id and last_event_id.strip().isdigit():
        start = max(start, int(last_event_id.strip()))
    body = event_stream(
        runtime.session_factory,
        runtime.bus,
        bot,
        conversation_id,
        start,
        visitor_only=visitor is not None,
        is_disconnected=request.is_disconnected,
    )
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
