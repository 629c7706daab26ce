"""One pure ASGI middleware for the request id, HTTP metrics, chat-turn metrics and the access log.

Pure ASGI (not ``BaseHTTPMiddleware``): it adds no task and no body buffering, so a chat stream passes
through chunk by chunk, and it sees each chunk as it goes out. That is where chat turns are measured,
as the visitor sees them: the time to the first ``delta`` event, and the outcome named by the ``done``
event (``status``), or ``disconnected`` when the stream ended without one. The chat route sends each
server-sent event as one body chunk, so a chunk's first bytes name its event.

Routes are labelled by their template (``/v1/conversations/{conversation_id}``), never the raw path,
so ids do not multiply the series; a path no route matches is labelled ``unmatched``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragbot.observability import metrics
from ragbot.observability.context import REQUEST_ID_HEADER, accept_request_id, set_request_id

__all__ = ["CHAT_PATH", "ObservabilityMiddleware"]

CHAT_PATH = "/v1/chat"
_HEADER = REQUEST_ID_HEADER.lower().encode("latin-1")
_DELTA = b"event: delta\n"
_DONE = b"event: done\n"
#: A non-streamed chat answer is parsed for its status only while it is no bigger than this.
_MAX_JSON_BYTES = 1 << 20
_STATUS_WORD = re.compile(r"[a-z_]{1,32}")

access_log = logging.getLogger("ragbot.access")


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(path) if path else "unmatched"


def _outcome_label(status: object) -> str:
    """A turn's status as a label: the service's few status words pass, anything else is ``other``
    (a label value never comes from unchecked text: each distinct value is a new series)."""
    text = str(status) if status else ""
    return text if _STATUS_WORD.fullmatch(text) else "other"


def _done_status(chunk: bytes) -> str | None:
    """The ``status`` of a ``done`` event: ``event: done\\ndata: {...}\\n\\n``."""
    _, _, data = chunk.partition(b"\ndata: ")
    try:
        status = json.loads(data.split(b"\n", 1)[0]).get("status")
    except (ValueError, AttributeError):
        return "other"
    return _outcome_label(status)


class _Turn:
    """What the middleware has seen of one chat request's response."""

    __slots__ = ("body", "done", "first_token", "status", "stream")

    def __init__(self) -> None:
        self.status = 0
        self.stream = False
        self.first_token = False
        self.done: str | None = None
        self.body = bytearray()

    def see(self, chunk: bytes, started: float) -> None:
        if self.stream:
            if not self.first_token and chunk.startswith(_DELTA):
                self.first_token = True
                metrics.first_token(time.perf_counter() - started)
            elif chunk.startswith(_DONE):
                self.done = _done_status(chunk)
        elif self.status == 200 and len(self.body) + len(chunk) <= _MAX_JSON_BYTES:
            self.body += chunk

    def outcome(self) -> str | None:
        """How the turn ended, or None when the request never became a turn (refused with a 4xx)."""
        if self.stream:
            return self.done or "disconnected"
        if self.status >= 500:
            return "failed"
        if self.status == 200:
            try:
                return _outcome_label(json.loads(bytes(self.body)).get("status"))
            except (ValueError, AttributeError):
                return "other"
        return None


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope["headers"]:
            if name == _HEADER:
                given = value.decode("latin-1")
                break
        request_id = accept_request_id(given)
        set_request_id(request_id)  # this request's task owns its context: worker threads copy it
        started = time.perf_counter()
        turn = _Turn() if scope["path"] == CHAT_PATH and scope["method"] == "POST" else None
        status = 500  # what the client gets when the app raises before it starts a response

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers: list[Any] = list(message.get("headers", []))
                headers.append((_HEADER, request_id.encode("latin-1")))
                message = {**message, "headers": headers}
                if turn is not None:
                    turn.status = status
                    turn.stream = any(
                        k == b"content-type" and v.startswith(b"text/event-stream") for k, v in headers
                    )
            elif message["type"] == "http.response.body" and turn is not None:
                chunk = message.get("body", b"")
                if chunk:
                    turn.see(chunk, started)
            await send(message)

        metrics.in_flight(1)
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            metrics.in_flight(-1)
            seconds = time.perf_counter() - started
            route = _route_of(scope)
            metrics.http_request(scope["method"], route, status, seconds)
            if turn is not None and (outcome := turn.outcome()) is not None:
                metrics.chat_turn(outcome, stream=turn.stream)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "%s %s %d %.1f ms",
                    scope["method"],
                    route,
                    status,
                    seconds * 1000,
                    extra={
                        "method": scope["method"],
                        "route": route,
                        "status": status,
                        "ms": round(seconds * 1000, 1),
                    },
                )
