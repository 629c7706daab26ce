"""Wake-ups for conversation streams: "conversation X has new events".

The events themselves are rows (``ragbot.db.events``), so a stream never depends on a notification to be
correct, only to be prompt: a lost one is caught by the next timed re-read. Across processes the
wake-ups travel through PostgreSQL ``LISTEN/NOTIFY`` or Redis pub/sub; each process runs one listener
thread that hands them to its local waiters. In one process (the embedded default) they stay in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import defaultdict
from typing import Any, Protocol

log = logging.getLogger(__name__)

__all__ = ["EventBus", "LocalWaiters", "MemoryBus", "PostgresBus", "RedisBus", "Subscription", "build_bus"]

CHANNEL = "ragbot_events"


class EventBus(Protocol):
    def publish(self, conversation_id: str) -> None:
        """Call after the transaction that added the events committed."""
        ...

    def subscribe(self, conversation_id: str) -> Subscription:
        """Register now, wait later (inside a running event loop)."""
        ...

    def close(self) -> None: ...


class Subscription:
    """One stream's interest in one conversation, registered before it reads, so a wake-up that lands
    between its read and its wait is not lost."""

    def __init__(self, waiters: LocalWaiters, conversation_id: str) -> None:
        self._waiters = waiters
        self._conversation_id = conversation_id
        self._entry = (asyncio.get_running_loop(), asyncio.Event())
        waiters.add(conversation_id, self._entry)

    async def wait(self, timeout: float) -> bool:
        """True when woken (since the last wait) before ``timeout`` seconds passed."""
        event = self._entry[1]
        try:
            await asyncio.wait_for(event.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            event.clear()

    def close(self) -> None:
        self._waiters.discard(self._conversation_id, self._entry)


class LocalWaiters:
    """Streams of this process waiting on a conversation; ``notify`` may come from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = defaultdict(set)

    def add(self, conversation_id: str, entry: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        with self._lock:
            self._waiting[conversation_id].add(entry)

    def discard(self, conversation_id: str, entry: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        with self._lock:
            waiting = self._waiting.get(conversation_id)
            if waiting is not None:
                waiting.discard(entry)
                if not waiting:
                    del self._waiting[conversation_id]

    def notify(self, conversation_id: str) -> None:
        with self._lock:
            waiting = list(self._waiting.get(conversation_id, ()))
        for loop, event in waiting:
            with contextlib.suppress(RuntimeError):  # that loop is closed: its stream is gone
                loop.call_soon_threadsafe(event.set)


class MemoryBus:
    """One process: a publish wakes this process's streams directly."""

    def __init__(self) -> None:
        self.waiters = LocalWaiters()

    def publish(self, conversation_id: str) -> None:
        self.waiters.notify(conversation_id)

    def subscribe(self, conversation_id: str) -> Subscription:
        return Subscription(self.waiters, conversation_id)

    def close(self) -> None:
        pass


class _RelayBus:
    """Publishes to a shared channel and runs one listener thread that relays what arrives (its own
    messages included) to the local waiters; the listener reconnects after failures."""

    name = "relay"

    def __init__(self) -> None:
        self.waiters = LocalWaiters()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ragbot-{self.name}-listener", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Whether the listener is subscribed (tests, and readiness)."""
        return self._ready.wait(timeout)

    def subscribe(self, conversation_id: str) -> Subscription:
        return Subscription(self.waiters, conversation_id)

    def publish(self, conversation_id: str) -> None:
        try:
            self._send(conversation_id)
        except Exception as exc:  # the rows are written; readers catch up on their next re-read
            log.warning(
                "%s bus: publish failed (%s); streams will catch up on their next re-read", self.name, exc
            )
            self.waiters.notify(conversation_id)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._listen()
                backoff = 0.5
            except Exception as exc:
                self._ready.clear()
                if self._stop.is_set():
                    return
                log.warning("%s bus: listener lost its connection (%s); reconnecting", self.name, exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _send(self, conversation_id: str) -> None:
        raise NotImplementedError

    def _listen(self) -> None:
        raise NotImplementedError


class PostgresBus(_RelayBus):
    """``NOTIFY ragbot_events, '<conversation id>'``; one ``LISTEN`` connection per process, and one kept
    open for sending.

    Every visitor message publishes before its answer starts: a connection opened per ``NOTIFY`` (a new
    server process each time) cost more than the rest of storing the message under load.
    """

    name = "postgres"

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._send_lock = threading.Lock()
        self._sender: Any = None  # a psycopg connection, opened on the first publish
        super().__init__()

    def _send(self, conversation_id: str) -> None:
        import psycopg

        with self._send_lock:
            for attempt in (1, 2):  # a connection the server closed (a restart) is replaced once
                if self._sender is None or self._sender.closed:
                    self._sender = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=3)
                try:
                    self._sender.execute("SELECT pg_notify(%s, %s)", (CHANNEL, conversation_id))
                    return
                except psycopg.OperationalError:
                    self._sender.close()
                    self._sender = None
                    if attempt == 2:
                        raise

    def close(self) -> None:
        super().close()
        with self._send_lock:
            if self._sender is not None:
                self._sender.close()
                self._sender = None

    def _listen(self) -> None:
        import psycopg

        with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            self._ready.set()
            while not self._stop.is_set():
                for notify in conn.notifies(timeout=1.0):
                    self.waiters.notify(notify.payload)


class RedisBus(_RelayBus):
    """``PUBLISH ragbot_events <conversation id>``; one subscription per process."""

    name = "redis"

    def __init__(self, url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        self._url = url
        super().__init__()

    def _send(self, conversation_id: str) -> None:
        self._client.publish(CHANNEL, conversation_id)

    def _listen(self) -> None:
        import redis

        client = redis.Redis.from_url(self._url, socket_connect_timeout=2, socket_timeout=5)
        pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(CHANNEL)
            self._ready.set()
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=1.0)
                if message and message.get("type") == "message":
                    data = message["data"]
                    self.waiters.notify(data.decode() if isinstance(data, bytes) else str(data))
        finally:
            pubsub.close()
            client.close()

    def close(self) -> None:
        super().close()
        self._client.close()


def build_bus(kind: str, *, database_url: str, redis_url: str | None) -> EventBus:
    """``auto``: Redis when configured, else PostgreSQL when that is the database, else memory."""
    if kind == "auto":
        if redis_url:
            kind = "redis"
        elif database_url.startswith("postgresql"):
            kind = "postgres"
        else:
            kind = "memory"
    if kind == "memory":
        return MemoryBus()
    if kind == "redis":
        if not redis_url:
            raise ValueError("RAGBOT_EVENTS_BUS=redis needs RAGBOT_REDIS_URL")
        return RedisBus(redis_url)
    if kind == "postgres":
        from sqlalchemy import make_url

        url = make_url(database_url)
        if not url.drivername.startswith("postgresql"):
            raise ValueError("RAGBOT_EVENTS_BUS=postgres needs a PostgreSQL RAGBOT_DATABASE_URL")
        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        return PostgresBus(conninfo)
    raise ValueError(f"unknown RAGBOT_EVENTS_BUS {kind!r}: auto, memory, postgres or redis")
