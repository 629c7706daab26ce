"""One JSON error shape for every failure: ``{"error": {"code", "message"}}`` plus optional context."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragbot.db.retry import is_transient
from ragbot.services.chat import AnswerFailedError, ConversationNotFoundError

log = logging.getLogger(__name__)

#: Codes for the HTTP errors the framework raises itself (unknown route, wrong method, bad body...).
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}

#: What FastAPI's body reader raises (as a 400) for JSON it cannot even decode: invalid UTF-8,
#: nesting deeper than the parser's recursion limit.
_UNREADABLE_JSON = (UnicodeDecodeError, RecursionError, ValueError)


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra
        self.headers = dict(headers or {})


class BodyTooLargeError(StarletteHTTPException):
    """The request body passed its size limit while it was being read (see ``ragbot.api.limits``).

    An ``HTTPException`` so the framework's body readers (JSON, multipart) let it through untouched.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(status_code=413, detail=message)
        self.code = code


def error_response(
    status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"error": {"code": code, "message": message}, **extra}, headers=headers
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, headers=exc.headers or None, **exc.extra)

    @app.exception_handler(ConversationNotFoundError)
    async def _not_found(_: Request, exc: ConversationNotFoundError) -> JSONResponse:
        return error_response(404, "conversation_not_found", f"no conversation with id {exc.args[0]!r}")

    @app.exception_handler(AnswerFailedError)
    async def _answer_failed(_: Request, exc: AnswerFailedError) -> JSONResponse:
        return error_response(
            503,
            "llm_unavailable",
            str(exc),
            conversation_id=exc.conversation_id,
            message_id=exc.message_id,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc, BodyTooLargeError):
            return error_response(413, exc.code, str(exc.detail))
        if exc.status_code == 400 and isinstance(exc.__cause__, _UNREADABLE_JSON):
            cause = exc.__cause__
            return error_response(
                422, "invalid_request", f"the body is not valid JSON: {type(cause).__name__}: {cause}"
            )
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(DBAPIError)
    async def _database(_: Request, exc: DBAPIError) -> JSONResponse:
        if is_transient(exc):  # a restart or failover outlasted the retries: worth trying again soon
            log.warning("database unavailable: %s", str(exc).splitlines()[0])
            return error_response(
                503,
                "database_unavailable",
                "the database is unavailable; try again in a few seconds",
                headers={"Retry-After": "5"},
            )
        log.error("database error", exc_info=exc)
        return error_response(500, "internal_error", "the server failed to handle this request")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the traceback and re-raises after this response; clients still get the one shape.
        return error_response(500, "internal_error", "the server failed to handle this request")
