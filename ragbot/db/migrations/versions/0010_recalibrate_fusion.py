"""Forget learned fusion statistics: ``top_z`` now reads a list's top 3, not its top 10, so sums stored
under the old statistic would mix two measures. Each bot fuses with equal weights again until it has
seen ``min_queries`` hybrid queries (40 by default), then with weights learned on the new statistic.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(sa.text("DELETE FROM fusion_calibrations"))


def downgrade() -> None:
    """Nothing to restore: the old sums are gone, and the old code relearns them from its own queries."""
