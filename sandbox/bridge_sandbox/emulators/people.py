"""People to seed into both emulators, in common terms, through their admin APIs.

A ``Person`` says what each CRM holds about one person (consent acts, a global opt-out, a
lawful basis); the seeders write that as each vendor would hold it: HubSpot subscription
statuses and the portal-wide opt-out per address, Salesforce Contacts or Leads with
``HasOptedOutOfEmail``, the configured lawful-basis picklist, and an Individual with
``ContactPointTypeConsent`` rows. The scenario tests, the benchmarks and the demo use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any, Literal, TypeVar

import httpx

from bridge.model import ConsentStatus, LawfulBasis, Purpose
from bridge.policies.lawful_basis import (
    HUBSPOT_PROPERTY,
    HUBSPOT_SUBSCRIPTION,
    SALESFORCE_LEGAL_BASIS,
)

T = TypeVar("T")
SEED_BATCH = 500
STATES = {ConsentStatus.GRANTED: "SUBSCRIBED", ConsentStatus.WITHDRAWN: "UNSUBSCRIBED"}
PRIVACY_STATUS = {ConsentStatus.GRANTED: "OptIn", ConsentStatus.WITHDRAWN: "OptOut"}
CAPTURE_SOURCE = "web form"


@dataclass(frozen=True)
class Act:
    """One consent act of the person in one CRM."""

    purpose: str
    status: ConsentStatus
    at: datetime


@dataclass(frozen=True)
class Held:
    """What one CRM holds about the person."""

    acts: tuple[Act, ...] = ()
    opted_out_at: datetime | None = None
    lawful_basis: LawfulBasis | None = None
    object_type: Literal["contact", "lead"] = "contact"  # Salesforce only
    last_active: datetime | None = None
    """The record's last activity (a call, an email, a meeting), as the CRM tracks it."""

    def stamp(self, default: datetime) -> datetime:
        """The record's last change: its latest act, else ``default``."""
        times = [a.at for a in self.acts]
        if self.opted_out_at:
            times.append(self.opted_out_at)
        return max(times, default=default)


@dataclass(frozen=True)
class Person:
    email: str
    first_name: str = "Ada"
    last_name: str = "Lovelace"
    hubspot: Held | None = field(default_factory=Held)
    salesforce: Held | None = field(default_factory=Held)


def batches(items: Iterable[T], size: int = SEED_BATCH) -> Iterator[list[T]]:
    stream = iter(items)
    while batch := list(islice(stream, size)):
        yield batch


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seed_hubspot(
    admin: httpx.Client, people: Sequence[Person], purposes: Sequence[Purpose]
) -> None:
    """Contacts with their subscription statuses and portal-wide opt-outs."""
    subscription = {p.id: p.hubspot_subscription_id for p in purposes}
    created = datetime(2024, 1, 1, tzinfo=UTC)
    for batch in batches((p, p.hubspot) for p in people if p.hubspot is not None):
        contacts = []
        for person, held in batch:
            statuses: list[dict[str, Any]] = [
                {
                    "subscription_id": subscription[act.purpose],
                    "status": STATES[act.status],
                    "legal_basis": HUBSPOT_SUBSCRIPTION.to_vendor(LawfulBasis.CONSENT),
                    "timestamp": act.at.isoformat(),
                }
                for act in held.acts
                if subscription.get(act.purpose)
            ]
            if held.opted_out_at:
                statuses.append(
                    {"status": "UNSUBSCRIBED", "timestamp": held.opted_out_at.isoformat()}
                )
            basis = held.lawful_basis
            contacts.append(
                {
                    "email": person.email,
                    "firstname": person.first_name,
                    "lastname": person.last_name,
                    "hs_legal_basis": HUBSPOT_PROPERTY.to_vendor(basis) if basis else None,
                    "createdate": created.isoformat(),
                    "lastmodifieddate": held.stamp(created).isoformat(),
                    "notes_last_updated": held.last_active.isoformat()
                    if held.last_active
                    else None,
                    "subscriptions": statuses,
                }
            )
        admin.post("/__emulator/seed", json={"contacts": contacts}).raise_for_status()


