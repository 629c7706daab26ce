"""CORS for the routes a widget calls from other sites' pages (visitor session, chat, its conversation and
its live events, handoff, feedback on answers, leads).

Browsers ask first (preflight) because the widget sends ``Authorization`` and JSON. The answer here only
lets the browser *send* the request: whether the page's origin may use a bot is decided by the route,
against that bot's allowlist, and a refusal is a 403 the widget can read and explain. No cookies are
involved (``credentials: omit``), so echoing the origin grants nothing by itself.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["WidgetCorsMiddleware"]

_PATHS = ("/v1/widget/", "/v1/chat", "/v1/conversations/", "/v1/messages/", "/v1/leads")
_ALLOW_HEADERS = "authorization, content-type, last-event-id"
_ALLOW_METHODS = "GET, POST"
_EXPOSE_HEADERS = "retry-after"


class WidgetCorsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(_PATHS):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await _preflight(origin, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                out["Access-Control-Allow-Origin"] = origin
                out["Access-Control-Expose-Headers"] = _EXPOSE_HEADERS
                out.add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, send_with_cors)


async def _preflight(origin: str, send: Send) -> None:
    headers = [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-methods", _ALLOW_METHODS.encode()),
        (b"access-control-allow-headers", _ALLOW_HEADERS.encode()),
        (b"access-control-max-age", b"600"),
        (b"vary", b"Origin"),
        (b"content-length", b"0"),
    ]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
