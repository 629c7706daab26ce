"""The widget's routes: the script, the demo and embed pages, and visitor sessions.

Opening a session is the one place a public key is accepted: from an origin the bot allows, it yields a
short-lived token bound to the bot and to one visitor; every later request carries that token.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from ragbot.api.deps import RuntimeDep
from ragbot.api.errors import ApiError
from ragbot.api.schemas import (
    ErrorOut,
    WidgetBotOut,
    WidgetFeatures,
    WidgetSessionOut,
    WidgetSessionRequest,
)
from ragbot.runtime import Runtime
from ragbot.tenancy.bots import BotProfile
from ragbot.tenancy.deps import check_visitor_origin
from ragbot.tenancy.quotas import session_limits
from ragbot.tenancy.sessions import InvalidSessionError

router = APIRouter(tags=["widget"])

STATIC = Path(__file__).resolve().parent / "static"

#: The demo and embed pages load only ragbot's own script and talk only to ragbot.
_PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors {ancestors}"
)


@lru_cache(maxsize=8)
def _static(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def _page(template: str, profile: BotProfile, ancestors: str) -> HTMLResponse:
    body = _static(template).replace("{{PUBLIC_KEY}}", html.escape(profile.public_key or "", quote=True))
    body = body.replace("{{BOT_NAME}}", html.escape(profile.title, quote=True))
    return HTMLResponse(
        body,
        headers={
            "Content-Security-Policy": _PAGE_CSP.format(ancestors=ancestors),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        },
    )


@router.get("/widget.js", include_in_schema=False)
def widget_script() -> Response:
    """The embeddable widget: ``<script src="BASE/widget.js" data-bot="pk_..." async></script>``."""
    return Response(
        _static("widget.js"),
        media_type="application/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/demo", include_in_schema=False)
def demo_page(runtime: RuntimeDep) -> Response:
    """A sample page that embeds the widget for the deployment's bot (``RAGBOT_DEMO_PAGE=false``: off)."""
    if not runtime.settings.demo_page:
        raise ApiError(404, "not_found", "the demo page is turned off on this server")
    bot_id = runtime.settings.bot_id
    runtime.bots.ensure(bot_id)
    profile = runtime.bots.profile(bot_id)
    assert profile is not None
    return _page("demo.html", profile, "'self'")


@router.get("/widget/embed/{public_key}", include_in_schema=False)
def embed_page(public_key: str, runtime: RuntimeDep) -> Response:
    """The chat as a full page, for an iframe on a help-center page; only the bot's allowed origins may
    frame it (CSP ``frame-ancestors``)."""
    profile = runtime.bots.profile_by_public_key(public_key)
    if profile is None:
        raise ApiError(404, "bot_not_found", "no bot has this public key")
    ancestors = " ".join(profile.allowed_origins) or "'none'"
    return _page("embed.html", profile, ancestors)


def _open_session(request: Request, body: WidgetSessionRequest, runtime: Runtime) -> dict[str, Any]:
    profile = runtime.bots.profile_by_public_key(body.public_key)
    if profile is None or not profile.public_key:
        raise ApiError(404, "bot_not_found", "no bot has this public key")
    check_visitor_origin(request, profile)
    visitor_id = None
    if body.token:
        try:
            previous = runtime.visitor_sessions.verify(body.token, allow_expired=True)
        except InvalidSessionError:
            previous = None  # a token we cannot trust starts a new visitor; it is not an error
        if previous is not None and previous.bot_id == profile.id:
            visitor_id = previous.visitor_id
    if visitor_id is None:
        # Only new visitors count: a returning visitor renews on every page view, and many share an IP.
        client_ip = request.client.host if request.client else None
        decision = runtime.rate_limiter.hit(
            session_limits(profile.id, client_ip, runtime.settings.rate_sessions_per_ip_minute)
        )
        if not decision.allowed:
            raise ApiError(
                429,
                "rate_limited",
                f"too many new chat sessions from this address; try again in {decision.retry_after_s} s",
                headers={"Retry-After": str(decision.retry_after_s)},
                limit="session_ip",
            )
    token, session = runtime.visitor_sessions.issue(profile.id, profile.public_key, visitor_id)
    return {
        "token": token,
        "visitor_id": session.visitor_id,
        "expires_at": datetime.fromtimestamp(session.expires_at, UTC),
        "bot": WidgetBotOut(
            id=profile.id,
            name=profile.name,
            title=profile.title,
            welcome_message=profile.welcome_message,
            starter_questions=list(profile.starter_questions),
            accent_color=profile.accent_color,
            features=WidgetFeatures(
                feedback=True, handoff=profile.handoff_enabled, lead_form=profile.lead_form is not None
            ),
            lead_form=profile.lead_form.model_dump() if profile.lead_form else None,
            ask_lead_before_chat=bool(profile.lead_form and profile.lead_form.asks("before_chat")),
        ),
    }


@router.post(
    "/v1/widget/session",
    response_model=WidgetSessionOut,
    responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}, 429: {"model": ErrorOut}},
)
async def open_session(body: WidgetSessionRequest, request: Request, runtime: RuntimeDep) -> dict[str, Any]:
    """Open (or renew, given the previous token) a visitor session with a bot's public key, from a page
    on one of the bot's allowed origins."""
    return await run_in_threadpool(_open_session, request, body, runtime)
