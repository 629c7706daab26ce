"""Fusion scales: each retriever's usual score spread per bot, learned beside its ``top_z`` sums.

``fusion.zscore_exact`` now divides each retriever's scores by that usual spread instead of each query's
own (benchmarks/FUSION.md, fourth study). Stored sums have no spread columns to go with them, so they are
dropped, as in 0010: each bot fuses with equal weights and per-query spreads again until it has seen
``min_queries`` hybrid queries (40 by default).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26 17:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = tuple(
    f"{retriever}_{kind}_sum" for kind in ("mean", "square") for retriever in ("sparse", "dense", "bm25")
)


def upgrade() -> None:
    op.execute(sa.text("DELETE FROM fusion_calibrations"))
    with op.batch_alter_table("fusion_calibrations") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.Float(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("fusion_calibrations") as batch:
        for name in COLUMNS:
            batch.drop_column(name)
