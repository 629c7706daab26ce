"""Units of work that outlive a database restart.

A PostgreSQL restart or failover closes every pooled connection and refuses new ones for a second or
two. Without a retry, each chat turn caught in that window loses its reply (or the visitor's message);
with one, the turn waits and carries on. Only failures that say the connection went away (or could not
be opened) are retried, and the whole unit of work runs again in a new transaction, so a retried block
must touch nothing but the database. tenacity drives the attempts::

    for attempt in retrying(settings.db_retry_s):
        with attempt, session_scope(factory) as s:
            ...
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import DBAPIError, OperationalError
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

log = logging.getLogger(__name__)

__all__ = ["is_transient", "retrying"]


def is_transient(exc: BaseException) -> bool:
    """The connection was lost (the driver says so) or could not be opened: worth another try."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    # raised while connecting, before any statement ran ("connection refused", "shutting down")
    return isinstance(exc, OperationalError) and exc.statement is None


def _log_retry(state: object) -> None:
    outcome = getattr(state, "outcome", None)
    exc = outcome.exception() if outcome is not None else None
    log.warning("database unavailable, retrying: %s", str(exc).splitlines()[0] if exc else "?")


def retrying(deadline_s: float) -> Retrying:
    """Attempts of one unit of work until it succeeds, fails for another reason, or ``deadline_s``
    passes (then the last error is raised)."""
    return Retrying(
        retry=retry_if_exception(is_transient),
        stop=stop_after_delay(deadline_s),
        wait=wait_exponential_jitter(initial=0.1, max=1.0),
        before_sleep=_log_retry,
        reraise=True,
    )
