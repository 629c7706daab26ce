"""Open chat streams do not hold the server's shared worker threads.

A streamed turn blocks for its whole length (retrieval, the LLM's tokens). If each open stream held one
of the thread pool's 40 tokens while it waited, the 41st visitor's stream, and every other request that
needs a worker thread (sessions, health checks), would queue behind them. Each turn runs on a thread of
its own (``_TurnThread``): with more streams open than the pool has threads, the pool still answers at
once, every stream still ends with its own events, and a stream the client drops closes its turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Generator

import anyio.to_thread
import pytest
from starlette.concurrency import run_in_threadpool

from ragbot.api.routes.chat import _sse_body
from ragbot.types import ChatEvent, EventType

pytestmark = pytest.mark.unit


def _turn(n: int, release: threading.Event, closed: list[int]) -> Generator[ChatEvent, None, None]:
    try:
        release.wait(timeout=30)  # the LLM thinking
        yield ChatEvent(EventType.DELTA, {"text": f"answer {n}"})
        yield ChatEvent(EventType.DONE, {"status": "complete"})
    except GeneratorExit:
        closed.append(n)
        raise


def _start(n: int) -> ChatEvent:
    return ChatEvent(EventType.START, {"conversation_id": f"c{n}"})


def test_more_open_streams_than_pool_threads_leave_the_pool_free() -> None:
    async def scenario() -> list[str]:
        streams = int(anyio.to_thread.current_default_thread_limiter().total_tokens) + 10
        release = threading.Event()
        bodies = [_sse_body(_start(n), _turn(n, release, [])) for n in range(streams)]
        firsts = [await body.__anext__() for body in bodies]  # every stream is open, its turn waiting
        assert all(f.startswith("event: start") for f in firsts)
        readers = [asyncio.ensure_future(_rest(body)) for body in bodies]
        await asyncio.sleep(0.2)

        answered = await asyncio.wait_for(run_in_threadpool(lambda: "pool answers"), timeout=5)

        release.set()
        outputs = await asyncio.wait_for(asyncio.gather(*readers), timeout=30)
        assert all("answer" in out and out.rstrip().endswith("}") for out in outputs)
        return [answered]

    assert asyncio.run(scenario()) == ["pool answers"]


async def _rest(body: AsyncIterator[str]) -> str:
    return "".join([chunk async for chunk in body])


def test_a_dropped_stream_closes_its_turn() -> None:
    async def scenario() -> list[int]:
        release, closed = threading.Event(), list[int]()
        body = _sse_body(_start(1), _turn(1, release, closed))
        assert (await body.__anext__()).startswith("event: start")
        pending = asyncio.ensure_future(body.__anext__())
        await asyncio.sleep(0.1)
        pending.cancel()  # the server stops reading: the client went away
        await asyncio.sleep(0.05)  # the cancellation runs the stream's cleanup, which stops the turn...
        release.set()  # ...before the LLM's next token, so the turn is closed, not run to its end
        with contextlib.suppress(asyncio.CancelledError):
            await pending  # the stream's cleanup waits for its turn to be closed
        return closed

    assert asyncio.run(scenario()) == [1]
