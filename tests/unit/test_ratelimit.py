"""Rate limits on the in-process memory storage, plus fail-open against a closed loopback port.

Window expiry runs on a fake clock (the memory storage and the limiter read ``time.time()``), so nothing
here sleeps or depends on timing.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import limits.storage.memory
import pytest
from limits.errors import StorageError

import ragbot.tenancy.ratelimit as ratelimit
from ragbot.tenancy.ratelimit import (
    Limit,
    RateDecision,
    RateLimiter,
    RateLimiterUnavailableError,
    build_rate_limiter,
)

pytestmark = pytest.mark.unit

DEAD_REDIS = "redis://127.0.0.1:1/0"  # loopback port 1: nothing listens, connecting is refused at once
LOGGER = "ragbot.tenancy.ratelimit"


class FakeClock:
    """Stands in for the ``time`` module where the limiter and the memory storage read it."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(limits.storage.memory, "time", fake)
    monkeypatch.setattr(ratelimit, "time", fake)
    return fake


@pytest.fixture
def limiter() -> Iterator[RateLimiter]:
    rl = RateLimiter()
    yield rl
    rl.reset()


def hits(rl: RateLimiter, limits: list[Limit], n: int) -> list[RateDecision]:
    return [rl.hit(limits) for _ in range(n)]


def refusals_until_free(rl: RateLimiter, limit: Limit) -> int:
    """How many more hits this limit allows right now (hitting it alone)."""
    allowed = 0
    while rl.hit([limit]).allowed:
        allowed += 1
        assert allowed <= limit.amount, "a limit allowed more than its amount"
    return allowed


# --- windows ------------------------------------------------------------------------------------------------


def test_per_minute_refuses_the_hit_after_the_amount(limiter: RateLimiter) -> None:
    limit = Limit("visitor", "bot:a:visitor:1", 3, 60)
    decisions = hits(limiter, [limit], 3)
    assert decisions == [RateDecision(allowed=True, retry_after_s=0, limit=None)] * 3
    refused = limiter.hit([limit])
    assert not refused.allowed
    assert refused.limit == limit
    assert 1 <= refused.retry_after_s <= 60
    assert not limiter.hit([limit]).allowed  # refusals are not counted, but the window is still full


def test_daily_window_refuses_the_hit_after_the_amount(limiter: RateLimiter) -> None:
    limit = Limit("bot_daily", "day:a", 5, 86400)
    assert all(d.allowed for d in hits(limiter, [limit], 5))
    refused = limiter.hit([limit])
    assert not refused.allowed
    assert refused.limit == limit
    assert 60 < refused.retry_after_s <= 86400  # a day's window, not a minute's


def test_retry_after_counts_down_and_the_window_frees(clock: FakeClock) -> None:
    rl = RateLimiter()
    limit = Limit("visitor", "bot:a:visitor:1", 2, 60)
    assert all(d.allowed for d in hits(rl, [limit], 2))
    assert rl.hit([limit]).retry_after_s == 60
    clock.advance(20.5)
    assert rl.hit([limit]) == RateDecision(allowed=False, retry_after_s=40, limit=limit)  # 39.5 s rounds up
    clock.advance(39.0)
    assert rl.hit([limit]).retry_after_s == 1  # never 0 while refused
    clock.advance(1.0)
    assert all(d.allowed for d in hits(rl, [limit], 2))  # a new window, with the whole amount again
    assert not rl.hit([limit]).allowed


def test_daily_window_frees_after_a_day(clock: FakeClock) -> None:
    rl = RateLimiter()
    limit = Limit("bot_daily", "day:a", 1, 86400)
    assert rl.hit([limit]).allowed
    clock.advance(3600)
    assert rl.hit([limit]).retry_after_s == 86400 - 3600
    clock.advance(86400 - 3600)
    assert rl.hit([limit]).allowed


def test_retry_after_names_the_refusing_limits_own_window(clock: FakeClock) -> None:
    rl = RateLimiter()
    daily = Limit("bot_daily", "day:a", 100, 86400)
    minute = Limit("visitor", "visitor:a:1", 1, 60)
    assert rl.hit([daily, minute]).allowed
    clock.advance(10)
    assert rl.hit([daily, minute]) == RateDecision(allowed=False, retry_after_s=50, limit=minute)


# --- all-or-nothing, keys, unlimited ----------------------------------------------------------------------


def test_a_refused_hit_consumes_nothing_from_the_other_limits(limiter: RateLimiter) -> None:
    daily = Limit("bot_daily", "day:a", 5, 86400)
    visitor = Limit("visitor", "visitor:a:1", 2, 60)
    ip = Limit("ip", "ip:a:10.0.0.1", 50, 60)
    assert all(d.allowed for d in hits(limiter, [daily, visitor, ip], 2))
    for _ in range(10):  # the visitor keeps trying: refused each time by the visitor limit only
        decision = limiter.hit([daily, visitor, ip])
        assert not decision.allowed
        assert decision.limit == visitor
    assert refusals_until_free(limiter, daily) == 3  # 5 - the 2 allowed hits, none of the refused ones
    assert refusals_until_free(limiter, ip) == 48


