from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Generator

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from ragbot.api.deps import RuntimeDep
from ragbot.api.errors import ApiError
from ragbot.api.schemas import ChatRequest, ChatResponse, ErrorOut
from ragbot.runtime import Runtime
from ragbot.services.chat import TurnFailedError, internal_failure_events
from ragbot.tenancy.bots import BotProfile
from ragbot.tenancy.deps import CallerDep, caller_bot, server_origin
from ragbot.tenancy.principals import AdminPrincipal, Caller
from ragbot.tenancy.quotas import chat_limits, refusal_message
from ragbot.types import ChatEvent, EventType

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["chat"])

#: Comment lines between events while the model thinks, so proxies (nginx: 60 s) keep the stream open.
SSE_PING_S = 15.0


def sse_format(event: ChatEvent) -> str:
    return f"event: {event.type.value}\ndata: {json.dumps(event.data, ensure_ascii=False)}\n\n"


class _TurnThread:
    """Runs one streamed turn on a thread of its own and hands its events to the event loop.

    A turn blocks (retrieval, database, the LLM's tokens) for its whole length. Driving it with
    ``run_in_threadpool`` per event would hold one of the server's shared worker threads (40 by default)
    for as long as the answer streams, so past 40 open streams every request, a session or a health
    check included, would queue behind them; and each event would cost two thread hand-offs. Here the
    thread is the turn's own, and each event is one ``call_soon_threadsafe``.

    ``stop()`` (the client went away) makes the thread close the turn after its current step, which
    stores what was generated so far; ``finished`` is set once the turn is closed. The thread is not a
    daemon: a process that exits waits for turns to be stored rather than leaving one half written.
    """

    def __init__(self, events: Generator[ChatEvent, None, None]) -> None:
        self._events = events
        self._loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[ChatEvent | BaseException | None] = asyncio.Queue()
        self.finished = asyncio.Event()
        self._stop = threading.Event()
        context = contextvars.copy_context()  # the request id reaches the turn's log lines
        self._thread = threading.Thread(target=context.run, args=(self._run,), name="chat-turn")
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._events:
                self._put(event)
                if self._stop.is_set():
                    break
        except Exception as exc:  # the turn ends itself with error + done; this is the safety net
            self._put(exc)
        finally:
            try:
                self._events.close()  # a no-op after the last event; else stores the partial answer
            except Exception:
                log.exception("closing a chat turn failed")
            self._put(None)
            self._call(self.finished.set)

    def _put(self, item: ChatEvent | BaseException | None) -> None:
        self._call(self.queue.put_nowait, item)

    def _call(self, fn: Callable[..., object], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone (the server stopped): nobody listens
            self._loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        self._stop.set()


async def _sse_body(first: ChatEvent, events: Generator[ChatEvent, None, None]) -> AsyncIterator[str]:
    """The turn's events as SSE; the blocking turn advances on a thread of its own (``_TurnThread``).

    The turn ends itself with ``error`` + ``done`` on any failure; should it raise anyway, the stream
    still ends that way. When the client goes away the server stops reading (cancels or drops this
    iterator): the turn is then closed by its thread, which stores what was generated so far.
    """
    streamed: list[str] = []
    turn = _TurnThread(events)
    try:
        yield sse_format(first)
        while True:
            try:
                item = await asyncio.wait_for(turn.queue.get(), timeout=SSE_PING_S)
            except TimeoutError:
                yield ": ping\n\n"
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                conversation_id = str(first.data.get("conversation_id"))
                log.error("chat stream failed for conversation %s", conversation_id, exc_info=item)
                answer = "".join(streamed).strip()
                for failure in internal_failure_events(conversation_id, None, answer=answer):
                    yield sse_format(failure)
                return
            if item.type is EventType.DELTA:
                streamed.append(item.data["text"])
            yield sse_format(item)
    finally:
        turn.stop()
        with anyio.CancelScope(shield=True):
            await turn.finished.wait()


def _same_origin(request: Request) -> bool:
    """A page ragbot served itself (the demo page): the only visitor traffic that may call itself a test."""
    origin = request.headers.get("origin")
    return origin is not None and origin == server_origin(request)


def _check_quota(request: Request, caller: Caller, profile: BotProfile, runtime: Runtime) -> None:
    client_ip = request.client.host if request.client else None
    decision = runtime.rate_limiter.hit(chat_limits(profile, caller, client_ip))
    if not decision.allowed:
        scope = decision.limit.scope if decision.limit else "rate"
        raise ApiError(
            429,
            "rate_limited",
            refusal_message(scope, decision.retry_after_s),
            headers={"Retry-After": str(decision.retry_after_s)},
            limit=scope,
        )


@router.post(
    "/chat",
    response_model=ChatResponse,
    responses={
        200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}},
        401: {"model": ErrorOut},
        403: {"model": ErrorOut},
        404: {"model": ErrorOut},
        413: {"model": ErrorOut},
        415: {"model": ErrorOut},
        422: {"model": ErrorOut},
        429: {"model": ErrorOut},
        500: {"model": ErrorOut},
        503: {"model": ErrorOut},
    },
)
def chat(
    body: ChatRequest, request: Request, caller: CallerDep, runtime: RuntimeDep
) -> ChatResponse | StreamingResponse:
    """Answer a message; with ``stream: true`` as server-sent events (start, delta, citation, error, done).

    Callers: an admin API key (server to server; ``bot_id`` within the key's scope) or a widget visitor's
    session token (its own bot and its own conversations only). The prompt, the model and the temperature
    are the bot's; no request can change them.
    """
    message = body.message.strip()
    limit = runtime.settings.max_message_chars
    if not message:
        raise ApiError(422, "empty_message", "message must not be empty")
    if len(message) > limit:
        raise ApiError(
            422, "message_too_long", f"message has {len(message)} characters; the limit is {limit}"
        )
    profile = caller_bot(caller, body.bot_id, runtime, doing="chat with")
    _check_quota(request, caller, profile, runtime)
    visitor_id = None if isinstance(caller, AdminPrincipal) else caller.visitor_id
    is_test = body.test and (isinstance(caller, AdminPrincipal) or _same_origin(request))
    service = runtime.chat_service
    if not body.stream:
        try:
            result = service.ask(
                profile.id,
                message,
                body.conversation_id,
                visitor_id=visitor_id,
                page_url=body.page_url,
                is_test=is_test,
            )
        except TurnFailedError as exc:  # not the LLM: the index or the database (the cause is logged)
            raise ApiError(
                500, exc.code, str(exc), conversation_id=exc.conversation_id, message_id=exc.message_id
            ) from exc
        return ChatResponse.model_validate(result, from_attributes=True)

    events = service.stream(
        profile.id,
        message,
        body.conversation_id,
        visitor_id=visitor_id,
        page_url=body.page_url,
        is_test=is_test,
    )
    first = next(events)  # runs the lookup now, so an unknown conversation is a 404, not a broken stream

    return StreamingResponse(
        _sse_body(first, events),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
