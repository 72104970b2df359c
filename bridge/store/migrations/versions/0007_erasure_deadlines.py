"""Erasure deadlines and retries: Art. 12(3) extensions, and what the daemon needs to retry a
failing request with backoff and flag it before it is overdue. Open requests get the due date
the law counts (one calendar month from receipt, not 30 days); failed ones are retried by the
next daemon at once.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from bridge.policies.deadlines import answer_due

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("extensions", "failing_since", "failures", "retry_at", "problem", "flagged_at")


def upgrade() -> None:
    op.add_column("erasure_requests", sa.Column("extensions", sa.Text))
    op.add_column("erasure_requests", sa.Column("failing_since", sa.String(32)))
    op.add_column(
        "erasure_requests",
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    )
    op.add_column("erasure_requests", sa.Column("retry_at", sa.String(32)))
    op.add_column("erasure_requests", sa.Column("problem", sa.Text))
    op.add_column("erasure_requests", sa.Column("flagged_at", sa.String(32)))
    requests = sa.table(
        "erasure_requests",
        sa.column("id", sa.String),
        sa.column("status", sa.String),
        sa.column("received_at", sa.String),
        sa.column("due_at", sa.String),
        sa.column("failing_since", sa.String),
        sa.column("retry_at", sa.String),
    )
    connection = op.get_bind()
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    query = sa.select(requests.c.id, requests.c.status, requests.c.received_at)
    for row in connection.execute(query.where(requests.c.status != "completed")).all():
        due = answer_due(datetime.fromisoformat(row.received_at))
        values = {"due_at": due.isoformat(timespec="microseconds")}
        if row.status == "failed" and values["due_at"] > now:
            values |= {"failing_since": now, "retry_at": now}
        connection.execute(requests.update().where(requests.c.id == row.id).values(**values))


def downgrade() -> None:
    with op.batch_alter_table("erasure_requests") as batch:
        for column in COLUMNS:
            batch.drop_column(column)
