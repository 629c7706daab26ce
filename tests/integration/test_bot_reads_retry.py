"""Reading a bot waits out a database restart, as a chat turn's writes do.

The chat, search and widget-session routes read the bot before anything else; without a retry there, a
visitor writing during a PostgreSQL restart got ``503 database_unavailable`` and their message was never
stored, while a turn already under way waited the second or two and went on (seen once per run in
``benchmarks/load.py``'s restart fault). Connections are refused here through the engine's ``do_connect``
hook, the error the driver raises while the server restarts, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.exc import OperationalError

from ragbot.config import Settings
from ragbot.db.session import make_engine, make_session_factory, migrate
from ragbot.tenancy.bots import BotService

pytestmark = pytest.mark.integration

BOT = "helpdesk"


class Refusing:
    """Refuses the next ``times`` connections (``None``: every one) as a restarting server does."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.left: int | None = 0
        self.refused = 0
        event.listen(engine, "do_connect", self._connect)

    def _connect(self, *_: Any) -> None:
        if self.left is None or self.left > 0:
            self.refused += 1
            if self.left is not None:
                self.left -= 1
            raise self.engine.dialect.loaded_dbapi.OperationalError("connection refused (restarting)")

    def next(self, times: int | None) -> None:
        self.engine.dispose()  # no pooled connection left: the next read must connect
        self.left = times


@pytest.fixture
def deployment(database_url: str, tmp_path: Path) -> Iterator[tuple[BotService, Refusing, str]]:
    engine = make_engine(database_url)
    migrate(engine)
    bots = BotService(make_session_factory(engine), Settings(data_dir=tmp_path, db_retry_s=5.0))
    public_key = bots.ensure(BOT)["public_key"]
    yield bots, Refusing(engine), public_key
    engine.dispose()


def test_a_bot_read_waits_until_the_database_takes_connections_again(
    deployment: tuple[BotService, Refusing, str],
) -> None:
    bots, refusing, public_key = deployment
    refusing.next(2)
    profile = bots.profile(BOT)
    assert profile is not None and profile.id == BOT and refusing.refused == 2
    refusing.next(2)
    by_key = bots.profile_by_public_key(public_key)  # the widget's session route
    assert by_key is not None and by_key.id == BOT and refusing.refused == 4


def test_past_the_deadline_the_error_surfaces(
    deployment: tuple[BotService, Refusing, str], tmp_path: Path
) -> None:
    """The API maps it to 503 database_unavailable; nothing waits forever."""
    bots, refusing, _ = deployment
    impatient = BotService(bots._sessions, Settings(data_dir=tmp_path, db_retry_s=0.3))
    refusing.next(None)
    with pytest.raises(OperationalError):
        impatient.profile(BOT)
    assert refusing.refused >= 2  # it did try again before giving up
