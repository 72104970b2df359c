"""A sync's records held in the store while it runs, so that its memory does not grow with
the number of people (ARCHITECTURE.md, "A sync").

Records are staged page by page as they are read, linked into people there through the
pseudonyms of their addresses (transitively, as ``identity.link_subjects`` links them), and
given back whole people at a time, for the sync to plan and apply one partition after another.

A staged record holds personal data (its addresses, the fields retention reads), so it is
sealed: compressed and encrypted (Fernet, as ``bridge.sealing`` seals) under a key made for
the run that never leaves this process. Its rows go when the run ends; those of a run whose
process died can be opened by no one, and the next run deletes them. Being authenticated
under a key only this process holds, a sealed record cannot be forged by whoever can write
to the database, which is why it may be a pickle.
"""

from __future__ import annotations

import pickle
import uuid
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from cryptography.fernet import Fernet

from bridge.identity import normalise_email, subject_ref
from bridge.model import CrmRecord
from bridge.store import staging as rows
from bridge.store.db import Store, chunked

PEOPLE_PER_PARTITION = 5_000
"""People planned and applied together: enough to fill the vendors' write batches (100 and
200) many times over, few enough that a partition's records take tens of megabytes."""
PAGE = 500  # records staged per transaction


class Staging:
    """One run's staged records: ``add`` as they are read, then ``people``."""

    def __init__(self, store: Store, pseudonym_key: bytes, run: str) -> None:
        self.store = store
        self.key = pseudonym_key
        self.run = run
        self.added: Counter[str] = Counter()
        """Records staged, by system (a record read twice counts once)."""
        self._cipher = Fernet(Fernet.generate_key())
        self._seq = 0

    @classmethod
    @contextmanager
    def held(cls, store: Store, pseudonym_key: bytes) -> Iterator[Staging]:
        """A fresh staging area for one run, emptied when the block ends, however it ends."""
        run = uuid.uuid4().hex
        with rows.holding(store, run):
            yield cls(store, pseudonym_key, run)

    @property
    def total(self) -> int:
        return sum(self.added.values())

    def add(self, records: Iterable[CrmRecord]) -> None:
        """Stage these records; one already staged in this run is kept as first read."""
        for page in chunked(records, PAGE):
            staged: list[dict[str, Any]] = []
            refs: list[tuple[int, str]] = []
            known = rows.staged(self.store, self.run, {r.key for r in page})
            for record in page:
                if record.key in known:
                    continue
                known.add(record.key)
                self._seq += 1
                mine = self._refs(record)
                system, object_type, record_id = record.key
                staged.append({
                    "seq": self._seq, "system": system, "object_type": object_type,
                    "record_id": record_id, "part": mine[0] if mine else f"~{self._seq:012d}",
                    "sealed": self._seal(record),
                })  # fmt: skip
                refs += [(self._seq, ref) for ref in mine]
                self.added[system] += 1
            # A transaction that only writes: on SQLite, one that read first fails at once,
            # without waiting, should another process have written in between.
            with self.store.transaction() as conn:
                rows.stage(conn, self.run, staged, refs)

    def people(self) -> Iterator[list[CrmRecord]]:
        """The staged records linked into people, then ``PEOPLE_PER_PARTITION`` people's
        records at a time: every record of a person in the same partition."""
        rows.link(self.store, self.run)
        for sealed in rows.partitions(self.store, self.run, PEOPLE_PER_PARTITION):
            yield [self._open(blob) for blob in sealed]

    def _refs(self, record: CrmRecord) -> list[str]:
        """The pseudonyms of the record's addresses, least first."""
        emails = {normalise_email(e) for e in record.emails if e.strip()}
        return sorted(subject_ref(self.key, email) for email in emails)

    def _seal(self, record: CrmRecord) -> bytes:
        return self._cipher.encrypt(zlib.compress(pickle.dumps(record, pickle.HIGHEST_PROTOCOL)))

    def _open(self, blob: bytes) -> CrmRecord:
        record: CrmRecord = pickle.loads(zlib.decompress(self._cipher.decrypt(blob)))  # noqa: S301
        return record
