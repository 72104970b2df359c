"""Writing consent to Salesforce: opt-out flags, Individuals and ContactPointTypeConsent rows.

:meth:`ConsentWriter.write` reads what Salesforce holds first, so a change already held is
``ALREADY`` (no echo) and a repeated create finds what landed; then it writes in sObject
Collections of 200. An org without the privacy objects holds the flags only. The rules,
objections and required fields: docs/vendors/salesforce.md ("Consent model", "Lawful-basis
vocabulary", "Orgs without the privacy objects").
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from simple_salesforce.format import format_soql

from bridge.adapters.base import ConsentWrite, RecordRef, WriteOutcome, WriteStatus
from bridge.adapters.salesforce import SALESFORCE
from bridge.adapters.salesforce.org import LINK, OrgProfile
from bridge.adapters.salesforce.records import (
    BRIDGE_SOURCE,
    CONSENT_ROW_FIELDS,
    FLAGS,
    OBJECTIONS,
    SOBJECTS,
    STATUS_WRITTEN,
    RecordMapper,
    iso,
    lawful_basis,
    recorded_at,
    select,
)
from bridge.adapters.salesforce.settings import contact_point_type, purpose_keys
from bridge.adapters.salesforce.transport import RowResult, Transport
from bridge.identity import normalise_email
from bridge.model import ConsentStatus, Evidence, LawfulBasis, ObjectType, Purpose

OPERATION = "write_consents"
EXPLANATION_LENGTH = 255  # ContactPointTypeConsent.Name
NOT_HOLDABLE = "per-purpose consent is not holdable in this org"
OBJECTED = (
    "the person's Individual says Don't Market or Don't Process; only the person can lift "
    "that, so the bridge does not"
)

Result = tuple[WriteStatus, str]
RowKey = tuple[str, str, str]  # party, DataUsePurposeId, contact-point type (case-folded)
DONE: Result = (WriteStatus.DONE, "")
ALREADY: Result = (WriteStatus.ALREADY, "")


def _failed(detail: str) -> Result:
    return WriteStatus.FAILED, detail


def _outcome(result: RowResult) -> Result:
    return DONE if result.ok else _failed(result.detail)


def _flag(write: ConsentWrite) -> str:
    """The field a global opt-out write sets: its channel's flag on its kind of record."""
    return FLAGS[write.record.object_type][write.channel]


def _objects(row: Mapping[str, Any]) -> bool:
    """Whether the Individual of a record (or the Individual itself) records an objection."""
    individual = row.get("Individual") or row
    return any(individual.get(name) for name in OBJECTIONS)


def _explanation(write: ConsentWrite) -> str | None:
    text = write.explanation
    return text[: EXPLANATION_LENGTH - 1] + "…" if text and len(text) > EXPLANATION_LENGTH else text


def _millis(moment: datetime | None) -> str | None:
    """Salesforce keeps datetimes to the millisecond; compare them so."""
    return iso(moment) if moment else None


@dataclass(frozen=True)
class _Change:
    """One purpose write resolved: the write, its purpose and the record it goes to."""

    index: int
    write: ConsentWrite
    purpose: Purpose
    purpose_id: str


