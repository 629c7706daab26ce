"""Job outputs: the file a finished background job produced (an analytics report's HTML), kept for
download until the job is deleted. Webhook deliveries remember the request that caused their event, so
their log lines carry its id.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26 14:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_outputs",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("bot_id", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.Text(), nullable=False),
        sa.Column("content_type", sa.String(length=200), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["ingest_jobs.id"], name=op.f("fk_job_outputs_job_id_ingest_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["bot_id"], ["bots.id"], name=op.f("fk_job_outputs_bot_id_bots")),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_job_outputs")),
    )
    op.create_index(op.f("ix_job_outputs_bot_id"), "job_outputs", ["bot_id"], unique=False)
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_id", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_column("request_id")
    op.drop_index(op.f("ix_job_outputs_bot_id"), table_name="job_outputs")
    op.drop_table("job_outputs")
