"""Work items claimed under a lease, shared by every durable queue (inbox, erasure steps).

A claim marks rows ``processing`` until a time; a dead worker's lease expires and the row is
claimed again (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the write lock on SQLite). A failed
row is settled by ``settle_failure``: ``decide`` (pure) chooses between a later retry and
giving up; what to audit and log stays with each queue.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    RowMapping,
    Table,
    and_,
    or_,
    select,
    update,
)

from bridge.store.db import Store

PENDING, PROCESSING, DONE, DEAD = "pending", "processing", "done", "dead"
JITTER = (0.5, 1.0)  # each delay is drawn from this share of its exponential step
MAX_DELAY_SECONDS = 3600.0


@dataclass(frozen=True)
class RetryPolicy:
    """How a queue retries failed work: ``max_attempts`` claims in all, waiting
    ``backoff_seconds * 2 ** (attempt - 1)`` after each failed attempt, jittered and capped."""

    max_attempts: int
    backoff_seconds: float
    max_delay_seconds: float = MAX_DELAY_SECONDS


@dataclass(frozen=True)
class Verdict:
    """What becomes of a failed claim: dead-lettered, or pending again after ``delay``."""

    dead: bool
    delay: timedelta = timedelta()


def decide(policy: RetryPolicy, attempts: int, permanent: bool, draw: float) -> Verdict:
    """Dead-letter a permanent failure, or one that used the last attempt (``attempts``
    counts this claim); otherwise retry after an exponential, jittered, capped delay.

    ``draw`` is a uniform draw from [0, 1] that picks the jitter: the delay lies within
    [0.5, 1] of its exponential step, and never beyond ``max_delay_seconds``.
    """
    if permanent or attempts >= policy.max_attempts:
        return Verdict(dead=True)
    delay = backoff(policy.backoff_seconds, attempts, draw, policy.max_delay_seconds)
    return Verdict(dead=False, delay=delay)


def backoff(base_seconds: float, attempts: int, draw: float, cap_seconds: float) -> timedelta:
    """The wait after the ``attempts``-th failure: ``base_seconds * 2 ** (attempts - 1)``
    times a jitter within [0.5, 1] picked by ``draw`` (uniform in [0, 1]), never beyond
    ``cap_seconds``. Shared with the erasure requests the daemon retries."""
    low, high = JITTER
    jitter = low + (high - low) * draw  # as random.uniform(low, high) computes it
    try:
        seconds = math.ldexp(base_seconds, attempts - 1) * jitter  # base * 2 ** n
    except OverflowError:  # a step beyond any float is beyond the cap
        seconds = cap_seconds
    return timedelta(seconds=min(seconds, cap_seconds))


def claim(
    store: Store,
    table: Table,
    where: ColumnElement[bool],
    now: str,
    lease_until: str,
    limit: int,
    *,
    also: Sequence[ColumnElement[Any]] = (),
    source: FromClause | None = None,
) -> list[dict[str, Any]]:
    """Lease up to ``limit`` due rows matching ``where``, oldest first; attempts counted.
    ``also``: further columns read with each row, from ``source`` (a join of ``table``)."""
    columns = table.c
    due = and_(
        where,
        columns.status.in_([PENDING, PROCESSING]),
        or_(columns.available_at.is_(None), columns.available_at <= now),
    )
    query = select(table, *also).select_from(source if source is not None else table)
    query = query.where(due).order_by(columns.id).limit(limit)
    exclusive = f"{table.name}.claim" if store.is_sqlite else None
    with store.transaction(serialize=exclusive) as conn:
        if not store.is_sqlite:
            query = query.with_for_update(skip_locked=True, of=table)
        rows: list[RowMapping] = list(conn.execute(query).mappings())
        ids = [row["id"] for row in rows]
        if ids:
            conn.execute(
                update(table)
                .where(columns.id.in_(ids))
                .values(status=PROCESSING, available_at=lease_until, attempts=columns.attempts + 1)
            )
    return [{**row, "attempts": row["attempts"] + 1} for row in rows]


def still_claimed(table: Table, row_id: int, attempts: int) -> ColumnElement[bool]:
    """The row is still the claim that counted ``attempts`` (counted at each claim, they tell
    claims apart): its lease has not run out and been claimed by another worker since."""
    columns = table.c
    return and_(columns.id == row_id, columns.status == PROCESSING, columns.attempts == attempts)


def renew(
    store: Store, table: Table, claims: Sequence[tuple[int, int]], lease_until: str
) -> set[int]:
    """Extend claims (row id, ``attempts`` when claimed) before and while working on their
    rows, those still this claim's: ``attempts`` (counted at each claim) tells claims apart.
    A row left out ran out of lease meanwhile and another worker claimed it, so this one must
    leave it alone."""
    kept: set[int] = set()
    with store.transaction() as conn:
        for row_id, attempts in claims:
            result = conn.execute(
                update(table)
                .where(still_claimed(table, row_id, attempts))
                .values(available_at=lease_until)
            )
            if result.rowcount == 1:
                kept.add(row_id)
    return kept


def settle(store: Store, table: Table, row_id: int, **values: Any) -> None:
    """Record a claimed row's outcome (done, retry later, or dead) in its own transaction."""
    with store.transaction() as conn:
        conn.execute(update(table).where(table.c.id == row_id).values(**values))


def settle_failure(
    store: Store,
    table: Table,
    row_id: int,
    attempts: int,
    *,
    policy: RetryPolicy,
    permanent: bool,
    reason: str,
    now: datetime,
    given_up: Mapping[str, Any],
) -> Verdict:
    """Settle a claimed row whose work failed, by ``decide``: ``dead``, with ``given_up``
    (the table's own record of when, e.g. ``{"finished_at": ...}``), or ``pending`` again
    from ``now`` plus the delay. ``reason`` (no personal data) is kept either way. The
    caller audits and logs the verdict it gets back."""
    verdict = decide(policy, attempts, permanent, random.random())
    if verdict.dead:
        values = {"status": DEAD, "available_at": None, "last_error": reason, **given_up}
    else:
        later = (now + verdict.delay).isoformat(timespec="microseconds")
        values = {"status": PENDING, "available_at": later, "last_error": reason}
    settle(store, table, row_id, **values)
    return verdict
