"""Rate limits on a real Redis: counts shared by processes (here: limiter instances), windows as Redis TTLs.

Each test counts under its own random key prefix and deletes its keys afterwards, so parallel or repeated
runs against one server never see each other.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ragbot.tenancy.ratelimit import Limit, RateDecision, RateLimiter, build_rate_limiter

pytestmark = [pytest.mark.integration]

REDIS_URL = os.environ.get("RAGBOT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

LimiterFactory = Callable[[], RateLimiter]


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test server's URL; unreachable means skip, or fail under CI (``CI`` set) so it is never silent."""
    client = redis.Redis.from_url(
        REDIS_URL, socket_connect_timeout=3, socket_timeout=3, retry=Retry(NoBackoff(), 0)
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"Redis unreachable at {REDIS_URL} (set RAGBOT_TEST_REDIS_URL): {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def prefix() -> str:
    return f"ragbot-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def raw(redis_url: str, prefix: str) -> Iterator[redis.Redis]:
    """A plain client on the test server; afterwards it deletes whatever this test's prefix left behind."""
    client = redis.Redis.from_url(redis_url)
    yield client
    leftovers = list(client.scan_iter(match=f"{prefix}:*"))
    if leftovers:
        client.delete(*leftovers)
    client.close()


@pytest.fixture
def make_limiter(redis_url: str, prefix: str, raw: redis.Redis) -> Iterator[LimiterFactory]:
    """``make_limiter()`` is a limiter on the test server under this test's prefix (several share counts)."""
    made: list[RateLimiter] = []

    def make() -> RateLimiter:
        limiter = RateLimiter(redis_url, prefix=prefix)
        made.append(limiter)
        return limiter

    yield make
    if made:
        made[0].reset()
        assert not list(raw.scan_iter(match=f"{prefix}:*")), "reset() left keys under the prefix"


def keys(raw: redis.Redis, prefix: str) -> list[str]:
    return sorted(k.decode() for k in raw.scan_iter(match=f"{prefix}:*"))


def free_slots(rl: RateLimiter, limit: Limit) -> int:
    allowed = 0
    while rl.hit([limit]).allowed:
        allowed += 1
        assert allowed <= limit.amount, "a limit allowed more than its amount"
    return allowed


def test_per_minute_refuses_the_hit_after_the_amount(make_limiter: LimiterFactory) -> None:
    rl = make_limiter()
    rl.check_ready()
    limit = Limit("visitor", "bot:a:visitor:1", 3, 60)
    assert [rl.hit([limit]) for _ in range(3)] == [
        RateDecision(allowed=True, retry_after_s=0, limit=None)
    ] * 3
    refused = rl.hit([limit])
    assert not refused.allowed
    assert refused.limit == limit
    assert 1 <= refused.retry_after_s <= 60


def test_daily_window_refuses_the_hit_after_the_amount(make_limiter: LimiterFactory) -> None:
    rl = make_limiter()
    limit = Limit("bot_daily", "day:a", 2, 86400)
    assert rl.hit([limit]).allowed
    assert rl.hit([limit]).allowed
    refused = rl.hit([limit])
    assert refused.limit == limit
    assert 86400 - 60 <= refused.retry_after_s <= 86400


def test_windows_are_redis_ttls_under_the_prefix(
    make_limiter: LimiterFactory, raw: redis.Redis, prefix: str
) -> None:
    rl = make_limiter()
    assert rl.hit([Limit("bot_daily", "day:a", 5, 86400), Limit("visitor", "visitor:a:1", 5, 60)]).allowed
    found = keys(raw, prefix)
    assert len(found) == 2
    assert all(k.startswith(f"{prefix}:") for k in found)
    ttls = sorted(raw.ttl(k) for k in found)
    assert 0 < ttls[0] <= 60
    assert 60 < ttls[1] <= 86400
    assert all(raw.get(k) == b"1" for k in found)


def test_a_refused_hit_consumes_nothing_from_the_other_limits(make_limiter: LimiterFactory) -> None:
    rl = make_limiter()
    daily = Limit("bot_daily", "day:a", 5, 86400)
    visitor = Limit("visitor", "visitor:a:1", 2, 60)
    assert rl.hit([daily, visitor]).allowed
    assert rl.hit([daily, visitor]).allowed
    for _ in range(5):
        assert rl.hit([daily, visitor]).limit == visitor
    assert free_slots(rl, daily) == 3


def test_keys_have_independent_budgets(make_limiter: LimiterFactory) -> None:
    rl = make_limiter()
    first = Limit("visitor", "bot:a:visitor:1", 1, 60)
    second = Limit("visitor", "bot:a:visitor:2", 1, 60)
    assert rl.hit([first]).allowed
    assert not rl.hit([first]).allowed
    assert rl.hit([second]).allowed


def test_two_limiters_on_one_redis_share_counts(make_limiter: LimiterFactory) -> None:
    api_1, api_2 = make_limiter(), make_limiter()  # two API processes
    limit = Limit("visitor", "bot:a:visitor:1", 4, 60)
    assert api_1.hit([limit]).allowed
    assert api_2.hit([limit]).allowed
    assert api_1.hit([limit]).allowed
    assert api_2.hit([limit]).allowed
    assert api_1.hit([limit]).limit == limit
    assert api_2.hit([limit]).limit == limit


def test_build_rate_limiter_shares_counts_through_redis(
    redis_url: str, raw: redis.Redis, prefix: str
) -> None:
    """The production constructor (default prefix): counted on the server, seen by another instance."""
    key = f"{prefix}:visitor"  # a unique caller key, so the shared default prefix cannot collide
    limit = Limit("visitor", key, 1, 60)
    first, second = build_rate_limiter(redis_url), build_rate_limiter(redis_url)
    try:
        assert first.hit([limit]).allowed
        assert second.hit([limit]).limit == limit
    finally:
        stored = [k for k in raw.scan_iter(match="ragbot:*") if key.encode() in k]
        assert len(stored) == 1
        raw.delete(*stored)


def test_prefixes_isolate_counts_and_resets(make_limiter: LimiterFactory, redis_url: str) -> None:
    mine = make_limiter()
    other = RateLimiter(redis_url, prefix=f"ragbot-test-{uuid.uuid4().hex[:12]}")
    limit = Limit("visitor", "visitor:a:1", 1, 60)
    try:
        assert mine.hit([limit]).allowed
        assert other.hit([limit]).allowed  # a different prefix counts separately
        other.reset()
        assert not mine.hit([limit]).allowed  # and resetting it left this prefix alone
    finally:
        other.reset()


def test_concurrent_hits_allow_exactly_the_amount(make_limiter: LimiterFactory) -> None:
    limiters = [make_limiter() for _ in range(2)]
    limit = Limit("visitor", "visitor:a:1", 100, 60)
    allowed = 0
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker(rl: RateLimiter) -> None:
        nonlocal allowed
        start.wait()
        mine = sum(rl.hit([limit]).allowed for _ in range(50))
        with lock:
            allowed += mine

    threads = [threading.Thread(target=worker, args=(limiters[i % 2],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed == 100
