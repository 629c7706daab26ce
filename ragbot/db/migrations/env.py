"""Alembic entry point for ``ragbot.db.session.migrate``; the logic is in ``environment``."""

from ragbot.db.migrations.environment import run_env

run_env()
