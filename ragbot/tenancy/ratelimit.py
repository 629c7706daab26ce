"""Rate limits over the `limits` library, in process memory or shared through Redis.

Several limits are counted all-or-nothing (a refused message must not eat the bot's daily budget), and a
dead Redis lets requests through (fail open): a rate limiter must never be what takes the chat down.

Counting uses fixed windows that start at a key's first hit. A refusal is undone with a compensating
decrement, which works on any ``limits`` storage and keeps every step atomic per key, so no request is
ever allowed past a limit; the price is that a request racing a refusal on the same key may be refused
too (conservative). Moving windows would need one stored entry per hit and cannot be undone.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import RedisStorage, Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

__all__ = [
    "Limit",
    "RateDecision",
    "RateLimiter",
    "RateLimiterUnavailableError",
    "build_rate_limiter",
]

logger = logging.getLogger(__name__)

_REDIS_SCHEMES = frozenset({"redis", "rediss", "redis+unix"})
# Keys are "<namespace>/<caller key>/<amount>/<seconds>/second" (the library's layout): a changed limit
# starts a fresh count instead of inheriting one kept for another amount.
_NAMESPACE = "rl"
# A dead Redis must cost a request milliseconds, not the client's default retries with backoff.
_REDIS_TIMEOUT_S = 0.5


@dataclass(frozen=True, slots=True)
class Limit:
    scope: str  # what is limited, for messages/logging: "visitor", "ip", "bot_daily", "session_ip"
    key: str  # e.g. "bot:abc:visitor:123" (the caller builds it)
    amount: int  # allowed hits per window; <= 0 means unlimited
    per_seconds: int  # window length: 60 for per-minute, 86400 for daily

    def __post_init__(self) -> None:
        if self.per_seconds < 1:
            raise ValueError(f"a rate-limit window must be at least 1 s, not {self.per_seconds}")


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after_s: int  # 0 when allowed; otherwise whole seconds (>= 1) until the refusing limit frees a slot
    limit: Limit | None  # the limit that refused, None when allowed


_ALLOWED = RateDecision(allowed=True, retry_after_s=0, limit=None)


class RateLimiterUnavailableError(RuntimeError):
    """The rate-limit storage cannot be reached (readiness probes)."""


class RateLimiter:
    """Counts hits against limits; memory storage is per process, Redis storage is shared by processes."""

    def __init__(
        self, storage_uri: str = "memory://", *, prefix: str = "ragbot", outage_retry_s: float = 1.0
    ) -> None:
        """``prefix`` scopes the Redis keys (and what ``reset`` deletes); ``outage_retry_s`` is how long
        requests skip a storage that just failed before it is tried again, so an outage costs each request
        nothing rather than a connect timeout."""
        scheme = urllib.parse.urlsplit(storage_uri).scheme
        if scheme != "memory" and scheme not in _REDIS_SCHEMES:
            raise ValueError(
                f"rate-limit storage must be memory:// or redis://, not {_redacted(storage_uri)!r}"
            )
        if not prefix or any(c in prefix for c in "*?[]\\"):
            raise ValueError(f"rate-limit prefix must be non-empty, without glob characters: {prefix!r}")
        self.prefix = prefix
        self._where = _redacted(storage_uri)
        storage = storage_from_string(storage_uri, **_storage_options(scheme, prefix))
        if not isinstance(storage, Storage):  # the async variants share the factory; the schemes exclude them
            raise TypeError(f"not a synchronous rate-limit storage: {type(storage).__name__}")
        self._storage: Storage = storage
        self._strategy = FixedWindowRateLimiter(self._storage)
        # In memory, one lock makes a whole multi-limit hit atomic (no spurious refusals); with Redis the
        # counting spans processes, so only each key's increment is atomic (see the module docstring).
        self._hit_lock: threading.Lock | None = threading.Lock() if scheme == "memory" else None
        self._outage_retry_s = outage_retry_s
        self._state_lock = threading.Lock()
        self._down = False
        self._retry_at = 0.0

    def hit(self, limits: Sequence[Limit]) -> RateDecision:
        """All-or-nothing: if any limit is exhausted nothing is counted and the refusing limit is returned;
        otherwise every limit is counted. Limits with amount <= 0 mean 'unlimited' and are skipped."""
        active = [limit for limit in limits if limit.amount > 0]
        if not active:
            return _ALLOWED
        if self._down and time.monotonic() < self._retry_at:
            return _ALLOWED  # the storage failed moments ago: do not make this request wait on it too
        try:
            if self._hit_lock is None:
                decision = self._count(active)
            else:
                with self._hit_lock:
                    decision = self._count(active)
        except StorageError as exc:
            self._storage_failed(exc)
            return _ALLOWED
        if self._down:
            self._storage_recovered()
        return decision

    def reset(self) -> None:
        """Forget every count under this limiter's prefix (tests, operators)."""
        if self._hit_lock is None:
            self._storage.reset()
        else:
            with self._hit_lock:
                self._storage.reset()

    def check_ready(self) -> None:
        """Raise :class:`RateLimiterUnavailableError` when the storage (Redis) cannot be reached."""
        if isinstance(self._storage, RedisStorage):
            try:
                self._storage.get_connection().ping()
            except Exception as exc:  # any client failure means "not ready"; the cause is chained
                raise RateLimiterUnavailableError(
                    f"rate-limit storage unreachable at {self._where}: {exc}"
                ) from exc
        elif not self._storage.check():
            raise RateLimiterUnavailableError(f"rate-limit storage unhealthy at {self._where}")

    # --- internals ----------------------------------------------------------------------------------------

    def _count(self, limits: list[Limit]) -> RateDecision:
        counted: list[tuple[RateLimitItem, Limit]] = []
        try:
            for limit in limits:
                item = _item(limit)
                allowed = self._strategy.hit(item, limit.key)
                counted.append((item, limit))  # a refused hit was counted too, and is undone with the rest
                if not allowed:
                    self._undo(counted)
                    counted = []
                    return RateDecision(
                        allowed=False, retry_after_s=self._retry_after(item, limit), limit=limit
                    )
        except StorageError:
            with contextlib.suppress(StorageError):  # failing storage: hit()'s outage handling takes over
                self._undo(counted)
            raise
        return _ALLOWED

    def _undo(self, counted: list[tuple[RateLimitItem, Limit]]) -> None:
        # Should a window expire between the hit and its undo (microseconds), the undo leaves a -1 that
        # grants one extra hit in the next window: harmless, and only the library's incr is portable.
        while counted:
            item, limit = counted.pop()
            self._storage.incr(item.key_for(limit.key), item.get_expiry(), amount=-1)

    def _retry_after(self, item: RateLimitItem, limit: Limit) -> int:
        reset_at = self._strategy.get_window_stats(item, limit.key).reset_time
        return max(1, min(limit.per_seconds, math.ceil(reset_at - time.time())))

    def _storage_failed(self, exc: StorageError) -> None:
        with self._state_lock:
            first = not self._down
            self._down = True
            self._retry_at = time.monotonic() + self._outage_retry_s
        if first:
            logger.warning(
                "rate-limit storage at %s is unreachable; NOT rate limiting until it recovers: %s",
                self._where,
                exc,
            )

    def _storage_recovered(self) -> None:
        with self._state_lock:
            was_down, self._down = self._down, False
        if was_down:
            logger.warning("rate-limit storage at %s is reachable again; rate limiting resumed", self._where)


def build_rate_limiter(redis_url: str | None) -> RateLimiter:
    """memory:// when redis_url is None, else that Redis URL (redis://host:port/db)."""
    return RateLimiter(redis_url or "memory://")


def _item(limit: Limit) -> RateLimitItem:
    return RateLimitItemPerSecond(limit.amount, limit.per_seconds, namespace=_NAMESPACE)


def _storage_options(scheme: str, prefix: str) -> dict[str, Any]:
    """Options for ``storage_from_string``: errors wrapped as StorageError (what fail-open catches); for Redis
    the key prefix and short timeouts with a single immediate retry (a pooled connection may be stale)."""
    options: dict[str, Any] = {"wrap_exceptions": True}
    if scheme in _REDIS_SCHEMES:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        options |= {
            "key_prefix": prefix,
            "socket_timeout": _REDIS_TIMEOUT_S,
            "socket_connect_timeout": _REDIS_TIMEOUT_S,
            "retry": Retry(NoBackoff(), 1),
        }
    return options


def _redacted(uri: str) -> str:
    """The URI without its password, for logs and errors."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