class ConsentWriter:
    """``write_consents`` for one org (see the module docstring for the rules)."""

    def __init__(
        self, transport: Transport, mapper: RecordMapper, purposes: Sequence[Purpose]
    ) -> None:
        self._t = transport
        self._map = mapper
        self._purposes = {p.id: p for p in purposes}
        self._purpose_ids: dict[str, str] = {}  # DataUsePurpose id by name, case-folded
        self._purpose_bases: dict[str, LawfulBasis | None] = {}  # its lawful basis, by id

    def write(self, writes: Sequence[ConsentWrite], org: OrgProfile) -> list[WriteOutcome]:
        """One outcome per write; a purpose's consent where ``org`` cannot hold it is
        ``NOT_HOLDABLE``, with no call made for it."""
        current = self._current(writes, org)
        results: dict[int, Result] = {}
        flags: list[int] = []
        changes: list[_Change] = []
        for index, write in enumerate(writes):
            problem = self._problem(write, current, org)
            if problem:
                results[index] = problem
            elif write.purpose is None:
                flags.append(index)
            else:
                purpose = self._purposes[write.purpose]
                name = str(purpose_keys(purpose).data_use_purpose)
                changes.append(_Change(index, write, purpose, self._purpose_ids[name.casefold()]))
        results |= self._flags(writes, flags, current)
        results |= self._consents(changes, current)
        return [WriteOutcome(w.record, *results[i]) for i, w in enumerate(writes)]

    # -- what Salesforce holds -------------------------------------------------------------

    def _current(
        self, writes: Sequence[ConsentWrite], org: OrgProfile
    ) -> dict[str, dict[str, Any]]:
        """The records written to, by id: their flags and (where the org has them) their
        Individual and its objections."""
        ids: dict[str, set[str]] = {}
        for write in writes:
            if write.record.system == SALESFORCE and write.record.object_type in FLAGS:
                ids.setdefault(write.record.object_type, set()).add(write.record.id)
        if org.privacy and any(w.purpose is not None for w in writes):
            self._load_purposes()
        rows: dict[str, dict[str, Any]] = {}
        for object_type, wanted in ids.items():
            if object_type == ObjectType.INDIVIDUAL.value:
                if not org.privacy:
                    continue  # no such object here: not found
                fields: tuple[str, ...] = ("Id", *OBJECTIONS)
            else:
                linked = (LINK, *(f"Individual.{name}" for name in OBJECTIONS))
                fields = ("Id", *FLAGS[object_type].values(), *(linked if org.privacy else ()))
            soql = select(SOBJECTS[object_type], fields, "Id IN ")
            rows |= {row["Id"]: row for row in self._t.query_in(OPERATION, soql, wanted)}
        return rows

    def _load_purposes(self) -> None:
        """DataUsePurposes by name, once per adapter (and again when one is missing)."""
        names = self._map.purpose_names
        if self._purpose_ids and all(n.casefold() in self._purpose_ids for n in names):
            return
        soql = select("DataUsePurpose", ("Id", "Name", "LegalBasis.Name"), "Name IN ")
        rows = list(self._t.query_in(OPERATION, soql, names))
        self._purpose_ids = {row["Name"].casefold(): row["Id"] for row in rows}
        self._purpose_bases = {
            row["Id"]: lawful_basis(
                row["Id"], "LegalBasis.Name", (row["LegalBasis"] or {}).get("Name")
            )
            for row in rows
        }

    def _problem(
        self, write: ConsentWrite, current: Mapping[str, Any], org: OrgProfile
    ) -> Result | None:
        """Why a write cannot be made at all (failed, or not holdable here), or None."""
        record = write.record
        if record.system != SALESFORCE or record.object_type not in FLAGS:
            return _failed(f"a {record.system} {record.object_type} holds no Salesforce consent")
        if record.id not in current:
            return _failed("NOT_FOUND")
        if write.status is ConsentStatus.UNKNOWN:
            return _failed("unknown is not written: it never overrides a known state")
        if write.purpose is None:
            if write.channel in FLAGS[record.object_type]:
                return None
            return _failed(f"a Salesforce {record.object_type} has no {write.channel} opt-out")
        if not org.privacy:
            return WriteStatus.NOT_HOLDABLE, f"{NOT_HOLDABLE} ({org.missing})"
        purpose = self._purposes.get(write.purpose)
        name = purpose_keys(purpose).data_use_purpose if purpose else None
        if not name:
            unmapped = f"purpose {write.purpose!r} is not mapped to a Salesforce DataUsePurpose"
            return _failed(unmapped)
        if name.casefold() not in self._purpose_ids:
            return _failed(f"DataUsePurpose {name!r} does not exist in Salesforce")
        return None

    # -- global opt-outs -------------------------------------------------------------------

    def _flags(
        self,
        writes: Sequence[ConsentWrite],
        indices: Sequence[int],
        held: Mapping[str, Mapping[str, Any]],
    ) -> dict[int, Result]:
        """Each record's flags in one row, whichever channels the writes name."""
        results: dict[int, Result] = {}
        wanted: dict[RecordRef, dict[str, bool]] = {}  # record -> flag -> opted out
        for index in indices:
            write = writes[index]
            withdrawn = write.status is ConsentStatus.WITHDRAWN
            if not withdrawn and _objects(held[write.record.id]):
                results[index] = (WriteStatus.NEEDS_SELF_SERVICE, OBJECTED)
            else:
                wanted.setdefault(write.record, {})[_flag(write)] = withdrawn
        changed: dict[RecordRef, dict[str, bool]] = {}
        for record, flags in wanted.items():
            row = held[record.id]
            differ = {f: value for f, value in flags.items() if value != bool(row.get(f))}
            if differ:
                changed[record] = differ
        rows = [
            {"attributes": {"type": SOBJECTS[record.object_type]}, "Id": record.id, **flags}
            for record, flags in changed.items()
        ]
        saved = dict(zip(changed, self._t.save(OPERATION, "PATCH", rows), strict=True))
        for index in indices:
            write = writes[index]
            if index in results:
                continue
            if _flag(write) in changed.get(write.record, {}):
                results[index] = _outcome(saved[write.record])
            else:
                results[index] = ALREADY
        return results

    # -- purposes --------------------------------------------------------------------------

    def _consents(
        self, changes: Sequence[_Change], current: Mapping[str, Mapping[str, Any]]
    ) -> dict[int, Result]:
        parties, fresh, failures = self._parties(changes, current)
        results = {
            c.index: _failed(failures[c.write.record.id])
            for c in changes
            if c.write.record.id in failures
        }
        pending = [c for c in changes if c.index not in results]
        held = {parties[c.write.record.id] for c in pending} - fresh
        existing = self._latest_rows(held, {c.purpose_id for c in pending})
        targets: dict[RowKey, list[_Change]] = {}
        for change in pending:
            key = self._row_key(parties[change.write.record.id], change)
            targets.setdefault(key, []).append(change)
        updates: dict[RowKey, dict[str, Any]] = {}
        creates: dict[RowKey, dict[str, Any]] = {}
        for key, group in targets.items():
            change = group[-1]  # the last change to a row is the one that stands
            row = existing.get(key)
            if row is None:
                creates[key] = self._new_row(key[0], change)
            elif self._holds(row, change.write):
                results |= {c.index: ALREADY for c in group}
            else:
                updates[key] = {"Id": row["Id"], **self._row_fields(change)}
        for key, result in self._save_rows(updates, creates).items():
            results |= {c.index: _outcome(result) for c in targets[key]}
        for change in pending:
            results[change.index] = self._noted(change, results[change.index])
        return results

    def _noted(self, change: _Change, result: Result) -> Result:
        """A success, with a note when the change names another lawful basis than the one
        Salesforce keeps for the purpose."""
        held = self._purpose_bases.get(change.purpose_id)
        asked = change.write.lawful_basis
        if result[0] is WriteStatus.FAILED or asked is None or asked is held:
            return result
        name = purpose_keys(change.purpose).data_use_purpose
        kept = held.value if held else "none"
        note = f"Salesforce keeps the lawful basis per DataUsePurpose: {name!r} says {kept}"
        return result[0], note

    def _parties(
        self, changes: Sequence[_Change], current: Mapping[str, Mapping[str, Any]]
    ) -> tuple[dict[str, str], set[str], dict[str, str]]:
        """The Individual of every record written to, creating and linking missing ones.

        Records without one are grouped by address: each group shares the Individual one of
        its records has already, or one new Individual. Returns the Individual by record id,
        the Individuals just created, and failures by record id.
        """
        parties: dict[str, str] = {}
        groups: dict[str, list[str]] = {}
        types: dict[str, str] = {}
        for change in changes:
            record = change.write.record
            types[record.id] = record.object_type
            held = current[record.id].get("IndividualId")
            party = record.id if record.object_type == ObjectType.INDIVIDUAL.value else held
            if party:
                parties[record.id] = party
            members = groups.setdefault(normalise_email(change.write.email) or record.id, [])
            if record.id not in members:
                members.append(record.id)
        orphans: list[str] = []
        lacking: dict[str, list[str]] = {}  # anchor record -> records sharing its new Individual
        for members in groups.values():
            homeless = sorted(r for r in members if r not in parties)
            if not homeless:
                continue
            orphans += homeless
            shared = next((parties[r] for r in sorted(members) if r in parties), None)
            if shared:
                parties |= dict.fromkeys(homeless, shared)
            else:
                lacking[homeless[0]] = homeless
        fresh, failures = self._create_individuals(lacking, parties)
        failures |= self._link([r for r in orphans if r in parties], parties, types)
        return parties, fresh, failures

    def _create_individuals(
        self, lacking: Mapping[str, Sequence[str]], parties: dict[str, str]
    ) -> tuple[set[str], dict[str, str]]:
        """One Individual per anchor record, found by name first, else created; adds them to
        ``parties`` and returns the ids created and the failures by record id."""
        names = {anchor: f"{BRIDGE_SOURCE} {anchor}" for anchor in sorted(lacking)}
        ids = self._individuals_named(names.values())
        missing = [name for name in names.values() if name not in ids]
        rows = [{"attributes": {"type": "Individual"}, "LastName": name} for name in missing]

        def landed(indices: Sequence[int]) -> dict[int, str]:
            again = self._individuals_named([missing[i] for i in indices])
            return {i: again[missing[i]] for i in indices if missing[i] in again}

        created = dict(
            zip(missing, self._t.save(OPERATION, "POST", rows, landed=landed), strict=True)
        )
        ids |= {name: str(result.id) for name, result in created.items() if result.ok}
        failures: dict[str, str] = {}
        for anchor, name in names.items():
            if name in ids:
                parties |= dict.fromkeys(lacking[anchor], ids[name])
            else:
                failures |= dict.fromkeys(lacking[anchor], created[name].detail)
        return {str(r.id) for r in created.values() if r.ok}, failures

    def _individuals_named(self, names: Collection[str]) -> dict[str, str]:
        soql = select("Individual", ("Id", "LastName"), "LastName IN ")
        return {row["LastName"]: row["Id"] for row in self._t.query_in(OPERATION, soql, names)}

    def _link(
        self, records: Sequence[str], parties: Mapping[str, str], types: Mapping[str, str]
    ) -> dict[str, str]:
        """Point records at their Individual; failures (e.g. a converted lead) by record id."""
        rows = [
            {"attributes": {"type": SOBJECTS[types[r]]}, "Id": r, "IndividualId": parties[r]}
            for r in records
        ]
        saved = self._t.save(OPERATION, "PATCH", rows)
        return {r: result.detail for r, result in zip(records, saved, strict=True) if not result.ok}

    # -- consent rows ----------------------------------------------------------------------

    @staticmethod
    def _row_key(party: str, change: _Change) -> RowKey:
        return party, change.purpose_id, contact_point_type(change.purpose).casefold()

    def _latest_rows(
        self, parties: Collection[str], purpose_ids: Collection[str]
    ) -> dict[RowKey, dict[str, Any]]:
        """Per party, purpose and contact-point type, the latest consent row."""
        if not parties:
            return {}
        purposes = format_soql("DataUsePurposeId IN {} AND PartyId IN ", sorted(purpose_ids))
        soql = select("ContactPointTypeConsent", CONSENT_ROW_FIELDS, purposes)
        latest: dict[RowKey, dict[str, Any]] = {}
        for row in self._t.query_in(OPERATION, soql, parties):
            key = (
                row["PartyId"],
                row["DataUsePurposeId"],
                (row["ContactPointType"] or "").casefold(),
            )
            if key not in latest or recorded_at(row) >= recorded_at(latest[key]):
                latest[key] = row
        return latest

    def _holds(self, row: Mapping[str, Any], write: ConsentWrite) -> bool:
        """Whether a row already says what the write says (evidence included, if it has any)."""
        if row.get("PrivacyConsentStatus") != STATUS_WRITTEN[write.status]:
            return False
        if write.explanation is not None and row.get("Name") != _explanation(write):
            return False
        given = write.evidence
        if given == Evidence():
            return True
        held = self._map.evidence(row)
        return (
            given.capture_source,
            _millis(given.captured_at),
            _millis(given.double_opt_in_at),
        ) == (
            held.capture_source,
            _millis(held.captured_at),
            _millis(held.double_opt_in_at),
        )

    @staticmethod
    def _row_fields(change: _Change) -> dict[str, Any]:
        """Status and evidence; without evidence, the bridge's own mark and time (see
        ``BRIDGE_SOURCE``), because Salesforce requires a capture source and date."""
        evidence = change.write.evidence
        double = evidence.double_opt_in_at
        return {
            "attributes": {"type": "ContactPointTypeConsent"},
            "PrivacyConsentStatus": STATUS_WRITTEN[change.write.status],
            "CaptureDate": iso(evidence.captured_at or datetime.now(UTC)),
            "CaptureSource": evidence.capture_source or BRIDGE_SOURCE,
            "CaptureContactPointType": contact_point_type(change.purpose),
            "DoubleConsentCaptureDate": iso(double) if double else None,
            "Name": _explanation(change.write),
        }

    def _new_row(self, party: str, change: _Change) -> dict[str, Any]:
        point = contact_point_type(change.purpose)
        return {
            **self._row_fields(change),
            "PartyId": party,
            "DataUsePurposeId": change.purpose_id,
            "ContactPointType": point,
        }

    def _save_rows(
        self, updates: Mapping[RowKey, dict[str, Any]], creates: Mapping[RowKey, dict[str, Any]]
    ) -> dict[RowKey, RowResult]:
        saved = dict(
            zip(updates, self._t.save(OPERATION, "PATCH", list(updates.values())), strict=True)
        )
        keys = list(creates)

        def landed(indices: Sequence[int]) -> dict[int, str]:
            wanted = [keys[i] for i in indices]
            rows = self._latest_rows({k[0] for k in wanted}, {k[1] for k in wanted})
            return {i: rows[keys[i]]["Id"] for i in indices if keys[i] in rows}

        results = self._t.save(OPERATION, "POST", list(creates.values()), landed=landed)
        return saved | dict(zip(keys, results, strict=True))
