"""People to seed into both emulators, in common terms, through their admin APIs.

A ``Person`` says what each CRM holds about one person (consent acts, a global opt-out, a
lawful basis); the seeders write that as each vendor would hold it: HubSpot subscription
statuses and the portal-wide opt-out per address, Salesforce Contacts or Leads with
``HasOptedOutOfEmail``, ``DoNotCall``, the configured lawful-basis picklist, and (where the org
has the privacy objects) an Individual with ``ContactPointTypeConsent`` rows. The scenario
tests, the benchmarks and the demo use it.

Common terms are the bridge's configuration words, as plain strings (the bridge's enums are
strings too): a consent status is ``granted`` or ``withdrawn``, a lawful basis is named as in
:mod:`bridge_sandbox.emulators.lawful_bases`, and purposes come as the bridge's configured
``[[purposes]]`` tables. The vendor values written for them are the sandbox's own.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any, Literal, Protocol, TypeVar

import httpx

from bridge_sandbox.emulators.lawful_bases import (
    HUBSPOT_LEGAL_BASIS,
    HUBSPOT_SUBSCRIPTION_LEGAL_BASIS,
    SALESFORCE_LEGAL_BASIS,
)

T = TypeVar("T")
SEED_BATCH = 500
GRANTED, WITHDRAWN = "granted", "withdrawn"
STATES = {GRANTED: "SUBSCRIBED", WITHDRAWN: "UNSUBSCRIBED"}
PRIVACY_STATUS = {GRANTED: "OptIn", WITHDRAWN: "OptOut"}
CAPTURE_SOURCE = "web form"
# The keys of a ``[[purposes]]`` table that name the purpose in each CRM.
HUBSPOT_SUBSCRIPTION_KEY = "hubspot_subscription_id"
SALESFORCE_PURPOSE_KEY = "salesforce_data_use_purpose"
DYNAMICS_PURPOSE_KEY = "dynamics_purpose"
# Dataverse (docs/vendors/dynamics.md, "Contact point consent"): consent4's msdynmkt_value
# (Opted In, Opted Out), the Email channel, the Real-time marketing form source (each act
# seeded as a form's, as Salesforce's as a web form's) and no logical reason; the lawful-basis
# choice column's options as the README's set-up creates them, from the default publisher's
# prefix value 100,000,000 in the Art. 6 order.
DYNAMICS_CONSENT = {GRANTED: 534120001, WITHDRAWN: 534120002}
DYNAMICS_EMAIL, DYNAMICS_FORM, DYNAMICS_NO_REASON = 534120000, 534120005, 534119999
DYNAMICS_LAWFUL_BASIS = {
    basis: 100_000_000 + index
    for index, basis in enumerate(
        ("consent", "contract", "legal_obligation", "vital_interests", "public_task",
         "legitimate_interests", "not_applicable")
    )
}  # fmt: skip
DYNAMICS_BASIS_FIELD = "cb_lawfulbasis"
DYNAMICS_ACTIVITY_FIELD = "cb_lastactivity"  # the README's rollup of the row's activities


class ConfiguredPurpose(Protocol):
    """A purpose as the bridge's configuration holds it: one ``[[purposes]]`` table, read
    through its documented keys (``id``, :data:`HUBSPOT_SUBSCRIPTION_KEY`,
    :data:`SALESFORCE_PURPOSE_KEY`) rather than through the bridge's model of it."""

    def model_dump(self) -> dict[str, Any]: ...


def normalise_email(email: str) -> str:
    """The address one person is known by, by the bridge's identity rule (trimmed, NFC,
    lower-cased, no provider tricks), written out here so that checks do not borrow the
    bridge's own implementation of it."""
    return unicodedata.normalize("NFC", email.strip()).lower()


def purpose_names(purposes: Iterable[ConfiguredPurpose], key: str) -> dict[str, str]:
    """Purpose id -> what the purpose's ``key`` names it in one CRM, where it says."""
    tables = [purpose.model_dump() for purpose in purposes]
    return {str(table["id"]): str(table[key]) for table in tables if table.get(key)}


