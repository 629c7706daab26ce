"""The request id: taken from ``X-Request-ID`` when it is a plain token, else made here, and kept in a
context variable so every log record of the request carries it.

A context variable (not a thread-local) because a request runs across the event loop and worker threads:
Starlette's ``run_in_threadpool`` (sync routes, the chat stream's steps) copies the context into the
thread, so records logged there carry the id too. Threads started without a copied context (a
``ThreadPoolExecutor.submit``) do not: pass ``contextvars.copy_context().run`` where it matters.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["REQUEST_ID_HEADER", "accept_request_id", "bound_request_id", "current_request_id"]

REQUEST_ID_HEADER = "X-Request-ID"

#: What a caller's id may look like: UUIDs, hex, ULIDs, a proxy's ``Root=1-...`` trace id. Anything
#: else (too long, spaces, control characters that could forge log lines) is replaced, not refused.
_ACCEPTED = re.compile(r"[A-Za-z0-9._:=+/-]{1,128}")

_request_id: ContextVar[str | None] = ContextVar("ragbot_request_id", default=None)


def current_request_id() -> str | None:
    return _request_id.get()


def accept_request_id(given: str | None) -> str:
    """The caller's id when it is a plain token, else a new random one (32 hex digits)."""
    if given and _ACCEPTED.fullmatch(given):
        return given
    return uuid.uuid4().hex


@contextmanager
def bound_request_id(request_id: str | None) -> Iterator[None]:
    """Run a block (a job, a delivery) under ``request_id``, restoring the previous one after."""
    token = _request_id.set(request_id)
    try:
        yield
    finally:
        _request_id.reset(token)


def set_request_id(request_id: str | None) -> None:
    """For the ASGI middleware: the request's task owns its context, so there is nothing to restore."""
    _request_id.set(request_id)
