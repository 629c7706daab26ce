"""Fusion calibrations: per-bot ``top_z`` sums, shared by every process instead of kept in memory.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fusion_calibrations",
        sa.Column("bot_id", sa.String(length=64), nullable=False),
        sa.Column("queries", sa.Integer(), nullable=False),
        sa.Column("sparse_sum", sa.Float(), nullable=False),
        sa.Column("dense_sum", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["bot_id"], ["bots.id"], name=op.f("fk_fusion_calibrations_bot_id_bots")),
        sa.PrimaryKeyConstraint("bot_id", name=op.f("pk_fusion_calibrations")),
    )


def downgrade() -> None:
    op.drop_table("fusion_calibrations")
