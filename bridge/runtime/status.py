"""The bridge's state at a glance, read from the store: the numbers ``/metrics`` exposes and
the console's Today page shows, computed here once so that the two always agree (and agree
with ``bridge requests``: the same ``standing`` and the same flags).

Everything here reads; nothing calls a CRM, so a page view costs no vendor quota.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bridge import metrics
from bridge.adapters.base import Allowance
from bridge.adapters.registry import VENDORS
from bridge.config import Settings
from bridge.services.erasure import CLOSED, OPEN, Escalation, days_left, standing
from bridge.store import erasure as request_rows
from bridge.store import inbox
from bridge.store import records as record_rows
from bridge.store import sync as sync_rows
from bridge.store.db import Store
from bridge.store.leader import Holder, holder
from bridge.store.leases import DEAD

# How far back a CRM's last error (among failed runs) and its allowances are looked for.
ERRORS_LOOKBACK = 50


@dataclass(frozen=True)
class Backlog:
    """What waits: erasure requests by state (``open``, ``failed``, ``flagged``: at risk,
    ``overdue``; one may be several) and inbox events by status, with the oldest pending
    event's age."""

    requests: Mapping[str, int]
    inbox: Mapping[str, int]
    inbox_lag_seconds: float

    @property
    def dead_letters(self) -> int:
        return self.inbox.get(DEAD, 0)


def backlog(store: Store, escalation: Escalation, now: datetime) -> Backlog:
    oldest = inbox.oldest_pending_received_at(store)
    lag = (now - datetime.fromisoformat(oldest)).total_seconds() if oldest else 0.0
    return Backlog(standing(store, escalation, now), inbox.counts(store), max(lag, 0.0))


def publish(numbers: Backlog) -> None:
    """The backlog as the ``/metrics`` gauges."""
    metrics.INBOX_LAG.set(numbers.inbox_lag_seconds)
    for status, count in numbers.inbox.items():
        metrics.INBOX_EVENTS.labels(status).set(count)
    for state, count in numbers.requests.items():
        metrics.ERASURE_REQUESTS.labels(state).set(count)


@dataclass(frozen=True)
class OpenRequest:
    """An open erasure request as a list shows it: no address, no reason (free text)."""

    id: str
    status: str
    mode: str
    trigger: str
    received_at: str
    due_at: str
    extended: bool
    days_left: int  # below zero: overdue
    flagged: bool


def open_requests(store: Store, escalation: Escalation, now: datetime) -> list[OpenRequest]:
    """The open requests, soonest due first; overdue (``days_left`` below zero) and flagged
    as ``standing`` counts them."""
    found = [
        OpenRequest(
            id=row["id"],
            status=row["status"],
            mode=row["mode"],
            trigger=row["trigger"],
            received_at=row["received_at"],
            due_at=row["due_at"],
            extended=bool(json.loads(row["extensions"] or "[]")),
            days_left=days_left(row["due_at"], now),
            flagged=escalation.flagged(row, now),
        )
        for row in request_rows.requests(store, OPEN)
    ]
    return sorted(found, key=lambda request: (request.due_at, request.id))


RECENT = timedelta(days=7)  # how far back Today lists the requests that ended


def recently_closed(store: Store, now: datetime) -> list[Mapping[str, Any]]:
    """The requests completed or cancelled in the last :data:`RECENT`, newest first: what
    the officer can show proof of (each has its receipt, or its reason for cancelling)."""
    since = (now - RECENT).isoformat(timespec="microseconds")
    closed = [r for r in request_rows.requests(store, CLOSED) if (r["completed_at"] or "") >= since]
    return sorted(closed, key=lambda request: request["completed_at"], reverse=True)


@dataclass(frozen=True)
class CrmStatus:
    """One CRM as the last runs left it. ``last_sync`` is the newest run that was not a dry
    run; ``last_error`` the newest error a run recorded for it (with ``at``: when that run
    started), even if later runs went well; ``allowances`` its vendor's limits as the newest
    run that recorded them ended (``allowances_at``): not live, since learning them live
    would cost a call."""

    system: str
    last_sync: Mapping[str, Any] | None
    records: int | None
    cursor: str | None
    cursor_age_seconds: float | None
    last_error: Mapping[str, Any] | None
    allowances: tuple[Allowance, ...] = ()
    allowances_at: str | None = None


def configured_systems(settings: Settings) -> list[str]:
    """The CRMs the settings give credentials for, without connecting to any."""
    return [v.name for v in VENDORS.values() if v.configured(settings.vendor(v.name))]


def crms(store: Store, systems: Sequence[str], now: datetime) -> list[CrmStatus]:
    last = next(iter(sync_rows.runs(store, 1, dry_run=False)), None)
    failed = sync_rows.runs(store, ERRORS_LOOKBACK, outcome="failed")
    recent = sync_rows.runs(store, ERRORS_LOOKBACK)
    found = []
    for system in systems:
        cursor = record_rows.cursor(store, f"sync:{system}")
        age = (now - datetime.fromisoformat(cursor)).total_seconds() if cursor else None
        mine = last["systems"].get(system) if last else None
        allowances, allowances_at = _last_allowances(recent, system)
        found.append(
            CrmStatus(
                system=system,
                last_sync=last if mine is not None else None,
                records=mine["records"] if mine else None,
                cursor=cursor,
                cursor_age_seconds=age,
                last_error=_last_error(failed, system),
                allowances=allowances,
                allowances_at=allowances_at,
            )
        )
    return found


def _last_error(runs: Iterable[Mapping[str, Any]], system: str) -> dict[str, Any] | None:
    for run in runs:  # newest first
        error = run["systems"].get(system, {}).get("error")
        if error:
            return {**error, "at": run["started_at"], "dry_run": run["dry_run"]}
    return None


def _last_allowances(
    runs: Iterable[Mapping[str, Any]], system: str
) -> tuple[tuple[Allowance, ...], str | None]:
    """The allowances the newest run recorded for ``system`` (a plan's too: it called the
    CRM as much), and when that run ended."""
    for run in runs:  # newest first
        found = run["systems"].get(system, {}).get("allowances")
        if found:
            return tuple(Allowance(**allowance) for allowance in found), run["finished_at"]
    return (), None


@dataclass(frozen=True)
class Leader:
    """The instance running the leader-only jobs (sync, retention), if one does."""

    holder: Holder | None
    sqlite: bool

    @property
    def here(self) -> bool:
        """Whether it is this very process (``bridge run`` serving the console)."""
        return self.sqlite and self.holder is not None and self.holder.pid == os.getpid()


def leader(store: Store) -> Leader:
    return Leader(holder(store), store.is_sqlite)


@dataclass(frozen=True)
class Today:
    backlog: Backlog
    requests: list[OpenRequest]
    closed: list[Mapping[str, Any]]
    crms: list[CrmStatus]
    leader: Leader


def today(store: Store, settings: Settings, now: datetime) -> Today:
    """Everything the Today page shows."""
    escalation = Escalation.of(settings.erasure)
    return Today(
        backlog(store, escalation, now),
        open_requests(store, escalation, now),
        recently_closed(store, now),
        crms(store, configured_systems(settings), now),
        leader(store),
    )
