"""The webhook inbox.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "inbox",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("event_key", sa.String(200), nullable=False),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("object_type", sa.String(50)),
        sa.Column("object_id", sa.String(100)),
        sa.Column("occurred_at", sa.String(32)),
        sa.Column("received_at", sa.String(32), nullable=False),
        sa.Column("payload", sa.LargeBinary),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("available_at", sa.String(32)),
        sa.Column("last_error", sa.Text),
        sa.Column("processed_at", sa.String(32)),
        sa.UniqueConstraint("source", "event_key", name="uq_inbox_source_event_key"),
    )
    op.create_index("ix_inbox_claim", "inbox", ["status", "available_at"])


def downgrade() -> None:
    op.drop_table("inbox")
