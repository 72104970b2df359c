"""SQL for erasure requests, their steps, and the suppression list."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, func, insert, or_, select, update

from bridge.errors import BridgeError
from bridge.sealing import Sealed
from bridge.store import data_keys, leases, notify
from bridge.store.db import Store, chunked, insert_or_skip
from bridge.store.tables import erasure_requests, erasure_steps, suppression

# A request with the data key of its emails (``emails_wrapped_key``), read in one snapshot.
_REQUESTS = select(erasure_requests, data_keys.WRAPPED.label("emails_wrapped_key")).select_from(
    data_keys.with_keys(data_keys.ERASURE_REQUEST)
)


# Requests nothing more happens to (``services.erasure.CLOSED``): no planning, running,
# failing or reopening brings them back.
_CLOSED = ("completed", "cancelled")
_UNCLOSED = erasure_requests.c.status.not_in(_CLOSED)


def add_request(conn: Connection, row: dict[str, Any], emails: Sealed) -> None:
    conn.execute(insert(erasure_requests).values(**row, emails_encrypted=emails.token))
    data_keys.add(conn, data_keys.ERASURE_REQUEST, {row["id"]: emails.wrapped_key})


def left_to_the_daemon(conn: Connection) -> None:
    """Requests planned in this transaction are for the daemon's erasure job to run: it is
    woken once the transaction commits, in this process or (PostgreSQL) any other."""
    notify.notify(conn, notify.ERASURE)


def open_request_for(conn: Connection, subject_ref: str) -> str | None:
    """The id of a request for this subject that has not completed or been cancelled."""
    query = select(erasure_requests.c.id).where(
        erasure_requests.c.subject_ref == subject_ref, _UNCLOSED
    )
    return conn.execute(query.order_by(erasure_requests.c.received_at).limit(1)).scalar()


def update_request(conn: Connection, request_id: str, **values: Any) -> None:
    conn.execute(
        update(erasure_requests).where(erasure_requests.c.id == request_id).values(**values)
    )


def set_emails(conn: Connection, request_id: str, emails: Sealed | None, **values: Any) -> None:
    """Store the request's emails sealed anew, or destroy them (None), with ``values``; the
    old data key goes (the row first, then its key: ``store.data_keys``)."""
    update_request(conn, request_id, emails_encrypted=emails.token if emails else None, **values)
    if emails is None:
        data_keys.destroy(conn, data_keys.ERASURE_REQUEST, request_id)
    else:
        data_keys.replace(conn, data_keys.ERASURE_REQUEST, request_id, emails.wrapped_key)


def mark_unfinished(conn: Connection, request_id: str, status: str) -> None:
    """Set the status of a request that has not completed; a completed (or cancelled) one
    stays so (another instance may have completed it a moment ago)."""
    conn.execute(
        update(erasure_requests)
        .where(erasure_requests.c.id == request_id, _UNCLOSED)
        .values(status=status)
    )


def reopen(
    conn: Connection, request_id: str, *, failed_only: bool = False, retry_due_by: str | None = None
) -> bool:
    """Send a request that has not completed back to planning (planning again finds what was
    never planned; the steps it has stay), its dead steps pending again with fresh attempts.
    ``failed_only``: only a failed request; ``retry_due_by``: only one whose retry is due by
    then (the daemon's, which several instances may try at once). False: none was reopened."""
    where = [erasure_requests.c.id == request_id, _UNCLOSED]
    if failed_only:
        where.append(erasure_requests.c.status == "failed")
    if retry_due_by is not None:
        where.append(erasure_requests.c.retry_at <= retry_due_by)
    result = conn.execute(
        update(erasure_requests).where(*where).values(status="received", retry_at=None)
    )
    if result.rowcount != 1:
        return False
    reset_dead_steps(conn, request_id)
    return True


def fail_request(
    conn: Connection, request_id: str, *, problem: str | None, now: str, retry_at: str | None
) -> None:
    """A request that has not completed failed (again): counted, failing since the first time,
    with the problem (no personal data) and when the daemon retries it (None: it does not)."""
    conn.execute(
        update(erasure_requests)
        .where(erasure_requests.c.id == request_id, _UNCLOSED)
        .values(
            status="failed",
            problem=problem,
            failing_since=func.coalesce(erasure_requests.c.failing_since, now),
            failures=erasure_requests.c.failures + 1,
            retry_at=retry_at,
        )
    )


def flag(conn: Connection, request_id: str, now: str) -> bool:
    """Mark a request flagged; False if it already was (by another instance, perhaps)."""
    result = conn.execute(
        update(erasure_requests)
        .where(erasure_requests.c.id == request_id, erasure_requests.c.flagged_at.is_(None))
        .values(flagged_at=now)
    )
    return result.rowcount == 1


def current_request(conn: Connection, request_id: str) -> dict[str, Any] | None:
    """The request as the caller's transaction sees it (to re-check it under a lock)."""
    query = _REQUESTS.where(erasure_requests.c.id == request_id)
    row = conn.execute(query).mappings().first()
    return dict(row) if row else None


def existing_request(conn: Connection, request_id: str) -> dict[str, Any]:
    """:func:`current_request`, for a change that needs the request to exist."""
    request = current_request(conn, request_id)
    if request is None:
        raise BridgeError(f"no erasure request {request_id}")
    return request


def open_steps(store: Store, request_ids: Collection[str]) -> dict[str, list[str | None]]:
    """Per request with steps still pending or claimed, when each is next due (None: now)."""
    found: dict[str, list[str | None]] = {}
    with store.engine.connect() as conn:
        for chunk in chunked(request_ids):
            query = select(erasure_steps.c.request_id, erasure_steps.c.available_at).where(
                erasure_steps.c.request_id.in_(chunk),
                erasure_steps.c.status.in_([leases.PENDING, leases.PROCESSING]),
            )
            for request_id, available_at in conn.execute(query):
                found.setdefault(request_id, []).append(available_at)
    return found


def open_step_count(conn: Connection, request_id: str) -> int:
    """How many of the request's steps are still pending or claimed."""
    query = select(func.count()).where(
        erasure_steps.c.request_id == request_id,
        erasure_steps.c.status.in_([leases.PENDING, leases.PROCESSING]),
    )
    return int(conn.execute(query).scalar_one())


def request(store: Store, request_id: str) -> dict[str, Any] | None:
    with store.engine.connect() as conn:
        row = conn.execute(_REQUESTS.where(erasure_requests.c.id == request_id)).mappings().first()
    return dict(row) if row else None


def ids_starting(store: Store, prefix: str, limit: int) -> list[str]:
    """Up to ``limit`` request ids that begin with ``prefix``."""
    query = select(erasure_requests.c.id).where(
        erasure_requests.c.id.startswith(prefix, autoescape=True)
    )
    with store.engine.connect() as conn:
        return list(conn.execute(query.order_by(erasure_requests.c.id).limit(limit)).scalars())


def workable(store: Store, now: str) -> list[dict[str, Any]]:
    """Requests to work on now, oldest first: those received or planned, and the failed ones
    whose retry is due."""
    status = erasure_requests.c.status
    retry_due = and_(status == "failed", erasure_requests.c.retry_at <= now)
    return _oldest_first(store, or_(status.in_(["received", "planned"]), retry_due))


def requests(store: Store, statuses: Collection[str] | None = None) -> list[dict[str, Any]]:
    where = erasure_requests.c.status.in_(list(statuses)) if statuses is not None else None
    return _oldest_first(store, where)


def _oldest_first(store: Store, where: ColumnElement[bool] | None) -> list[dict[str, Any]]:
    query = _REQUESTS.order_by(erasure_requests.c.received_at)
    if where is not None:
        query = query.where(where)
    with store.engine.connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def add_steps(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert steps, skipping any the request already has (planning may run again)."""
    if not rows:
        return
    conn.execute(
        insert_or_skip(conn, erasure_steps, ["request_id", "target_key"]),
        [{**row, "status": leases.PENDING, "attempts": 0} for row in rows],
    )


def steps(store: Store, request_id: str) -> list[dict[str, Any]]:
    query = select(erasure_steps).where(erasure_steps.c.request_id == request_id)
    with store.engine.connect() as conn:
        return [dict(row) for row in conn.execute(query.order_by(erasure_steps.c.id)).mappings()]


def claim_steps(
    store: Store, request_ids: Collection[str], system: str, now: str, lease_until: str,
    limit: int,
) -> list[dict[str, Any]]:  # fmt: skip
    """Lease up to ``limit`` due steps in ``system`` of these requests (a thousand at most:
    one ``IN`` list), oldest first: a request's steps in the order they were planned."""
    where = and_(
        erasure_steps.c.request_id.in_(list(request_ids)), erasure_steps.c.system == system
    )
    return leases.claim(store, erasure_steps, where, now, lease_until, limit)


def settle_done(conn: Connection, step: Mapping[str, Any], outcome: str, finished_at: str) -> bool:
    """A claimed step is done, with its outcome (in the caller's transaction, beside its
    audit event), if it is still this claim's; False: another instance took it over meanwhile
    and settles it itself (what this claim did again was harmless, erasure being idempotent)."""
    result = conn.execute(
        update(erasure_steps)
        .where(leases.still_claimed(erasure_steps, step["id"], step["attempts"]))
        .values(
            status=leases.DONE,
            outcome=outcome,
            finished_at=finished_at,
            available_at=None,
            last_error=None,
        )
    )
    return result.rowcount == 1


def fail_step(
    store: Store,
    step: Mapping[str, Any],
    policy: leases.RetryPolicy,
    *,
    permanent: bool,
    reason: str,
    now: datetime,
) -> leases.Verdict:
    """A step's attempt failed: retry it later, or give up on it (dead, finished ``now``)."""
    return leases.settle_failure(
        store, erasure_steps, step["id"], step["attempts"], policy=policy, permanent=permanent,
        reason=reason, now=now, given_up={"finished_at": now.isoformat(timespec="microseconds")},
    )  # fmt: skip


def renew_steps(store: Store, steps: Sequence[Mapping[str, Any]], lease_until: str) -> set[int]:
    """Extend claimed steps' leases; the ids of those still this claim's (another instance
    may have claimed the others since)."""
    claims = [(step["id"], step["attempts"]) for step in steps]
    return leases.renew(store, erasure_steps, claims, lease_until)


def reset_dead_steps(conn: Connection, request_id: str) -> int:
    """Give permanently failed steps another try (``bridge requests --retry``)."""
    result = conn.execute(
        update(erasure_steps)
        .where(erasure_steps.c.request_id == request_id, erasure_steps.c.status == leases.DEAD)
        .values(status=leases.PENDING, available_at=None, attempts=0)
    )
    return int(result.rowcount or 0)


def withdraw_steps(conn: Connection, request_id: str) -> bool:
    """Withdraw a request's steps never tried (``cancelled``: no claim takes them); False
    when one has been tried, claimed or settled, which the caller's rollback must undo."""
    steps = erasure_steps.c
    conn.execute(
        update(erasure_steps)
        .where(steps.request_id == request_id, steps.status == leases.PENDING, steps.attempts == 0)
        .values(status="cancelled", available_at=None)
    )
    tried = select(func.count()).where(steps.request_id == request_id, steps.status != "cancelled")
    return int(conn.execute(tried).scalar_one()) == 0


def request_for_origin(conn: Connection, origin: str) -> str | None:
    """The request a triggering event already made, if any."""
    query = select(erasure_requests.c.id).where(erasure_requests.c.origin == origin)
    return conn.execute(query).scalar()


def suppress(conn: Connection, refs: Collection[str], source: str, now: str) -> None:
    """Add pseudonyms to the suppression list; ``source`` says which erasure put them there."""
    if not refs:
        return
    conn.execute(
        insert_or_skip(conn, suppression, ["subject_ref"]),
        [{"subject_ref": ref, "source": source, "added_at": now} for ref in refs],
    )


def suppressed(store: Store, refs: Collection[str]) -> set[str]:
    """Which of these pseudonyms belong to erased people (any number of them: a full sync
    asks about every person at once)."""
    found: set[str] = set()
    with store.engine.connect() as conn:
        for chunk in chunked(refs):
            query = select(suppression.c.subject_ref).where(suppression.c.subject_ref.in_(chunk))
            found.update(row[0] for row in conn.execute(query))
    return found


def refused_records(store: Store) -> set[tuple[str, str, str]]:
    """Records a legal hold kept from erasure: they hold an erased person on purpose."""
    columns = (erasure_steps.c.system, erasure_steps.c.object_type, erasure_steps.c.record_id)
    query = select(*columns).where(erasure_steps.c.outcome == "refused")
    with store.engine.connect() as conn:
        return {(row[0], row[1], row[2]) for row in conn.execute(query)}