def data_use_purposes(admin: httpx.Client, purposes: Sequence[Purpose]) -> dict[str, str]:
    """The DataUsePurpose id of each purpose, created (lawful basis Consent) where missing."""
    rows = _records(admin, "DataUsePurpose")
    ids = {row["Name"]: row["Id"] for row in rows}
    bases = {row["Name"]: row["Id"] for row in _records(admin, "DataUseLegalBasis")}
    missing = sorted(
        {p.salesforce_data_use_purpose for p in purposes if p.salesforce_data_use_purpose}
        - set(ids)
    )
    new = _insert(
        admin,
        [
            {
                "attributes": {"type": "DataUsePurpose"},
                "Name": name,
                "LegalBasisId": bases["Consent"],
                "CanDataSubjectOptOut": True,
            }
            for name in missing
        ],
    )
    ids |= dict(zip(missing, new, strict=True))
    return {
        p.id: ids[p.salesforce_data_use_purpose] for p in purposes if p.salesforce_data_use_purpose
    }


def seed_salesforce(
    admin: httpx.Client, people: Sequence[Person], purposes: Sequence[Purpose]
) -> None:
    """Contacts or Leads; people with consent acts get an Individual and consent rows."""
    purpose_ids = data_use_purposes(admin, purposes)
    created = datetime(2024, 1, 1, tzinfo=UTC)
    for batch in batches(p for p in people if p.salesforce is not None):
        held = {id(p): p.salesforce for p in batch if p.salesforce is not None}

        def stamps(person: Person) -> dict[str, str]:
            changed = _stamp(held[id(person)].stamp(created))  # noqa: B023  used at once
            return {
                "CreatedDate": _stamp(created),
                "LastModifiedDate": changed,
                "SystemModstamp": changed,
            }

        wanting = [p for p in batch if held[id(p)].acts]
        individuals = dict(
            zip(
                (id(p) for p in wanting),
                _insert(
                    admin,
                    [
                        {
                            "attributes": {"type": "Individual"},
                            "FirstName": p.first_name,
                            "LastName": p.last_name,
                            **stamps(p),
                        }
                        for p in wanting
                    ],
                ),
                strict=True,
            )
        )
        rows = []
        for person in batch:
            side = held[id(person)]
            basis = side.lawful_basis
            row: dict[str, Any] = {
                "attributes": {"type": "Lead" if side.object_type == "lead" else "Contact"},
                "FirstName": person.first_name,
                "LastName": person.last_name,
                "Email": person.email,
                "HasOptedOutOfEmail": side.opted_out_at is not None,
                "Lawful_Basis__c": SALESFORCE_LEGAL_BASIS.to_vendor(basis) if basis else None,
                "IndividualId": individuals.get(id(person)),
                "LastActivityDate": side.last_active.date().isoformat()
                if side.last_active
                else None,
                **stamps(person),
            }
            if side.object_type == "lead":
                row["Company"] = "Analytical Engines Ltd"
            rows.append(row)
        _insert(admin, rows)
        _insert(
            admin,
            [
                {
                    "attributes": {"type": "ContactPointTypeConsent"},
                    "PartyId": individuals[id(person)],
                    "DataUsePurposeId": purpose_ids[act.purpose],
                    "ContactPointType": "Email",
                    "PrivacyConsentStatus": PRIVACY_STATUS[act.status],
                    "CaptureDate": _stamp(act.at),
                    "CaptureSource": CAPTURE_SOURCE,
                    "CreatedDate": _stamp(act.at),
                    "LastModifiedDate": _stamp(act.at),
                    "SystemModstamp": _stamp(act.at),
                }
                for person in wanting
                for act in held[id(person)].acts
                if act.purpose in purpose_ids
            ],
        )


def _records(admin: httpx.Client, sobject: str) -> list[dict[str, Any]]:
    reply = admin.get("/__emulator/records", params={"type": sobject})
    reply.raise_for_status()
    rows: list[dict[str, Any]] = reply.json()["records"]
    return rows


def _insert(admin: httpx.Client, rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    reply = admin.post("/__emulator/records", json={"records": rows})
    reply.raise_for_status()
    return [str(i) for i in reply.json()["ids"]]
