"""Engine and migration plumbing, checked without a database server (SQLite files and memory only)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from ragbot.db.models import Base, Bot
from ragbot.db.session import (
    SchemaTooNewError,
    alembic_config,
    make_engine,
    make_session_factory,
    migrate,
    migrations_dir,
    normalize_url,
    session_scope,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u:p%40ss@db:5432/ragbot", "postgresql+psycopg"),
        ("postgres://u:p%40ss@db:5432/ragbot", "postgresql+psycopg"),
        ("postgresql+psycopg://u:p%40ss@db:5432/ragbot", "postgresql+psycopg"),
        ("sqlite:///data/ragbot.db", "sqlite"),
    ],
)
def test_urls_map_to_the_supported_drivers(url: str, driver: str) -> None:
    parsed = normalize_url(url)
    assert parsed.drivername == driver
    if "postgres" in url:
        assert (parsed.password, parsed.host, parsed.database) == ("p@ss", "db", "ragbot")


def test_postgres_engine_is_lazy_and_pre_pings() -> None:
    engine = make_engine("postgresql://nobody@127.0.0.1:9/none")  # nothing listens there: must not connect
    assert engine.dialect.driver == "psycopg"
    assert engine.pool._pre_ping


def _pragma(engine: Engine, name: str) -> object:
    with engine.connect() as connection:
        return connection.exec_driver_sql(f"PRAGMA {name}").scalar()


def test_sqlite_file_gets_foreign_keys_wal_and_busy_timeout(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'not' / 'yet' / 'there.db'}", busy_timeout_s=1.5)
    try:
        assert _pragma(engine, "foreign_keys") == 1
        assert _pragma(engine, "journal_mode") == "wal"
        assert _pragma(engine, "busy_timeout") == 1500
        assert (tmp_path / "not" / "yet" / "there.db").is_file()
    finally:
        engine.dispose()


def test_sqlite_memory_database_is_one_database_for_all_threads() -> None:
    engine = make_engine("sqlite://")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
        connection.execute(text("INSERT INTO t VALUES (42)"))
    seen: list[object] = []

    def read() -> None:
        with engine.connect() as connection:
            seen.append(connection.execute(text("SELECT x FROM t")).scalar())

    worker = threading.Thread(target=read)
    worker.start()
    worker.join()
    assert seen == [42]
    assert _pragma(engine, "foreign_keys") == 1


def test_migrate_builds_an_in_memory_schema_and_session_scope_commits_or_rolls_back() -> None:
    engine = make_engine("sqlite://")
    migrate(engine)
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    assert _pragma(engine, "foreign_keys") == 1  # restored after migrating with it off
    sessions = make_session_factory(engine)

    with session_scope(sessions) as s:
        s.add(Bot(id="kept", name="kept"))

    def write_then_fail() -> None:
        with session_scope(sessions) as s:
            s.add(Bot(id="dropped", name="dropped"))
            s.flush()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_then_fail()
    with session_scope(sessions) as s:
        bot = s.get_one(Bot, "kept")
        assert s.get(Bot, "dropped") is None
    assert bot.name == "kept"  # still readable after commit: expire_on_commit is off


def test_migration_history_is_linear_and_self_contained(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # found from the package, not the working directory
    scripts = ScriptDirectory.from_config(alembic_config())
    assert len(scripts.get_heads()) == 1, "two migration heads: add a merge revision (alembic merge heads)"
    revisions = list(scripts.walk_revisions())
    assert revisions[-1].down_revision is None
    for script in (migrations_dir() / "versions").glob("*.py"):
        # Migrations are frozen history: importing today's models would change what an old one does.
        assert "ragbot" not in script.read_text(encoding="utf-8"), script.name


def test_the_alembic_command_and_migrate_share_one_revision_history() -> None:
    repository = Path(__file__).resolve().parents[2]
    command_line = ScriptDirectory.from_config(Config(str(repository / "alembic.ini")))
    packaged = ScriptDirectory.from_config(alembic_config())
    assert [s.path for s in command_line.walk_revisions()] == [s.path for s in packaged.walk_revisions()]


def test_a_database_from_a_newer_release_is_refused_clearly() -> None:
    engine = make_engine("sqlite://")
    migrate(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'from_the_future'"))
    with pytest.raises(SchemaTooNewError, match="from_the_future"):
        migrate(engine)
