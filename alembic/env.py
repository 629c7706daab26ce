"""Alembic entry point for the ``alembic`` command (``alembic upgrade head``, ``alembic revision
--autogenerate -m ...``, ``alembic check``), run from the repository root.

The revisions and the environment ship inside the package, in ``ragbot/db/migrations``, so an installed
ragbot upgrades its own database on first use; this file runs the same environment for developers.
"""

from ragbot.db.migrations.environment import run_env

run_env()
