from __future__ import annotations

from fastapi import APIRouter, Query

from ragbot.api.deps import RuntimeDep, resolve_bot_id
from ragbot.api.schemas import ConversationOut, ErrorOut
from ragbot.services.chat import ConversationNotFoundError
from ragbot.services.conversations import get_conversation

router = APIRouter(prefix="/v1", tags=["conversations"])


@router.get(
    "/conversations/{conversation_id}",
    response_model=ConversationOut,
    responses={404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
def read_conversation(
    conversation_id: str, runtime: RuntimeDep, bot_id: str | None = Query(default=None)
) -> ConversationOut:
    """A conversation with its messages and each message's citations."""
    bot = resolve_bot_id(bot_id, runtime.settings)
    data = get_conversation(runtime.session_factory, bot, conversation_id)
    if data is None:
        raise ConversationNotFoundError(conversation_id)
    return ConversationOut.model_validate(data)
