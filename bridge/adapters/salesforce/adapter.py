"""The Salesforce adapter: people, consent, lawful basis and erasure on simple-salesforce 1.12.

SOQL reads that page each object once and join rows into people here; ``records`` maps
them, ``consent`` writes consent back, ``transport`` carries every call. Erasure finds many
people's rows in one pass and erases each object's rows together: one hard-delete job, or
deletes and purges of the recycle bin, 200 rows per call. An org without the privacy
objects (``org``) is read and written through Contacts and Leads alone. The facts behind
each choice:
docs/vendors/salesforce.md ("Reading changes", "Consent model", "Erasure", "Orgs without the
privacy objects").
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain, islice
from typing import Any, TypeGuard
from urllib.parse import quote_plus

from simple_salesforce.format import format_soql

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
    LawfulBasisWrite,
    NotFound,
    ObjectUsage,
    Permanent,
    R,
    RecordRef,
    RectifyProblem,
    WriteOutcome,
    WriteStatus,
    classify,
)
from bridge.adapters.salesforce import SALESFORCE, readiness
from bridge.adapters.salesforce.consent import NOT_HOLDABLE, ConsentWriter
from bridge.adapters.salesforce.org import LINK, SETUP, OrgProfile, detect
from bridge.adapters.salesforce.records import (
    ADDRESS_FIELDS,
    CONSENT_FIELDS,
    CONSENT_ROW,
    FLAGS,
    INDIVIDUAL_FIELDS,
    INDIVIDUAL_PREFIX,
    PEOPLE,
    PERSONAL,
    SOBJECTS,
    RecordMapper,
    anonymised,
    iso,
    select,
    utc,
    when,
)
from bridge.adapters.salesforce.settings import KEEP_ON_ANONYMIZE, SalesforceSettings, purpose_keys
from bridge.adapters.salesforce.transport import (
    ERRORS,
    QUERY_PAGE,
    URI_LIMIT,
    RowResult,
    Transport,
)
from bridge.adapters.salesforce.vocabulary import salesforce_field_vocabulary
from bridge.adapters.usage import measure
from bridge.adapters.vocabulary import Unmappable, Vocabulary
from bridge.identity import normalise_email
from bridge.logs import get_logger
from bridge.model import Channel, Consent, CrmRecord, ObjectType, Purpose, RelatedRecords

DELETED_DAYS = 15  # getDeleted and the recycle bin keep deletions this long
# Erasure order: rows that point at an Individual before the Individual itself.
ERASE_ORDER = ("ContactPointTypeConsent", "ContactPointEmail", "Contact", "Lead", "Individual")
# Where a person's rows are found: the objects holding an address, and each object's field
# naming the person's Individual.
BY_ADDRESS = (("Contact", "Email"), ("Lead", "Email"), ("ContactPointEmail", "EmailAddress"))
LINKS = {
    "Contact": LINK,
    "Lead": LINK,
    "ContactPointEmail": "ParentId",
    "ContactPointTypeConsent": "PartyId",
    "Individual": "Id",
}
HARD_DELETED = "hard-deleted (Bulk API 2.0): it never went to the recycle bin"
PURGED = "deleted, then purged from the recycle bin"
OBJECT_TYPES = {sobject: object_type for object_type, sobject in SOBJECTS.items()}
# Compound fields repeat their parts, and binary ones cannot be queried in a list.
UNEXPORTED_TYPES = frozenset({"address", "location", "base64"})
ENTITY_IS_DELETED = "ENTITY_IS_DELETED"
CONVERTED_LEAD = "CANNOT_UPDATE_CONVERTED_LEAD"
# The running user's own permissions (UserPermissionAccess): Bulk API Hard Delete.
HARD_DELETE_PERMISSION = "PermissionsBulkApiHardDelete"
# What `rectify` writes, per object: each common field name and the field that holds it (the
# read mapping turned round); a person's Individual holds their names only.
_WRITTEN = {common: field for field, common in PERSONAL.items()}
RECTIFIABLE: dict[str, dict[str, str]] = {
    "Contact": _WRITTEN,
    "Lead": _WRITTEN,
    "Individual": {c: f for c, f in _WRITTEN.items() if f in INDIVIDUAL_FIELDS},
}
CONVERTED = (
    f"a converted lead: Salesforce refuses to change it ({CONVERTED_LEAD}); "
    "the person lives on in the contact it became"
)

Rows = dict[str, list[dict[str, Any]]]
# What became of one row: a status and its detail, or the error of that row alone.
Outcome = tuple[ErasureStatus, str] | AdapterError
# The objects a person's rows live in, with the privacy objects and without.
PRIVACY_ROWS = tuple(SOBJECTS.values())
BASIC_ROWS = tuple(SOBJECTS[t.value] for t in PEOPLE)
GLOBAL_FIELDS = {"opt_out": Channel.EMAIL, "do_not_call": Channel.PHONE}

log = get_logger(__name__)


@dataclass(frozen=True)
class Deletion:
    """A record deleted in Salesforce (getDeleted keeps 15 days of them)."""

    record: RecordRef
    deleted_at: datetime | None


# Salesforce takes the SOQL in ``?q=`` within its documented 16,384 bytes (``URI_LIMIT``,
# headers allowed for); 1 KB is left for the instance URL and the rest of the statement.
URL_BUDGET = URI_LIMIT - 1_024


def soql_cost(name: str) -> int:
    """The characters ``<name>, `` adds to a URL-encoded SOQL statement."""
    return len(quote_plus(f"{name}, "))


class SalesforceAdapter(ClosesOnExit):
    """``CrmAdapter`` for Salesforce (see the module docstring for the API choices)."""

    system = SALESFORCE
    # Targets per erase call: each object's rows go in one Bulk API job, or 200 per call
    # without hard delete; 2,000 rows (Bulk 2.0's threshold) take seconds either way.
    erase_batch = 2_000

    def __init__(
        self,
        settings: SalesforceSettings,
        purposes: Sequence[Purpose],
        *,
        attempts: int = 8,
        timeout: float = 60.0,
        bulk_wait: int = 1,
        keep_on_anonymize: Mapping[str, Sequence[str]] | None = None,
        read_fields: Mapping[str, Sequence[str]] | None = None,
        due_field: str | None = None,
    ) -> None:
        """``bulk_wait``: seconds before a Bulk API job is first polled;
        ``keep_on_anonymize``: ``erasure.keep_on_anonymize`` (its ``salesforce.*`` entries);
        ``read_fields``: more fields to read per sObject (what retention rules look at);
        ``due_field``: the date field on Contact and Lead that ``mark_purge_due`` sets."""
        self._settings = settings
        self._t = Transport(settings, attempts=attempts, timeout=timeout, bulk_wait=bulk_wait)
        self._map = RecordMapper(purposes, settings.lawful_basis_field, read_fields, due_field)
        self._writer = ConsentWriter(self._t, self._map, purposes)
        self._purposes = {p.id: p for p in purposes}
        self._described: dict[str, list[dict[str, Any]]] = {}
        self._listed: list[dict[str, Any]] | None = None
        self._org: OrgProfile | None = None
        self._hard_delete = True  # until a hardDelete job is refused
        keep = KEEP_ON_ANONYMIZE if keep_on_anonymize is None else keep_on_anonymize
        self._keep = {
            key.removeprefix("salesforce."): tuple(names)
            for key, names in keep.items()
            if key.startswith("salesforce.")
        }

    def close(self) -> None:
        self._t.close()

    def allowances(self) -> list[Allowance]:
        """The org's daily API requests as ``Sforce-Limit-Info`` last said them (Salesforce
        has no short window)."""
        return self._t.quota.allowances()

    @property
    def org(self) -> OrgProfile:
        """The path this org allows, found on first use (the global describe, and with the
        privacy objects the describes of Contact and Lead) and logged once."""
        if self._org is None:
            org = detect(self._sobjects(), lambda sobject: self._describe("connect", sobject))
            log.info("salesforce.path_chosen", path=org.name, reason=org.missing or None)
            self._org = org
        return self._org

    def _sobjects(self) -> list[dict[str, Any]]:
        """The global describe's objects: those the org has and the user may use, with what
        it may do to each; asked once per adapter."""
        if self._listed is None:
            self._listed = list(self._t.rest("connect", "sobjects")["sobjects"])
        return self._listed

    def capabilities(self) -> list[str]:
        """What the bridge syncs in this org, one line each (for ``bridge check --crm``)."""
        return self.org.lines(self._settings.lawful_basis_field)

    def readiness(self, related: Sequence[RelatedRecords]) -> Iterator[Check]:
        """The login first (its refusal raises), then the path this org allows; each object
        and field as the bridge uses it (describes); the lawful-basis picklist; the purposes'
        DataUsePurposes; which erasure the user may run; and each ``related`` condition, run
        as the bridge runs it (one row asked for, nothing kept)."""
        yield Check("credentials", f"logged in to {self._t.instance_url()}")
        org = self.org
        yield from (Check("", line) for line in self.capabilities())
        listed = {str(o.get("name")): o for o in self._sobjects()}

        def fields_of(sobject: str) -> list[dict[str, Any]]:
            return self._describe("describe", sobject) if sobject in listed else []

        basis = self._settings.lawful_basis_field
        for grant in readiness.needed(
            privacy=org.privacy,
            lawful_basis_field=basis,
            due_field=self._map.due_field,
            read_fields=self._map.attributes,
        ):
            entry = listed.get(grant.sobject)
            yield readiness.access(grant, entry, fields_of(grant.sobject), org.privacy)
        yield readiness.lawful_basis(basis, fields_of)
        wanted = {
            purpose.id: name
            for purpose in self._purposes.values()
            if (name := purpose_keys(purpose).data_use_purpose)
        }
        if org.privacy:
            soql = select("DataUsePurpose", ("Name", "LegalBasis.Name"))
            yield readiness.purposes(wanted, list(self._t.query("read_purposes", soql)))
        elif wanted:
            yield Check("purposes", "DataUsePurpose names unused: this org holds no such consent")
        yield readiness.erasure(self._may_hard_delete(), self._settings.empty_recycle_bin)
        yield from (self._condition(c) for c in related if c.for_system(SALESFORCE))

    def _may_hard_delete(self) -> bool | None:
        """Whether the user has Bulk API Hard Delete, as UserPermissionAccess shows the running
        user's own permissions (no View Setup needed); None when it cannot be read."""
        soql = select("UserPermissionAccess", (HARD_DELETE_PERMISSION,))
        try:
            rows = list(self._t.query("read_permissions", soql))
        except Permanent:
            return None
        return bool(rows and rows[0].get(HARD_DELETE_PERMISSION))

    def _condition(self, condition: RelatedRecords) -> Check:
        """Whether a condition on related rows (a legal hold, a retention rule's) can be
        queried as ``related`` queries it: object, link field and ``where``."""
        name = f"condition {condition.name}"
        where = f"{condition.related_object}.{condition.link_field}"
        soql = select(condition.related_object, (condition.link_field,), f"({condition.where})")
        try:
            next(self._t.query("related", f"{soql} LIMIT 1"), None)
        except Permanent as refused:
            fix = (
                "correct its related_object, link_field or where in the settings, or grant the "
                "integration user read access to what it names"
            )
            found = f"{where} cannot be queried: {refused.summary or refused}"
            return Check(name, found, fix, ok=False)
        return Check(name, f"{where} and its where clause can be queried")

    def _objects(self) -> tuple[str, ...]:
        """The objects that hold a person's rows in this org."""
        return PRIVACY_ROWS if self.org.privacy else BASIC_ROWS

    def field_for(self, object_type: str, field: str) -> tuple[str, str] | None:
        """Consent lives in the Individual's ContactPointTypeConsent rows (where the org has
        them); the global opt-outs in each record's flags; the lawful basis in the
        configured field of Contacts and Leads."""
        if object_type not in FLAGS:
            return None
        sobject = SOBJECTS[object_type]
        if object_type == ObjectType.INDIVIDUAL.value and not self.org.privacy:
            return None
        if field.startswith("consent:"):
            purpose = self._purposes.get(field.removeprefix("consent:"))
            mapped = purpose is not None and purpose_keys(purpose).data_use_purpose
            held = mapped and self.org.privacy
            return (SOBJECTS[CONSENT_ROW], "PrivacyConsentStatus") if held else None
        if field in GLOBAL_FIELDS:
            flag = FLAGS[object_type].get(GLOBAL_FIELDS[field])
            return (sobject, flag) if flag else None
        basis = self._settings.lawful_basis_field
        if field == "lawful_basis" and basis and object_type != ObjectType.INDIVIDUAL.value:
            return sobject, basis
        return None

    # -- reading --------------------------------------------------------------------------

    def read(self, since: datetime | None = None) -> Iterator[CrmRecord]:
        """People as the org holds them; where it cannot hold per-purpose consent, one
        warning per read (that is, per sync) says so."""
        org = self.org
        if not org.privacy and self._map.purpose_names:
            log.warning(
                "salesforce.consent_not_holdable",
                detail=f"{NOT_HOLDABLE} ({org.missing}); the flags and the lawful basis are synced",
                fix=SETUP,
                data_use_purposes=len(self._map.purpose_names),
            )
        if not org.privacy:
            return self._read_people(since and utc(since))
        return self._read_all() if since is None else self._read_changed(utc(since))

    def _read_people(self, since: datetime | None) -> Iterator[CrmRecord]:
        """Contacts and Leads alone (every one, or those changed since), where there are no
        Individuals to fold in."""
        after = format_soql("SystemModstamp >= {}", since) if since else ""
        people = (
            (object_type, row)
            for object_type in PEOPLE
            for row in self._t.query("read", self._people(after, object_type))
        )
        return self._assemble(people, {}, {}, lambda _: ())

    def _read_all(self) -> Iterator[CrmRecord]:
        """Contacts and Leads a page at a time, each page joined with the consent rows and
        addresses of its Individuals (``_joined``), so that memory holds a page, not the org;
        then the Individuals no one points at that hold a consent row or an address (one
        with neither holds nothing to sync). Individuals are not paged: their objections come
        with each person's row."""
        linked: set[str] = set()
        for object_type in PEOPLE:
            rows = iter(self._t.query("read", self._people("", object_type)))
            while page := list(islice(rows, QUERY_PAGE)):
                linked |= {row["IndividualId"] for row in page if row.get("IndividualId")}
                yield from self._joined("read", [(object_type, row) for row in page], (), {})
        holding = {row["PartyId"] for row in self._consent_rows("read", fields=("PartyId",))}
        points = self._t.query("read", select("ContactPointEmail", ("ParentId",)))
        holding |= {row["ParentId"] for row in points}
        alone = {party for party in holding if _is_individual(party)} - linked
        yield from self._joined("read", [], alone, {})

    def _read_changed(self, since: datetime) -> Iterator[CrmRecord]:
        """What changed, and the people whose Individual, consent rows or addresses did."""
        after = format_soql("SystemModstamp >= {}", since)
        parties = {row["PartyId"] for row in self._consent_rows("read", None, after, ("PartyId",))}
        points = select("ContactPointEmail", ("ParentId",), after)
        parties |= {row["ParentId"] for row in self._t.query("read", points)}
        individuals = {
            row["Id"]: row
            for row in self._t.query("read", select("Individual", INDIVIDUAL_FIELDS, after))
        }
        parties = {p for p in parties | set(individuals) if _is_individual(p)}
        people: dict[str, tuple[ObjectType, dict[str, Any]]] = {}
        for object_type in PEOPLE:
            changed = self._t.query("read", self._people(after, object_type))
            linked = self._t.query_in(
                "read", self._people("IndividualId IN ", object_type), parties
            )
            for row in chain(changed, linked):
                people.setdefault(row["Id"], (object_type, row))
        yield from self._joined("read", list(people.values()), parties, individuals)

    def find_by_emails(self, emails: Collection[str]) -> list[CrmRecord]:
        """Contacts and Leads by address (any case), directly or through a contact point of
        their Individual; an Individual no one points at, by its contact points."""
        wanted = _addresses_of(emails)
        operation = "find_by_emails"
        parties: set[str] = set()
        if self.org.privacy:
            points = select("ContactPointEmail", ("ParentId",), "EmailAddress IN ")
            parties = {
                row["ParentId"]
                for row in self._t.query_in(operation, points, wanted)
                if _is_individual(row.get("ParentId"))
            }
        people: dict[str, tuple[ObjectType, dict[str, Any]]] = {}
        for object_type in PEOPLE:
            direct = self._t.query_in(operation, self._people("Email IN ", object_type), wanted)
            linked = self._t.query_in(
                operation, self._people("IndividualId IN ", object_type), parties
            )
            for row in chain(direct, linked):
                people.setdefault(row["Id"], (object_type, row))
        return list(self._joined(operation, list(people.values()), parties, {}))

    def read_deleted(self, since: datetime) -> list[Deletion]:
        """Contacts, Leads and Individuals deleted at or after ``since`` (getDeleted, at most
        15 days back; Salesforce counts whole minutes, so a few may come twice)."""
        start, end = utc(since), datetime.now(UTC)
        if start < end - timedelta(days=DELETED_DAYS):
            raise Permanent(
                SALESFORCE,
                f"read_deleted: Salesforce lists deletions of the last {DELETED_DAYS} days "
                "only; run a full read instead",
            )
        if start >= end:
            return []
        params = {"start": iso(start), "end": iso(end)}
        deletions = []
        individuals = (ObjectType.INDIVIDUAL,) if self.org.privacy else ()
        for object_type in (*PEOPLE, *individuals):
            path = f"sobjects/{SOBJECTS[object_type.value]}/deleted/"
            answer = self._t.rest("read_deleted", path, params=params)
            deletions += [
                Deletion(
                    RecordRef(SALESFORCE, object_type.value, str(item["id"])),
                    when(item.get("deletedDate")),
                )
                for item in answer["deletedRecords"]
            ]
        return deletions

    def _people(self, where: str, object_type: ObjectType) -> str:
        """Contacts or Leads (not converted) matching ``where``, which may end in ``IN ``."""
        conditions = ["IsConverted = false"] if object_type is ObjectType.LEAD else []
        if where:
            conditions.append(where)
        sobject = SOBJECTS[object_type.value]
        fields = self._map.person_fields(sobject, self.org)
        return select(sobject, fields, " AND ".join(conditions))

    def _consent_rows(
        self,
        operation: str,
        parties: Collection[str] | None = None,
        after: str = "",
        fields: Sequence[str] = CONSENT_FIELDS,
    ) -> Iterator[dict[str, Any]]:
        """Consent rows of the configured purposes: every one, or those of ``parties``."""
        names = self._map.purpose_names
        if not names:
            return iter(())
        where = format_soql("DataUsePurpose.Name IN {}", names) + (f" AND {after}" if after else "")
        if parties is None:
            return self._t.query(operation, select("ContactPointTypeConsent", fields, where))
        soql = select("ContactPointTypeConsent", fields, f"{where} AND PartyId IN ")
        return self._t.query_in(operation, soql, parties)

    def _addresses(self, operation: str, parents: Collection[str] | None) -> dict[str, list[str]]:
        """Contact-point addresses by parent, the primary one first."""
        if parents is None:
            rows = self._t.query(operation, select("ContactPointEmail", ADDRESS_FIELDS))
        else:
            soql = select("ContactPointEmail", ADDRESS_FIELDS, "ParentId IN ")
            rows = self._t.query_in(operation, soql, parents)
        ranked: dict[str, list[tuple[bool, str]]] = {}
        for row in rows:
            if row.get("ParentId") and row.get("EmailAddress"):
                ranked.setdefault(row["ParentId"], []).append(
                    (not row.get("IsPrimary"), row["EmailAddress"])
                )
        return {parent: [e for _, e in sorted(items)] for parent, items in ranked.items()}

    def _joined(
        self,
        operation: str,
        people: Sequence[tuple[ObjectType, dict[str, Any]]],
        parties: Collection[str],
        individuals: Mapping[str, dict[str, Any]],
    ) -> Iterator[CrmRecord]:
        """People found by some condition, and the ``parties`` no one of them points at (if
        they hold a consent row or an address), with the consent rows and addresses of every
        Individual involved. ``individuals`` holds the rows of parties already read."""
        linked = {row["IndividualId"] for _, row in people if row.get("IndividualId")}
        involved = linked | set(parties)
        consents = self._map.consents(self._consent_rows(operation, involved))
        addresses = self._addresses(operation, involved)

        def orphans(_: Collection[str]) -> Iterable[dict[str, Any]]:
            alone = {p for p in set(parties) - linked if p in consents or p in addresses}
            known = [individuals[i] for i in sorted(alone & set(individuals))]
            return chain(known, self._individuals(operation, alone - set(individuals)).values())

        return self._assemble(people, consents, addresses, orphans)

    def _individuals(self, operation: str, ids: Collection[str]) -> dict[str, dict[str, Any]]:
        soql = select("Individual", INDIVIDUAL_FIELDS, "Id IN ")
        return {row["Id"]: row for row in self._t.query_in(operation, soql, ids)}

    def _assemble(
        self,
        people: Iterable[tuple[ObjectType, dict[str, Any]]],
        consents: Mapping[str, tuple[Consent, ...]],
        addresses: Mapping[str, list[str]],
        orphans: Callable[[Collection[str]], Iterable[dict[str, Any]]],
    ) -> Iterator[CrmRecord]:
        """People first, each with what its Individual holds; then the Individuals no one
        points at (``orphans`` is given the ones pointed at)."""
        linked: set[str] = set()
        for object_type, row in people:
            party = row.get("IndividualId") or ""
            linked.add(party)
            yield self._map.person(
                row, object_type, consents.get(party, ()), addresses.get(party, [])
            )
        for row in orphans(linked):
            party = row["Id"]
            yield self._map.individual(row, consents.get(party, ()), addresses.get(party, []))

    # -- writing --------------------------------------------------------------------------

    def write_consents(self, writes: Sequence[ConsentWrite]) -> list[WriteOutcome]:
        """Flags on Contacts and Leads (``HasOptedOutOfEmail``, ``DoNotCall``) and, where the
        org has the privacy objects, consent rows; see ``consent``."""
        return self._writer.write(writes, self.org)

    def write_lawful_bases(self, writes: Sequence[LawfulBasisWrite]) -> list[WriteOutcome]:
        """The configured picklist field of Contacts and Leads, written as the org's own
        option for each basis; an unchanged value is ``ALREADY`` and not written."""
        operation = "write_lawful_bases"
        field = self._settings.lawful_basis_field
        results: dict[int, tuple[WriteStatus, str]] = {}
        wanted: dict[str, set[str]] = {}
        people = {t.value for t in PEOPLE}
        for index, write in enumerate(writes):
            record = write.record
            if field is None:
                results[index] = (WriteStatus.FAILED, "salesforce.lawful_basis_field is not set")
            elif record.system != SALESFORCE or record.object_type not in people:
                failure = f"a {record.system} {record.object_type} has no lawful basis field"
                results[index] = (WriteStatus.FAILED, failure)
            else:
                wanted.setdefault(record.object_type, set()).add(record.id)
        current: dict[str, dict[str, Any]] = {}
        for object_type, ids in wanted.items():
            soql = select(SOBJECTS[object_type], ("Id", str(field)), "Id IN ")
            current |= {row["Id"]: row for row in self._t.query_in(operation, soql, ids)}
        changes: dict[str, dict[str, Any]] = {}
        for index, write in enumerate(writes):
            if index in results:
                continue
            row = current.get(write.record.id)
            sobject = SOBJECTS[write.record.object_type]
            if row is None:
                results[index] = (WriteStatus.FAILED, "NOT_FOUND")
                continue
            try:
                value = self._vocabulary(operation, sobject).to_vendor(write.lawful_basis)
            except Unmappable:
                failure = f"no option of {sobject}.{field} stands for {write.lawful_basis.value}"
                results[index] = (WriteStatus.FAILED, failure)
                continue
            if row.get(str(field)) == value:
                results[index] = (WriteStatus.ALREADY, "")
            else:
                changes[write.record.id] = {
                    "attributes": {"type": sobject},
                    "Id": write.record.id,
                    str(field): value,
                }
        saved = self._t.save(operation, "PATCH", list(changes.values()))
        outcomes = dict(zip(changes, saved, strict=True))
        for index, write in enumerate(writes):
            if index not in results:
                result = outcomes[write.record.id]
                results[index] = (WriteStatus.DONE, "") if result.ok else _failed(result)
        return [WriteOutcome(w.record, *results[i]) for i, w in enumerate(writes)]

    def check_rectify(self, changes: Mapping[str, str]) -> list[RectifyProblem]:
        """Fields no Contact field is mapped for, and, on every object ``rectify`` writes
        (Contact, Lead, Individual), values longer than the org's field holds or fields the
        org does not let the bridge update, from each object's describe (read once per
        adapter)."""
        operation = "rectify"
        problems = [RectifyProblem(SALESFORCE, name, None) for name in _unmapped(changes)]
        for sobject in RECTIFIABLE:
            if sobject in self._objects():
                problems += self._rectify_problems(operation, sobject, changes)
        return problems

    def _rectify_problems(
        self, operation: str, sobject: str, changes: Mapping[str, str]
    ) -> list[RectifyProblem]:
        """Why one object cannot take the corrections it holds a field for."""
        described = {f["name"]: f for f in self._describe(operation, sobject)}
        problems = []
        for name, value in sorted(changes.items()):
            field = RECTIFIABLE[sobject].get(name)
            if field is None:
                continue
            where = f"{sobject}.{field}"
            found = described.get(field)
            if found is None or not found.get("updateable", True):
                problems.append(RectifyProblem(SALESFORCE, name, where))
            elif (limit := found.get("length")) and len(value) > limit:
                problems.append(RectifyProblem(SALESFORCE, name, where, int(limit)))
        return problems

    def rectify(self, emails: Collection[str], changes: Mapping[str, str]) -> list[WriteOutcome]:
        """Write corrections (Art. 16) to the person's Contacts, Leads and Individual.

        The rows are found as erasure finds them, read with the fields to correct, and only
        those that differ are written (sObject Collections, 200 per call), so a repeat is
        ``ALREADY``. A record is corrected whole or not at all: a field this adapter cannot
        map, or a value longer than the org's field allows, fails it without a write, and
        so does a converted Lead, which Salesforce refuses to change. An Individual takes
        the names only. Outcomes name fields and limits, never a value or an address.
        """
        operation = "rectify"
        unknown = "; ".join(str(RectifyProblem(SALESFORCE, n, None)) for n in _unmapped(changes))

        def fields(sobject: str) -> tuple[str, ...]:
            mapped = RECTIFIABLE.get(sobject, {})
            converted = ("IsConverted",) if sobject == "Lead" else ()
            return (*(mapped[name] for name in changes if name in mapped), *converted)

        [rows] = self._subjects(operation, [emails], fields)
        outcomes: dict[RecordRef, tuple[WriteStatus, str]] = {}
        writes: dict[RecordRef, dict[str, Any]] = {}
        for sobject in RECTIFIABLE:
            for row in rows.get(sobject, []):
                ref = RecordRef(SALESFORCE, OBJECT_TYPES[sobject], str(row["Id"]))
                correction = self._correction(operation, sobject, row, changes, unknown)
                if isinstance(correction, dict):
                    writes[ref] = {"attributes": {"type": sobject}, "Id": ref.id, **correction}
                    correction = (WriteStatus.FAILED, "no result")  # until the answer comes
                outcomes[ref] = correction
        saved = self._t.save(operation, "PATCH", list(writes.values()))
        for ref, result in zip(writes, saved, strict=True):
            if result.ok:
                outcomes[ref] = (WriteStatus.DONE, "")
            elif result.code == CONVERTED_LEAD:
                outcomes[ref] = (WriteStatus.FAILED, CONVERTED)
            else:
                outcomes[ref] = _failed(result)
        return [WriteOutcome(ref, *outcome) for ref, outcome in outcomes.items()]

    def _correction(
        self,
        operation: str,
        sobject: str,
        row: Mapping[str, Any],
        changes: Mapping[str, str],
        unknown: str,
    ) -> dict[str, str] | tuple[WriteStatus, str]:
        """The fields to write to one row, or the outcome that needs no write."""
        if unknown:
            return WriteStatus.FAILED, unknown
        if row.get("IsConverted"):
            return WriteStatus.FAILED, CONVERTED
        mapped = RECTIFIABLE[sobject]
        wanted = {mapped[name]: value for name, value in changes.items() if name in mapped}
        if not wanted:
            held = ", ".join(sorted(changes))
            return WriteStatus.ALREADY, f"the {sobject} holds none of: {held}"
        problems = self._rectify_problems(operation, sobject, changes)
        if problems:
            return WriteStatus.FAILED, "; ".join(map(str, problems))
        if all((row.get(field) or "") == value for field, value in wanted.items()):
            return WriteStatus.ALREADY, ""
        return wanted

    def _describe(self, operation: str, sobject: str) -> list[dict[str, Any]]:
        """The fields of an object, described once per adapter."""
        if sobject not in self._described:
            answer = self._t.rest(operation, f"sobjects/{sobject}/describe")
            self._described[sobject] = list(answer["fields"])
        return self._described[sobject]

    def _vocabulary(self, operation: str, sobject: str) -> Vocabulary:
        field = str(self._settings.lawful_basis_field)
        described = next(
            (f for f in self._describe(operation, sobject) if f["name"] == field), None
        )
        if described is None:
            raise Permanent(
                SALESFORCE,
                f"{operation}: {sobject} has no field {field}; set salesforce.lawful_basis_field",
            )
        options = [p["value"] for p in described.get("picklistValues") or () if p.get("active")]
        return salesforce_field_vocabulary(field, options)

    # -- erasure and export -----------------------------------------------------------------

    def erasure_targets(self, people: Sequence[Collection[str]]) -> list[list[ErasureTarget]]:
        """Every row of each person: consent rows and contact points first, then Contacts,
        Leads (converted ones too) and last the Individual they point at. Found for everyone
        at once (:meth:`_subjects`)."""
        return [
            [
                ErasureTarget(SALESFORCE, OBJECT_TYPES[sobject], row["Id"])
                for sobject in ERASE_ORDER
                for row in rows.get(sobject, [])
            ]
            for rows in self._subjects("erasure_targets", people, lambda _: ())
        ]

    def export(self, emails: Collection[str]) -> dict[str, Any]:
        """Every queryable field of every row :meth:`erasure_targets` would erase."""
        [rows] = self._subjects("export", [emails], self._exportable)
        return {"system": SALESFORCE, "records": rows}

    def _exportable(self, sobject: str) -> list[str]:
        return [
            f["name"]
            for f in self._describe("export", sobject)
            if f.get("type") not in UNEXPORTED_TYPES
        ]

    def _subjects(
        self,
        operation: str,
        people: Sequence[Collection[str]],
        fields: Callable[[str], Sequence[str]],
    ) -> list[Rows]:
        """Each person's rows by object, found for all of them together: each object asked
        with IN lists of every address (filled to the URI limit), then, where the org has
        them, of every Individual those rows reach (else a person is their Contacts and
        Leads). A row is each person's whose address it holds or whose Individual it points
        at, so a row two people reach is in both lists."""
        objects = self._objects()
        privacy = self.org.privacy
        found: list[dict[str, dict[str, dict[str, Any]]]] = [
            {sobject: {} for sobject in objects} for _ in people
        ]

        def gather(
            sobject: str,
            key: str,
            owners: Mapping[str, Collection[int]],
            norm: Callable[[str], str],
        ) -> None:
            """The rows whose ``key`` is one of ``owners`` (normalised with ``norm``), each given
            to the people that value belongs to."""
            names = ("Id", key, *((LINKS[sobject],) if privacy else ()), *fields(sobject))
            soql = select(sobject, dict.fromkeys(names), f"{key} IN ")
            for row in self._t.query_in(operation, soql, owners):
                for person in owners.get(norm(row.get(key) or ""), ()):
                    found[person][sobject][row["Id"]] = row

        addresses: dict[str, list[int]] = {}
        for person, emails in enumerate(people):
            for address in _addresses_of(emails):
                addresses.setdefault(address, []).append(person)
        for sobject, key in BY_ADDRESS:
            if sobject in objects:
                gather(sobject, key, addresses, normalise_email)
        if privacy:
            reached: dict[str, set[int]] = {}
            for person, rows in enumerate(found):
                for sobject, _ in BY_ADDRESS:
                    parties = (row.get(LINKS[sobject]) for row in rows[sobject].values())
                    for party in filter(_is_individual, parties):
                        reached.setdefault(party, set()).add(person)
            for sobject in ERASE_ORDER:
                gather(sobject, LINKS[sobject], reached, str)
        return [{sobject: list(rows.values()) for sobject, rows in each.items()} for each in found]

    def erase(
        self, targets: Sequence[ErasureTarget], mode: ErasureMode
    ) -> list[ErasureResult | AdapterError]:
        """Delete (then purge) or anonymise the rows, each object's together and the objects
        in ``ERASE_ORDER`` whatever the order given; an answer per target, in that order. A
        row already gone is success and a row refused alone gets its error; a call refused as
        a whole (the login; Salesforce unreachable after the retries) raises."""
        rows: dict[str, dict[str, None]] = {}  # per object, its ids in the order given
        for target in targets:
            sobject = SOBJECTS.get(target.object_type)
            if target.system != SALESFORCE or target.id is None or sobject is None:
                raise ValueError("not a Salesforce record this adapter erases")
            rows.setdefault(sobject, {})[target.id] = None
        erase = self._anonymise if mode == "anonymize" else self._delete
        outcomes: dict[str, Outcome] = {}
        for sobject in ERASE_ORDER:
            outcomes |= erase(sobject, list(rows.get(sobject, ())))
        return [_answer(target, outcomes[str(target.id)]) for target in targets]

    def _delete(self, sobject: str, ids: Sequence[str]) -> dict[str, Outcome]:
        """One Bulk API 2.0 hardDelete job for every row; once a job is refused (no Hard Delete
        permission: remembered for the adapter's life), collections deletes and a purge."""
        if not ids:
            return {}
        if self._hard_delete:
            hard = self._t.hard_delete("erase", sobject, ids)
            if hard is not None:
                return self._after_delete(dict(zip(ids, hard, strict=True)), hard=True)
            self._hard_delete = False
        deleted = self._t.delete("erase", ids)
        return self._after_delete(dict(zip(ids, deleted, strict=True)), hard=False)

    def _after_delete(self, results: Mapping[str, RowResult], *, hard: bool) -> dict[str, Outcome]:
        """Purge the rows deleted softly or found in the recycle bin; a row not found is gone,
        and any other failure is that row's error."""
        outcomes: dict[str, Outcome] = {}
        binned: dict[str, bool] = {}  # the rows to purge: whether each was deleted just now
        for record_id, result in results.items():
            if result.ok and hard:
                outcomes[record_id] = (ErasureStatus.ERASED, HARD_DELETED)
            elif result.ok or result.code == ENTITY_IS_DELETED:
                binned[record_id] = result.ok
            elif classify(ERRORS, None, result.code) is NotFound:
                outcomes[record_id] = (ErasureStatus.ALREADY_GONE, "")
            else:
                outcomes[record_id] = result.error("erase", "to delete")
        return outcomes | self._purge(binned)

    def _purge(self, binned: Mapping[str, bool]) -> dict[str, Outcome]:
        """Empty the recycle bin of these rows (200 per call), where the settings allow."""
        if not binned:
            return {}
        if not self._settings.empty_recycle_bin:
            why = "salesforce.empty_recycle_bin is off"
            if not self._hard_delete:
                why = f"the integration user lacks the Bulk API Hard Delete permission and {why}"
            detail = (
                f"deleted; it stays in Salesforce's recycle bin for {DELETED_DAYS} days, "
                f"recoverable: {why}"
            )
            return dict.fromkeys(binned, (ErasureStatus.IN_RECYCLE_BIN, detail))
        outcomes: dict[str, Outcome] = {}
        purged = self._t.empty_recycle_bin("erase", list(binned))
        for (record_id, deleted_now), result in zip(binned.items(), purged, strict=True):
            if result.ok:
                outcomes[record_id] = (ErasureStatus.ERASED, PURGED)
            elif not deleted_now:
                outcomes[record_id] = (ErasureStatus.ALREADY_GONE, "")
            else:
                outcomes[record_id] = (
                    ErasureStatus.IN_RECYCLE_BIN,
                    f"deleted, but emptyRecycleBin refused it ({result.detail}); it stays in "
                    f"the recycle bin for {DELETED_DAYS} days, recoverable",
                )
        return outcomes

    def _anonymise(self, sobject: str, ids: Sequence[str]) -> dict[str, Outcome]:
        """Overwrite the rows' personal data: read in one query, written 200 per call. A
        converted Lead, which Salesforce refuses to change, is deleted instead."""
        if not ids or sobject == "ContactPointTypeConsent":
            kept = "a consent row holds no personal data: kept as it is"
            return dict.fromkeys(ids, (ErasureStatus.ANONYMIZED, kept))
        fields = [
            f
            for f in self._describe("erase", sobject)
            if f.get("updateable") and f.get("type") not in UNEXPORTED_TYPES
        ]
        soql = select(sobject, ("Id", *(f["name"] for f in fields)), "Id IN ")
        # By the 15-character id, which the 18-character form extends with a checksum.
        current = {row["Id"][:15]: row for row in self._t.query_in("erase", soql, ids)}
        keep = self._keep.get(sobject, ())
        outcomes: dict[str, Outcome] = {}
        writes: dict[str, dict[str, Any]] = {}
        for record_id in ids:
            row = current.get(record_id[:15])
            if row is None:
                outcomes[record_id] = (ErasureStatus.ALREADY_GONE, "")
            else:
                changes = anonymised(record_id, fields, row, keep)
                writes[record_id] = {"attributes": {"type": sobject}, "Id": record_id, **changes}
        saved = self._t.save("erase", "PATCH", list(writes.values()))
        converted: list[str] = []
        for record_id, result in zip(writes, saved, strict=True):
            if result.ok:
                outcomes[record_id] = (ErasureStatus.ANONYMIZED, "")
            elif result.code == CONVERTED_LEAD:
                converted.append(record_id)
            elif classify(ERRORS, None, result.code) is NotFound:
                outcomes[record_id] = (ErasureStatus.ALREADY_GONE, "")
            else:
                outcomes[record_id] = result.error("erase", "the anonymisation")
        for record_id, deleted in self._delete(sobject, converted).items():
            outcomes[record_id] = (
                deleted
                if isinstance(deleted, AdapterError)
                else (
                    deleted[0],
                    f"a converted lead cannot be changed, so it was deleted: {deleted[1]}",
                )
            )
        return outcomes

    def related(self, targets: Sequence[ErasureTarget], conditions: Sequence[R]) -> dict[str, R]:
        """Contacts and Leads a row of a condition's related object points at, matching its
        ``where`` (an operator's SOQL, from the settings); the first listed condition wins."""
        people = {t.value for t in PEOPLE}
        ids = {str(t.id) for t in targets if t.object_type in people and t.id}
        found: dict[str, R] = {}
        for condition in (c for c in conditions if c.for_system(SALESFORCE)):
            where = f"({condition.where}) AND {condition.link_field} IN "
            soql = select(condition.related_object, (condition.link_field,), where)
            for row in self._t.query_in("related", soql, ids - found.keys()):
                found.setdefault(row[condition.link_field], condition)
        return found

    def mark_purge_due(self, marks: Sequence[DueMark]) -> list[WriteOutcome]:
        """Set or clear the configured date field (``retention.salesforce_due_field``) on
        Contacts and Leads, 200 per call; with no field configured nothing is marked."""
        people = {t.value for t in PEOPLE}
        wanted = [m for m in marks if m.record.object_type in people]
        outcomes = [
            WriteOutcome(m.record, WriteStatus.FAILED, "Salesforce marks Contacts and Leads only")
            for m in marks
            if m.record.object_type not in people
        ]
        due_field = self._map.due_field
        if not wanted or due_field is None:
            return outcomes + [WriteOutcome(m.record, WriteStatus.ALREADY) for m in wanted]
        rows = [
            {
                "attributes": {"type": SOBJECTS[m.record.object_type]},
                "Id": m.record.id,
                due_field: m.due.isoformat() if m.due else None,
            }
            for m in wanted
        ]
        saved = self._t.save("mark_purge_due", "PATCH", rows)
        for mark, result in zip(wanted, saved, strict=True):
            status, detail = (WriteStatus.DONE, "") if result.ok else _failed(result)
            outcomes.append(WriteOutcome(mark.record, status, detail))
        return outcomes

    def record_url(self, record: RecordRef) -> str | None:
        sobject = SOBJECTS.get(record.object_type)
        if sobject is None:
            return None
        return f"{self._t.instance_url()}/lightning/r/{sobject}/{record.id}/view"

    def emails_of(self, record: RecordRef) -> list[str]:
        """The addresses of a Contact or Lead, or of an Individual, and of every person and
        contact point sharing its Individual."""
        return self.emails_of_each([record])[0]

    def emails_of_each(self, records: Sequence[RecordRef]) -> list[list[str]]:
        """``emails_of`` for many records: one query per object (``query_in`` splits long
        lists), then one per object of people and one of contact points for their
        Individuals."""
        operation = "emails_of"
        held: dict[str, set[str]] = {record.id: set() for record in records}
        party_of = {r.id: r.id for r in records if r.object_type == ObjectType.INDIVIDUAL.value}
        linked = (LINK,) if self.org.privacy else ()
        for object_type in {r.object_type for r in records} - {ObjectType.INDIVIDUAL.value}:
            ids = [r.id for r in records if r.object_type == object_type]
            soql = select(SOBJECTS[object_type], ("Id", "Email", *linked), "Id IN ")
            for row in self._t.query_in(operation, soql, ids):
                if row.get("Email"):
                    held.setdefault(row["Id"], set()).add(row["Email"])
                if row.get(LINK):
                    party_of[row["Id"]] = row[LINK]
        parties = sorted(set(party_of.values()))
        if parties:
            shared: dict[str, set[str]] = {party: set() for party in parties}
            for object_type in PEOPLE:
                soql = select(SOBJECTS[object_type.value], ("Email", LINK), "IndividualId IN ")
                for row in self._t.query_in(operation, soql, parties):
                    if row.get("Email"):
                        shared[row[LINK]].add(row["Email"])
            for party, addresses in self._addresses(operation, parties).items():
                shared[party].update(addresses)
            for record_id, party in party_of.items():
                held[record_id] |= shared[party]
        return [sorted({normalise_email(e) for e in held[record.id]}) for record in records]

    # -- minimisation -----------------------------------------------------------------------

    def field_usage(self) -> list[ObjectUsage]:
        """Per object the bridge reads, the fields a person or integration can fill (describe:
        createable or updateable, not a formula), and how many live rows fill each; rows in
        the recycle bin are not counted. Salesforce maintains the rest itself (ids, audit
        dates, compound names, conversion links), and they repeat or describe data reported
        here. Each object is paged (2,000 rows per call) once per chunk of field names; in an
        org without the privacy objects that is Contact and Lead alone."""
        usage: list[ObjectUsage] = []
        for sobject in self._objects():
            described = self._describe("field_usage", sobject)
            fields = {
                f["name"]: f.get("type") == "textarea"
                for f in described
                if (f.get("createable") or f.get("updateable"))
                and not f.get("calculated")
                and f.get("type") not in UNEXPORTED_TYPES
            }

            def rows(names: Sequence[str], sobject: str = sobject) -> Iterator[dict[str, Any]]:
                return self._t.query("field_usage", select(sobject, ("Id", *names)))

            usage.append(measure(sobject, fields, rows, URL_BUDGET, soql_cost))
        return usage


def _addresses_of(emails: Collection[str]) -> list[str]:
    """Normalised, distinct, non-empty: SOQL compares text without case anyway."""
    return sorted({normalise_email(e) for e in emails if e.strip()})


def _answer(target: ErasureTarget, outcome: Outcome) -> ErasureResult | AdapterError:
    return outcome if isinstance(outcome, AdapterError) else ErasureResult(target, *outcome)


def _is_individual(record_id: Any) -> TypeGuard[str]:
    return isinstance(record_id, str) and record_id.startswith(INDIVIDUAL_PREFIX)


def _unmapped(changes: Mapping[str, str]) -> list[str]:
    """The common fields ``rectify`` maps to no field at all (a Contact's are the most)."""
    return sorted(set(changes) - set(RECTIFIABLE["Contact"]))


def _failed(result: RowResult) -> tuple[WriteStatus, str]:
    return WriteStatus.FAILED, result.detail
