"""What the bridge sees of people: each record's pseudonyms remembered, erased people caught
coming back.

Every read passes its records through :meth:`Watch.observe`: the record index says whom a
record held after the vendor erased it, and a record holding a suppressed pseudonym is an
erased person re-appearing, flagged (and erased again if configured). Records a legal hold
kept on purpose are not re-appearances.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from bridge import audit
from bridge.adapters.base import CrmAdapter, RecordRef
from bridge.errors import BridgeError
from bridge.identity import subject_ref
from bridge.logs import get_logger
from bridge.metrics import REAPPEARANCES
from bridge.model import AuditEvent, CrmRecord, System
from bridge.services.erasure import Erasure
from bridge.store import erasure as erasure_rows
from bridge.store import records as rows
from bridge.store.audit_log import LOCK as AUDIT_LOCK
from bridge.store.db import Store

log = get_logger("bridge.watch")
BATCH = 500
# Vendors index changes with a lag (a search index: seconds), so each incremental read (this
# scan, the sync's pulls) re-reads a little.
OVERLAP = timedelta(minutes=1)


class Watch:
    """Remembers records by pseudonym and flags erased people who re-appear."""

    def __init__(self, store: Store, key: bytes, reerase: Erasure | None = None) -> None:
        """``reerase``: erase re-appeared people again through this service."""
        self.store = store
        self.key = key
        self.reerase = reerase

    def observe(self, records: Iterable[CrmRecord]) -> list[int]:
        """Remember what each record holds; the ids of the re-appearances newly flagged."""
        kept = erasure_rows.refused_records(self.store)
        flagged: list[int] = []
        stream = iter(records)
        while batch := list(islice(stream, BATCH)):
            now = _now()
            seen = [(r, {subject_ref(self.key, e) for e in r.emails if e.strip()}) for r in batch]
            with self.store.transaction() as conn:
                rows.remember(conn, {r.key: refs for r, refs in seen}, now)
            erased = erasure_rows.suppressed(self.store, set().union(*(refs for _, refs in seen)))
            for record, refs in seen:
                if refs & erased and record.key not in kept:
                    flagged += self._flag(record, sorted(refs & erased), now)
        return flagged

    def scan(self, adapters: Mapping[System, CrmAdapter]) -> list[int]:
        """Read what changed in each CRM since the last scan (all of it the first time)."""
        flagged: list[int] = []
        for system, adapter in adapters.items():
            name = f"watch:{system}"
            since = rows.cursor(self.store, name)
            started = datetime.now(UTC) - OVERLAP
            flagged += self.observe(adapter.read(datetime.fromisoformat(since) if since else None))
            with self.store.transaction() as conn:
                rows.set_cursor(conn, name, started.isoformat(timespec="seconds"))
        return flagged

    def _flag(self, record: CrmRecord, refs: Sequence[str], now: str) -> list[int]:
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            new = [i for ref in refs if (i := rows.flag_reappearance(conn, ref, record.key, now))]
            if new:
                audit.append(
                    conn,
                    AuditEvent(
                        actor="watch",
                        action="erasure.reappeared",
                        outcome="flagged",
                        system=record.system,
                        record_id=record.id,
                        subject_ref=refs[0],
                        reason="an erased person is in the CRM again",
                        details={"object_type": record.object_type.value},
                    ),
                )
        if not new:
            return []
        REAPPEARANCES.labels(record.system).inc()
        log.warning("erased person re-appeared", system=record.system, record_id=record.id)
        if self.reerase is not None:
            self._erase_again(self.reerase, record.key, record.emails, new, "watch")
        return new

    def erase_again(self, reappearance: int, trigger: str) -> tuple[str, bool]:
        """Erase the person a re-appearance found, again, as the sync does when configured
        to (the console's "Re-erase"): the addresses the record holds now, every system. The
        request's id, and False if it had been erased again already (that request's id)."""
        if self.reerase is None:
            raise BridgeError("erase_again needs the erasure service")
        every = rows.all_reappearances(self.store)
        row = next((r for r in every if r["id"] == reappearance), None)
        if row is None:
            raise BridgeError(f"there is no re-appearance {reappearance}")
        if row["request_id"]:
            return row["request_id"], False
        system, object_type, record_id = key = _key(row)
        adapter = self.reerase.adapters.get(System(system))
        if adapter is None:
            raise BridgeError(f"{system} is not configured: its record cannot be read")
        emails = adapter.emails_of(RecordRef(System(system), object_type, record_id))
        if row["subject_ref"] not in {subject_ref(self.key, e) for e in emails}:
            raise BridgeError(
                "the record no longer holds the erased person (changed or deleted since): "
                "nothing to erase; a scan brings the list up to date"
            )
        same_record = [r["id"] for r in every if _key(r) == key and not r["request_id"]]
        return self._erase_again(self.reerase, key, emails, same_record, trigger), True

    def _erase_again(
        self,
        erasure: Erasure,
        key: rows.RecordKey,
        emails: Sequence[str],
        reappearances: Sequence[int],
        trigger: str,
    ) -> str:
        """A request erasing ``emails`` again, linked to the re-appearances, run once now
        (what does not finish, the daemon finishes)."""
        origin = "reappeared {}/{}/{}".format(*key)
        request_id = erasure.submit(list(emails), "delete", None, trigger, origin)
        with self.store.transaction() as conn:
            for reappearance in reappearances:
                rows.link_reappearance(conn, reappearance, request_id)
        erasure.run(request_id, wait_seconds=0)
        return request_id


def _key(reappearance: Mapping[str, Any]) -> rows.RecordKey:
    return reappearance["system"], reappearance["object_type"], reappearance["record_id"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")
