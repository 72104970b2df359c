"""Salesforce rows in common terms, and back: no I/O, so mapping and calls can be read apart.

A person is a Contact or a Lead with what its Individual holds (objections, consent rows,
further addresses) folded in; an Individual no one points at is a record of its own. Which
field means what: docs/vendors/salesforce.md ("Consent model", "Lawful-basis vocabulary").
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bridge.adapters.salesforce import SALESFORCE
from bridge.adapters.salesforce.org import LINK, OrgProfile
from bridge.adapters.salesforce.settings import contact_point_type, purpose_keys
from bridge.adapters.salesforce.vocabulary import SALESFORCE_LEGAL_BASIS
from bridge.adapters.vocabulary import Unmappable
from bridge.identity import normalise_email
from bridge.logs import get_logger
from bridge.model import (
    Channel,
    Consent,
    ConsentStatus,
    CrmRecord,
    Evidence,
    GlobalOptOut,
    LawfulBasis,
    ObjectType,
    Purpose,
)

CONTACT_POINT_EMAIL = "contact_point_email"
CONSENT_ROW = "contact_point_type_consent"
SOBJECTS: dict[str, str] = {
    ObjectType.CONTACT.value: "Contact",
    ObjectType.LEAD.value: "Lead",
    ObjectType.INDIVIDUAL.value: "Individual",
    CONTACT_POINT_EMAIL: "ContactPointEmail",
    CONSENT_ROW: "ContactPointTypeConsent",
}
PEOPLE = (ObjectType.CONTACT, ObjectType.LEAD)
# The key prefix of Individual ids: a contact point's parent may also be an Account.
INDIVIDUAL_PREFIX = "0PK"

PERSONAL = {
    "FirstName": "first_name",
    "LastName": "last_name",
    "Phone": "phone",
    "MobilePhone": "mobile_phone",
}
STAMPS = ("LastModifiedDate", "SystemModstamp")
OBJECTIONS = ("HasOptedOutSolicit", "HasOptedOutProcessing")
# A person's global opt-out flag per channel (``ConsentWrite.channel``), by object type.
FLAGS: dict[str, dict[str, str]] = {
    ObjectType.CONTACT.value: {Channel.EMAIL: "HasOptedOutOfEmail", Channel.PHONE: "DoNotCall"},
    ObjectType.LEAD.value: {Channel.EMAIL: "HasOptedOutOfEmail", Channel.PHONE: "DoNotCall"},
    ObjectType.INDIVIDUAL.value: {Channel.EMAIL: "HasOptedOutSolicit"},
}
PERSON_FIELDS = (
    "Id",
    "Email",
    *PERSONAL,
    "HasOptedOutOfEmail",
    "DoNotCall",
    *STAMPS,
    "CreatedDate",
    "LastActivityDate",
)
# Read with each Contact and Lead where the org has Individuals (``OrgProfile.privacy``).
LINK_FIELDS = (LINK, *(f"Individual.{name}" for name in (*OBJECTIONS, *STAMPS)))
INDIVIDUAL_FIELDS = ("Id", "FirstName", "LastName", *OBJECTIONS, *STAMPS)
# A consent row's own fields (what the writer compares), and with its purpose (what reads map).
CONSENT_ROW_FIELDS = (
    "Id",
    "PartyId",
    "DataUsePurposeId",
    "ContactPointType",
    "PrivacyConsentStatus",
    "CaptureDate",
    "CaptureSource",
    "DoubleConsentCaptureDate",
    "Name",
    "LastModifiedDate",
)
CONSENT_FIELDS = (*CONSENT_ROW_FIELDS, "DataUsePurpose.Name", "DataUsePurpose.LegalBasis.Name")
ADDRESS_FIELDS = ("Id", "ParentId", "EmailAddress", "IsPrimary")

STATUS_READ = {
    "OptIn": ConsentStatus.GRANTED,
    "OptOut": ConsentStatus.WITHDRAWN,
    # A withdrawal waiting to be processed is already the person's choice.
    "OptOutPending": ConsentStatus.WITHDRAWN,
    # A grant waiting for its confirmation (double opt-in) is not a grant yet.
    "OptInPending": ConsentStatus.UNKNOWN,
    "Seen": ConsentStatus.UNKNOWN,
    "NotSeen": ConsentStatus.UNKNOWN,
}
STATUS_WRITTEN = {ConsentStatus.GRANTED: "OptIn", ConsentStatus.WITHDRAWN: "OptOut"}
# Written as CaptureSource when a change carries no evidence of its own (Salesforce requires
# one). It is the bridge's bookkeeping, not the person's act, so it reads back as no evidence.
BRIDGE_SOURCE = "consent-bridge"

ANONYMISED = "Anonymised"
PLACEHOLDER_DOMAIN = "invalid.example"
NAMES = ("FirstName", "LastName")
# Where a field must keep a value (a name, a required field), these take "Anonymised".
TEXT_TYPES = frozenset({"string", "textarea", "phone", "url"})
# Links to other rows and checkboxes: never cleared (see ``anonymised``).
STRUCTURAL_TYPES = frozenset({"reference", "boolean"})

log = get_logger(__name__)


def when(value: Any) -> datetime | None:
    """A Salesforce datetime (``2024-01-01T00:00:00.000+0000``) or date (``2024-01-01``,
    its start in UTC) as an aware UTC datetime."""
    if not isinstance(value, str) or not value:
        return None
    moment = datetime.fromisoformat(value)
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def select(sobject: str, fields: Iterable[str], where: str = "") -> str:
    """SOQL over names from this code, never from data; every value in ``where`` has been
    escaped with ``format_soql`` (an ``IN`` list may follow: see ``Transport.query_in``)."""
    query = f"SELECT {', '.join(fields)} FROM {sobject}"  # noqa: S608 - names are constants
    return f"{query} WHERE {where}" if where else query


def recorded_at(row: Mapping[str, Any]) -> datetime:
    """When a consent row was captured, else last changed: the latest row per purpose wins."""
    return (
        when(row.get("CaptureDate"))
        or when(row.get("LastModifiedDate"))
        or datetime.min.replace(tzinfo=UTC)
    )


def utc(moment: datetime) -> datetime:
    """Aware and in UTC; a naive datetime is taken as UTC, as everywhere in the bridge."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def iso(moment: datetime) -> str:
    """A datetime as the REST API takes it: UTC, to the millisecond Salesforce keeps."""
    return utc(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def anonymised(
    record_id: str,
    fields: Iterable[Mapping[str, Any]],
    row: Mapping[str, Any],
    keep: Collection[str] = (),
) -> dict[str, str | None]:
    """What anonymising one row writes, from its described ``fields`` and current ``row``.

    Every updateable field that holds a value is cleared (free text such as ``Description``
    or a custom ``Notes__c`` holds personal data as often as not), except:

    - fields in ``keep`` (any case): non-personal ones kept for statistics (``LeadSource``);
    - references and checkboxes: a reference links the row to its owner, account or
      Individual, and a checkbox's cleared value, false, is a statement too: for an opt-out
      or objection (``HasOptedOutOfEmail``, ``DoNotCall``, a custom ``Do_Not_Mail__c``) it
      would undo the person's choice;
    - email fields get an address-shaped, unique, undeliverable placeholder (a bare hash is
      refused; it hashes the record id, so it says nothing about the person); names and the
      text fields Salesforce requires (``Lead.Company``) get "Anonymised" within the field's
      length; a required field of another type keeps its value, as it cannot be cleared.
    """
    digest = hashlib.sha256(f"salesforce:{record_id}".encode()).hexdigest()[:12]
    kept = {name.casefold() for name in keep}
    changes: dict[str, str | None] = {}
    for field in fields:
        name, kind = str(field["name"]), field.get("type")
        if (
            not field.get("updateable")
            or row.get(name) in (None, "")
            or name.casefold() in kept
            or kind in STRUCTURAL_TYPES
        ):
            continue
        if kind == "email":
            changes[name] = f"anon-{digest}@{PLACEHOLDER_DOMAIN}"
        elif name in NAMES or not field.get("nillable", True):
            if kind in TEXT_TYPES:
                changes[name] = ANONYMISED[: field.get("length") or None]
        else:
            changes[name] = None
    return changes


def lawful_basis(record_id: str, field: str, value: Any) -> LawfulBasis | None:
    """A picklist or DataUseLegalBasis value in common terms; unmappable ones are reported
    (the value is an option label, never personal data) and left unknown, never guessed."""
    if not value:
        return None
    try:
        return SALESFORCE_LEGAL_BASIS.from_vendor(str(value))
    except Unmappable as unmappable:
        log.warning(
            "salesforce.unmappable_lawful_basis",
            record_id=record_id,
            field=field,
            value=unmappable.value,
        )
        return None


def _key(name: str, contact_point_type: str) -> tuple[str, str]:
    return name.casefold(), contact_point_type.casefold()


class RecordMapper:
    """Rows of one org into ``CrmRecord``s, given the configured purposes and basis field."""

    def __init__(
        self,
        purposes: Sequence[Purpose],
        lawful_basis_field: str | None,
        read_fields: Mapping[str, Sequence[str]] | None = None,
        due_field: str | None = None,
    ) -> None:
        """``read_fields``: more fields to read per sObject (``Contact``, ``Lead``), kept
        as the records' ``attributes`` for the retention rules; ``due_field``: where the
        retention warning marks Contacts and Leads."""
        self.purposes = {
            _key(name, contact_point_type(p)): p
            for p in purposes
            if (name := purpose_keys(p).data_use_purpose)
        }
        self.purpose_names = sorted(
            {name for p in self.purposes.values() if (name := purpose_keys(p).data_use_purpose)}
        )
        self.lawful_basis_field = lawful_basis_field
        self.due_field = due_field
        own = tuple(f for f in (lawful_basis_field, due_field) if f)
        self.attributes = {
            sobject: tuple((read_fields or {}).get(sobject, ()))
            for sobject in (SOBJECTS[t.value] for t in PEOPLE)
        }
        self._person_fields = {
            sobject: tuple(dict.fromkeys((*PERSON_FIELDS, *own, *extra)))
            for sobject, extra in self.attributes.items()
        }

    def person_fields(self, sobject: str, org: OrgProfile) -> tuple[str, ...]:
        """What reads select of a Contact or Lead: with its Individual where the org has them."""
        return (*self._person_fields[sobject], *(LINK_FIELDS if org.privacy else ()))

    def purpose_of(self, row: Mapping[str, Any]) -> Purpose | None:
        """The configured purpose a consent row stands for, if any."""
        name = (row.get("DataUsePurpose") or {}).get("Name")
        if not name:
            return None
        return self.purposes.get(_key(name, row.get("ContactPointType") or ""))

    def consents(self, rows: Iterable[Mapping[str, Any]]) -> dict[str, tuple[Consent, ...]]:
        """Each party's consents: per purpose, its latest row (by capture, else change)."""
        latest: dict[tuple[str, str], Mapping[str, Any]] = {}
        for row in rows:
            purpose = self.purpose_of(row)
            if purpose is None or not row.get("PartyId"):
                continue
            key = (str(row["PartyId"]), purpose.id)
            if key not in latest or recorded_at(row) >= recorded_at(latest[key]):
                latest[key] = row
        by_party: dict[str, list[Consent]] = {}
        for (party, purpose_id), row in sorted(latest.items(), key=lambda item: item[0]):
            by_party.setdefault(party, []).append(self.consent(purpose_id, row))
        return {party: tuple(consents) for party, consents in by_party.items()}

    @staticmethod
    def evidence(row: Mapping[str, Any]) -> Evidence:
        source = row.get("CaptureSource")
        return Evidence(
            capture_source=None if source == BRIDGE_SOURCE else source,
            captured_at=when(row.get("CaptureDate")),
            double_opt_in_at=when(row.get("DoubleConsentCaptureDate")),
        )

    def consent(self, purpose_id: str, row: Mapping[str, Any]) -> Consent:
        basis = ((row.get("DataUsePurpose") or {}).get("LegalBasis") or {}).get("Name")
        return Consent(
            purpose=purpose_id,
            status=STATUS_READ.get(row.get("PrivacyConsentStatus") or "", ConsentStatus.UNKNOWN),
            changed_at=when(row.get("CaptureDate")) or when(row.get("LastModifiedDate")),
            source_system=SALESFORCE,
            source_record=str(row["Id"]),
            lawful_basis=lawful_basis(str(row["Id"]), "DataUseLegalBasis.Name", basis),
            explanation=row.get("Name") or None,
            evidence=self.evidence(row),
        )

    def person(
        self,
        row: Mapping[str, Any],
        object_type: ObjectType,
        consents: tuple[Consent, ...],
        addresses: Sequence[str],
    ) -> CrmRecord:
        """A Contact or Lead, with what its Individual holds."""
        record_id = str(row["Id"])
        field = self.lawful_basis_field
        individual = row.get("Individual") or {}
        objects = any(individual.get(name) for name in OBJECTIONS)
        return CrmRecord(
            system=SALESFORCE,
            object_type=object_type,
            object_name=SOBJECTS[object_type.value],
            id=record_id,
            emails=_distinct([row.get("Email"), *addresses]),
            personal_fields=_personal(row),
            lawful_basis=lawful_basis(record_id, field, row.get(field)) if field else None,
            consents=consents,
            opt_out=GlobalOptOut(
                email=bool(row.get("HasOptedOutOfEmail")) or objects,
                do_not_call=bool(row.get("DoNotCall")) or objects,
                changed_at=_latest(row, individual, "LastModifiedDate"),
                source_system=SALESFORCE,
                source_record=record_id,
            ),
            modified_at=_latest(row, individual, "SystemModstamp"),
            created_at=when(row.get("CreatedDate")),
            active_at=when(row.get("LastActivityDate")),
            purge_due=due.date() if (due := when(row.get(self.due_field or ""))) else None,
            attributes={
                name: str(row[name])
                for name in self.attributes[SOBJECTS[object_type.value]]
                if row.get(name) not in (None, "")
            },
        )

    @staticmethod
    def individual(
        row: Mapping[str, Any], consents: tuple[Consent, ...], addresses: Sequence[str]
    ) -> CrmRecord:
        """An Individual no Contact or Lead points at: a person of its own."""
        record_id = str(row["Id"])
        objects = any(row.get(name) for name in OBJECTIONS)
        return CrmRecord(
            system=SALESFORCE,
            object_type=ObjectType.INDIVIDUAL,
            object_name="Individual",
            id=record_id,
            emails=_distinct(addresses),
            personal_fields=_personal(row),
            consents=consents,
            opt_out=GlobalOptOut(
                email=objects,
                do_not_call=objects,
                changed_at=when(row.get("LastModifiedDate")),
                source_system=SALESFORCE,
                source_record=record_id,
            ),
            modified_at=when(row.get("SystemModstamp")),
        )


def _personal(row: Mapping[str, Any]) -> dict[str, str]:
    return {name: row[key] for key, name in PERSONAL.items() if row.get(key)}


def _distinct(emails: Iterable[str | None]) -> tuple[str, ...]:
    """Each address once (the first spelling wins), empty ones left out."""
    seen: dict[str, str] = {}
    for email in emails:
        if email and email.strip():
            seen.setdefault(normalise_email(email), email)
    return tuple(seen.values())


def _latest(row: Mapping[str, Any], individual: Mapping[str, Any], field: str) -> datetime | None:
    """The later of a record's and its Individual's timestamp."""
    stamps = [t for t in (when(row.get(field)), when(individual.get(field))) if t]
    return max(stamps, default=None)
