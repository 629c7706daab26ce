"""The SQL ``CalibrationStore``: fusion calibration totals in the ``fusion_calibrations`` table.

It lives apart from ``ragbot.retrieval.calibration`` so retrieval stays free of SQL, and each call is its
own short transaction: a flush must not hold SQLite's write lock any longer than one upsert.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import astuple

from sqlalchemy.orm import Session

from ragbot.db import repositories as repo
from ragbot.retrieval.calibration import Totals

__all__ = ["SqlCalibrationStore"]


class SqlCalibrationStore:
    """``session_factory`` is any zero-argument callable returning a session (a ``sessionmaker``, or a
    lambda that builds the runtime's engine only when the first bot is loaded)."""

    def __init__(self, session_factory: Callable[[], Session]) -> None:
        self._session_factory = session_factory

    def load(self, bot_id: str) -> Totals | None:
        with self._session_factory() as session:
            row = repo.get_fusion_calibration(session, bot_id)
        return None if row is None else _totals(row)

    def add(self, bot_id: str, delta: Totals) -> Totals:
        with self._session_factory() as session, session.begin():
            totals = repo.add_fusion_observations(session, bot_id, astuple(delta))
        return _totals(totals)

    def reset(self, bot_id: str) -> None:
        with self._session_factory() as session, session.begin():
            repo.reset_fusion_calibration(session, bot_id)


def _totals(values: Sequence[float]) -> Totals:
    return Totals(int(values[0]), *values[1:])
