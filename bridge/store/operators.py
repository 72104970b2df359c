"""SQL for the console's operator accounts and their failed sign-ins."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from bridge.store.db import Store
from bridge.store.tables import login_failures, operators


def add(conn: Connection, row: dict[str, Any]) -> bool:
    """A new account; False if the name is taken."""
    if conn.execute(select(operators.c.name).where(operators.c.name == row["name"])).first():
        return False
    conn.execute(insert(operators).values(epoch=0, **row))
    return True


def get(store: Store, name: str) -> dict[str, Any] | None:
    with store.engine.connect() as conn:
        row = conn.execute(select(operators).where(operators.c.name == name)).mappings().first()
    return dict(row) if row else None


def every(store: Store) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(operators).order_by(operators.c.name)).mappings().all()
    return [dict(row) for row in rows]


def change(conn: Connection, name: str, *, new_epoch: bool, **values: Any) -> bool:
    """Update an account (``new_epoch`` ends its sessions); False if there is none."""
    if new_epoch:
        values["epoch"] = operators.c.epoch + 1
    result = conn.execute(update(operators).where(operators.c.name == name).values(**values))
    return result.rowcount > 0


def add_failure(conn: Connection, account: str, client_ref: str, at: str) -> None:
    conn.execute(
        insert(login_failures).values(account=account, client_ref=client_ref, failed_at=at)
    )


def failures(
    store: Store, *, since: str, account: str | None = None, client_ref: str | None = None
) -> list[str]:
    """When each failed sign-in since ``since`` happened, for an account or a client address."""
    query = select(login_failures.c.failed_at).where(login_failures.c.failed_at >= since)
    if account is not None:
        query = query.where(login_failures.c.account == account)
    if client_ref is not None:
        query = query.where(login_failures.c.client_ref == client_ref)
    with store.engine.connect() as conn:
        return sorted(row[0] for row in conn.execute(query))


def clear_failures(conn: Connection, account: str) -> None:
    conn.execute(delete(login_failures).where(login_failures.c.account == account))


def prune_failures(conn: Connection, before: str) -> None:
    conn.execute(delete(login_failures).where(login_failures.c.failed_at < before))
