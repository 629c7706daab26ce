"""Analytics windows: what ``since``/``until`` accept, the default week, and the buckets of a series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from ragbot.analytics.views import classify, percentile
from ragbot.analytics.windows import (
    Window,
    WindowError,
    bucket_key,
    bucket_starts,
    parse_instant,
    parse_window,
)

pytestmark = pytest.mark.unit

NOW = datetime(2025, 3, 12, 15, 42, 7, 123456, tzinfo=UTC)


def test_default_is_the_last_seven_days_per_day() -> None:
    window = parse_window(None, None, NOW)
    assert window == Window(NOW - timedelta(days=7), NOW, "day")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", NOW - timedelta(days=7)),
        ("24h", NOW - timedelta(hours=24)),
        ("30m", NOW - timedelta(minutes=30)),
        ("2w", NOW - timedelta(weeks=2)),
        (" 3D ", NOW - timedelta(days=3)),
        ("now", NOW),
        ("2025-03-01", datetime(2025, 3, 1, tzinfo=UTC)),
        ("2025-03-01T10:30:00", datetime(2025, 3, 1, 10, 30, tzinfo=UTC)),
        ("2025-03-01T10:30:00Z", datetime(2025, 3, 1, 10, 30, tzinfo=UTC)),
        ("2025-03-01T12:30:00+02:00", datetime(2025, 3, 1, 10, 30, tzinfo=UTC)),
    ],
)
def test_instants(text: str, expected: datetime) -> None:
    got = parse_instant(text, NOW)
    assert got == expected
    assert got.tzinfo is not None and got.utcoffset() == timedelta(0)


def test_a_date_as_until_names_the_whole_day() -> None:
    window = parse_window("2025-03-01", "2025-03-03", NOW)
    assert (window.since, window.until) == (
        datetime(2025, 3, 1, tzinfo=UTC),
        datetime(2025, 3, 4, tzinfo=UTC),
    )
    assert window.bucket == "day"


def test_since_alone_runs_to_now_and_until_alone_a_week_back() -> None:
    assert parse_window("24h", None, NOW) == Window(NOW - timedelta(hours=24), NOW, "hour")
    until = datetime(2025, 3, 10, tzinfo=UTC)
    assert parse_window(None, "2025-03-10T00:00:00Z", NOW) == Window(until - timedelta(days=7), until, "day")


def test_bucket_is_hourly_up_to_48_hours() -> None:
    assert parse_window("48h", None, NOW).bucket == "hour"
    assert parse_window("49h", None, NOW).bucket == "day"
    assert parse_window("30d", None, NOW, bucket="hour").bucket == "hour"
    assert parse_window("24h", None, NOW, bucket="day").bucket == "day"


@pytest.mark.parametrize(
    ("since", "until", "bucket", "field"),
    [
        ("yesterday", None, None, "since"),
        (None, "2025-13-01", None, "until"),
        ("2025-03-05", "2025-03-04T00:00:00Z", None, "since"),
        ("now", None, None, "since"),  # empty window
        ("999999w", None, None, "since"),  # before year 1
        ("40d", None, "hour", "bucket"),
        ("7d", None, "minute", "bucket"),
        ("1970-01-01", None, None, "since"),  # longer than MAX_SPAN
    ],
)
def test_bad_windows_name_the_parameter(
    since: str | None, until: str | None, bucket: str | None, field: str
) -> None:
    with pytest.raises(WindowError) as info:
        parse_window(since, until, NOW, bucket=bucket)
    assert info.value.field == field


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_window(None, None, NOW.replace(tzinfo=None))


def test_buckets_cover_the_window_without_gaps() -> None:
    window = parse_window("2025-03-01T22:15:00Z", "2025-03-02T01:00:00Z", NOW)
    assert window.bucket == "hour"
    assert [b.hour for b in bucket_starts(window)] == [22, 23, 0]
    daily = parse_window("2025-03-01T22:15:00Z", "2025-03-04T00:00:01Z", NOW)
    assert [b.day for b in bucket_starts(daily)] == [1, 2, 3, 4]
    assert bucket_starts(daily)[0] == datetime(2025, 3, 1, tzinfo=UTC)


def test_bucket_keys_are_utc() -> None:
    cet = timezone(timedelta(hours=1))
    moment = datetime(2025, 3, 2, 0, 30, tzinfo=cet)  # 2025-03-01 23:30 UTC
    assert bucket_key(moment, "hour") == "2025-03-01 23"
    assert bucket_key(moment, "day") == "2025-03-01"


def test_classify_answers() -> None:
    assert classify("complete", True) == "answered"
    assert classify("partial", True) == "answered"
    assert classify("complete", False) == "ungrounded"
    assert classify("refused", False) == "ungrounded"
    assert classify("refused", True) == "ungrounded"
    assert classify("failed", True) == "failed"
    assert classify("partial", False) == "partial_uncited"


def test_percentile_interpolates_like_numpy() -> None:
    values = [5.0, 1.0, 9.0, 3.0]
    assert percentile(values, 50) == 4.0
    assert percentile(values, 95) == pytest.approx(8.4)
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None
