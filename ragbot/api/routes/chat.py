from __future__ import annotations

import json
from collections.abc import Iterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from ragbot.api.deps import RuntimeDep, resolve_bot_id
from ragbot.api.errors import ApiError
from ragbot.api.schemas import ChatRequest, ChatResponse, ErrorOut
from ragbot.types import ChatEvent

router = APIRouter(prefix="/v1", tags=["chat"])


def sse_format(event: ChatEvent) -> str:
    return f"event: {event.type.value}\ndata: {json.dumps(event.data, ensure_ascii=False)}\n\n"


@router.post(
    "/chat",
    response_model=ChatResponse,
    responses={
        404: {"model": ErrorOut},
        413: {"model": ErrorOut},
        415: {"model": ErrorOut},
        422: {"model": ErrorOut},
        503: {"model": ErrorOut},
    },
)
def chat(body: ChatRequest, runtime: RuntimeDep) -> ChatResponse | StreamingResponse:
    """Answer a message; with ``stream: true`` as server-sent events (start, delta, citation, error, done)."""
    message = body.message.strip()
    limit = runtime.settings.max_message_chars
    if not message:
        raise ApiError(422, "empty_message", "message must not be empty")
    if len(message) > limit:
        raise ApiError(
            422, "message_too_long", f"message has {len(message)} characters; the limit is {limit}"
        )
    bot_id = resolve_bot_id(body.bot_id, runtime.settings)
    service = runtime.chat_service
    if not body.stream:
        result = service.ask(bot_id, message, body.conversation_id)
        return ChatResponse.model_validate(result, from_attributes=True)

    events = service.stream(bot_id, message, body.conversation_id)
    first = next(events)  # runs the lookup now, so an unknown conversation is a 404, not a broken stream

    def body_iter() -> Iterator[str]:
        yield sse_format(first)
        for event in events:
            yield sse_format(event)

    return StreamingResponse(
        body_iter(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
