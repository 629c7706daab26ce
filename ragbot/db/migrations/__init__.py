"""Schema migrations, shipped inside the package so any install of ragbot can upgrade its own database.

``versions/`` holds the Alembic revisions and ``environment.run_env`` the one Alembic environment. Two
thin ``env.py`` files call it: this folder's, for ``ragbot.db.session.migrate``, and the repository's
``alembic/env.py``, for developers running the ``alembic`` command (``alembic.ini`` points its
``version_locations`` here).
"""
