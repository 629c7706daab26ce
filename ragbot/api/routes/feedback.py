"""Feedback: thumbs up or down on a bot answer (visitors in the widget, or API callers), and the export
that ties each rating to its question, answer, citations and retrieval log."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ragbot.api.deps import RuntimeDep
from ragbot.api.errors import ApiError
from ragbot.api.schemas import error_responses
from ragbot.db.models import Message
from ragbot.feedback.service import (
    MAX_COMMENT_LENGTH,
    REASONS,
    AnswerNotFoundError,
    FeedbackValidationError,
    Rated,
)
from ragbot.runtime import Runtime
from ragbot.tenancy.deps import AdminDep, CallerDep, VisitorActionQuota, admin_bot_id, owned_bot
from ragbot.tenancy.principals import AdminPrincipal, Caller

router = APIRouter(prefix="/v1", tags=["feedback"])

_ERRORS = error_responses(401, 403, 404, 422)


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rating: Literal["up", "down"]
    reason: str | None = Field(
        default=None, max_length=60, description=f"For a thumbs-down: {', '.join(REASONS)}."
    )
    comment: str = Field(default="", max_length=MAX_COMMENT_LENGTH)


def _not_found(message_id: str) -> ApiError:
    return ApiError(404, "message_not_found", f"no bot answer with id {message_id!r}")


def _rate(caller: Caller, message_id: str, body: FeedbackIn, runtime: Runtime) -> Rated:
    if isinstance(caller, AdminPrincipal):
        bot_id = owned_bot(caller, Message, message_id, runtime)
        if bot_id is None:
            raise _not_found(message_id)
        bot, visitor, rater = bot_id, None, f"key:{caller.prefix}"
    else:
        bot, visitor, rater = caller.bot_id, caller.visitor_id, caller.visitor_id
    try:
        return runtime.feedback.rate(
            bot,
            message_id,
            body.rating,
            rater=rater,
            visitor_id=visitor,
            reason=body.reason,
            comment=body.comment,
        )
    except AnswerNotFoundError:
        raise _not_found(message_id) from None
    except FeedbackValidationError as exc:
        raise ApiError(422, "invalid_feedback", str(exc), fields={exc.field: exc.message}) from None


@router.post("/messages/{message_id}/feedback", responses=_ERRORS, dependencies=[VisitorActionQuota])
async def rate_answer(
    message_id: str, body: FeedbackIn, caller: CallerDep, runtime: RuntimeDep
) -> dict[str, Any]:
    """Rate a bot answer; rating it again replaces the rating, reason and comment. ``handoff`` says
    whether this thumbs-down handed the conversation to a person (the bot's ``handoff_after_thumbs_down``)."""
    rated = await run_in_threadpool(_rate, caller, message_id, body, runtime)
    fb = rated.feedback
    return {
        "id": fb["id"],
        "message_id": fb["message_id"],
        "conversation_id": fb["conversation_id"],
        "rating": fb["rating"],
        "reason": fb["reason"],
        "comment": fb["comment"],
        "created_at": fb["created_at"],
        "updated_at": fb["updated_at"],
        "created": rated.created,
        "changed": rated.changed,
        "handoff": rated.handoff,
        "owner_mode": rated.owner_mode,
    }


@router.get(
    "/feedback",
    responses={**_ERRORS, 200: {"content": {"application/json": {}, "text/csv": {}}}},
    response_model=None,
)
async def export_feedback(
    admin: AdminDep,
    runtime: RuntimeDep,
    bot_id: str | None = Query(default=None),
    since: datetime | None = Query(default=None, description="Rated or changed at or after (ISO 8601)."),
    until: datetime | None = Query(default=None, description="... and before."),
    output: Literal["json", "csv"] = Query(default="json", alias="format"),
    limit: int = Query(default=1000, ge=1, le=10000, description="JSON only."),
) -> list[dict[str, Any]] | StreamingResponse:
    """Ratings oldest first, each with the question, the answer, its citations and the retrieval log
    behind it (``sources``); CSV as a download."""
    bot = await run_in_threadpool(admin_bot_id, admin, bot_id, runtime)
    since, until = _aware(since, "since"), _aware(until, "until")
    if output == "csv":
        return StreamingResponse(
            runtime.feedback.export_csv(bot, since, until),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="feedback.csv"'},
        )
    return await run_in_threadpool(lambda: list(runtime.feedback.export(bot, since, until, limit=limit)))


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ApiError(422, "invalid_request", f"{name}: give a time zone, e.g. 2025-01-31T00:00:00Z")
    return value
