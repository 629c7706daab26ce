"""Which rate limits a chat message counts against. Pure: the keys and amounts, not the counting."""

from __future__ import annotations

from ragbot.tenancy.bots import BotProfile
from ragbot.tenancy.principals import Caller, VisitorPrincipal
from ragbot.tenancy.ratelimit import Limit

__all__ = ["chat_limits", "refusal_message", "session_limits"]

_MINUTE = 60
_DAY = 86400


def chat_limits(profile: BotProfile, caller: Caller, client_ip: str | None) -> list[Limit]:
    """A visitor's message counts against their own and their IP's per-minute limits and the bot's
    daily budget; a server-to-server message (admin key) only against the daily budget."""
    bot = profile.id
    limits: list[Limit] = []
    if isinstance(caller, VisitorPrincipal):
        visitor_key = f"visitor:{bot}:{caller.visitor_id}"
        limits.append(Limit("visitor", visitor_key, profile.rate_visitor_per_minute, _MINUTE))
        if client_ip:
            limits.append(Limit("ip", f"ip:{bot}:{client_ip}", profile.rate_ip_per_minute, _MINUTE))
    # last: a message the per-minute limits refuse never touches the day's budget
    limits.append(Limit("bot_daily", f"day:{bot}", profile.daily_message_budget, _DAY))
    return limits


def session_limits(bot_id: str, client_ip: str | None, per_minute: int) -> list[Limit]:
    """Opening visitor sessions is cheap for a client and costs a signature: cap it per IP."""
    return [Limit("session_ip", f"session:{bot_id}:{client_ip or '-'}", per_minute, _MINUTE)]


def refusal_message(scope: str, retry_after_s: int) -> str:
    if scope == "bot_daily":
        return "this assistant has answered all the messages it may answer today; try again later"
    return f"too many messages; try again in {retry_after_s} s"
