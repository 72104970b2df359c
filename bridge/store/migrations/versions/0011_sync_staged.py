"""The sync's staged records: read page by page, linked into people and planned partition by
partition, so that a run's memory does not grow with the number of people.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sync_staged",
        sa.Column("run", sa.String(32), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("system", sa.String(20), nullable=False),
        sa.Column("object_type", sa.String(50), nullable=False),
        sa.Column("record_id", sa.String(100), nullable=False),
        sa.Column("part", sa.String(100), nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("run", "system", "object_type", "record_id"),
    )
    op.create_index("ix_sync_staged_part", "sync_staged", ["run", "part"])
    op.create_table(
        "sync_staged_refs",
        sa.Column("run", sa.String(32), primary_key=True),
        sa.Column("subject_ref", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    )
    op.create_index("ix_sync_staged_refs_seq", "sync_staged_refs", ["run", "seq", "subject_ref"])


def downgrade() -> None:
    op.drop_table("sync_staged_refs")
    op.drop_table("sync_staged")
