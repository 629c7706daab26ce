"""Durable job queue: ingest jobs carry what to run and a worker's lease; uploaded files wait in
job_files; sources get a re-sync schedule.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 11:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ingest_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("spec", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column(
                "run_after",
                sa.DateTime(timezone=True),
                nullable=False,
                server_default=sa.func.current_timestamp(),
            )
        )
        batch_op.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("lease_token", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("worker", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("source_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_ingest_jobs_due", ["status", "run_after"], unique=False)
        batch_op.create_unique_constraint("uq_ingest_jobs_source_slot", ["source_id", "scheduled_for"])
    # Jobs the old in-process runner left queued or running were cut off with their process (and an
    # upload's files with it): they cannot be resumed.
    op.execute(
        "UPDATE ingest_jobs SET status = 'failed', "
        "error = 'interrupted: the server stopped before the job finished; start it again' "
        "WHERE status IN ('queued', 'running')"
    )

    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.add_column(sa.Column("every_s", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("next_sync_at", sa.DateTime(timezone=True), nullable=True))

    op.create_table(
        "job_files",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("bot_id", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("filename", sa.Text(), nullable=False),
        sa.Column("content_type", sa.String(length=200), nullable=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["bot_id"], ["bots.id"], name=op.f("fk_job_files_bot_id_bots")),
        sa.ForeignKeyConstraint(
            ["job_id"], ["ingest_jobs.id"], name=op.f("fk_job_files_job_id_ingest_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_files")),
    )
    with op.batch_alter_table("job_files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_files_job_id"), ["job_id"], unique=False)


def downgrade() -> None:
    op.drop_table("job_files")
    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.drop_column("next_sync_at")
        batch_op.drop_column("every_s")
    with op.batch_alter_table("ingest_jobs", schema=None) as batch_op:
        batch_op.drop_constraint("uq_ingest_jobs_source_slot", type_="unique")
        batch_op.drop_index("ix_ingest_jobs_due")
        for column in ("scheduled_for", "source_id", "worker", "lease_token", "lease_until", "run_after"):
            batch_op.drop_column(column)
        batch_op.drop_column("attempts")
        batch_op.drop_column("spec")