@dataclass(frozen=True)
class Act:
    """One consent act of the person in one CRM."""

    purpose: str
    status: str
    """``granted`` or ``withdrawn``."""
    at: datetime


@dataclass(frozen=True)
class Held:
    """What one CRM holds about the person."""

    acts: tuple[Act, ...] = ()
    opted_out_at: datetime | None = None
    lawful_basis: str | None = None
    """The common name of the basis (``consent``, ``contract``, ...), if the CRM holds one."""
    object_type: Literal["contact", "lead"] = "contact"  # Salesforce only
    last_active: datetime | None = None
    """The record's last activity (a call, an email, a meeting), as the CRM tracks it
    (Dynamics, tracking none on the row, is seeded as having created the row then)."""
    do_not_call_at: datetime | None = None
    """When the person asked not to be called (Salesforce ``DoNotCall``; HubSpot holds none)."""

    def stamp(self, default: datetime) -> datetime:
        """The record's last change: its latest act, else ``default``."""
        times = [a.at for a in self.acts]
        times += [t for t in (self.opted_out_at, self.do_not_call_at) if t]
        return max(times, default=default)


@dataclass(frozen=True)
class Person:
    email: str
    first_name: str = "Ada"
    last_name: str = "Lovelace"
    hubspot: Held | None = field(default_factory=Held)
    salesforce: Held | None = field(default_factory=Held)
    dynamics: Held | None = None
    """What Dynamics 365 holds (a contact or a lead); None: not held, as where only two
    CRMs are seeded."""


def batches(items: Iterable[T], size: int = SEED_BATCH) -> Iterator[list[T]]:
    stream = iter(items)
    while batch := list(islice(stream, size)):
        yield batch


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seed_hubspot(
    admin: httpx.Client, people: Sequence[Person], purposes: Sequence[ConfiguredPurpose]
) -> None:
    """Contacts with their subscription statuses and portal-wide opt-outs."""
    subscription = purpose_names(purposes, HUBSPOT_SUBSCRIPTION_KEY)
    created = datetime(2024, 1, 1, tzinfo=UTC)
    for batch in batches((p, p.hubspot) for p in people if p.hubspot is not None):
        contacts = []
        for person, held in batch:
            statuses: list[dict[str, Any]] = [
                {
                    "subscription_id": subscription[act.purpose],
                    "status": STATES[act.status],
                    "legal_basis": HUBSPOT_SUBSCRIPTION_LEGAL_BASIS["consent"],
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
                    "hs_legal_basis": HUBSPOT_LEGAL_BASIS[basis] if basis else None,
                    "createdate": created.isoformat(),
                    "lastmodifieddate": held.stamp(created).isoformat(),
                    "notes_last_updated": held.last_active.isoformat()
                    if held.last_active
                    else None,
                    "subscriptions": statuses,
                }
            )
        admin.post("/__emulator/seed", json={"contacts": contacts}).raise_for_status()


def data_use_purposes(admin: httpx.Client, purposes: Sequence[ConfiguredPurpose]) -> dict[str, str]:
    """The DataUsePurpose id of each purpose, created (lawful basis Consent) where missing."""
    rows = _records(admin, "DataUsePurpose")
    ids = {row["Name"]: row["Id"] for row in rows}
    bases = {row["Name"]: row["Id"] for row in _records(admin, "DataUseLegalBasis")}
    names = purpose_names(purposes, SALESFORCE_PURPOSE_KEY)
    missing = sorted(set(names.values()) - set(ids))
    new = _insert(
        admin,
        [
            {
                "attributes": {"type": "DataUsePurpose"},
                "Name": name,
                "LegalBasisId": bases[SALESFORCE_LEGAL_BASIS["consent"]],
                "CanDataSubjectOptOut": True,
            }
            for name in missing
        ],
    )
    ids |= dict(zip(missing, new, strict=True))
    return {purpose: ids[name] for purpose, name in names.items()}


