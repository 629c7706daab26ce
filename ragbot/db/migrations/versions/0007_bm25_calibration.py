"""BM25 joins SPLADE and the dense model in the hybrid: its ``top_z`` sum beside theirs.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("fusion_calibrations") as batch:
        batch.add_column(sa.Column("bm25_sum", sa.Float(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("fusion_calibrations") as batch:
        batch.drop_column("bm25_sum")
