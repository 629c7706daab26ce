"""Invariants of the SQL models that every query and migration relies on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from ragbot.db.models import Base, UTCDateTime

pytestmark = pytest.mark.unit


#: Tables whose rows are not a bot's content: the bots themselves, the audit trail (it outlives a deleted
#: bot, so it has no foreign key) and admin keys (an unscoped key belongs to no bot).
_NOT_TENANT_ROWS = {"bots", "bot_audit", "api_keys"}


@pytest.mark.parametrize(
    "table", [t for t in Base.metadata.sorted_tables if t.name not in _NOT_TENANT_ROWS], ids=str
)
def test_every_row_belongs_to_a_bot(table: object) -> None:
    column = table.c.bot_id  # type: ignore[attr-defined]
    assert not column.nullable
    assert {fk.target_fullname for fk in column.foreign_keys} == {"bots.id"}


def test_the_audit_trail_and_scoped_keys_still_name_their_bot() -> None:
    tables = Base.metadata.tables
    assert not tables["bot_audit"].c.bot_id.nullable and not tables["bot_audit"].c.bot_id.foreign_keys
    assert {fk.target_fullname for fk in tables["api_keys"].c.bot_id.foreign_keys} == {"bots.id"}


def test_every_constraint_and_index_has_a_name() -> None:
    """Unnamed constraints cannot be dropped or altered by a later migration (SQLite batch mode above all)."""
    for table in Base.metadata.sorted_tables:
        names = [c.name for c in table.constraints] + [i.name for i in table.indexes]
        assert all(names), f"unnamed constraint or index on {table.name}: {names}"


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()], ids=["sqlite", "postgresql"])
def test_timestamps_are_stored_in_utc_and_read_back_aware(dialect: object) -> None:
    column = UTCDateTime()
    paris = datetime(2024, 6, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert column.process_bind_param(paris, dialect) == datetime(2024, 6, 1, 12, 0, tzinfo=UTC)  # type: ignore[arg-type]
    assert column.process_bind_param(None, dialect) is None  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="naive datetime"):
        column.process_bind_param(datetime(2024, 6, 1, 12, 0), dialect)  # type: ignore[arg-type]
    # SQLite hands back naive UTC values, PostgreSQL aware ones in the session's zone: both become UTC.
    naive = datetime(2024, 6, 1, 12, 0)
    assert column.process_result_value(naive, dialect) == datetime(2024, 6, 1, 12, 0, tzinfo=UTC)  # type: ignore[arg-type]
    result = column.process_result_value(paris, dialect)  # type: ignore[arg-type]
    assert result == paris
    assert result is not None
    assert result.tzinfo is UTC
