"""Graceful shutdown for chat streams: on SIGTERM, answers in flight get ``shutdown_grace_s`` to finish.

uvicorn already stops accepting connections on SIGTERM and waits for the responses in flight. An answer
can stream for as long as the LLM's total timeout (minutes), longer than an orchestrator waits before
SIGKILL (Kubernetes: 30 s), and a killed process leaves the visitor with a cut stream and no stored
reply. So ragbot puts its own handler in front of uvicorn's: it tells the chat service to drain
(``ChatService.drain``), so answers still streaming when the grace period ends stop with a
``server_shutting_down`` error event and are stored as partial answers; then uvicorn's handler runs as
before. ``ragbot serve`` gives uvicorn a graceful timeout a little longer than the grace period, for
those last events to go out.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from ragbot.runtime import Runtime

log = logging.getLogger(__name__)

__all__ = ["SIGNALS", "drain_on_signals"]

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def drain_on_signals(runtime: Runtime) -> Callable[[], None]:
    """Chain a drain in front of the current SIGTERM and SIGINT handlers (uvicorn's); returns a function
    that puts the previous handlers back. Signals are only caught on the main thread, so a server run in
    a thread (tests) gets a no-op."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    grace_s = runtime.settings.shutdown_grace_s
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        service = vars(runtime).get("chat_service")  # not built yet: no turn is in flight
        if service is not None:
            service.drain(time.monotonic() + grace_s)
        log.info("shutting down: answers in flight have %g s to finish", grace_s)
        chained = previous.get(signum)
        if callable(chained):
            chained(signum, frame)
        elif chained == signal.SIG_DFL:  # nobody else handles it: stop as the default would
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    for sig in SIGNALS:
        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, old)

    return restore
