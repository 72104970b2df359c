"""The console: operator accounts (their requests name them, so a longer trigger), failed
sign-ins for the lockout, two-operator retention proposals, and each sync run's outcome.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # An operator's requests name them as their trigger: "operator:" and up to 63 characters.
    with op.batch_alter_table("erasure_requests") as batch:
        batch.alter_column("trigger", type_=sa.String(100), existing_nullable=False)
    op.create_table(
        "operators",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("role", sa.String(10), nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("password_set_at", sa.String(32), nullable=False),
        sa.Column("disabled_at", sa.String(32)),
    )
    op.create_table(
        "login_failures",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("account", sa.String(100), nullable=False, index=True),
        sa.Column("client_ref", sa.String(64), nullable=False, index=True),
        sa.Column("failed_at", sa.String(32), nullable=False, index=True),
    )
    op.create_table(
        "retention_proposals",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("within_days", sa.Integer, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("people", sa.Integer, nullable=False),
        sa.Column("proposed_by", sa.String(100), nullable=False),
        sa.Column("proposed_at", sa.String(32), nullable=False),
        sa.Column("decided_by", sa.String(100)),
        sa.Column("decided_at", sa.String(32)),
        sa.Column("outcome", sa.Text),
    )
    op.create_table(
        "sync_runs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("trigger", sa.String(100), nullable=False),
        sa.Column("full", sa.Integer, nullable=False),
        sa.Column("dry_run", sa.Integer, nullable=False),
        sa.Column("started_at", sa.String(32), nullable=False, index=True),
        sa.Column("finished_at", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("counts", sa.Text, nullable=False),
        sa.Column("systems", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("sync_runs", "retention_proposals", "login_failures", "operators"):
        op.drop_table(table)
    with op.batch_alter_table("erasure_requests") as batch:
        batch.alter_column("trigger", type_=sa.String(50), existing_nullable=False)
