"""Engines, sessions and schema upgrades for SQLite (the embedded default) and PostgreSQL.

The same models and queries run on both; what differs is confined to ``make_engine``:

* SQLite: foreign keys enforced (so ``ON DELETE CASCADE`` works), write-ahead log so readers never block
  the writer, a busy timeout so a second writer waits instead of failing, and connections usable from the
  API's worker threads. An in-memory database keeps one shared connection, or each thread would see its
  own empty database.
* PostgreSQL: psycopg 3 (``postgresql://`` URLs are mapped to it) and pre-ping, so a connection dropped
  by a server restart is replaced instead of failing the next request.

Keep write transactions short: on SQLite a write holds the database-wide lock until commit, so a turn
commits the visitor's message before the model runs and writes the answer in a second transaction.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from ragbot.config import get_settings

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "SchemaTooNewError",
    "alembic_config",
    "make_engine",
    "make_session_factory",
    "migrate",
    "migrations_dir",
    "normalize_url",
    "session_scope",
]

log = logging.getLogger(__name__)

#: Alembic runs a migration through module-level proxies (``alembic.context``, ``alembic.op``), so two
#: threads of one process must not migrate at once; other processes are held off by a database lock.
_MIGRATION_LOCK = threading.Lock()


class SchemaTooNewError(RuntimeError):
    """The database was migrated by a newer ragbot; this one would not know its tables."""


def normalize_url(url: str) -> URL:
    """Parse a database URL; bare ``postgresql://`` and Heroku-style ``postgres://`` go to psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _is_sqlite_memory(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def make_engine(url: str, *, busy_timeout_s: float | None = None) -> Engine:
    """Build an engine for ``url`` with the per-backend settings described in the module docstring.

    ``busy_timeout_s`` (SQLite only) defaults to ``Settings.database_busy_timeout_s``.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)

    timeout = get_settings().database_busy_timeout_s if busy_timeout_s is None else busy_timeout_s
    in_memory = _is_sqlite_memory(parsed)
    options: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": timeout}}
    if in_memory:
        options["poolclass"] = StaticPool
    elif not (parsed.database or "").startswith("file:"):
        Path(parsed.database or "").expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, **options)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            if not in_memory and cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                try:
                    cursor.execute("PRAGMA journal_mode=WAL")
                except sqlite3.OperationalError as exc:
                    # WAL is a property of the file: another process starting at the same moment holds
                    # the lock and is switching it; this connection works either way.
                    log.info("journal_mode=WAL not set on this connection: %s", exc)
        finally:
            cursor.close()

    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit, so a service can return rows it just wrote."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit when the block ends, roll back (and re-raise) when it raises."""
    with factory() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


# --------------------------------------------------------------------------- schema


def migrations_dir() -> Path:
    """The Alembic script folder inside the package (see ``ragbot.db.migrations``)."""
    return Path(__file__).resolve().parent / "migrations"


def alembic_config(engine: Engine | None = None) -> Config:
    """An Alembic config for code (tests, ``migrate``); with ``engine``, migrations run on that engine."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def migrate(url_or_engine: str | Engine) -> None:
    """Create or upgrade the schema to the newest revision; a no-op (one query) when already there.

    Commands and the API call it on first use, so nobody has to run ``alembic upgrade head`` by hand.
    Concurrent callers are safe: threads queue on a process lock, processes on a database lock (see
    ``ragbot.db.migrations.environment``).
    """
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    owned = isinstance(url_or_engine, str)
    engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    try:
        config = alembic_config(engine)
        scripts = ScriptDirectory.from_config(config)
        heads = set(scripts.get_heads())
        with engine.connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
        if current == heads:
            return
        unknown = current - {script.revision for script in scripts.walk_revisions()}
        if unknown:
            raise SchemaTooNewError(
                f"the database is at schema revision {sorted(unknown)}, which this ragbot does not know "
                f"(its newest is {sorted(heads)}): upgrade ragbot, or point it at another database"
            )
        log.info("upgrading database schema from %s to %s", sorted(current) or "empty", sorted(heads))
        with _MIGRATION_LOCK:
            command.upgrade(config, "head")
    finally:
        if owned:
            engine.dispose()
