"""Operations on a whole deployment: backup and restore of the SQL database and the vector index together.

Nothing heavy is imported here; ``ragbot.ops.backup`` holds the entry points.
"""

from __future__ import annotations
