"""Time windows for analytics: ``since``/``until`` as the API accepts them, and the buckets of a series.

Pure: the caller passes ``now``, so parsing is testable and every view of one request shares one clock.
Everything is UTC; a window is half-open, ``[since, until)``, so adjacent windows never count a row twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

__all__ = [
    "DEFAULT_SPAN",
    "HOURLY_LIMIT",
    "HOURLY_MAX",
    "MAX_SPAN",
    "Bucket",
    "Window",
    "WindowError",
    "bucket_key",
    "bucket_starts",
    "floor",
    "parse_instant",
    "parse_window",
]

Bucket = Literal["hour", "day"]

#: No window given: the last week.
DEFAULT_SPAN = timedelta(days=7)
#: Up to this long, series are per hour (48 points at most); longer ones are per day.
HOURLY_MAX = timedelta(hours=48)
#: The longest window an explicit ``bucket=hour`` may ask for (744 points).
HOURLY_LIMIT = timedelta(days=31)
#: The longest window at all: keeps a daily series to a few thousand points.
MAX_SPAN = timedelta(days=3660)

_RELATIVE = re.compile(r"^(\d{1,6})\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class WindowError(ValueError):
    """A ``since``/``until``/``bucket`` the API answers with 422; ``field`` names the parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime
    bucket: Bucket

    @property
    def span(self) -> timedelta:
        return self.until - self.since


def parse_instant(value: str, now: datetime, *, end: bool = False, field: str = "since") -> datetime:
    """A point in time from ``7d``/``24h``/``30m``/``2w`` (that long before ``now``), ``now``, an ISO
    date (midnight UTC; as an ``end`` a date names the whole day, so it means the next midnight), or an
    ISO date-time (without an offset: UTC)."""
    text = value.strip()
    if text.lower() == "now":
        return now
    relative = _RELATIVE.match(text.lower())
    try:
        if relative:
            amount, unit = int(relative.group(1)), relative.group(2)
            return now - timedelta(**{_UNITS[unit]: amount})
        if _DATE_ONLY.match(text):
            day = date.fromisoformat(text)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + timedelta(days=1) if end else start
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise WindowError(
            field, f"{value!r} is neither an ISO date/time nor a span like 7d, 24h, 30m or 2w"
        ) from None
    except OverflowError:
        raise WindowError(field, f"{value!r} is out of range") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_window(since: str | None, until: str | None, now: datetime, *, bucket: str | None = None) -> Window:
    """The window a request asks for: ``until`` defaults to ``now``, ``since`` to a week before
    ``until``. The series bucket is ``hour`` for windows up to 48 h, else ``day``, unless ``bucket``
    names one (``hour`` only up to 31 days)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC)
    end = parse_instant(until, now, end=True, field="until") if until else now
    start = parse_instant(since, now, field="since") if since else end - DEFAULT_SPAN
    if start >= end:
        raise WindowError("since", f"must be before until ({start.isoformat()} >= {end.isoformat()})")
    if end - start > MAX_SPAN:
        raise WindowError("since", f"the window may span at most {MAX_SPAN.days} days")
    chosen: Bucket
    if bucket is None or bucket == "":
        chosen = "hour" if end - start <= HOURLY_MAX else "day"
    elif bucket == "hour":
        if end - start > HOURLY_LIMIT:
            raise WindowError("bucket", f"hourly series cover at most {HOURLY_LIMIT.days} days")
        chosen = "hour"
    elif bucket == "day":
        chosen = "day"
    else:
        raise WindowError("bucket", "use 'hour' or 'day'")
    return Window(start, end, chosen)


def floor(moment: datetime, bucket: Bucket) -> datetime:
    """The start of the bucket holding ``moment`` (UTC)."""
    moment = moment.astimezone(UTC)
    if bucket == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def bucket_starts(window: Window) -> list[datetime]:
    """Every bucket that overlaps the window, oldest first: the first one may start before ``since``
    (its counts still start at ``since``), so a series has no gaps and no partial labels."""
    step = timedelta(hours=1) if window.bucket == "hour" else timedelta(days=1)
    starts = []
    at = floor(window.since, window.bucket)
    while at < window.until:
        starts.append(at)
        at += step
    return starts


def bucket_key(moment: datetime, bucket: Bucket) -> str:
    """The key SQL groups by (``queries.bucket_expr``): ``YYYY-MM-DD HH`` or ``YYYY-MM-DD`` in UTC."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H" if bucket == "hour" else "%Y-%m-%d")
