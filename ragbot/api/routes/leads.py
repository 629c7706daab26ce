"""Leads: a visitor leaves their contact details (in a conversation or not); admins list and export them.

A visitor's response says only that the details were saved: whether the email was already known, and
what an earlier submission stored under it, is for the bot's owners, not for whoever typed the address.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ragbot.api.deps import RuntimeDep
from ragbot.api.errors import ApiError
from ragbot.api.schemas import error_responses
from ragbot.db import repositories as repo
from ragbot.db.models import Conversation
from ragbot.leads.service import LeadSaved, LeadSubmission, NoLeadFormError
from ragbot.leads.validation import LeadValidationError
from ragbot.runtime import Runtime
from ragbot.tenancy.deps import AdminDep, CallerDep, VisitorActionQuota, admin_bot_id, owned_bot
from ragbot.tenancy.principals import AdminPrincipal, Caller

router = APIRouter(prefix="/v1", tags=["leads"])

_ERRORS = error_responses(401, 403, 404, 409, 422)


class LeadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fields: dict[str, Any] = Field(
        max_length=30,
        description='The form\'s fields by name: {"email": ..., "name": ..., "custom:order_id": ...}.',
    )
    consent: bool = Field(default=False, description="The visitor accepted the form's consent text.")
    page_url: str | None = Field(default=None, description="The page the visitor was on (http/https).")
    utm: dict[str, Any] | None = Field(
        default=None,
        max_length=10,
        description="utm_source, utm_medium, utm_campaign, utm_term or utm_content.",
    )

    def submission(self) -> LeadSubmission:
        return LeadSubmission(fields=self.fields, consent=self.consent, page_url=self.page_url, utm=self.utm)


def _conversation_bot(caller: Caller, conversation_id: str, runtime: Runtime) -> tuple[str, str | None]:
    """(bot, visitor) for a lead in a conversation: the visitor's own, or any the admin key may see.
    Anything else is simply not found."""
    if not isinstance(caller, AdminPrincipal):
        return caller.bot_id, caller.visitor_id
    bot_id = owned_bot(caller, Conversation, conversation_id, runtime)
    if bot_id is None:
        raise ApiError(404, "conversation_not_found", f"no conversation with id {conversation_id!r}")
    return bot_id, None


def _submit(
    runtime: Runtime,
    bot: str,
    visitor: str | None,
    body: LeadIn,
    conversation_id: str | None,
) -> LeadSaved:
    try:
        return runtime.leads.submit(
            bot, body.submission(), visitor_id=visitor, conversation_id=conversation_id
        )
    except NoLeadFormError:
        raise ApiError(409, "no_lead_form", "this bot has no lead form") from None
    except repo.ConversationNotFoundError:
        raise ApiError(
            404, "conversation_not_found", f"no conversation with id {conversation_id!r}"
        ) from None
    except LeadValidationError as exc:
        raise ApiError(422, "invalid_lead", str(exc), fields=exc.fields) from None


def _response(caller: Caller, saved: LeadSaved) -> dict[str, Any]:
    if isinstance(caller, AdminPrincipal):
        return {"saved": True, "lead_id": saved.lead["id"], "created": saved.created, "lead": saved.lead}
    return {"saved": True, "lead_id": saved.lead["id"]}


@router.post("/conversations/{conversation_id}/lead", responses=_ERRORS, dependencies=[VisitorActionQuota])
async def submit_conversation_lead(
    conversation_id: str, body: LeadIn, caller: CallerDep, runtime: RuntimeDep
) -> dict[str, Any]:
    """Leave contact details from a conversation: stored with it (agents see who they talk to), and a
    ``lead_saved`` event on its live stream. 422 ``invalid_lead`` lists each wrong field in ``fields``."""
    bot, visitor = await run_in_threadpool(_conversation_bot, caller, conversation_id, runtime)
    saved = await run_in_threadpool(_submit, runtime, bot, visitor, body, conversation_id)
    return _response(caller, saved)


@router.post("/leads", responses=_ERRORS, dependencies=[VisitorActionQuota])
async def submit_lead(
    body: LeadIn,
    caller: CallerDep,
    runtime: RuntimeDep,
    bot_id: str | None = Query(default=None, description="Admin keys: the bot (default: the key's)."),
) -> dict[str, Any]:
    """Leave contact details without a conversation (e.g. a form shown before the chat starts)."""
    if isinstance(caller, AdminPrincipal):
        bot, visitor = await run_in_threadpool(admin_bot_id, caller, bot_id, runtime), None
    else:
        if bot_id and bot_id != caller.bot_id:
            raise ApiError(403, "forbidden", "a visitor session can only leave details with its own bot")
        bot, visitor = caller.bot_id, caller.visitor_id
    saved = await run_in_threadpool(_submit, runtime, bot, visitor, body, None)
    return _response(caller, saved)


@router.get(
    "/leads",
    responses={**_ERRORS, 200: {"content": {"application/json": {}, "text/csv": {}}}},
    response_model=None,
)
async def list_leads(
    admin: AdminDep,
    runtime: RuntimeDep,
    bot_id: str | None = Query(default=None),
    output: Literal["json", "csv"] = Query(default="json", alias="format"),
    limit: int = Query(default=100, ge=1, le=10000, description="JSON only: the newest N."),
) -> list[dict[str, Any]] | StreamingResponse:
    """The bot's contacts: JSON (newest first), or every contact as a CSV download (oldest first;
    columns ``created_at, updated_at, email, name, phone, company, custom_<key>..., consent_version,
    consented_at, page_url, utm_*, conversation_id``)."""
    bot = await run_in_threadpool(admin_bot_id, admin, bot_id, runtime)
    if output == "csv":
        return StreamingResponse(
            runtime.leads.export_csv(bot),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="leads-{_filename(bot)}.csv"'},
        )
    return await run_in_threadpool(runtime.leads.list_leads, bot, limit=limit)


def _filename(bot_id: str) -> str:
    """The bot id as a safe file name part (ids may hold characters a header must not)."""
    return "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_") else "_" for ch in bot_id) or "bot"