def seed_salesforce(
    admin: httpx.Client, people: Sequence[Person], purposes: Sequence[ConfiguredPurpose]
) -> None:
    """Contacts or Leads; people with consent acts get an Individual and consent rows where
    the org has the privacy objects (one without them holds the flags and the basis only)."""
    org = admin.get("/__emulator/org")
    org.raise_for_status()
    privacy = org.json()["org"] == "privacy"
    purpose_ids = data_use_purposes(admin, purposes) if privacy else {}
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

        wanting = [p for p in batch if held[id(p)].acts and privacy]
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
                "DoNotCall": side.do_not_call_at is not None,
                "Lawful_Basis__c": SALESFORCE_LEGAL_BASIS[basis] if basis else None,
                "LastActivityDate": side.last_active.date().isoformat()
                if side.last_active
                else None,
                **stamps(person),
            }
            if side.object_type == "lead":
                row["Company"] = "Analytical Engines Ltd"
            if privacy:
                row["IndividualId"] = individuals.get(id(person))
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


def dynamics_purposes(admin: httpx.Client, purposes: Sequence[ConfiguredPurpose]) -> dict[str, str]:
    """The ``msdynmkt_purpose`` row id of each purpose, created where missing."""
    names = purpose_names(purposes, DYNAMICS_PURPOSE_KEY)
    state = admin.get("/__emulator/state")
    state.raise_for_status()
    rows = state.json()["tables"]["msdynmkt_purposes"]
    ids = {row["msdynmkt_name"]: row["msdynmkt_purposeid"] for row in rows}
    missing = sorted(set(names.values()) - set(ids))
    if missing:
        made = admin.post(
            "/__emulator/seed",
            json={"msdynmkt_purposes": [{"msdynmkt_name": name} for name in missing]},
        )
        made.raise_for_status()
        ids |= dict(zip(missing, made.json()["msdynmkt_purposes"], strict=True))
    return {purpose: str(ids[name]) for purpose, name in names.items()}


def seed_dynamics(
    admin: httpx.Client, people: Sequence[Person], purposes: Sequence[ConfiguredPurpose]
) -> None:
    """Contacts or leads with ``donotbulkemail``, ``donotphone`` and the lawful-basis column,
    and one ``msdynmkt_contactpointconsent4`` row per address and consent act, as Customer
    Insights - Journeys keeps consent (the row is the address's, not the record's)."""
    purpose_ids = dynamics_purposes(admin, purposes)
    created = datetime(2024, 1, 1, tzinfo=UTC)
    for batch in batches(p for p in people if p.dynamics is not None):
        tables: dict[str, list[dict[str, Any]]] = {"contacts": [], "leads": []}
        consents = []
        for person in batch:
            side = person.dynamics
            assert side is not None  # filtered above
            basis = side.lawful_basis
            # A Dataverse row keeps no last activity of its own: the README's set-up adds a
            # rollup column of its activities' latest end, which retention rules name.
            row: dict[str, Any] = {
                "firstname": person.first_name,
                "lastname": person.last_name,
                "emailaddress1": person.email,
                "donotbulkemail": side.opted_out_at is not None,
                "donotphone": side.do_not_call_at is not None,
                DYNAMICS_BASIS_FIELD: DYNAMICS_LAWFUL_BASIS[basis] if basis else None,
                DYNAMICS_ACTIVITY_FIELD: side.last_active.isoformat() if side.last_active else None,
                "createdon": created.isoformat(),
                "modifiedon": (side.last_active or side.stamp(created)).isoformat(),
            }
            tables["leads" if side.object_type == "lead" else "contacts"].append(row)
            consents += [
                {
                    "msdynmkt_contactpointvalue": person.email,
                    "msdynmkt_contactpointtype": DYNAMICS_EMAIL,
                    "msdynmkt_value": DYNAMICS_CONSENT[act.status],
                    "msdynmkt_purposeid@odata.bind": (
                        f"/msdynmkt_purposes({purpose_ids[act.purpose]})"
                    ),
                    "msdynmkt_source": DYNAMICS_FORM,
                    "msdynmkt_logicalreason": DYNAMICS_NO_REASON,
                    "createdon": act.at.isoformat(),
                    "modifiedon": act.at.isoformat(),
                }
                for act in side.acts
                if act.purpose in purpose_ids
            ]
        seeded = admin.post(
            "/__emulator/seed", json=tables | {"msdynmkt_contactpointconsent4s": consents}
        )
        seeded.raise_for_status()


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
