"""Erasure requests, their steps, the suppression list, and what the bridge has seen of people
(the record index, re-appearances of erased people, and read cursors).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "erasure_requests",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("subject_ref", sa.String(64), nullable=False),
        sa.Column("emails_encrypted", sa.LargeBinary),
        sa.Column("mode", sa.String(10), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("trigger", sa.String(50), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("received_at", sa.String(32), nullable=False),
        sa.Column("due_at", sa.String(32), nullable=False),
        sa.Column("completed_at", sa.String(32)),
        sa.Column("receipt", sa.Text),
        sa.Column("origin", sa.String(200), unique=True),
    )
    op.create_index("ix_erasure_requests_subject_ref", "erasure_requests", ["subject_ref"])
    op.create_table(
        "erasure_steps",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "request_id", sa.String(36), sa.ForeignKey("erasure_requests.id"), nullable=False
        ),
        sa.Column("target_key", sa.String(200), nullable=False),
        sa.Column("system", sa.String(20), nullable=False),
        sa.Column("object_type", sa.String(50), nullable=False),
        sa.Column("record_id", sa.String(100)),
        sa.Column("email_ref", sa.String(64)),
        sa.Column("action", sa.String(10)),
        sa.Column("hold", sa.String(100)),
        sa.Column("hold_reason", sa.Text),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("outcome", sa.String(30)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("available_at", sa.String(32)),
        sa.Column("last_error", sa.Text),
        sa.Column("finished_at", sa.String(32)),
        sa.UniqueConstraint("request_id", "target_key", name="uq_erasure_steps_target"),
    )
    op.create_table(
        "suppression",
        sa.Column("subject_ref", sa.String(64), primary_key=True),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("added_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "record_index",
        sa.Column("system", sa.String(20), primary_key=True),
        sa.Column("object_type", sa.String(50), primary_key=True),
        sa.Column("record_id", sa.String(100), primary_key=True),
        sa.Column("subject_ref", sa.String(64), primary_key=True),
        sa.Column("seen_at", sa.String(32), nullable=False),
    )
    op.create_index("ix_record_index_subject_ref", "record_index", ["subject_ref"])
    op.create_table(
        "reappearances",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("subject_ref", sa.String(64), nullable=False),
        sa.Column("system", sa.String(20), nullable=False),
        sa.Column("object_type", sa.String(50), nullable=False),
        sa.Column("record_id", sa.String(100), nullable=False),
        sa.Column("detected_at", sa.String(32), nullable=False),
        sa.Column("request_id", sa.String(36)),
        sa.UniqueConstraint(
            "system", "object_type", "record_id", "subject_ref", name="uq_reappearances_record"
        ),
    )
    op.create_table(
        "cursors",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("value", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cursors")
    op.drop_table("reappearances")
    op.drop_table("record_index")
    op.drop_table("suppression")
    op.drop_table("erasure_steps")
    op.drop_table("erasure_requests")
