"""SQL for two-operator retention purges: one operator proposes what the preview showed,
another approves it. A proposal changes state only from the state it is expected in, so two
operators deciding at once cannot both apply it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, select, update

from bridge.store.db import Store
from bridge.store.tables import retention_proposals

PROPOSED, APPLYING, APPLIED, WITHDRAWN, STALE, FAILED = (
    "proposed", "applying", "applied", "withdrawn", "stale", "failed",
)  # fmt: skip


def add(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(insert(retention_proposals).values(status=PROPOSED, **row))


def get(store: Store, proposal_id: str) -> dict[str, Any] | None:
    query = select(retention_proposals).where(retention_proposals.c.id == proposal_id)
    with store.engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    return dict(row) if row else None


def newest(store: Store, decided: int = 20) -> list[dict[str, Any]]:
    """Every open proposal, then the ``decided`` latest others; newest first in each."""
    latest = retention_proposals.c.proposed_at.desc()
    is_open = retention_proposals.c.status == PROPOSED
    with store.engine.connect() as conn:
        rows = conn.execute(select(retention_proposals).where(is_open).order_by(latest))
        found = [dict(row) for row in rows.mappings()]
        others = select(retention_proposals).where(~is_open).order_by(latest).limit(decided)
        found += [dict(row) for row in conn.execute(others).mappings()]
    return found


def move(
    conn: Connection, proposal_id: str, from_status: str, to_status: str, **values: Any
) -> bool:
    """Set the proposal's status (and ``values``) if it is still ``from_status``; False if
    it is not (decided meanwhile) or there is no such proposal."""
    statement = (
        update(retention_proposals)
        .where(retention_proposals.c.id == proposal_id, retention_proposals.c.status == from_status)
        .values(status=to_status, **values)
    )
    return conn.execute(statement).rowcount > 0
