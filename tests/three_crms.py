"""The Dataverse emulator beside HubSpot's and Salesforce's: people seeded in Dynamics 365 in
common terms, and what it holds read back through its admin API, never the Web API.

The vendor values are written here from docs/vendors/dynamics.md (consent4's choice values,
the flags' polarity) and the README's set-up (the lawful-basis column's options), not taken
from the adapter, so a mapping bug in the bridge cannot pass on both sides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from bridge_sandbox.emulators.people import Act, ConfiguredPurpose, Held, normalise_email

DYNAMICS_PURPOSE_KEY = "dynamics_purpose"
# consent4's msdynmkt_value: Not Set, Opted In, Opted Out.
CONSENT_VALUE = {"granted": 534120001, "withdrawn": 534120002}
CONSENT_STATE = {value: state for state, value in CONSENT_VALUE.items()}
EMAIL_CHANNEL, INTERNAL_SOURCE, NO_REASONS = 534120000, 534120000, 534119999
# The choice column cb_lawfulbasis: options from the default publisher's 100,000,000 up, in
# the README's order.
LAWFUL_BASIS = {
    basis: 100_000_000 + n
    for n, basis in enumerate(
        (
            "consent",
            "contract",
            "legal_obligation",
            "vital_interests",
            "public_task",
            "legitimate_interests",
            "not_applicable",
        )
    )
}
BASIS_NAMED = {value: basis for basis, value in LAWFUL_BASIS.items()}
EMAIL_COLUMNS = ("emailaddress1", "emailaddress2", "emailaddress3")
CREATED = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class InDynamics:
    """A person as Dynamics 365 holds them: a contact (or lead) and consent4 rows."""

    email: str
    held: Held = field(default_factory=Held)
    last_name: str = "Lovelace"


@dataclass(frozen=True)
class DynamicsView:
    """What the environment holds about one address, in common terms."""

    records: frozenset[str]
    opted_out: bool
    consents: dict[str, str]
    """Purpose id -> ``granted`` or ``withdrawn`` (a row Not Set is left out)."""
    lawful_basis: str | None


def tables(admin: httpx.Client) -> dict[str, list[dict[str, Any]]]:
    """Every live row of every table, by entity set."""
    reply = admin.get("/__emulator/state")
    reply.raise_for_status()
    rows: dict[str, list[dict[str, Any]]] = reply.json()["tables"]
    return rows


def purpose_rows(admin: httpx.Client, purposes: Sequence[ConfiguredPurpose]) -> dict[str, str]:
    """Purpose id -> its msdynmkt_purpose row's id, the rows created where missing."""
    names = {
        str(t["id"]): str(t[DYNAMICS_PURPOSE_KEY])
        for t in (p.model_dump() for p in purposes)
        if t.get(DYNAMICS_PURPOSE_KEY)
    }
    held = {r["msdynmkt_name"]: r["msdynmkt_purposeid"] for r in tables(admin)["msdynmkt_purposes"]}
    missing = sorted(set(names.values()) - set(held))
    if missing:
        made = _seed(admin, msdynmkt_purposes=[{"msdynmkt_name": n} for n in missing])
        held |= dict(zip(missing, made["msdynmkt_purposes"], strict=True))
    return {purpose: held[name] for purpose, name in names.items()}


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _seed(admin: httpx.Client, **rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    reply = admin.post("/__emulator/seed", json=rows)
    reply.raise_for_status()
    made: dict[str, list[str]] = reply.json()
    return made


def _consent_json(email: str, act: Act, purpose_row: str) -> dict[str, Any]:
    """One consent4 row: the address's consent to a purpose, set internally at ``act.at``."""
    return {
        "msdynmkt_contactpointvalue": email,
        "msdynmkt_contactpointtype": EMAIL_CHANNEL,
        "msdynmkt_value": CONSENT_VALUE[act.status],
        "msdynmkt_purposeid@odata.bind": f"/msdynmkt_purposes({purpose_row})",
        "msdynmkt_source": INTERNAL_SOURCE,
        "msdynmkt_logicalreason": NO_REASONS,
        "createdon": _stamp(act.at),
        "modifiedon": _stamp(act.at),
    }


def seed_dynamics(
    admin: httpx.Client, people: Sequence[InDynamics], purposes: Sequence[ConfiguredPurpose]
) -> list[str]:
    """A contact (or lead) per person, with ``donotbulkemail``, ``donotphone`` and the basis,
    and a consent4 row per act; answers the contacts' and leads' ids, in order."""
    ids = purpose_rows(admin, purposes)
    made: list[str] = []
    for person in people:
        held = person.held
        basis = held.lawful_basis
        row = {
            "firstname": "Ada",
            "lastname": person.last_name,
            "emailaddress1": person.email,
            "donotbulkemail": held.opted_out_at is not None,
            "donotphone": held.do_not_call_at is not None,
            "cb_lawfulbasis": LAWFUL_BASIS[basis] if basis else None,
            "createdon": _stamp(CREATED),
            "modifiedon": _stamp(held.stamp(CREATED)),
        }
        table = "leads" if held.object_type == "lead" else "contacts"
        consents = [_consent_json(person.email, a, ids[a.purpose]) for a in held.acts]
        made += _seed(admin, **{table: [row]}, msdynmkt_contactpointconsent4s=consents)[table]
    return made


def seed_contacts(
    admin: httpx.Client,
    emails: Sequence[str],
    purposes: Sequence[ConfiguredPurpose],
    acts: Sequence[Act] = (),
    name: str = "P",
) -> None:
    """A plain contact for each address, with a consent4 row per act, 500 at a time."""
    ids = purpose_rows(admin, purposes)
    for start in range(0, len(emails), 500):
        batch = emails[start : start + 500]
        _seed(
            admin,
            contacts=[{"lastname": name, "emailaddress1": e} for e in batch],
            msdynmkt_contactpointconsent4s=[
                _consent_json(e, a, ids[a.purpose]) for e in batch for a in acts
            ],
        )


def people_rows(admin: httpx.Client) -> list[dict[str, Any]]:
    """Every contact and lead."""
    held = tables(admin)
    return held["contacts"] + held["leads"]


def view(admin: httpx.Client, email: str, purposes: Sequence[ConfiguredPurpose]) -> DynamicsView:
    """What the environment holds about ``email``, by any of a row's three addresses."""
    address = normalise_email(email)
    held = tables(admin)
    ids = {row: purpose for purpose, row in purpose_rows(admin, purposes).items()}
    rows = [
        row
        for name in ("contacts", "leads")
        for row in held[name]
        if any(normalise_email(row.get(c) or "") == address for c in EMAIL_COLUMNS)
    ]
    consents = {
        ids[row["_msdynmkt_purposeid_value"]]: CONSENT_STATE[row["msdynmkt_value"]]
        for row in held["msdynmkt_contactpointconsent4s"]
        if normalise_email(row["msdynmkt_contactpointvalue"] or "") == address
        and row["_msdynmkt_purposeid_value"] in ids
        and row["msdynmkt_value"] in CONSENT_STATE
    }
    bases = {BASIS_NAMED[r["cb_lawfulbasis"]] for r in rows if r.get("cb_lawfulbasis") is not None}
    if len(bases) > 1:
        raise AssertionError(f"the rows of one person hold {len(bases)} lawful bases")
    return DynamicsView(
        records=frozenset(str(r.get("contactid") or r["leadid"]) for r in rows),
        opted_out=bool(rows) and all(r["donotbulkemail"] for r in rows),
        consents=consents,
        lawful_basis=next(iter(bases), None),
    )


def consent_rows_of(admin: httpx.Client, email: str) -> list[dict[str, Any]]:
    """The consent4 rows of one contact point value, any purpose."""
    address = normalise_email(email)
    return [
        row
        for row in tables(admin)["msdynmkt_contactpointconsent4s"]
        if normalise_email(row["msdynmkt_contactpointvalue"] or "") == address
    ]
