"""Which database failures a unit of work retries: lost or refused connections, nothing else."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from ragbot.db.retry import is_transient, retrying


class _DriverError(Exception):
    pass


def test_lost_or_refused_connections_are_transient() -> None:
    refused = OperationalError(None, None, _DriverError("connection refused"))  # no statement ran
    lost = OperationalError("SELECT 1", {}, _DriverError("server closed"), connection_invalidated=True)
    assert is_transient(refused) and is_transient(lost)


def test_statement_errors_are_not_retried() -> None:
    locked = OperationalError("INSERT ...", {}, _DriverError("no such table: messages"))
    duplicate = IntegrityError("INSERT ...", {}, _DriverError("duplicate key"))
    assert not is_transient(locked) and not is_transient(duplicate)
    assert not is_transient(ValueError("bad"))


def test_a_unit_of_work_runs_again_until_the_database_answers() -> None:
    calls = []
    for attempt in retrying(5.0):
        with attempt:
            calls.append(1)
            if len(calls) < 3:
                raise OperationalError(None, None, _DriverError("the database system is shutting down"))
    assert len(calls) == 3


def _unit_of_work(deadline_s: float, error: Exception) -> None:
    for attempt in retrying(deadline_s):
        with attempt:
            raise error


def test_other_errors_and_the_deadline_raise_the_original_error() -> None:
    with pytest.raises(ValueError, match="bad"):
        _unit_of_work(5.0, ValueError("bad"))
    with pytest.raises(OperationalError, match="refused"):
        _unit_of_work(0.0, OperationalError(None, None, _DriverError("refused")))