def test_a_refusal_by_the_first_limit_counts_none_of_the_later_ones(limiter: RateLimiter) -> None:
    daily = Limit("bot_daily", "day:a", 1, 86400)
    visitor = Limit("visitor", "visitor:a:1", 10, 60)
    assert limiter.hit([daily, visitor]).allowed
    assert limiter.hit([daily, visitor]).limit == daily
    assert refusals_until_free(limiter, visitor) == 9


def test_every_limit_is_counted_when_allowed(limiter: RateLimiter) -> None:
    a = Limit("visitor", "visitor:a:1", 4, 60)
    b = Limit("ip", "ip:a:10.0.0.1", 4, 60)
    assert all(d.allowed for d in hits(limiter, [a, b], 3))
    assert refusals_until_free(limiter, a) == 1
    assert refusals_until_free(limiter, b) == 1


def test_keys_have_independent_budgets(limiter: RateLimiter) -> None:
    first = Limit("visitor", "bot:a:visitor:1", 2, 60)
    second = Limit("visitor", "bot:a:visitor:2", 2, 60)
    assert all(d.allowed for d in hits(limiter, [first], 2))
    assert not limiter.hit([first]).allowed
    assert all(d.allowed for d in hits(limiter, [second], 2))
    assert not limiter.hit([second]).allowed


def test_a_changed_amount_starts_a_fresh_count(limiter: RateLimiter) -> None:
    assert limiter.hit([Limit("visitor", "v:1", 1, 60)]).allowed
    assert not limiter.hit([Limit("visitor", "v:1", 1, 60)]).allowed
    assert limiter.hit([Limit("visitor", "v:1", 2, 60)]).allowed  # the bot's limit was raised


@pytest.mark.parametrize("amount", [0, -1])
def test_non_positive_amounts_are_unlimited(limiter: RateLimiter, amount: int) -> None:
    unlimited = Limit("bot_daily", "day:a", amount, 86400)
    assert all(d.allowed for d in hits(limiter, [unlimited], 50))
    limited = Limit("visitor", "visitor:a:1", 1, 60)
    assert limiter.hit([unlimited, limited]).allowed
    assert limiter.hit([unlimited, limited]).limit == limited


def test_no_limits_are_allowed(limiter: RateLimiter) -> None:
    assert limiter.hit([]) == RateDecision(allowed=True, retry_after_s=0, limit=None)


def test_reset_forgets_every_count(limiter: RateLimiter) -> None:
    limit = Limit("visitor", "visitor:a:1", 1, 60)
    assert limiter.hit([limit]).allowed
    assert not limiter.hit([limit]).allowed
    limiter.reset()
    assert limiter.hit([limit]).allowed


def test_separate_memory_limiters_do_not_share_counts() -> None:
    limit = Limit("visitor", "visitor:a:1", 1, 60)
    assert RateLimiter().hit([limit]).allowed
    assert RateLimiter().hit([limit]).allowed


# --- concurrency ------------------------------------------------------------------------------------------


def _hammer(rl: RateLimiter, limits: list[Limit], threads: int, per_thread: int) -> int:
    allowed = 0
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def worker() -> None:
        nonlocal allowed
        start.wait()
        mine = sum(rl.hit(limits).allowed for _ in range(per_thread))
        with lock:
            allowed += mine

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return allowed


def test_concurrent_hits_allow_exactly_the_amount(limiter: RateLimiter) -> None:
    assert _hammer(limiter, [Limit("visitor", "visitor:a:1", 100, 60)], threads=8, per_thread=50) == 100


def test_concurrent_multi_limit_hits_stay_all_or_nothing(limiter: RateLimiter) -> None:
    daily = Limit("bot_daily", "day:a", 1000, 86400)
    visitor = Limit("visitor", "visitor:a:1", 100, 60)
    assert _hammer(limiter, [daily, visitor], threads=8, per_thread=50) == 100
    assert refusals_until_free(limiter, daily) == 900  # the 300 refusals left the daily budget alone


# --- validation and construction ---------------------------------------------------------------------------


@pytest.mark.parametrize("per_seconds", [0, -60])
def test_a_window_must_last_at_least_a_second(per_seconds: int) -> None:
    with pytest.raises(ValueError, match="window"):
        Limit("visitor", "v:1", 10, per_seconds)


@pytest.mark.parametrize("uri", ["memcached://127.0.0.1:11211", "async+memory://", "nonsense"])
def test_only_memory_and_redis_storages_are_accepted(uri: str) -> None:
    with pytest.raises(ValueError, match="memory:// or redis://"):
        RateLimiter(uri)


