"""Table definitions. Migrations create them; code reads and writes them through ``store``.

No column holds an email, name or phone in clear: people appear only as ``subject_ref``.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text

metadata = MetaData()

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for long logs.
BigId = BigInteger().with_variant(Integer(), "sqlite")

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=False),
    Column("occurred_at", String(32), nullable=False),
    Column("actor", String(100), nullable=False),
    Column("action", String(100), nullable=False),
    Column("outcome", String(50), nullable=False),
    Column("system", String(50)),
    Column("record_id", String(100)),
    Column("subject_ref", String(64), index=True),
    Column("reason", Text),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
)
