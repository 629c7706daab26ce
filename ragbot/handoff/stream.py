"""A conversation's live event stream as server-sent events, resumable with ``Last-Event-ID``.

It reads event rows after the client's last id, sends them, then sleeps until the bus wakes it (or a
timeout passes, so a lost wake-up costs seconds, not the message) and reads again. Comment lines keep
proxies from closing a quiet stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from ragbot.db import events as events_sql
from ragbot.db.session import session_scope
from ragbot.realtime.bus import EventBus

__all__ = ["event_stream", "sse_event"]

#: Re-read even without a wake-up this often (seconds), and send a comment line when nothing came.
POLL_S = 5.0
PING_EVERY = 3  # polls


def sse_event(event_id: int, type_: str, data: dict[str, Any]) -> str:
    return f"id: {event_id}\nevent: {type_}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"


async def event_stream(
    sessions: Any,
    bus: EventBus,
    bot_id: str,
    conversation_id: str,
    after_id: int,
    *,
    visitor_only: bool,
    is_disconnected: Callable[[], Any],
    max_seconds: float | None = None,
) -> AsyncIterator[str]:
    def read(after: int) -> list[tuple[int, str, dict[str, Any]]]:
        with session_scope(sessions) as s:
            rows = events_sql.events_after(s, bot_id, conversation_id, after, visitor_only=visitor_only)
            return [(r.id, r.type, dict(r.data)) for r in rows]

    last = after_id
    quiet = 0
    waited = 0.0
    subscription = bus.subscribe(conversation_id)  # before the first read: no wake-up falls in between
    try:
        yield "retry: 2000\n\n"
        while True:
            rows = await run_in_threadpool(read, last)
            for event_id, type_, data in rows:
                last = event_id
                yield sse_event(event_id, type_, data)
            if rows:
                quiet = 0
                continue  # there may be more than one page
            if await is_disconnected():
                return
            if max_seconds is not None and waited >= max_seconds:
                return
            if not await subscription.wait(POLL_S):
                waited += POLL_S
                quiet += 1
                if quiet >= PING_EVERY:
                    quiet = 0
                    yield ": ping\n\n"
    finally:
        subscription.close()
