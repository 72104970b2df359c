"""What the CRMs hold about a person, as the person sees it on their privacy page (issue 21):
each record holding an address they proved, its fields, and each purpose's state merged by
the sync's own policy. Read live from the CRMs, never stored.

A person acts only on the addresses they proved, so nothing here follows a record's other
addresses (``find_holders``): those are named as unproved, for the person to prove too.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from types import MappingProxyType
from typing import Any

from bridge.adapters.base import CrmAdapter
from bridge.identity import normalise_email, subject_ref
from bridge.logs import get_logger
from bridge.model import Channel, ConsentStatus, CrmRecord, LawfulBasis, Purpose, System
from bridge.policies.consent import ConsentDecision, merge_purpose, opted_out
from bridge.services.people import find_holders

log = get_logger("bridge.held")

# The fields a record carries in common names (``CrmRecord.personal_fields``), in the order
# and with the labels (English msgids) a person reads them; the address comes first.
EMAIL_LABEL = "Email"
LABELS: Mapping[str, str] = MappingProxyType(
    {
        "first_name": "First name",
        "last_name": "Last name",
        "phone": "Phone",
        "mobile_phone": "Mobile phone",
    }
)
STATUS: Mapping[ConsentStatus, str] = MappingProxyType(
    {
        ConsentStatus.GRANTED: "opted_in",
        ConsentStatus.WITHDRAWN: "opted_out",
        ConsentStatus.UNKNOWN: "unknown",
    }
)

BASIS_MEANING: Mapping[str, str] = MappingProxyType(
    {
        LawfulBasis.CONSENT.value: "You agreed to it, and you may withdraw that agreement "
        "at any time (GDPR Art. 6(1)(a)).",
        LawfulBasis.CONTRACT.value: "It is needed for a contract with you, or for steps you "
        "asked for before entering one (GDPR Art. 6(1)(b)).",
        LawfulBasis.LEGAL_OBLIGATION.value: "The law requires it of us (GDPR Art. 6(1)(c)).",
        LawfulBasis.VITAL_INTERESTS.value: "It is needed to protect your life, or someone "
        "else's (GDPR Art. 6(1)(d)).",
        LawfulBasis.PUBLIC_TASK.value: "It is needed for a task in the public interest or "
        "for official authority we hold (GDPR Art. 6(1)(e)).",
        LawfulBasis.LEGITIMATE_INTERESTS.value: "It serves an interest of ours or of others "
        "that we weighed against your rights and freedoms; you may object to it "
        "(GDPR Art. 6(1)(f)).",
        LawfulBasis.NOT_APPLICABLE.value: "The GDPR does not apply to it.",
    }
)
"""What each lawful basis means, in plain words (English msgids, for the portal to
translate)."""


@dataclass(frozen=True)
class HeldRecord:
    """One record holding a proved address: where it is, and what it holds."""

    system: str
    object_type: str
    object_name: str
    record_id: str
    created_at: datetime | None
    fields: tuple[tuple[str, str], ...]
    """(label, value): the proved addresses first, then the person's fields."""
    other_emails: tuple[str, ...]
    """Addresses on the record not among those proved, normalised."""
    lawful_basis: str | None
    purge_due: date | None


@dataclass(frozen=True)
class HeldPurpose:
    """One configured purpose: its state across the CRMs, and what it rests on."""

    purpose: str
    label: str
    channel: str
    status: str
    """``opted_in``, ``opted_out`` or ``unknown``: merged across systems by the policy."""
    per_system: tuple[tuple[str, str], ...]
    """(system, status) for each system holding a record."""
    changed_at: datetime | None
    source: str | None
    """The evidence's capture source of the act the status follows, where it has one."""
    lawful_basis: str | None


@dataclass(frozen=True)
class Held:
    """Everything the page shows about the addresses a person proved."""

    emails: tuple[str, ...]
    records: tuple[HeldRecord, ...]
    purposes: tuple[HeldPurpose, ...]
    opted_out_of_all_email: bool
    unproved: tuple[str, ...]
    """Other addresses the records hold, which the person has not proved."""


def held(
    adapters: Mapping[System, CrmAdapter],
    emails: Sequence[str],
    purposes: Sequence[Purpose],
    pseudonym_key: bytes,
) -> Held:
    """What every CRM holds on records holding one of ``emails`` (one ``find_by_emails`` per
    system; adapter errors pass through). The per-purpose status is the sync's answer
    (``merge_purpose``, global opt-outs included), so the page says what the sync will make
    every CRM say."""
    person = find_holders(adapters, emails)
    proved = set(person.emails)
    records = sorted(person.records, key=lambda r: r.key)
    shown = tuple(_record(record, proved) for record in records)
    opt_outs = [r.opt_out for r in records if r.opt_out is not None and r.opt_out.any]
    if person.emails:
        log.info(
            "held.read",
            subject_ref=subject_ref(pseudonym_key, person.emails[0]),
            addresses=len(person.emails),
            records=len(records),
        )
    return Held(
        emails=tuple(person.emails),
        records=shown,
        purposes=tuple(_purpose(purpose, records) for purpose in purposes),
        opted_out_of_all_email=opted_out(opt_outs, Channel.EMAIL) is not None,
        unproved=tuple(sorted({e for record in shown for e in record.other_emails})),
    )


