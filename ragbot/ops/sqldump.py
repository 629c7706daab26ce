"""Every ragbot table as JSON lines read from one consistent snapshot, and loaded back into an empty
database of either backend.

Why a portable dump rather than ``pg_dump`` or a copy of the SQLite file: one format and one code path for
both backends, tested on both, and an archive of the embedded default restores into PostgreSQL (the way to
move a deployment off SQLite). Rows are read and written through the models' own column types, so aware
timestamps, JSON and floats come back as they were on either backend.

Consistency: on SQLite the database is first copied with SQLite's online backup API (a consistent copy,
taken while other processes may be writing) and the copy is read; on PostgreSQL every table is read in one
``REPEATABLE READ`` transaction, that is from one snapshot.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Column, Connection, Engine, Table, TypeDecorator, false, func, select
from sqlalchemy.exc import SQLAlchemyError

__all__ = [
    "dump_table",
    "load_table",
    "nonempty_tables",
    "reset_sequences",
    "schema_heads",
    "snapshot",
    "tables",
]


def tables() -> list[Table]:
    """The schema's tables, parents before children (the order rows can be inserted in)."""
    from ragbot.db.models import Base

    return list(Base.metadata.sorted_tables)


def schema_heads(connection: Connection) -> list[str]:
    """The Alembic revision(s) the database is at."""
    from alembic.runtime.migration import MigrationContext

    return sorted(MigrationContext.configure(connection).get_current_heads())


@contextmanager
def snapshot(engine: Engine, scratch: Path) -> Iterator[Connection]:
    """A connection that sees one consistent state of the whole database (see the module docstring);
    ``scratch``: a directory for SQLite's copy, removed by the caller."""
    if engine.dialect.name != "sqlite":
        with engine.connect() as connection:
            reader = connection.execution_options(isolation_level="REPEATABLE READ")
            with reader.begin():
                yield reader
        return
    from ragbot.db.session import make_engine

    copy = scratch / "database-snapshot.sqlite"
    raw = engine.raw_connection()
    try:
        source = raw.driver_connection
        if not isinstance(source, sqlite3.Connection):  # pragma: no cover - pysqlite is the only driver
            raise TypeError(f"unexpected SQLite driver connection {type(source)!r}")
        target = sqlite3.connect(copy)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        raw.close()
    copied = make_engine(f"sqlite:///{copy}")
    try:
        with copied.connect() as connection:
            yield connection
    finally:
        copied.dispose()


def _encode(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot store a {type(value).__name__} in a backup")


def _decoder(column: Column[Any]) -> Callable[[Any], Any] | None:
    """How to turn the JSON form of this column's values back into what its type binds."""
    engine_type: Any = column.type
    while isinstance(engine_type, TypeDecorator):  # e.g. UTCDateTime: decode for the type it wraps
        engine_type = engine_type.impl_instance
    try:
        python_type = engine_type.python_type
    except NotImplementedError:
        return None
    if python_type is datetime:
        return datetime.fromisoformat
    if python_type is date:
        return date.fromisoformat
    if python_type is bytes:
        return base64.b64decode
    if python_type is Decimal:
        return Decimal
    return None


def dump_table(connection: Connection, table: Table, out: IO[str]) -> int:
    """Write the table's rows, ordered by primary key, one JSON object a line; the rows written."""
    query = select(table).order_by(*table.primary_key.columns)
    rows = 0
    for row in connection.execution_options(yield_per=1000).execute(query):
        out.write(json.dumps(dict(row._mapping), default=_encode, ensure_ascii=False, separators=(",", ":")))
        out.write("\n")
        rows += 1
    return rows


def load_table(connection: Connection, table: Table, lines: Iterable[str], batch_size: int = 500) -> int:
    """Insert the rows ``dump_table`` wrote; the rows inserted. ``ValueError`` for a line that is not one."""
    decoders = {c.name: d for c in table.columns if (d := _decoder(c)) is not None}
    known = {c.name for c in table.columns}
    batch: list[dict[str, Any]] = []
    rows = 0
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not set(row) <= known:
                raise ValueError(f"columns {sorted(set(row) - known) if isinstance(row, dict) else row!r}")
            for name, decode in decoders.items():
                if row.get(name) is not None:
                    row[name] = decode(row[name])
        except (ValueError, TypeError) as exc:
            raise ValueError(f"table {table.name}, row {number}: not a row of this schema ({exc})") from None
        batch.append(row)
        if len(batch) >= batch_size:
            connection.execute(table.insert(), batch)
            rows += len(batch)
            batch = []
    if batch:
        connection.execute(table.insert(), batch)
        rows += len(batch)
    return rows


def nonempty_tables(connection: Connection) -> list[str]:
    """The schema's tables that hold at least one row."""
    found = []
    for table in tables():
        if connection.execute(select(func.count()).select_from(select(table).limit(1).subquery())).scalar():
            found.append(table.name)
    return found


def reset_sequences(connection: Connection) -> None:
    """After rows were inserted with their ids, move PostgreSQL's sequences past them (SQLite needs
    nothing: its next rowid follows the largest one)."""
    if connection.dialect.name != "postgresql":
        return
    for table in tables():
        column = table.autoincrement_column
        if column is None:
            continue
        next_id = func.coalesce(select(func.max(column)).scalar_subquery(), 0) + 1
        sequence = func.pg_get_serial_sequence(table.name, column.name)
        try:
            connection.execute(select(func.setval(sequence, next_id, false())))
        except SQLAlchemyError as exc:  # pragma: no cover - every autoincrement column has a sequence
            raise RuntimeError(f"cannot reset the id sequence of {table.name}.{column.name}: {exc}") from exc
