"""Event kinds decided once, at intake: waiting inbox rows stored before this version get the
kind and name today's receiver gives them (an ordinary contact deletion is no erasure
request; a forget request is named for what it asks).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "UPDATE inbox SET kind = 'other' WHERE kind = 'deletion'"
        " AND event_type = 'contact.deletion' AND status IN ('pending', 'processing')"
    )
    op.execute(
        "UPDATE inbox SET event_type = 'ShouldForget' WHERE kind = 'deletion'"
        " AND event_type = 'outboundMessage' AND status IN ('pending', 'processing')"
    )


def downgrade() -> None:
    op.execute(
        "UPDATE inbox SET event_type = 'outboundMessage' WHERE kind = 'deletion'"
        " AND event_type = 'ShouldForget' AND status IN ('pending', 'processing')"
    )
