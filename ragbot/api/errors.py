"""One JSON error shape for every failure: ``{"error": {"code", "message"}}`` plus optional context."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ragbot.services.chat import AnswerFailedError, ConversationNotFoundError


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}, **extra})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, **exc.extra)

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
