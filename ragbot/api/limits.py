"""Request body size limits, enforced while the body arrives: a request over its limit is answered 413
before the rest of it is read, whether it declares a ``Content-Length`` or streams chunks without one.

Multipart bodies (uploads to ``POST /v1/sources``) get ``max_upload_bytes`` plus room for the part
headers; every other body (JSON) gets room for the largest message the API accepts, and no more.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragbot.api.errors import BodyTooLargeError, error_response
from ragbot.config import Settings, get_settings

#: Room for multipart boundaries and part headers on top of the upload limit.
MULTIPART_OVERHEAD = 64 * 1024
#: A JSON body may escape every character of a maximal message (up to 12 bytes for a surrogate pair).
JSON_BYTES_PER_CHAR = 12
MIN_JSON_LIMIT = 1024 * 1024
#: Room for the other fields of a JSON body.
JSON_OVERHEAD = 64 * 1024


@dataclass(frozen=True, slots=True)
class BodyLimit:
    max_bytes: int  # what is enforced
    shown: int  # the limit named in the error (the configured upload size, without the overhead)
    code: str
    what: str


def body_limit(settings: Settings, content_type: str) -> BodyLimit:
    """The limit for a body of this content type."""
    if content_type.lower().startswith("multipart/"):
        upload = settings.max_upload_bytes
        return BodyLimit(upload + MULTIPART_OVERHEAD, upload, "upload_too_large", "upload")
    json_limit = max(MIN_JSON_LIMIT, settings.max_message_chars * JSON_BYTES_PER_CHAR + JSON_OVERHEAD)
    return BodyLimit(json_limit, json_limit, "body_too_large", "request body")


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        runtime = getattr(scope["app"].state, "runtime", None) if "app" in scope else None
        settings = runtime.settings if runtime is not None else get_settings()
        limit = body_limit(settings, headers.get("content-type", ""))

        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                response = error_response(400, "bad_request", f"invalid Content-Length header {declared!r}")
                await response(scope, receive, send)
                return
            if int(declared) > limit.max_bytes:
                message = f"the {limit.what} has {int(declared)} bytes; the limit is {limit.shown}"
                await error_response(413, limit.code, message)(scope, receive, send)
                return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit.max_bytes:
                    too_large = f"the {limit.what} is larger than the limit of {limit.shown} bytes"
                    raise BodyTooLargeError(limit.code, too_large)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except BodyTooLargeError as exc:  # read outside a route (no handler ran): answer here
            if started:
                raise
            await error_response(413, exc.code, str(exc.detail))(scope, receive, send)