def _record(record: CrmRecord, proved: set[str]) -> HeldRecord:
    addresses = {normalise_email(e): e for e in record.emails if e.strip()}
    own = [(EMAIL_LABEL, spelt) for address, spelt in addresses.items() if address in proved]
    named = sorted(record.personal_fields.items(), key=lambda item: _order(item[0]))
    return HeldRecord(
        system=str(record.system),
        object_type=record.object_type.value,
        object_name=record.object_name or record.object_type.value,
        record_id=record.id,
        created_at=record.created_at,
        fields=(*own, *((_label(name), value) for name, value in named if value)),
        other_emails=tuple(a for a in addresses if a not in proved),
        lawful_basis=record.lawful_basis.value if record.lawful_basis else None,
        purge_due=record.purge_due,
    )


def _order(name: str) -> tuple[int, str]:
    """The known fields in ``LABELS`` order, then any other by name."""
    known = list(LABELS)
    return (known.index(name), "") if name in known else (len(known), name)


def _label(name: str) -> str:
    return LABELS.get(name) or name.replace("_", " ").capitalize()


def _purpose(purpose: Purpose, records: Sequence[CrmRecord]) -> HeldPurpose:
    decision = _merged(purpose, records)
    systems = sorted({str(r.system) for r in records})
    per_system = tuple(
        (system, STATUS[_merged(purpose, [r for r in records if r.system == system]).status])
        for system in systems
    )
    act = decision.follows if decision.status is not ConsentStatus.UNKNOWN else None
    return HeldPurpose(
        purpose=purpose.id,
        label=purpose.description or purpose.id.replace("_", " ").capitalize(),
        channel=purpose.channel,
        status=STATUS[decision.status],
        per_system=per_system,
        changed_at=act.changed_at if act else None,
        source=act.evidence.capture_source if act else None,
        lawful_basis=act.lawful_basis.value if act and act.lawful_basis else None,
    )


def _merged(purpose: Purpose, records: Sequence[CrmRecord]) -> ConsentDecision:
    consents = [c for r in records for c in r.consents]
    opt_outs = [r.opt_out for r in records if r.opt_out is not None]
    return merge_purpose(purpose, consents, opt_outs)


# -- the download as CSV -----------------------------------------------------------------------

BRIDGE = "consent-bridge"
HEADER = ("system", "object", "record_id", "field", "value")
# A spreadsheet runs a cell that starts like a formula; a phone number (+31 20 ...) does not.
_FORMULA = re.compile(r"[=@\t\r]|[+-](?![\d\s().+-]*$)")


def export_csv(document: Mapping[str, Any]) -> str:
    """The export document (``export_subject``) flattened: one row per system, object,
    record id, field and value, consent and audit rows too, so it opens in a spreadsheet.
    Nested values are named by their path (``subscriptions[0].status``); empty ones are
    left out. A value a spreadsheet would run as a formula gets a leading ``'``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(HEADER)
    for system, held_there in sorted((document.get("systems") or {}).items()):
        for name, row in _objects(held_there):
            writer.writerows(_rows(str(system), name, row))
    for event in document.get("audit_events") or []:
        writer.writerows(_rows(BRIDGE, "audit_event", event))
    rest = {k: v for k, v in document.items() if k not in ("systems", "audit_events")}
    writer.writerows(_rows(BRIDGE, "export", rest))
    return out.getvalue()


def _objects(held_there: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Each row of one system's export and the object it is of: a list of rows under a name,
    or lists of rows by object name (``{"records": {"Contact": [...]}}``)."""
    for key, value in held_there.items():
        groups = value.items() if isinstance(value, Mapping) else [(key, value)]
        for name, rows in groups:
            if isinstance(rows, list):
                yield from ((str(name), row) for row in rows if isinstance(row, Mapping))


def _rows(system: str, name: str, row: Mapping[str, Any]) -> Iterator[list[str]]:
    key = next((k for k in ("id", "Id", "seq", "email") if row.get(k) not in (None, "")), None)
    record_id = str(row[key]) if key else ""
    for field, value in _leaves("", row):
        if field != key:
            yield [system, name, record_id, field, _cell(value)]


def _leaves(path: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield from _leaves(f"{path}.{key}" if path else str(key), inner)
    elif isinstance(value, list | tuple):
        for index, inner in enumerate(value):
            yield from _leaves(f"{path}[{index}]", inner)
    elif value not in (None, ""):
        yield path, value


def _cell(value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return f"'{text}" if _FORMULA.match(text) else text
