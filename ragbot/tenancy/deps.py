"""FastAPI dependencies that decide who is calling and which bot they may touch.

Routes never read a ``bot_id`` unchecked: they take it from ``admin_bot`` (an admin key, within its scope)
or from a visitor's session (bound to one bot). 401 means "no usable credential", 403 "a credential
that may not do this", and a bot or conversation outside the caller's reach is simply not found.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from ragbot.api.deps import get_runtime
from ragbot.api.errors import ApiError
from ragbot.db import repositories as repo
from ragbot.db.models import Conversation, Message
from ragbot.db.session import session_scope
from ragbot.runtime import Runtime
from ragbot.services.keys import has_control_characters
from ragbot.tenancy.bots import BotProfile
from ragbot.tenancy.keys import PUBLIC_KEY_PREFIX
from ragbot.tenancy.origins import is_allowed, normalize_origin
from ragbot.tenancy.principals import AdminPrincipal, Caller, VisitorPrincipal
from ragbot.tenancy.ratelimit import Limit
from ragbot.tenancy.sessions import InvalidSessionError, key_fingerprint

__all__ = [
    "AdminDep",
    "CallerDep",
    "admin_bot_id",
    "check_visitor_origin",
    "owned_bot",
    "request_origin_allowed",
]

#: Declares the bearer scheme in OpenAPI; ``auto_error=False``: a missing header gets our 401 shape.
bearer = HTTPBearer(
    auto_error=False,
    description="An admin API key (rb_...) or, on the chat routes, a visitor session token.",
)
_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def _credential(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials:
        raise ApiError(
            401, "unauthorized", "send an API key as 'Authorization: Bearer <key>'", headers=_UNAUTHORIZED
        )
    return credentials.credentials


def _looks_like_session(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("ey")


async def admin_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> AdminPrincipal:
    token = _credential(credentials)
    if token.startswith(PUBLIC_KEY_PREFIX):
        raise ApiError(403, "forbidden", "a public widget key can only open a visitor session")
    if _looks_like_session(token):
        raise ApiError(403, "forbidden", "a visitor session cannot use admin routes")
    principal = await run_in_threadpool(get_runtime(request).api_keys.authenticate, token)
    if principal is None:
        raise ApiError(401, "invalid_api_key", "unknown, revoked or expired API key", headers=_UNAUTHORIZED)
    return principal


AdminDep = Annotated[AdminPrincipal, Depends(admin_principal)]


def _check_bot_id_syntax(bot_id: str) -> None:
    try:
        repo.check_bot_id(bot_id)
    except ValueError as exc:
        raise ApiError(422, "invalid_bot_id", str(exc)) from None
    if has_control_characters(bot_id):
        raise ApiError(
            422, "invalid_bot_id", "bot_id must not contain control characters or unpaired surrogates"
        )


def admin_bot_id(admin: AdminPrincipal, bot_id: str | None, runtime: Runtime) -> str:
    """The bot an admin request is about: the one named, else the key's own bot, else the deployment's.
    403 outside the key's scope; 404 when no such bot exists (the deployment's bot is created on use)."""
    if not bot_id:
        bot_id = admin.bot_id or runtime.settings.bot_id
    _check_bot_id_syntax(bot_id)
    if not admin.may_access(bot_id):
        raise ApiError(403, "forbidden", f"this API key is scoped to another bot than {bot_id!r}")
    if bot_id == runtime.settings.bot_id:
        runtime.bots.ensure(bot_id)
    elif runtime.bots.get(bot_id) is None:
        raise ApiError(404, "bot_not_found", f"no bot with id {bot_id!r}")
    return bot_id


def caller_bot(caller: Caller, bot_id: str | None, runtime: Runtime, *, doing: str) -> BotProfile:
    """The bot a chat or search call is for: an admin key names it (within its scope); a visitor's session
    names it, and a visitor naming another bot is refused, not redirected. ``doing`` ("chat with",
    "search") words the refusal."""
    if isinstance(caller, AdminPrincipal):
        bot_id = admin_bot_id(caller, bot_id, runtime)
    else:
        if bot_id and bot_id != caller.bot_id:
            raise ApiError(403, "forbidden", f"a visitor session can only {doing} its own bot")
        bot_id = caller.bot_id
    profile = runtime.bots.profile(bot_id)
    if profile is None:
        raise ApiError(404, "bot_not_found", f"no bot with id {bot_id!r}")
    return profile


def owned_bot(
    admin: AdminPrincipal, model: type[Conversation] | type[Message], row_id: str, runtime: Runtime
) -> str | None:
    """The bot a conversation or message belongs to, if this key may see it; None otherwise (unknown and
    another bot's rows look the same, so callers answer both with one 404)."""
    if not repo.is_storable(row_id):
        return None
    with session_scope(runtime.session_factory) as s:
        bot_id = s.scalar(select(model.bot_id).where(model.id == row_id))
    return str(bot_id) if bot_id is not None and admin.may_access(bot_id) else None


def server_origin(request: Request) -> str | None:
    """ragbot's own origin as the browser sees it (pages it serves itself, such as /demo)."""
    host = request.headers.get("host")
    if not host:
        return None
    try:
        return normalize_origin(f"{request.url.scheme}://{host}")
    except ValueError:
        return None


def request_origin_allowed(request: Request, profile: BotProfile) -> bool:
    """Browsers name the page's origin in ``Origin``; pages ragbot serves itself (the demo page and the
    embed page, whose framing is limited by CSP ``frame-ancestors``) are same-origin and allowed."""
    origin = request.headers.get("origin")
    if origin is None:
        return request.headers.get("sec-fetch-site") == "same-origin"
    own = server_origin(request)
    if own is not None and origin != "null":
        try:
            if normalize_origin(origin) == own:
                return True
        except ValueError:
            return False
    return is_allowed(origin, profile.allowed_origins)


def check_visitor_origin(request: Request, profile: BotProfile) -> None:
    if not request_origin_allowed(request, profile):
        origin = request.headers.get("origin") or "no Origin header"
        raise ApiError(403, "origin_not_allowed", f"this bot's widget is not allowed on {origin}")


def _visitor(request: Request, runtime: Runtime, token: str) -> VisitorPrincipal:
    try:
        session = runtime.visitor_sessions.verify(token)
    except InvalidSessionError as exc:
        raise ApiError(401, "invalid_session", str(exc), headers=_UNAUTHORIZED) from None
    profile = runtime.bots.profile(session.bot_id)
    if (
        profile is None
        or not profile.public_key
        or key_fingerprint(profile.public_key) != session.key_fingerprint
    ):
        raise ApiError(
            401, "invalid_session", "the bot's widget key changed; open a new session", headers=_UNAUTHORIZED
        )
    check_visitor_origin(request, profile)
    return VisitorPrincipal(bot_id=session.bot_id, visitor_id=session.visitor_id)


async def caller(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Caller:
    """An admin key or a visitor session: the two kinds of caller of the chat routes."""
    token = _credential(credentials)
    if _looks_like_session(token):
        return await run_in_threadpool(_visitor, request, get_runtime(request), token)
    return await admin_principal(request, credentials)


CallerDep = Annotated[Caller, Depends(caller)]


#: What one visitor (and one IP) may do a minute besides chatting: ask for a person, rate, leave details.
VISITOR_ACTIONS_PER_MINUTE = 30
IP_ACTIONS_PER_MINUTE = 120


async def visitor_action_quota(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """Rate-limit a visitor's non-chat requests (handoff, feedback, leads); admin keys are not limited.
    An unusable token passes here and is refused by the route's own credential check."""
    if credentials is None or not _looks_like_session(credentials.credentials):
        return
    runtime = get_runtime(request)
    try:
        session = runtime.visitor_sessions.verify(credentials.credentials)
    except InvalidSessionError:
        return
    bot = session.bot_id
    client_ip = request.client.host if request.client else "-"
    limits = [
        Limit("visitor", f"actions:{bot}:{session.visitor_id}", VISITOR_ACTIONS_PER_MINUTE, 60),
        Limit("ip", f"actions-ip:{bot}:{client_ip}", IP_ACTIONS_PER_MINUTE, 60),
    ]
    decision = await run_in_threadpool(runtime.rate_limiter.hit, limits)
    if not decision.allowed:
        raise ApiError(
            429,
            "rate_limited",
            f"too many requests; try again in {decision.retry_after_s} s",
            headers={"Retry-After": str(decision.retry_after_s)},
        )


VisitorActionQuota = Depends(visitor_action_quota)
