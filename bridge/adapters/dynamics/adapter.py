"""The Dynamics 365 adapter: Dataverse's Web API through :class:`Transport` (httpx + MSAL).

A person is their contacts and leads (up to three addresses each) and the consent4 rows of
those addresses: Customer Insights - Journeys keeps consent per contact point, not per record,
and nothing cascades from a contact to them, so every read joins them by address and every
erasure deletes them by address (docs/vendors/dynamics.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime
from itertools import islice
from typing import Any

from bridge.adapters.base import (
    AdapterError,
    Allowance,
    Check,
    ClosesOnExit,
    ConsentWrite,
    DueMark,
    ErasureMode,
    ErasureResult,
    ErasureStatus,
    ErasureTarget,
    FieldUsage,
    LawfulBasisWrite,
    NotFound,
    ObjectUsage,
    Permanent,
    R,
    RateLimited,
    RecordRef,
    RectifyProblem,
    TokenExpired,
    TrackedRead,
    Transient,
    WriteOutcome,
    WriteStatus,
    chunks,
)
from bridge.adapters.dynamics import DYNAMICS
from bridge.adapters.dynamics.records import (
    CHANNEL,
    COMPUTED,
    CONSENT_COLUMNS,
    CONSENT_KEY,
    CONSENT_SET,
    CONSENT_TABLE,
    EMAIL_CHANNEL,
    EMAILS,
    FLAGS,
    INTERNAL_SOURCE,
    NO_REASON,
    PEOPLE,
    PERSONAL,
    PURPOSE_SET,
    RECTIFIABLE,
    STATUS,
    STATUS_WRITTEN,
    TABLES,
    VALUE,
    ConsentIndex,
    ConsentRow,
    Table,
    anonymised,
    emails_in,
    in_filter,
    iso,
    record_of,
)
from bridge.adapters.dynamics.settings import KEEP_ON_ANONYMIZE, DynamicsSettings, purpose_keys
from bridge.adapters.dynamics.transport import Request, Transport, query
from bridge.identity import normalise_email
from bridge.model import Channel, ConsentStatus, CrmRecord, Purpose, RelatedRecords

IN_CHUNK = 60  # addresses per In() list: three lists of them stay far below the URL limit
IDS_CHUNK = 100  # GUIDs per In() list
PAGE = 500  # rows joined with their consent rows at a time, on a changes read
UPDATE = {"If-Match": "*"}  # never the upsert: a PATCH to a deleted row must not re-create it
BRIDGE_REASON = "consent-bridge"
GLOBAL_FIELDS = {"opt_out": Channel.EMAIL, "do_not_call": Channel.PHONE}

Outcome = tuple[WriteStatus, str]


def _failed(error: AdapterError) -> Outcome:
    return WriteStatus.FAILED, error.line()


class DynamicsAdapter(ClosesOnExit):
    """Every capability of the contract, for one Dataverse environment."""

    system = DYNAMICS
    erase_batch = 300  # a person is a few rows and their history: one $batch or two

    def __init__(
        self,
        section: DynamicsSettings,
        purposes: Sequence[Purpose],
        *,
        keep_on_anonymize: Mapping[str, Sequence[str]] | None = None,
        read_fields: Sequence[str] = (),
        due_field: str | None = None,
        attempts: int = 8,
    ) -> None:
        self.section = section
        self.transport = Transport(section, attempts=attempts)
        # Email purposes only: see records.EMAIL_CHANNEL.
        mapped = [p for p in purposes if purpose_keys(p).purpose]
        self.purposes = [p for p in mapped if p.channel == Channel.EMAIL]
        self.unheld = [p.id for p in mapped if p.channel != Channel.EMAIL]
        keep = KEEP_ON_ANONYMIZE if keep_on_anonymize is None else keep_on_anonymize
        self.keep = {
            t.logical_name: list(keep.get(f"{DYNAMICS}.{t.logical_name}", ())) for t in PEOPLE
        }
        self.read_fields = list(read_fields)
        self.due_field = due_field
        self.basis_field = section.lawful_basis_field
        self.bases = {value: basis for basis, value in section.lawful_basis_options.items()}
        self._purpose_ids: dict[str, Purpose] | None = None
        self._attributes: dict[str, dict[str, dict[str, Any]]] = {}
        self._tables: tuple[Table, ...] | None = None

    def close(self) -> None:
        self.transport.close()

    def allowances(self) -> list[Allowance]:
        return self.transport.allowances()

    # -- what the environment holds -----------------------------------------------------------

    def _people_tables(self, operation: str) -> tuple[Table, ...]:
        """Contacts, and leads where a Dynamics 365 app provides them (asked once)."""
        if self._tables is None:
            try:
                self.transport.call(
                    Request("GET", query("leads", top="1", select="leadid")), operation
                )
                self._tables = PEOPLE
            except NotFound:
                self._tables = (PEOPLE[0],)
        return self._tables

    def _purposes(self, operation: str) -> dict[str, Purpose]:
        """Dataverse purpose id -> the configured purpose, matched by name
        (``msdynmkt_name``), asked once."""
        if self._purpose_ids is None:
            rows = self.transport.pages(
                query(PURPOSE_SET, select="msdynmkt_purposeid,msdynmkt_name"), operation
            )
            by_name = {
                str(r.get("msdynmkt_name") or "").casefold(): str(r["msdynmkt_purposeid"])
                for r in rows
            }
            self._purpose_ids = {}
            for purpose in self.purposes:
                found = by_name.get(str(purpose_keys(purpose).purpose).casefold())
                if found is not None:
                    self._purpose_ids[found] = purpose
        return self._purpose_ids

    def _purpose_row(self, operation: str, purpose_id: str) -> str | None:
        """The Dataverse id of a configured purpose, if the environment has it."""
        return next((dv for dv, p in self._purposes(operation).items() if p.id == purpose_id), None)

    def _columns(self) -> list[str]:
        extra = [c for c in (self.basis_field, self.due_field) if c]
        return [
            *EMAILS,
            *PERSONAL,
            *FLAGS.values(),
            "createdon",
            "modifiedon",
            *extra,
            *self.read_fields,
        ]

    def _select(self, table: Table) -> str:
        return ",".join(dict.fromkeys([table.key, *self._columns()]))

    def _record(
        self, table: Table, row: Mapping[str, Any], index: ConsentIndex, operation: str
    ) -> CrmRecord:
        return record_of(
            table,
            row,
            index,
            self._purposes(operation),
            basis_field=self.basis_field,
            bases=self.bases,
            due_field=self.due_field,
            read_fields=self.read_fields,
        )

    def _consent_rows(self, values: Collection[str], operation: str) -> list[ConsentRow]:
        """The consent4 rows of these contact point values (normalised), any purpose."""
        if not self.purposes:
            return []
        found: list[ConsentRow] = []
        select = ",".join(CONSENT_COLUMNS)
        for chunk in chunks(sorted(set(values)), IN_CHUNK):
            asked = query(CONSENT_SET, select=select, filter=in_filter(VALUE, chunk))
            found += [ConsentRow.of(row) for row in self.transport.pages(asked, operation)]
        return found

    # -- reading ---------------------------------------------------------------------------

    def read(self, since: datetime | None = None) -> Iterator[CrmRecord]:
        """Every contact and lead (``since`` None), or those modified at or after ``since``
        and those whose consent rows were."""
        if since is None:
            yield from self._read_all("read", None)
            return
        stamp = iso(since)
        changed = {
            table: self.transport.pages(
                query(
                    table.entity_set, select=self._select(table), filter=f"modifiedon ge {stamp}"
                ),
                "read",
            )
            for table in self._people_tables("read")
        }
        consent_rows = (
            self.transport.pages(
                query(CONSENT_SET, select=VALUE, filter=f"modifiedon ge {stamp}"), "read"
            )
            if self._purposes("read")
            else iter(())
        )
        addresses = (str(row.get(VALUE) or "") for row in consent_rows)
        yield from self._changed(changed, addresses, "read")

    def track(self, token: str | None) -> TrackedRead:
        """Dataverse change tracking over contacts, leads and consent4 rows; the token is
        their three delta links (JSON). Without one, a full read that asks for them; with
        one, each delta link is read at once (an expired one raises ``TokenExpired`` before
        any record is read), its changed rows then joined with their consent rows, and a
        changed consent row reaches its address's people (docs/vendors/dynamics.md,
        "Change tracking")."""
        if token is None:
            read = TrackedRead(iter(()))
            links: dict[str, str] = {}
            read.records = self._read_all("read", links, lambda: _seal(read, links))
            return read
        try:
            given = json.loads(token)
        except ValueError:
            given = None
        if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
            raise TokenExpired(DYNAMICS, "read: the stored change token is not one")
        fresh: dict[str, str] = {}
        rows: dict[str, list[dict[str, Any]]] = {}
        deleted = 0
        for name, link in given.items():
            found: list[str] = []
            rows[name] = []
            for row in self.transport.pages(link, "read", delta=found):
                if str(row.get("@odata.context", "")).endswith("$deletedEntity"):
                    deleted += 1
                else:
                    rows[name].append(row)
            if found:
                fresh[name] = found[-1]
        changed = {t: iter(rows.get(t.entity_set, [])) for t in self._people_tables("read")}
        addresses = (str(r.get(VALUE) or "") for r in rows.get(CONSENT_SET, []))
        records = self._changed(changed, addresses, "read")
        return TrackedRead(records, json.dumps(fresh, sort_keys=True), deleted)

    def _read_all(
        self,
        operation: str,
        links: dict[str, str] | None,
        done: Callable[[], None] = lambda: None,
    ) -> Iterator[CrmRecord]:
        """Every contact and lead: every consent row first, by page (a contact point per
        row, kept as a small index), then the people's tables by page. With ``links``, each
        read asks for change tracking and ``links`` gets its delta link; ``done`` is called
        once all is read, if every read gave one (else the read has no token)."""
        tracking = links is not None
        given: dict[str, str] = {}

        def rows(entity_set: str, select: str) -> Iterator[dict[str, Any]]:
            delta: list[str] | None = [] if tracking else None
            yield from self.transport.pages(
                query(entity_set, select=select), operation, delta=delta
            )
            if delta:
                given[entity_set] = delta[-1]

        index = ConsentIndex()
        if self._purposes(operation):
            for row in rows(CONSENT_SET, ",".join(CONSENT_COLUMNS)):
                index.add(ConsentRow.of(row))
        tables = self._people_tables(operation)
        for table in tables:
            for row in rows(table.entity_set, self._select(table)):
                yield self._record(table, row, index, operation)
        wanted = {t.entity_set for t in tables} | (
            {CONSENT_SET} if self._purposes(operation) else set()
        )
        if links is not None and set(given) == wanted:
            links.update(given)
            done()

    def _changed(
        self,
        changed: Mapping[Table, Iterator[dict[str, Any]]],
        addresses: Iterable[str],
        operation: str,
    ) -> Iterator[CrmRecord]:
        """Changed contacts and leads, a page at a time joined with their consent rows,
        then the people of the addresses whose consent rows changed; each record once."""
        seen: set[str] = set()
        for table, rows in changed.items():
            while page := list(islice(rows, PAGE)):
                index = self._index_for(page, operation)
                for row in page:
                    seen.add(str(row[table.key]))
                    yield self._record(table, row, index, operation)
        values = {normalise_email(a) for a in addresses} - {""}
        for record in self.find_by_emails(values) if values else ():
            if record.id not in seen:
                seen.add(record.id)
                yield record

    def _index_for(self, rows: Sequence[Mapping[str, Any]], operation: str) -> ConsentIndex:
        values = {normalise_email(a) for row in rows for a in emails_in(row)}
        return ConsentIndex(self._consent_rows(values, operation))

    def _rows_by_emails(
        self, emails: Collection[str], columns: Sequence[str] | None, operation: str
    ) -> dict[Table, list[dict[str, Any]]]:
        """The contact and lead rows any of these addresses reach (any of the three address
        columns, any case), each once; ``columns`` None: every column."""
        wanted = {normalise_email(e) for e in emails if e and e.strip()}
        found: dict[Table, dict[str, dict[str, Any]]] = {}
        for table in self._people_tables(operation):
            rows = found.setdefault(table, {})
            listed = [table.key, *EMAILS, *(columns or ())]
            select = ",".join(dict.fromkeys(listed)) if columns is not None else ""
            for chunk in chunks(sorted(wanted), IN_CHUNK):
                where = " or ".join(in_filter(column, chunk) for column in EMAILS)
                asked = query(table.entity_set, select=select, filter=where)
                for row in self.transport.pages(asked, operation):
                    if {normalise_email(a) for a in emails_in(row)} & wanted:
                        rows[str(row[table.key])] = row
        return {table: list(rows.values()) for table, rows in found.items()}

    def find_by_emails(self, emails: Collection[str]) -> list[CrmRecord]:
        operation = "find_by_emails"
        found = self._rows_by_emails(emails, self._columns(), operation)
        rows = [row for table_rows in found.values() for row in table_rows]
        index = self._index_for(rows, operation) if rows else ConsentIndex()
        return [
            self._record(table, row, index, operation)
            for table, table_rows in found.items()
            for row in table_rows
        ]

    def emails_of(self, record: RecordRef) -> list[str]:
        [emails] = self.emails_of_each([record])
        return emails

    def emails_of_each(self, records: Sequence[RecordRef]) -> list[list[str]]:
        """One ``$batch`` of GETs per thousand records; a record that is gone has none."""
        unique = list(dict.fromkeys(records))
        requests = [
            Request(
                "GET", query(f"{TABLES[r.object_type].entity_set}({r.id})", select=",".join(EMAILS))
            )
            for r in unique
            if r.object_type in TABLES
        ]
        answers = self.transport.batch(requests, "emails_of") if requests else []
        known = [r for r in unique if r.object_type in TABLES]
        emails: dict[RecordRef, list[str]] = {}
        for ref, answer in zip(known, answers, strict=True):
            if isinstance(answer, NotFound):
                emails[ref] = []
            elif isinstance(answer, AdapterError):
                raise answer
            else:
                emails[ref] = emails_in(answer.body if isinstance(answer.body, dict) else {})
        return [emails.get(r, []) for r in records]

    def record_url(self, record: RecordRef) -> str | None:
        table = TABLES.get(record.object_type)
        if table is None:
            return None
        return (
            f"{self.transport.environment}/main.aspx?pagetype=entityrecord"
            f"&etn={table.logical_name}&id={record.id}"
        )

    # -- consent and lawful basis -------------------------------------------------------------

    def field_for(self, object_type: str, field: str) -> tuple[str, str] | None:
        if object_type not in TABLES:
            return None
        if field in GLOBAL_FIELDS:
            return object_type, FLAGS[GLOBAL_FIELDS[field]]
        if field == "lawful_basis":
            return (object_type, self.basis_field) if self.basis_field else None
        if field.startswith("consent:"):
            wanted = field.removeprefix("consent:")
            if any(p.id == wanted for p in self.purposes):
                return CONSENT_TABLE, STATUS
        return None

    def _current(
        self, refs: Collection[RecordRef], columns: Sequence[str], operation: str
    ) -> dict[RecordRef, dict[str, Any]]:
        """The rows of these records (the missing ones left out), by In() over their ids."""
        rows: dict[RecordRef, dict[str, Any]] = {}
        by_table: dict[str, list[RecordRef]] = {}
        for ref in refs:
            by_table.setdefault(ref.object_type, []).append(ref)
        for object_type, wanted in by_table.items():
            table = TABLES.get(object_type)
            if table is None:
                continue
            select = ",".join(dict.fromkeys([table.key, *columns]))
            for chunk in chunks(sorted({r.id for r in wanted}), IDS_CHUNK):
                asked = query(table.entity_set, select=select, filter=in_filter(table.key, chunk))
                for row in self.transport.pages(asked, operation):
                    rows[RecordRef(DYNAMICS, object_type, str(row[table.key]).lower())] = row
        return {
            ref: rows[RecordRef(DYNAMICS, ref.object_type, ref.id.lower())]
            for ref in refs
            if RecordRef(DYNAMICS, ref.object_type, ref.id.lower()) in rows
        }

    def _patch_records(
        self,
        wanted: Mapping[RecordRef, Mapping[str, Any]],
        operation: str,
        current: Mapping[RecordRef, Mapping[str, Any]] | None = None,
    ) -> dict[RecordRef, Outcome]:
        """Write each record's columns that differ (``If-Match: *``): DONE, ALREADY when it
        held them, FAILED with the reason (a record gone: its 404). ``current``: the rows,
        when the caller has read them already."""
        if current is None:
            columns = sorted({c for changes in wanted.values() for c in changes})
            current = self._current(wanted, columns, operation)
        outcomes: dict[RecordRef, Outcome] = {}
        sending: list[tuple[RecordRef, Request]] = []
        for ref, changes in wanted.items():
            row = current.get(ref)
            if row is None:
                outcomes[ref] = (WriteStatus.FAILED, _gone(ref))
                continue
            differing = {c: v for c, v in changes.items() if row.get(c) != v}
            if not differing:
                outcomes[ref] = (WriteStatus.ALREADY, "")
                continue
            path = f"{TABLES[ref.object_type].entity_set}({ref.id})"
            sending.append((ref, Request("PATCH", path, differing, UPDATE)))
        answers = self.transport.batch([r for _, r in sending], operation) if sending else []
        for (ref, _), answer in zip(sending, answers, strict=True):
            outcomes[ref] = (
                _failed(answer) if isinstance(answer, AdapterError) else (WriteStatus.DONE, "")
            )
        return outcomes

    def write_consents(self, writes: Sequence[ConsentWrite]) -> list[WriteOutcome]:
        """Global opt-outs on the records' flags; a purpose's consent on the consent4 row of
        the write's address and the purpose (updated, else created)."""
        operation = "write_consents"
        results: dict[int, Outcome] = {}
        flags: dict[RecordRef, dict[str, Any]] = {}
        flag_writes: dict[int, RecordRef] = {}
        purpose_writes: list[tuple[int, ConsentWrite, str]] = []
        for index, write in enumerate(writes):
            if write.purpose is None:
                if write.record.object_type not in TABLES:
                    results[index] = (
                        WriteStatus.NOT_HOLDABLE,
                        f"a {write.record.object_type} holds no opt-out",
                    )
                    continue
                flags.setdefault(write.record, {})[FLAGS[write.channel]] = (
                    write.status is ConsentStatus.WITHDRAWN
                )
                flag_writes[index] = write.record
                continue
            found = self._purpose_row(operation, write.purpose)
            if found is None or write.status is ConsentStatus.UNKNOWN:
                said = "no such purpose in Dynamics 365" if found is None else "no state to write"
                results[index] = (WriteStatus.NOT_HOLDABLE, said)
                continue
            purpose_writes.append((index, write, found))
        # One read of every record written: the flags it holds, and whether it is still there.
        refs = set(flags) | {w.record for _, w, _ in purpose_writes}
        current = self._current(refs, list(FLAGS.values()), operation) if refs else {}
        # Each write is ALREADY by its own flag, though one PATCH carries a record's flags.
        for index, ref in list(flag_writes.items()):
            column = FLAGS[writes[index].channel]
            row = current.get(ref)
            if row is not None and row.get(column) == flags[ref][column]:
                results[index] = (WriteStatus.ALREADY, "")
                del flag_writes[index]
        patched = self._patch_records(flags, operation, current) if flags else {}
        for index, ref in flag_writes.items():
            results[index] = patched[ref]
        # A consent row holds the address itself: never one for a person no longer here.
        for index, write, _ in purpose_writes:
            if write.record.object_type in TABLES and write.record not in current:
                results[index] = (WriteStatus.FAILED, _gone(write.record))
        purpose_writes = [w for w in purpose_writes if w[0] not in results]
        results |= self._write_consent_rows(purpose_writes, operation)
        return [WriteOutcome(w.record, *results[i]) for i, w in enumerate(writes)]

    def _write_consent_rows(
        self, writes: Sequence[tuple[int, ConsentWrite, str]], operation: str
    ) -> dict[int, Outcome]:
        """Set each (address, purpose) row's state: the existing row updated (``If-Match:
        *``) or a row created. A create is not idempotent, so rows are read again before any
        write is sent again: one that landed despite a lost answer is then updated."""
        results: dict[int, Outcome] = {}
        pending = list(writes)
        for _ in range(self.transport.attempts):
            if not pending:
                break
            values = {normalise_email(w.email) for _, w, _ in pending}
            existing = {
                (r.address, r.purpose_id): r
                for r in self._consent_rows(values, operation)
                if r.channel == EMAIL_CHANNEL
            }
            sending: list[tuple[int, Request]] = []
            for index, write, purpose_id in pending:
                address = normalise_email(write.email)
                row = existing.get((address, purpose_id))
                if row is not None and row.status is write.status:
                    results[index] = (WriteStatus.ALREADY, "")
                    continue
                body: dict[str, Any] = {
                    STATUS: STATUS_WRITTEN[write.status],
                    "msdynmkt_source": INTERNAL_SOURCE,
                    "msdynmkt_logicalreason": NO_REASON,
                    "msdynmkt_reason": (write.explanation or BRIDGE_REASON)[:500],
                }
                if row is not None:
                    sending.append(
                        (index, Request("PATCH", f"{CONSENT_SET}({row.id})", body, UPDATE))
                    )
                    continue
                body |= {
                    VALUE: address,
                    CHANNEL: EMAIL_CHANNEL,
                    "msdynmkt_purposeid@odata.bind": f"/{PURPOSE_SET}({purpose_id})",
                }
                sending.append((index, Request("POST", CONSENT_SET, body)))
            answers = self.transport.send([r for _, r in sending], operation) if sending else []
            again = set()
            for (index, _), answer in zip(sending, answers, strict=True):
                if isinstance(answer, RateLimited | Transient):
                    again.add(index)
                    results[index] = _failed(answer)
                elif isinstance(answer, AdapterError):
                    results[index] = _failed(answer)
                else:
                    results[index] = (WriteStatus.DONE, "")
            pending = [w for w in pending if w[0] in again]
            if pending:
                self.transport.pause(answers)
        return results

    def write_lawful_bases(self, writes: Sequence[LawfulBasisWrite]) -> list[WriteOutcome]:
        operation = "write_lawful_bases"
        if not self.basis_field:
            return [
                WriteOutcome(
                    w.record, WriteStatus.NOT_HOLDABLE, "dynamics.lawful_basis_field is unset"
                )
                for w in writes
            ]
        wanted: dict[RecordRef, dict[str, Any]] = {}
        unmapped: dict[RecordRef, Outcome] = {}
        for write in writes:
            value = self.section.lawful_basis_options.get(write.lawful_basis)
            if value is None:
                unmapped[write.record] = (
                    WriteStatus.FAILED,
                    f"no option of {self.basis_field} stands for {write.lawful_basis}",
                )
            else:
                wanted[write.record] = {self.basis_field: value}
        outcomes = self._patch_records(wanted, operation) | unmapped
        return [WriteOutcome(w.record, *outcomes[w.record]) for w in writes]

    def mark_purge_due(self, marks: Sequence[DueMark]) -> list[WriteOutcome]:
        operation = "mark_purge_due"
        if not self.due_field:
            return [
                WriteOutcome(m.record, WriteStatus.NOT_HOLDABLE, "dynamics.due_field is unset")
                for m in marks
            ]
        wanted = {m.record: {self.due_field: _date(m.due)} for m in marks}
        outcomes = self._patch_records(wanted, operation)
        return [WriteOutcome(m.record, *outcomes[m.record]) for m in marks]

    # -- erasure -----------------------------------------------------------------------------

    def erasure_targets(self, people: Sequence[Collection[str]]) -> list[list[ErasureTarget]]:
        """Each person's consent4 rows (of their addresses and of every address their
        records hold), then their contacts and leads; found for everyone at once."""
        operation = "erasure_targets"
        everyone = {normalise_email(e) for person in people for e in person if e and e.strip()}
        found = self._rows_by_emails(everyone, [], operation)
        records = [
            (table, row, {normalise_email(a) for a in emails_in(row)})
            for table, rows in found.items()
            for row in rows
        ]
        values = everyone | {a for _, _, held in records for a in held}
        consent_rows = self._consent_rows(values, operation)
        answer = []
        for person in people:
            mine = {normalise_email(e) for e in person if e and e.strip()}
            reached = [(t, r, held) for t, r, held in records if held & mine]
            addresses = mine | {a for _, _, held in reached for a in held}
            answer.append(
                [
                    *(
                        ErasureTarget(DYNAMICS, CONSENT_TABLE, row.id)
                        for row in consent_rows
                        if row.address in addresses
                    ),
                    *(
                        ErasureTarget(DYNAMICS, t.logical_name, str(r[t.key]))
                        for t, r, _ in reached
                    ),
                ]
            )
        return answer

    def erase(
        self, targets: Sequence[ErasureTarget], mode: ErasureMode
    ) -> list[ErasureResult | AdapterError]:
        """Delete (or anonymise) every target in ``$batch`` calls; consent rows are deleted
        in either mode (they hold the address itself). After a delete, each contact's and
        lead's audit history goes too where allowed; while the recycle bin keeps deleted rows
        the answer says so, with its days."""
        operation = "erase"
        answers: dict[int, ErasureResult | AdapterError] = {}
        deleting: list[tuple[int, ErasureTarget]] = []
        anonymising: list[tuple[int, ErasureTarget]] = []
        for index, target in enumerate(targets):
            if target.id is None:
                answers[index] = ErasureResult(
                    target,
                    ErasureStatus.ALREADY_GONE,
                    "Dynamics 365 keeps no list of blocked addresses",
                )
            elif mode == "anonymize" and target.object_type in TABLES:
                anonymising.append((index, target))
            else:
                deleting.append((index, target))
        answers |= self._anonymise(anonymising, operation)
        answers |= self._delete(deleting, operation)
        return [answers[i] for i in range(len(targets))]

    def _set_of(self, object_type: str) -> str:
        return TABLES[object_type].entity_set if object_type in TABLES else CONSENT_SET

    def _delete(
        self, targets: Sequence[tuple[int, ErasureTarget]], operation: str
    ) -> dict[int, ErasureResult | AdapterError]:
        requests = [Request("DELETE", f"{self._set_of(t.object_type)}({t.id})") for _, t in targets]
        answers = self.transport.batch(requests, operation) if requests else []
        results: dict[int, ErasureResult | AdapterError] = {}
        deleted: list[tuple[int, ErasureTarget]] = []
        for (index, target), answer in zip(targets, answers, strict=True):
            if isinstance(answer, NotFound):
                results[index] = ErasureResult(target, ErasureStatus.ALREADY_GONE)
            elif isinstance(answer, AdapterError):
                results[index] = answer
            else:
                deleted.append((index, target))
        history = self._delete_history([t for _, t in deleted], operation)
        kept_days = self._recycle_bin_days(operation) if deleted else None
        for index, target in deleted:
            detail = history.get(target.id or "", "")
            if kept_days is not None:
                said = f"restorable from the recycle bin for up to {kept_days} days"
                results[index] = ErasureResult(
                    target, ErasureStatus.IN_RECYCLE_BIN, "; ".join(filter(None, [said, detail]))
                )
            else:
                results[index] = ErasureResult(target, ErasureStatus.ERASED, detail)
        return results

    def _delete_history(self, targets: Sequence[ErasureTarget], operation: str) -> dict[str, str]:
        """Each erased row's audit history removed (DeleteRecordChangeHistory: it keeps the
        old values, addresses of consent rows too); what remains, by row id, where it could
        not be."""
        if not targets:
            return {}
        if not self.section.delete_change_history:
            return dict.fromkeys(
                (t.id or "" for t in targets),
                "its audit history remains (dynamics.delete_change_history is off)",
            )
        requests = [
            Request(
                "POST",
                "DeleteRecordChangeHistory",
                {
                    "Target": {
                        "@odata.type": f"Microsoft.Dynamics.CRM.{t.object_type}",
                        _key_of(t.object_type): t.id,
                    }
                },
            )
            for t in targets
        ]
        remains: dict[str, str] = {}
        for target, answer in zip(targets, self.transport.batch(requests, operation), strict=True):
            if isinstance(answer, AdapterError):
                remains[target.id or ""] = f"its audit history remains: {answer.line()}"
        return remains

    def _recycle_bin_days(self, operation: str) -> int | None:
        """How long the environment keeps deleted contacts and leads; None: not at all."""
        try:
            rows = list(
                self.transport.pages(
                    query(
                        "recyclebinconfigs",
                        select="name,statecode,isreadyforrecyclebin,cleanupintervalindays",
                    ),
                    operation,
                )
            )
        except NotFound:  # an environment from before the recycle bin
            return None
        organisation = next((r for r in rows if r.get("name") == "organization"), None)
        if (
            organisation is None
            or organisation.get("statecode") != 0
            or not organisation.get("isreadyforrecyclebin")
        ):
            return None
        days = organisation.get("cleanupintervalindays")
        return int(days) if isinstance(days, int) and days > 0 else None

    def _anonymise(
        self, targets: Sequence[tuple[int, ErasureTarget]], operation: str
    ) -> dict[int, ErasureResult | AdapterError]:
        results: dict[int, ErasureResult | AdapterError] = {}
        sending: list[tuple[int, ErasureTarget, Request]] = []
        for index, target in targets:
            table = TABLES[target.object_type]
            try:
                got = self.transport.call(
                    Request("GET", f"{table.entity_set}({target.id})"), operation
                )
            except NotFound:
                results[index] = ErasureResult(target, ErasureStatus.ALREADY_GONE)
                continue
            except AdapterError as error:
                results[index] = error
                continue
            changes = anonymised(table, got.body or {}, self.keep.get(table.logical_name, ()))
            if not changes:
                results[index] = ErasureResult(
                    target, ErasureStatus.ANONYMIZED, "nothing personal left"
                )
                continue
            sending.append(
                (
                    index,
                    target,
                    Request("PATCH", f"{table.entity_set}({target.id})", changes, UPDATE),
                )
            )
        answers = self.transport.batch([r for _, _, r in sending], operation) if sending else []
        done: list[tuple[int, ErasureTarget]] = []
        for (index, target, _), answer in zip(sending, answers, strict=True):
            if isinstance(answer, NotFound):
                results[index] = ErasureResult(target, ErasureStatus.ALREADY_GONE)
            elif isinstance(answer, AdapterError):
                results[index] = answer
            else:
                done.append((index, target))
        history = self._delete_history([t for _, t in done], operation)  # the old values
        for index, target in done:
            results[index] = ErasureResult(
                target, ErasureStatus.ANONYMIZED, history.get(target.id or "", "")
            )
        return results

    def related(self, targets: Sequence[ErasureTarget], conditions: Sequence[R]) -> dict[str, R]:
        """Rows of each condition's table whose link column points at a target and that
        match its ``where`` (an OData ``$filter``); the first listed condition wins."""
        operation = "related"
        ids = sorted({t.id.lower() for t in targets if t.id and t.object_type in TABLES})
        held: dict[str, R] = {}
        for condition in (c for c in conditions if c.for_system(DYNAMICS)):
            for chunk in chunks(ids, IDS_CHUNK):
                where = f"({condition.where}) and {in_filter(condition.link_field, chunk)}"
                asked = query(condition.related_object, select=condition.link_field, filter=where)
                for row in self.transport.pages(asked, operation):
                    linked = str(row.get(condition.link_field) or "").lower()
                    if linked:
                        held.setdefault(linked, condition)
        by_id = {t.id.lower(): t.id for t in targets if t.id}
        return {by_id[i]: c for i, c in held.items() if i in by_id}

    # -- rights ------------------------------------------------------------------------------

    def export(self, emails: Collection[str]) -> dict[str, Any]:
        """Every column of every contact and lead these addresses reach, and every consent
        row of their addresses."""
        operation = "export"
        found = self._rows_by_emails(emails, None, operation)
        values = {normalise_email(e) for e in emails} | {
            normalise_email(a) for rows in found.values() for row in rows for a in emails_in(row)
        }
        consent_rows: list[dict[str, Any]] = []
        for chunk in chunks(sorted(values), IN_CHUNK):
            consent_rows += self.transport.pages(
                query(CONSENT_SET, filter=in_filter(VALUE, chunk)), operation
            )
        records = {table.logical_name: rows for table, rows in found.items()}
        return {"system": DYNAMICS, "records": {**records, CONSENT_TABLE: consent_rows}}

    def _attributes_of(self, logical_name: str, operation: str) -> dict[str, dict[str, Any]]:
        """A table's columns as its metadata describes them (``AttributeType``, and for text
        ``MaxLength``, which only the String and Memo types hold: a cast path each), asked
        once per adapter."""
        if logical_name not in self._attributes:
            path = f"EntityDefinitions(LogicalName='{logical_name}')/Attributes"
            rows = self.transport.pages(query(path, select="LogicalName,AttributeType"), operation)
            described = {str(r["LogicalName"]): dict(r) for r in rows}
            for cast in ("StringAttributeMetadata", "MemoAttributeMetadata"):
                typed = query(
                    f"{path}/Microsoft.Dynamics.CRM.{cast}", select="LogicalName,MaxLength"
                )
                for row in self.transport.pages(typed, operation):
                    described.setdefault(str(row["LogicalName"]), {})["MaxLength"] = row.get(
                        "MaxLength"
                    )
            self._attributes[logical_name] = described
        return self._attributes[logical_name]

    def check_rectify(self, changes: Mapping[str, str]) -> list[RectifyProblem]:
        operation = "rectify"
        problems = [
            RectifyProblem(DYNAMICS, name, None)
            for name in sorted(changes)
            if name not in RECTIFIABLE
        ]
        for table in self._people_tables(operation):
            problems += self._rectify_problems(table, changes, operation)
        return problems

    def _rectify_problems(
        self, table: Table, changes: Mapping[str, str], operation: str
    ) -> list[RectifyProblem]:
        described = self._attributes_of(table.logical_name, operation)
        problems = []
        for name, value in sorted(changes.items()):
            column = RECTIFIABLE.get(name)
            if column is None:
                continue
            where = f"{table.logical_name}.{column}"
            found = described.get(column)
            if found is None:
                problems.append(RectifyProblem(DYNAMICS, name, where))
            elif (limit := found.get("MaxLength")) and len(value) > int(limit):
                problems.append(RectifyProblem(DYNAMICS, name, where, int(limit)))
        return problems

    def rectify(self, emails: Collection[str], changes: Mapping[str, str]) -> list[WriteOutcome]:
        """Corrections (Art. 16) to every contact and lead the addresses reach, whole or not
        at all: a field mapped nowhere or a value too long fails every record unwritten."""
        operation = "rectify"
        found = self._rows_by_emails(emails, [], operation)
        refs = [
            RecordRef(DYNAMICS, t.logical_name, str(r[t.key]))
            for t, rows in found.items()
            for r in rows
        ]
        problems = self.check_rectify(changes)
        if problems:
            said = "; ".join(map(str, problems))
            return [WriteOutcome(ref, WriteStatus.FAILED, said) for ref in refs]
        wanted = {ref: {RECTIFIABLE[n]: v for n, v in changes.items()} for ref in refs}
        outcomes = self._patch_records(wanted, operation)
        return [WriteOutcome(ref, *outcomes[ref]) for ref in refs]

    # -- minimisation --------------------------------------------------------------------------

    def field_usage(self) -> list[ObjectUsage]:
        """Per contact and lead table, how many rows fill each column people or integrations
        can fill (all but keys and Dataverse's stamps); counted page by page."""
        operation = "field_usage"
        usage = []
        for table in self._people_tables(operation):
            described = self._attributes_of(table.logical_name, operation)
            filled: dict[str, int] = {}
            records = 0
            for row in self.transport.pages(table.entity_set, operation):
                records += 1
                for column, value in row.items():
                    if column.startswith("@") or column in COMPUTED or column == table.key:
                        continue
                    counted = filled.setdefault(column, 0)
                    if value is not None and value is not False and value != "":
                        filled[column] = counted + 1
            usage.append(
                ObjectUsage(
                    table.logical_name,
                    records,
                    tuple(
                        FieldUsage(
                            name,
                            count,
                            described.get(_attribute(name), {}).get("AttributeType") == "Memo",
                        )
                        for name, count in sorted(filled.items())
                    ),
                )
            )
        return usage

    # -- readiness ---------------------------------------------------------------------------

    def readiness(self, related: Sequence[RelatedRecords]) -> Iterator[Check]:
        operation = "check"
        self.transport.call(
            Request("GET", query("contacts", top="1", select="contactid")), operation
        )
        yield Check(
            "credentials",
            f"the app signs in to {self.transport.environment} as an application user",
        )
        tables = self._people_tables(operation)
        yield Check(
            "tables",
            ", ".join(t.entity_set for t in tables)
            + " readable"
            + (
                ""
                if _has_leads(tables)
                else "; no leads table (no Dynamics 365 Sales app): contacts only"
            ),
        )
        tracked = {
            str(r.get("LogicalName"))
            for r in self.transport.pages(
                query(
                    "EntityDefinitions",
                    select="LogicalName,ChangeTrackingEnabled",
                    filter="ChangeTrackingEnabled eq true",
                ),
                operation,
            )
        }
        for table in tables:
            on = table.logical_name in tracked
            yield Check(
                f"change tracking: {table.logical_name}",
                "on" if on else "off",
                ""
                if on
                else f"turn on 'Track changes' in the {table.logical_name} table's properties",
                ok=on,
            )
        for name, column in (
            ("lawful_basis_field", self.basis_field),
            ("due_field", self.due_field),
        ):
            if not column:
                continue
            for table in tables:
                present = column in self._attributes_of(table.logical_name, operation)
                yield Check(
                    name,
                    f"{table.logical_name}.{column} {'exists' if present else 'is missing'}",
                    ""
                    if present
                    else f"create {column} on {table.logical_name}, or set dynamics.{name}",
                    ok=present,
                )
        known = {p.id for p in self._purposes(operation).values()}
        for purpose in self.purposes:
            called = purpose_keys(purpose).purpose
            here = purpose.id in known
            yield Check(
                f"purpose {purpose.id}",
                f"Journeys purpose '{called}' {'found' if here else 'not found'}",
                ""
                if here
                else f"create the purpose '{called}' in Customer Insights - Journeys, or fix "
                "its dynamics_purpose",
                ok=here,
            )
        for purpose_id in self.unheld:
            yield Check(
                f"purpose {purpose_id}",
                "not an email purpose: the bridge keeps consent in Dynamics 365 for email only",
                f"remove dynamics_purpose from purpose {purpose_id}",
                ok=False,
            )
        days = self._recycle_bin_days(operation)
        yield Check(
            "recycle bin",
            "off: an erased row is gone at once"
            if days is None
            else f"on: erased rows stay restorable for up to {days} days",
        )
        for condition in (c for c in related if c.for_system(DYNAMICS)):
            asked = query(
                condition.related_object,
                top="1",
                select=condition.link_field,
                filter=condition.where,
            )
            try:
                self.transport.call(Request("GET", asked), operation)
            except (Permanent, NotFound) as refused:  # NotFound: no such table (404)
                yield Check(
                    f"related {condition.name}",
                    f"{condition.related_object}: {refused.line()}",
                    "fix the condition's related_object, link_field or where",
                    ok=False,
                )
            else:
                yield Check(
                    f"related {condition.name}",
                    f"{condition.related_object}.{condition.link_field} readable",
                )


def _gone(ref: RecordRef) -> str:
    return f"the {ref.object_type} is not in Dynamics 365 (deleted?); nothing written"


def _key_of(object_type: str) -> str:
    """The primary key column of a table the bridge erases rows of."""
    return TABLES[object_type].key if object_type in TABLES else CONSENT_KEY


def _seal(read: TrackedRead, links: Mapping[str, str]) -> None:
    """A full tracked read's token, once every table gave its delta link."""
    read.token = json.dumps(dict(links), sort_keys=True)


def _has_leads(tables: Sequence[Table]) -> bool:
    return any(t.logical_name == "lead" for t in tables)


def _attribute(column: str) -> str:
    """A lookup's column (``_parentcustomerid_value``) as its metadata names it."""
    return column[1:-6] if column.startswith("_") and column.endswith("_value") else column


def _date(value: date | None) -> str | None:
    return value.isoformat() if value else None
