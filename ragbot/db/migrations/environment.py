"""The Alembic environment: which database, which options, and the safety rules every upgrade follows.

The database is, in order: the engine ``migrate`` hands over in ``config.attributes["engine"]``,
``sqlalchemy.url`` from the Alembic config, or ragbot's settings. Engines come from ``make_engine``, so
migrations see the same SQLite pragmas and psycopg driver as the application.

* The whole upgrade is one transaction taken under a lock (``BEGIN IMMEDIATE`` on SQLite, an advisory
  lock on PostgreSQL): processes starting together on a fresh database do not both create the tables,
  and a failed migration leaves the previous schema, not half of the new one.
* On SQLite, foreign keys are off while migrating: batch mode rebuilds a table by copying it and
  dropping the original, and with enforcement on that drop would cascade-delete every child row.
  ``PRAGMA foreign_key_check`` runs before enforcement is restored.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection, Engine, TypeDecorator, text

from ragbot.config import get_settings
from ragbot.db.models import Base
from ragbot.db.session import make_engine, normalize_url

#: Key of the PostgreSQL advisory lock that serializes concurrent upgrades (any fixed 64-bit number).
MIGRATION_LOCK_KEY = 0x7261_6762_6F74  # "ragbot" in ASCII


def run_env() -> None:
    """What an ``env.py`` does: run the pending migrations online, or print their SQL offline."""
    config = context.config
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    if context.is_offline_mode():
        _run_offline(_database_url())
        return
    engine: Engine | None = config.attributes.get("engine")
    if engine is not None:
        _run_online(engine)
        return
    engine = make_engine(_database_url())
    try:
        _run_online(engine)
    finally:
        engine.dispose()


def _database_url() -> str:
    return context.config.get_main_option("sqlalchemy.url") or get_settings().resolved_database_url


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render the models' type decorators (e.g. ``UTCDateTime``) as their plain SQL type.

    Migration scripts then never import application code, which may change after they are written.
    """
    if type_ == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl!r}"
    return False


def _options(dialect_name: str) -> dict[str, Any]:
    return {
        "target_metadata": Base.metadata,
        "compare_type": True,
        "render_item": _render_item,
        "render_as_batch": dialect_name == "sqlite",  # SQLite alters tables by rebuilding them
        "transactional_ddl": True,  # SQLite supports it too: one transaction per upgrade
    }


def _run_offline(url: str) -> None:
    parsed = normalize_url(url)
    context.configure(
        url=parsed,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **_options(parsed.get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online(engine: Engine) -> None:
    with engine.connect() as connection, _sqlite_foreign_keys_off(connection):
        context.configure(connection=connection, **_options(connection.dialect.name))
        with context.begin_transaction():
            _lock(connection)
            context.run_migrations()


@contextmanager
def _sqlite_foreign_keys_off(connection: Connection) -> Iterator[None]:
    if connection.dialect.name != "sqlite":
        yield
        return
    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")  # a no-op inside a transaction: none is open
    connection.commit()
    try:
        yield
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
        if broken:
            raise RuntimeError(f"migration left rows with dangling foreign keys: {broken[:5]}")
    finally:
        connection.rollback()
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.commit()


def _lock(connection: Connection) -> None:
    """Serialize concurrent upgrades; taken inside the migration transaction, released by its end."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
