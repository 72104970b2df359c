"""Data keys: each held value (an inbox payload, an erasure request's emails) gets a key of its
own, wrapped by the configured keys, so that deleting the key destroys every copy of the value.
Values stored before this stay sealed with a configured key itself and still open;
``bridge keys rotate`` gives them data keys.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "data_keys",
        sa.Column("holder", sa.String(20), primary_key=True),
        sa.Column("holder_id", sa.String(64), primary_key=True),
        sa.Column("wrapped", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    # Values sealed with a data key cannot be opened without it: refuse while any is held.
    held = op.get_bind().execute(sa.text("SELECT count(*) FROM data_keys")).scalar()
    if held:
        raise RuntimeError(
            f"{held} held values are sealed with data keys; let the inbox drain and the open "
            "erasure requests complete before downgrading"
        )
    op.drop_table("data_keys")
