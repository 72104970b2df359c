"""The sync's intents: what each apply batch is about to write, committed before its vendor
call, so that a batch cut short between that call and its audit is audited by the next sync.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sync_intents",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("batch", sa.String(32), nullable=False, index=True),
        sa.Column("system", sa.String(20), nullable=False),
        sa.Column("object_type", sa.String(50), nullable=False),
        sa.Column("record_id", sa.String(100), nullable=False),
        sa.Column("field", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("purpose", sa.String(100)),
        sa.Column("value", sa.String(30), nullable=False),
        sa.Column("implied", sa.Text, nullable=False),
        sa.Column("act_system", sa.String(20), nullable=False),
        sa.Column("act_record", sa.String(100), nullable=False),
        sa.Column("act_at", sa.String(32)),
        sa.Column("subject_ref", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sync_intents")