@pytest.mark.parametrize("prefix", ["", "ragbot*", "a?b"])
def test_prefix_must_be_a_plain_non_empty_string(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        RateLimiter(prefix=prefix)


def test_build_rate_limiter_uses_memory_without_a_redis_url() -> None:
    rl = build_rate_limiter(None)
    rl.check_ready()
    limit = Limit("visitor", "v:1", 1, 60)
    assert rl.hit([limit]).allowed
    assert not rl.hit([limit]).allowed


def test_build_rate_limiter_with_a_redis_url_does_not_connect_until_used() -> None:
    rl = build_rate_limiter(DEAD_REDIS)  # constructing must not fail: the app starts even if Redis is down
    with pytest.raises(RateLimiterUnavailableError, match=r"127\.0\.0\.1:1"):
        rl.check_ready()


# --- fail open --------------------------------------------------------------------------------------------


def test_dead_redis_fails_open_and_warns_once_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    rl = RateLimiter(DEAD_REDIS, outage_retry_s=0)  # 0: every hit really dials the dead port
    limit = Limit("visitor", "v:1", 1, 60)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        decisions = hits(rl, [limit], 5)
    assert decisions == [RateDecision(allowed=True, retry_after_s=0, limit=None)] * 5
    warnings = [r for r in caplog.records if r.name == LOGGER]
    assert len(warnings) == 1
    assert "unreachable" in warnings[0].getMessage()


def test_during_an_outage_requests_skip_the_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    dials: list[Any] = []
    guarded = socket.socket.connect  # the conftest's loopback guard

    def counting_connect(self: socket.socket, address: Any) -> None:
        dials.append(address)
        return guarded(self, address)

    monkeypatch.setattr(socket.socket, "connect", counting_connect)
    rl = RateLimiter(DEAD_REDIS, outage_retry_s=3600)
    limit = Limit("visitor", "v:1", 1, 60)
    assert rl.hit([limit]).allowed
    assert dials, "the first hit should have tried Redis"
    tried = len(dials)
    assert all(d.allowed for d in hits(rl, [limit], 20))
    assert len(dials) == tried  # no request waits on a storage that just failed


def test_unlimited_only_hits_never_touch_the_storage(caplog: pytest.LogCaptureFixture) -> None:
    rl = RateLimiter(DEAD_REDIS, outage_retry_s=0)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert rl.hit([Limit("bot_daily", "day:a", 0, 86400)]).allowed
    assert not caplog.records


def test_the_warning_hides_the_redis_password(caplog: pytest.LogCaptureFixture) -> None:
    rl = RateLimiter("redis://:hunter2@127.0.0.1:1/0")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert rl.hit([Limit("visitor", "v:1", 1, 60)]).allowed
    assert caplog.records
    assert all("hunter2" not in r.getMessage() for r in caplog.records)
    assert "127.0.0.1:1" in caplog.records[0].getMessage()
    with pytest.raises(RateLimiterUnavailableError) as raised:
        rl.check_ready()
    assert "hunter2" not in str(raised.value)


def test_recovery_resumes_counting_and_a_new_outage_warns_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rl = RateLimiter(outage_retry_s=0)
    storage = rl._storage
    working_incr = storage.incr

    def broken_incr(*args: Any, **kwargs: Any) -> int:
        raise StorageError(ConnectionError("storage down"))

    limit = Limit("visitor", "v:1", 2, 60)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        monkeypatch.setattr(storage, "incr", broken_incr)
        assert all(d.allowed for d in hits(rl, [limit], 5))  # outage 1: not counted, allowed
        monkeypatch.setattr(storage, "incr", working_incr)
        assert all(d.allowed for d in hits(rl, [limit], 2))  # recovered: counting from zero
        assert rl.hit([limit]).limit == limit
        monkeypatch.setattr(storage, "incr", broken_incr)
        assert rl.hit([limit]).allowed  # outage 2
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert [("unreachable" in m, "again" in m) for m in messages] == [
        (True, False),
        (False, True),
        (True, False),
    ]


def test_a_failure_mid_hit_undoes_what_it_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    rl = RateLimiter(outage_retry_s=0)
    storage = rl._storage
    working_incr = storage.incr
    calls = 0

    def fails_on_second_limit(key: str, expiry: int, amount: int = 1) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise StorageError(ConnectionError("storage down"))
        return working_incr(key, expiry, amount=amount)

    daily = Limit("bot_daily", "day:a", 3, 86400)
    visitor = Limit("visitor", "v:1", 3, 60)
    monkeypatch.setattr(storage, "incr", fails_on_second_limit)
    assert rl.hit([daily, visitor]).allowed  # failed open
    monkeypatch.setattr(storage, "incr", working_incr)
    assert refusals_until_free(rl, daily) == 3  # the daily hit made before the failure was undone
