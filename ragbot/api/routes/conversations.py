from __future__ import annotations

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from ragbot.api.deps import RuntimeDep
from ragbot.api.schemas import ConversationOut, ErrorOut
from ragbot.services.chat import ConversationNotFoundError
from ragbot.services.conversations import get_conversation
from ragbot.tenancy.deps import CallerDep, admin_bot_id
from ragbot.tenancy.principals import AdminPrincipal

router = APIRouter(prefix="/v1", tags=["conversations"])


@router.get(
    "/conversations/{conversation_id}",
    response_model=ConversationOut,
    responses={
        401: {"model": ErrorOut},
        403: {"model": ErrorOut},
        404: {"model": ErrorOut},
        422: {"model": ErrorOut},
    },
)
async def read_conversation(
    conversation_id: str, caller: CallerDep, runtime: RuntimeDep, bot_id: str | None = Query(default=None)
) -> ConversationOut:
    """A conversation with its messages and each message's citations: any of the bot's for an admin
    key, only the visitor's own for a visitor session."""
    if isinstance(caller, AdminPrincipal):
        bot, visitor = await run_in_threadpool(admin_bot_id, caller, bot_id, runtime), None
    else:
        bot, visitor = caller.bot_id, caller.visitor_id
    data = await run_in_threadpool(
        get_conversation, runtime.session_factory, bot, conversation_id, visitor_id=visitor
    )
    if data is None:
        raise ConversationNotFoundError(conversation_id)
    return ConversationOut.model_validate(data)
