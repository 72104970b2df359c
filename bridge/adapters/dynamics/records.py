"""Dataverse rows in the bridge's terms: contacts and leads as records, consent4 rows as
consents, and the columns each holds (docs/vendors/dynamics.md, "Consent fields on contact and
lead" and "Contact point consent").
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from bridge.adapters.dynamics import DYNAMICS
from bridge.identity import normalise_email
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


@dataclass(frozen=True)
class Table:
    """A table of people: its entity set and key, as the Web API names them."""

    logical_name: str
    entity_set: str
    key: str
    object_type: ObjectType


CONTACTS = Table("contact", "contacts", "contactid", ObjectType.CONTACT)
LEADS = Table("lead", "leads", "leadid", ObjectType.LEAD)
PEOPLE = (CONTACTS, LEADS)
TABLES = {table.logical_name: table for table in PEOPLE}

CONSENT_SET = "msdynmkt_contactpointconsent4s"
CONSENT_TABLE = "msdynmkt_contactpointconsent4"
CONSENT_KEY = "msdynmkt_contactpointconsent4id"
PURPOSE_SET = "msdynmkt_purposes"
PURPOSE_LOOKUP = "_msdynmkt_purposeid_value"
VALUE = "msdynmkt_contactpointvalue"
STATUS = "msdynmkt_value"
CHANNEL = "msdynmkt_contactpointtype"
CONSENT_COLUMNS: tuple[str, ...] = (CONSENT_KEY, VALUE, CHANNEL, STATUS, PURPOSE_LOOKUP)
CONSENT_COLUMNS += ("msdynmkt_reason", "msdynmkt_source", "modifiedon")

# Choice values of consent4 (docs/vendors/dynamics.md, "Contact point consent (consent4)").
STATUS_READ = {
    534120000: ConsentStatus.UNKNOWN,
    534120001: ConsentStatus.GRANTED,
    534120002: ConsentStatus.WITHDRAWN,
}
STATUS_WRITTEN = {status: value for value, status in STATUS_READ.items()}
# Email's choice value. The bridge keeps email purposes only: a Voice or Text row is per phone
# number, which no consent write carries (docs/vendors/dynamics.md).
EMAIL_CHANNEL = 534120000
INTERNAL_SOURCE = 534120000
NO_REASON = 534119999
SOURCES = {
    534120000: "Internal",
    534120001: "Preference page",
    534120002: "Text message",
    534120003: "Loaded",
    534120004: "Preference Center",
    534120005: "Realtime Marketing Form",
    534120006: "Subscription Center",
    534120007: "Email - list-unsubscribe",
}

EMAILS = ("emailaddress1", "emailaddress2", "emailaddress3")
PERSONAL = {"firstname": "first_name", "lastname": "last_name", "telephone1": "phone"}
RECTIFIABLE = {common: column for column, common in PERSONAL.items()}
# A person's global opt-out per channel: marketing email, and calls.
FLAGS = {Channel.EMAIL: "donotbulkemail", Channel.PHONE: "donotphone"}
STAMPS = ("createdon", "modifiedon")
# Columns Dataverse fills itself, never counted as what people or integrations fill.
COMPUTED = frozenset({"createdon", "modifiedon", "versionnumber", "contactid", "leadid"})

ANONYMISED = "Anonymised"
PLACEHOLDER_DOMAIN = "invalid.example"


def when(value: Any) -> datetime | None:
    """A Dataverse date-time (``2024-01-01T00:00:00Z``) as an aware UTC datetime."""
    if not isinstance(value, str) or not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def iso(moment: datetime) -> str:
    """A datetime as an OData literal: UTC, to the second (``modifiedon``'s precision)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def day(value: Any) -> date | None:
    if not isinstance(value, str) or not value:
        return None
    return date.fromisoformat(value[:10])


def emails_in(row: Mapping[str, Any]) -> list[str]:
    """The row's addresses, primary first, each once (by normalised form)."""
    seen: set[str] = set()
    found = []
    for column in EMAILS:
        value = row.get(column)
        if isinstance(value, str) and value.strip() and normalise_email(value) not in seen:
            seen.add(normalise_email(value))
            found.append(value)
    return found


def in_filter(column: str, values: Iterable[str]) -> str:
    """``Microsoft.Dynamics.CRM.In`` over string values (escaped as OData literals)."""
    listed = ",".join("'" + value.replace("'", "''") + "'" for value in values)
    return f"Microsoft.Dynamics.CRM.In(PropertyName='{column}',PropertyValues=[{listed}])"


@dataclass(frozen=True)
class ConsentRow:
    """One consent4 row, as much of it as the bridge reads."""

    id: str
    address: str
    channel: int
    status: ConsentStatus
    purpose_id: str | None
    modified_at: datetime | None
    source: str | None
    reason: str | None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> ConsentRow:
        return cls(
            id=str(row[CONSENT_KEY]),
            address=normalise_email(str(row.get(VALUE) or "")),
            channel=int(row.get(CHANNEL) or EMAIL_CHANNEL),
            status=STATUS_READ.get(row.get(STATUS) or 0, ConsentStatus.UNKNOWN),
            purpose_id=str(row[PURPOSE_LOOKUP]) if row.get(PURPOSE_LOOKUP) else None,
            modified_at=when(row.get("modifiedon")),
            source=SOURCES.get(row.get("msdynmkt_source") or 0),
            reason=row.get("msdynmkt_reason") or None,
        )


class ConsentIndex:
    """Consent4 rows by contact point value (a normalised address or phone number)."""

    def __init__(self, rows: Iterable[ConsentRow] = ()) -> None:
        self._by_value: dict[str, list[ConsentRow]] = {}
        for row in rows:
            self.add(row)

    def add(self, row: ConsentRow) -> None:
        self._by_value.setdefault(row.address, []).append(row)

    def of(self, values: Iterable[str]) -> list[ConsentRow]:
        return [row for value in values for row in self._by_value.get(value, [])]


def consents_of(
    addresses: Sequence[str],
    index: ConsentIndex,
    purposes: Mapping[str, Purpose],
) -> tuple[Consent, ...]:
    """Each mapped purpose's consent as the person's addresses hold it: the latest email
    row of the purpose among the record's addresses."""
    values = [normalise_email(a) for a in addresses]
    latest: dict[str, ConsentRow] = {}
    for dataverse_id, purpose in purposes.items():
        for row in index.of(values):
            if row.purpose_id != dataverse_id or row.channel != EMAIL_CHANNEL:
                continue
            held = latest.get(purpose.id)
            stamp = row.modified_at or datetime.min.replace(tzinfo=UTC)
            if held is None or stamp > (held.modified_at or datetime.min.replace(tzinfo=UTC)):
                latest[purpose.id] = row
    return tuple(
        Consent(
            purpose=purpose_id,
            status=row.status,
            changed_at=row.modified_at,
            source_system=DYNAMICS,
            source_record=row.id,
            # An opt-in row is the person's consent itself (Art. 6(1)(a)); consent4 has no
            # column for any other basis.
            lawful_basis=LawfulBasis.CONSENT if row.status is ConsentStatus.GRANTED else None,
            explanation=row.reason,
            evidence=Evidence(
                capture_source=row.source if row.source != SOURCES[INTERNAL_SOURCE] else None,
                captured_at=row.modified_at,
            ),
        )
        for purpose_id, row in sorted(latest.items())
    )


def record_of(
    table: Table,
    row: Mapping[str, Any],
    index: ConsentIndex,
    purposes: Mapping[str, Purpose],
    *,
    basis_field: str | None,
    bases: Mapping[int, LawfulBasis],
    due_field: str | None,
    read_fields: Sequence[str],
) -> CrmRecord:
    """A contact or lead row in common terms."""
    record_id = str(row[table.key])
    addresses = emails_in(row)
    modified = when(row.get("modifiedon"))
    basis_value = row.get(basis_field) if basis_field else None
    return CrmRecord(
        system=DYNAMICS,
        object_type=table.object_type,
        id=record_id,
        emails=tuple(addresses),
        personal_fields={
            common: str(row[column]) for column, common in PERSONAL.items() if row.get(column)
        },
        lawful_basis=bases.get(basis_value) if isinstance(basis_value, int) else None,
        consents=consents_of(addresses, index, purposes),
        opt_out=GlobalOptOut(
            email=bool(row.get(FLAGS[Channel.EMAIL])),
            do_not_call=bool(row.get(FLAGS[Channel.PHONE])),
            changed_at=modified,
            source_system=DYNAMICS,
            source_record=record_id,
        ),
        modified_at=modified,
        created_at=when(row.get("createdon")),
        purge_due=day(row.get(due_field)) if due_field else None,
        attributes={
            name: str(row[name]) for name in read_fields if row.get(name) not in (None, "")
        },
        object_name=table.logical_name,
    )


def anonymised(table: Table, row: Mapping[str, Any], keep: Iterable[str] = ()) -> dict[str, Any]:
    """What anonymising one row writes: its addresses become unique undeliverable
    placeholders (hashing the id, so they say nothing of the person), its names
    "Anonymised" (a lead's last name is required), and every other text column that holds
    a value and is not kept (``keep``: non-personal columns for statistics) is cleared.
    Flags are never touched: a cleared ``donot*`` would undo the person's choice."""
    record_id = str(row[table.key])
    digest = hashlib.sha256(f"dynamics:{record_id}".encode()).hexdigest()[:12]
    kept = {name.casefold() for name in keep}
    changes: dict[str, Any] = {}
    for column, value in row.items():
        if (
            column in COMPUTED
            or column.startswith("_")
            or column.startswith("@")
            or column.casefold() in kept
            or not isinstance(value, str)
            or not value
        ):
            continue
        if column in EMAILS:
            changes[column] = f"anon-{column[-1]}-{digest}@{PLACEHOLDER_DOMAIN}"
        elif column in ("firstname", "lastname"):
            changes[column] = ANONYMISED
        else:
            changes[column] = None
    return changes
