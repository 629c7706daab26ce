"""Who is calling: an admin API key (possibly scoped to one bot) or a widget visitor of one bot."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AdminPrincipal", "Caller", "VisitorPrincipal"]


@dataclass(frozen=True, slots=True)
class AdminPrincipal:
    key_id: str
    name: str
    prefix: str
    bot_id: str | None  # None: every bot

    def may_access(self, bot_id: str) -> bool:
        return self.bot_id is None or self.bot_id == bot_id

    @property
    def agent(self) -> str:
        """The agent's identity in conversations (author, assignee): the key's name. Visitors see it, so
        it never includes any part of the key."""
        return self.name.strip() or "Support team"

    @property
    def actor(self) -> str:
        """How the audit trail names this caller."""
        return f"key:{self.prefix}" + (f" ({self.name})" if self.name else "")


@dataclass(frozen=True, slots=True)
class VisitorPrincipal:
    bot_id: str
    visitor_id: str


Caller = AdminPrincipal | VisitorPrincipal
