"""Cursors hold a vendor's change-tracking tokens too (Dataverse's delta links, one per
table), which are longer than a timestamp.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cursors") as table:
        table.alter_column(
            "value", existing_type=sa.String(64), type_=sa.Text, existing_nullable=False
        )


def downgrade() -> None:
    with op.batch_alter_table("cursors") as table:
        table.alter_column(
            "value", existing_type=sa.Text, type_=sa.String(64), existing_nullable=False
        )
