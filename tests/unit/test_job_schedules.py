"""Schedule intervals and slots: pure functions, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ragbot.db.jobs import next_slot
from ragbot.jobs.schedules import format_every, parse_every

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6h", 21600),
        ("1d", 86400),
        ("1h30m", 5400),
        ("90m", 5400),
        ("3600", 3600),
        (" 2W ", 1209600),
        ("1d 12h", 129600),
        ("60s", 60),
    ],
)
def test_intervals_parse(text: str, seconds: int) -> None:
    assert parse_every(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "6x", "6h-", "-6h", "1.5h", "59s", "30", "366d", "6h 6", "²"])
def test_bad_intervals_say_why(text: str) -> None:
    with pytest.raises(ValueError, match="interval"):
        parse_every(text)


def test_intervals_print_short() -> None:
    assert [format_every(s) for s in (60, 5400, 21600, 129600, 1209600 + 61)] == [
        "1m",
        "1h30m",
        "6h",
        "1d12h",
        "2w1m1s",
    ]


def test_the_next_slot_skips_what_was_missed() -> None:
    slot = datetime(2026, 1, 1, tzinfo=UTC)
    hour = 3600
    assert next_slot(slot, hour, slot - timedelta(minutes=1)) == slot  # not due yet: unchanged
    assert next_slot(slot, hour, slot) == slot + timedelta(hours=1)
    assert next_slot(slot, hour, slot + timedelta(hours=25, minutes=1)) == slot + timedelta(hours=26)
