"""The privacy portal: sign-in proofs (the emailed link and its code) and portal sessions.
Secrets are kept only as keyed hashes, addresses only sealed (their data keys in data_keys).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "portal_proofs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("subject_ref", sa.String(64), nullable=False),
        sa.Column("client_ref", sa.String(64), nullable=False),
        sa.Column("email_sealed", sa.LargeBinary),
        sa.Column("session_id", sa.String(32)),
        sa.Column("issued_at", sa.String(32), nullable=False),
        sa.Column("expires_at", sa.String(32), nullable=False, index=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("spent", sa.String(10)),
        sa.Index("ix_portal_proofs_subject", "subject_ref", "issued_at"),
        sa.Index("ix_portal_proofs_client", "client_ref", "issued_at"),
    )
    op.create_table(
        "portal_sessions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("subject_ref", sa.String(64), nullable=False),
        sa.Column("emails_sealed", sa.LargeBinary, nullable=False),
        sa.Column("began_at", sa.String(32), nullable=False),
        sa.Column("expires_at", sa.String(32), nullable=False, index=True),
    )


def downgrade() -> None:
    op.execute("DELETE FROM data_keys WHERE holder IN ('portal_proof', 'portal_session')")
    for table in ("portal_sessions", "portal_proofs"):
        op.drop_table(table)
