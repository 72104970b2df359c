"""Sync state: the lawful basis each subject's systems last agreed on, and the ledger of the
sync's own writes (echoes, refusals left to the person).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sync_state",
        sa.Column("subject_ref", sa.String(64), primary_key=True),
        sa.Column("lawful_basis", sa.String(30), nullable=False),
        sa.Column("agreed_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "sync_writes",
        sa.Column("system", sa.String(20), primary_key=True),
        sa.Column("object_type", sa.String(50), primary_key=True),
        sa.Column("record_id", sa.String(100), primary_key=True),
        sa.Column("field", sa.String(100), primary_key=True),
        sa.Column("value", sa.String(30), nullable=False),
        sa.Column("act_system", sa.String(20), nullable=False),
        sa.Column("act_record", sa.String(100), nullable=False),
        sa.Column("act_at", sa.String(32)),
        sa.Column("outcome", sa.String(30), nullable=False),
        sa.Column("written_at", sa.String(32), nullable=False),
    )
    op.create_index("ix_sync_writes_written_at", "sync_writes", ["written_at"])


def downgrade() -> None:
    op.drop_table("sync_writes")
    op.drop_table("sync_state")
