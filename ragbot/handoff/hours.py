"""Office hours: when a person can be expected to answer. Pure, so every boundary is unit-tested.

``{"timezone": "Europe/Berlin", "days": {"mon": ["09:00", "17:30"], "tue": [...], ...}}``; a day left out
is closed; no office hours at all means always open.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["DAYS", "InvalidOfficeHoursError", "check_office_hours", "is_open"]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class InvalidOfficeHoursError(ValueError):
    pass


def _clock(value: Any) -> time:
    try:
        hours, minutes = str(value).split(":")
        return time(int(hours), int(minutes))
    except (ValueError, TypeError):
        raise InvalidOfficeHoursError(f"{value!r} is not a time like '09:00'") from None


def check_office_hours(hours: dict[str, Any]) -> dict[str, Any]:
    """``hours`` if usable; an ``InvalidOfficeHoursError`` that says what is wrong otherwise."""
    zone = hours.get("timezone", "UTC")
    try:
        ZoneInfo(str(zone))
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidOfficeHoursError(f"unknown timezone {zone!r}") from None
    days = hours.get("days")
    if not isinstance(days, dict) or not days:
        raise InvalidOfficeHoursError("office hours need 'days', e.g. {'mon': ['09:00', '17:00']}")
    for day, span in days.items():
        if day not in DAYS:
            raise InvalidOfficeHoursError(f"unknown day {day!r}; use {', '.join(DAYS)}")
        if not isinstance(span, list | tuple) or len(span) != 2:
            raise InvalidOfficeHoursError(f"{day}: give [opens, closes], e.g. ['09:00', '17:00']")
        if _clock(span[0]) >= _clock(span[1]):
            raise InvalidOfficeHoursError(f"{day}: opens at or after it closes")
    return {"timezone": str(zone), "days": {d: [str(a), str(b)] for d, (a, b) in days.items()}}


def is_open(hours: dict[str, Any] | None, now: datetime) -> bool:
    """Whether ``now`` (timezone-aware) falls inside the office hours."""
    if not hours:
        return True
    local = now.astimezone(ZoneInfo(str(hours.get("timezone", "UTC"))))
    span = (hours.get("days") or {}).get(DAYS[local.weekday()])
    if not span:
        return False
    return _clock(span[0]) <= local.time().replace(second=0, microsecond=0) < _clock(span[1])
