from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Generator, Iterator

import anyio
from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ragbot.api.deps import RuntimeDep, resolve_bot_id
from ragbot.api.errors import ApiError
from ragbot.api.schemas import ChatRequest, ChatResponse, ErrorOut
from ragbot.services.chat import TurnFailedError, internal_failure_events
from ragbot.types import ChatEvent, EventType

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["chat"])


def sse_format(event: ChatEvent) -> str:
    return f"event: {event.type.value}\ndata: {json.dumps(event.data, ensure_ascii=False)}\n\n"


def _next_event(events: Iterator[ChatEvent]) -> ChatEvent | None:
    return next(events, None)


async def _sse_body(first: ChatEvent, events: Generator[ChatEvent, None, None]) -> AsyncIterator[str]:
    """The turn's events as SSE; the blocking turn advances in worker threads.

    The turn ends itself with ``error`` + ``done`` on any failure; should it raise anyway, the stream
    still ends that way. When the client goes away the server stops reading (cancels or drops this
    iterator): the turn is then closed here, in a worker thread, so it stores what was generated so far.
    """
    streamed: list[str] = []
    try:
        yield sse_format(first)
        while True:
            try:
                event = await run_in_threadpool(_next_event, events)
            except Exception:
                conversation_id = str(first.data.get("conversation_id"))
                log.exception("chat stream failed for conversation %s", conversation_id)
                answer = "".join(streamed).strip()
                for failure in internal_failure_events(conversation_id, None, answer=answer):
                    yield sse_format(failure)
                return
            if event is None:
                return
            if event.type is EventType.DELTA:
                streamed.append(event.data["text"])
            yield sse_format(event)
    finally:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(events.close)


@router.post(
    "/chat",
    response_model=ChatResponse,
    responses={
        404: {"model": ErrorOut},
        413: {"model": ErrorOut},
        415: {"model": ErrorOut},
        422: {"model": ErrorOut},
        500: {"model": ErrorOut},
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
        try:
            result = service.ask(bot_id, message, body.conversation_id)
        except TurnFailedError as exc:  # not the LLM: the index or the database (the cause is logged)
            raise ApiError(
                500, exc.code, str(exc), conversation_id=exc.conversation_id, message_id=exc.message_id
            ) from exc
        return ChatResponse.model_validate(result, from_attributes=True)

    events = service.stream(bot_id, message, body.conversation_id)
    first = next(events)  # runs the lookup now, so an unknown conversation is a 404, not a broken stream

    return StreamingResponse(
        _sse_body(first, events),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
