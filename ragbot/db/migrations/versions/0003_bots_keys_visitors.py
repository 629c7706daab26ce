"""Bots get their settings, admin API keys and a settings audit appear, conversations get their visitor.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 05:20:00.000000
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: New NOT NULL columns of ``bots``, with the value existing rows get.
_BOT_COLUMNS: list[tuple[str, sa.types.TypeEngine[Any], str | None]] = [
    ("title", sa.String(length=200), ""),
    ("welcome_message", sa.Text(), ""),
    ("starter_questions", sa.JSON(), "[]"),
    ("accent_color", sa.String(length=7), "#2563eb"),
    ("decline_message", sa.Text(), ""),
    ("language_policy", sa.String(length=16), "match"),
    ("allowed_origins", sa.JSON(), "[]"),
]
_NULLABLE_BOT_COLUMNS: list[tuple[str, sa.types.TypeEngine[Any]]] = [
    ("llm_model", sa.String(length=200)),
    ("llm_fallbacks", sa.JSON()),
    ("min_relevance", sa.Float()),
    ("public_key", sa.String(length=64)),
    ("rate_visitor_per_minute", sa.Integer()),
    ("rate_ip_per_minute", sa.Integer()),
    ("daily_message_budget", sa.Integer()),
    ("updated_at", sa.DateTime(timezone=True)),
    ("updated_by", sa.String(length=200)),
]


def upgrade() -> None:
    for name, type_, default in _BOT_COLUMNS:
        op.add_column("bots", sa.Column(name, type_, nullable=False, server_default=default))
    for name, type_ in _NULLABLE_BOT_COLUMNS:
        op.add_column("bots", sa.Column(name, type_, nullable=True))
    op.create_index("uq_bots_public_key", "bots", ["public_key"], unique=True)

    op.add_column("conversations", sa.Column("visitor_id", sa.String(length=64), nullable=True))
    op.create_index("ix_conversations_bot_visitor", "conversations", ["bot_id", "visitor_id"], unique=False)

    op.create_table(
        "bot_audit",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("bot_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bot_audit")),
    )
    op.create_index(op.f("ix_bot_audit_bot_id"), "bot_audit", ["bot_id"], unique=False)

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("bot_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["bot_id"], ["bots.id"], name=op.f("fk_api_keys_bot_id_bots"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_api_keys_bot_id"), "api_keys", ["bot_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_api_keys_bot_id"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_index(op.f("ix_bot_audit_bot_id"), table_name="bot_audit")
    op.drop_table("bot_audit")
    op.drop_index("ix_conversations_bot_visitor", table_name="conversations")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("visitor_id")
    op.drop_index("uq_bots_public_key", table_name="bots")
    with op.batch_alter_table("bots") as batch:
        for name, _type, _default in reversed(_BOT_COLUMNS):
            batch.drop_column(name)
        for name, _type in reversed(_NULLABLE_BOT_COLUMNS):
            batch.drop_column(name)
