"""Per-source re-sync schedules: ``ragbot sources schedule ID --every 6h`` and ``PUT
/v1/sources/{id}/schedule``. A due slot becomes one queued re-sync job however many workers look at it
(``ragbot.db.jobs.enqueue_due_resyncs``); the interval is kept in seconds on the source's row."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ragbot.db import jobs as sql
from ragbot.db.models import Source, utcnow
from ragbot.db.session import session_scope

__all__ = [
    "MAX_EVERY_S",
    "MIN_EVERY_S",
    "NotSchedulableError",
    "SourceInfo",
    "SourceSchedules",
    "format_every",
    "parse_every",
]

#: Re-syncs more often than this would crawl a site continuously; less often than this is a typo.
MIN_EVERY_S = 60
MAX_EVERY_S = 365 * 86400

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+)\s*([smhdw])")


def parse_every(text: str) -> int:
    """``"6h"``, ``"1d"``, ``"1h30m"``, ``"90m"`` or plain seconds (``"3600"``) -> seconds.

    Raises ``ValueError`` with the reason for anything else, or an interval outside one minute..a year.
    """
    cleaned = text.strip().lower()
    if cleaned.isascii() and cleaned.isdigit():
        seconds = int(cleaned)
    else:
        compact = cleaned.replace(" ", "")
        parts = _PART.findall(compact)
        if not parts or "".join(n + u for n, u in parts) != compact:
            raise ValueError(f"{text!r} is not an interval: write it like 30m, 6h, 1d or 1h30m")
        seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if not MIN_EVERY_S <= seconds <= MAX_EVERY_S:
        raise ValueError(f"{text!r}: the interval must be between 1 minute and 365 days")
    return seconds


def format_every(seconds: int) -> str:
    """The shortest ``1d6h``-style spelling, for the CLI and the API."""
    out = ""
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size:
            count, seconds = divmod(seconds, size)
            out += f"{count}{unit}"
    return out or "0s"


class NotSchedulableError(ValueError):
    """The source has no origin to re-sync from (uploaded files)."""


@dataclass(frozen=True, slots=True)
class SourceInfo:
    id: str
    bot_id: str
    kind: str
    scope: str
    last_synced_at: datetime | None
    every_s: int | None
    next_sync_at: datetime | None

    @property
    def every(self) -> str | None:
        return format_every(self.every_s) if self.every_s else None


def _info(row: Source) -> SourceInfo:
    return SourceInfo(
        row.id, row.bot_id, row.kind, row.scope, row.last_synced_at, row.every_s, row.next_sync_at
    )


class SourceSchedules:
    def __init__(
        self, session_factory: sessionmaker[Session], *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._sessions = session_factory
        self._clock = clock

    def sources(self, bot_id: str) -> list[SourceInfo]:
        with self._sessions() as session:
            rows = session.scalars(
                select(Source).where(Source.bot_id == bot_id).order_by(Source.created_at, Source.id)
            )
            return [_info(r) for r in rows]

    def get(self, bot_id: str, source_id: str) -> SourceInfo | None:
        with self._sessions() as session:
            row = session.get(Source, source_id)
            return _info(row) if row is not None and row.bot_id == bot_id else None

    def schedule(self, bot_id: str, source_id: str, every_s: int) -> SourceInfo | None:
        """Re-sync every ``every_s`` seconds from now on; None when the bot has no such source."""
        if not MIN_EVERY_S <= every_s <= MAX_EVERY_S:
            raise ValueError("the interval must be between 1 minute and 365 days")
        with session_scope(self._sessions) as session:
            row = session.get(Source, source_id)
            if row is None or row.bot_id != bot_id:
                return None
            if row.kind == "upload":
                raise NotSchedulableError(
                    "uploaded files have no origin to re-sync from; upload them again instead"
                )
            updated = sql.set_schedule(session, bot_id, source_id, every_s=every_s, now=self._clock())
            return _info(updated) if updated is not None else None

    def unschedule(self, bot_id: str, source_id: str) -> SourceInfo | None:
        with session_scope(self._sessions) as session:
            row = sql.clear_schedule(session, bot_id, source_id)
            return _info(row) if row is not None else None

    def enqueue_due(self) -> list[str]:
        """Queue the re-syncs whose slot came; safe to call from every worker at once."""
        with session_scope(self._sessions) as session:
            return sql.enqueue_due_resyncs(session, now=self._clock())
