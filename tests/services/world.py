"""A seeded population of people the two CRMs disagree about, the answer the policies give
for each of them, and what the emulators hold afterwards: for the sync's scale tests.

The answer is worked out here from the seed spec alone, by the policies' rules
(ARCHITECTURE.md, "The pieces") written out again (never by the reconciler, the plan or the
adapters), so that a bug in either shows up as a disagreement:

- per purpose, the latest act wins; a withdrawal is overturned only by a strictly later
  grant with evidence of an active act (Salesforce rows seeded with a capture source and
  date carry it, HubSpot statuses never do); ties go to withdrawal; with no act, unknown;
- a global email opt-out is a withdrawal of every email purpose at its time: HubSpot's
  unsubscribe-all at its own timestamp, Salesforce's ``HasOptedOutOfEmail`` at the record's
  ``LastModifiedDate``, which ``people.py`` stamps with the side's latest act or opt-out;
- once either system holds a global opt-out, both hold it;
- lawful basis, with no earlier agreement: the latest-modified record holding one wins
  (records without one do not vote). The population never ties two different bases;
- HubSpot will not resubscribe an address that opted out (of the subscription or of all
  email): such a grant stays with the person, and HubSpot keeps the withdrawal. (A
  subscription HubSpot already holds as granted needs no write, even under an
  unsubscribe-all, so nothing is refused there.)
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bridge.model import ConsentStatus, LawfulBasis, Purpose
from bridge_sandbox.emulators.lawful_bases import hubspot_basis, salesforce_basis
from bridge_sandbox.emulators.people import Act, Held, Person

GRANTED, WITHDRAWN, UNKNOWN = ConsentStatus.GRANTED, ConsentStatus.WITHDRAWN, ConsentStatus.UNKNOWN
CREATED = datetime(2024, 1, 1, tzinfo=UTC)  # people.py's stamp for a side with no act
START = datetime(2025, 1, 1, 9, 0, tzinfo=UTC)
HOURS = 24 * 90
BASES = (LawfulBasis.CONSENT, LawfulBasis.CONTRACT, LawfulBasis.LEGITIMATE_INTERESTS)
HS_STATE = {"SUBSCRIBED": GRANTED, "UNSUBSCRIBED": WITHDRAWN}
SF_STATE = {"OptIn": GRANTED, "OptOut": WITHDRAWN}


# -- the population ------------------------------------------------------------------------


def population(size: int, purposes: Sequence[Purpose], seed: int = 20250301) -> list[Person]:
    """``size`` people, the same ones for the same seed: some in one CRM only, most in both,
    with grants and withdrawals at different (sometimes equal) times, global opt-outs on
    either side, Salesforce Leads as well as Contacts, and lawful bases on one or both sides.
    """
    rng = random.Random(seed)
    return [_person(rng, i, [p.id for p in purposes]) for i in range(size)]


def _moment(rng: random.Random) -> datetime:
    return START + timedelta(hours=rng.randrange(HOURS))


def _acts(rng: random.Random, purposes: Sequence[str]) -> list[Act]:
    acts = []
    for purpose in purposes:
        roll = rng.random()
        if roll < 0.35:
            continue
        acts.append(Act(purpose, GRANTED if roll < 0.70 else WITHDRAWN, _moment(rng)))
    return acts


def _tie(rng: random.Random, acts: list[Act], others: Sequence[Act]) -> list[Act]:
    """Now and then an act at exactly the time the other system recorded one."""
    times = {a.purpose: a.at for a in others}
    return [
        Act(a.purpose, a.status, times[a.purpose])
        if a.purpose in times and rng.random() < 0.2
        else a
        for a in acts
    ]


def _person(rng: random.Random, i: int, purposes: Sequence[str]) -> Person:
    roll = rng.random()
    in_hubspot, in_salesforce = roll >= 0.15, roll < 0.15 or roll >= 0.30
    hs_acts = _acts(rng, purposes) if in_hubspot else []
    sf_acts = _tie(rng, _acts(rng, purposes), hs_acts) if in_salesforce else []
    hs_out = sf_out = None
    if in_hubspot and rng.random() < 0.12:
        hs_out = rng.choice([a.at for a in sf_acts + hs_acts] or [_moment(rng)])
        hs_out = hs_out if rng.random() < 0.3 else _moment(rng)
    if in_salesforce and rng.random() < 0.12:
        sf_out = _moment(rng)
    hs_basis = rng.choice(BASES) if rng.random() < 0.45 else None
    sf_basis = rng.choice(BASES) if rng.random() < 0.45 else None
    hubspot = Held(acts=tuple(hs_acts), opted_out_at=hs_out, lawful_basis=hs_basis)
    salesforce = Held(
        acts=tuple(sf_acts),
        opted_out_at=sf_out,
        lawful_basis=sf_basis,
        object_type="lead" if rng.random() < 0.3 else "contact",
    )
    if (
        in_hubspot
        and in_salesforce
        and hs_basis
        and sf_basis
        and hs_basis is not sf_basis
        and hubspot.stamp(CREATED) == salesforce.stamp(CREATED)
    ):  # the policy names no winner between two bases modified at once: keep out of it
        hubspot = Held(acts=hubspot.acts, opted_out_at=hs_out, lawful_basis=sf_basis)
    return Person(
        email=f"person{i:05d}@example.com",
        first_name="Test",
        last_name=f"Person {i}",
        hubspot=hubspot if in_hubspot else None,
        salesforce=salesforce if in_salesforce else None,
    )


# -- the answer ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What both systems should hold about one person after a sync."""

    consents: Mapping[str, ConsentStatus]
    opted_out: bool
    lawful_basis: LawfulBasis | None
    refused: frozenset[str]
    """Purposes granted by the answer that HubSpot will not resubscribe the person to."""


def answer(person: Person, purposes: Sequence[Purpose]) -> Answer:
    hs, sf = person.hubspot, person.salesforce
    # (time, status, evidenced) of every act and of every global opt-out, per purpose
    events: dict[str, list[tuple[datetime, ConsentStatus, bool]]] = {p.id: [] for p in purposes}
    opt_outs: list[datetime] = []
    if hs is not None:
        for act in hs.acts:
            events[act.purpose].append((act.at, act.status, False))
        if hs.opted_out_at is not None:
            opt_outs.append(hs.opted_out_at)
    if sf is not None:
        for act in sf.acts:
            events[act.purpose].append((act.at, act.status, True))
        if sf.opted_out_at is not None:
            opt_outs.append(sf.stamp(CREATED))  # dated by the record's LastModifiedDate
    consents: dict[str, ConsentStatus] = {}
    for purpose in purposes:
        own = events[purpose.id] + [(at, WITHDRAWN, False) for at in opt_outs]
        withdrawals = [at for at, status, _ in own if status is WITHDRAWN]
        if not own:
            consents[purpose.id] = UNKNOWN
        elif not withdrawals:
            consents[purpose.id] = GRANTED
        else:
            latest = max(withdrawals)
            overturned = any(
                status is GRANTED and evidenced and at > latest for at, status, evidenced in own
            )
            consents[purpose.id] = GRANTED if overturned else WITHDRAWN
    bases = [
        (side.stamp(CREATED), side.lawful_basis)
        for side in (hs, sf)
        if side is not None and side.lawful_basis is not None
    ]
    basis = max(bases, key=lambda b: b[0])[1] if bases else None
    refused: set[str] = set()
    if hs is not None:
        in_hubspot = {a.purpose: a.status for a in hs.acts}
        for purpose_id, status in consents.items():
            # A subscription HubSpot holds as granted needs no write, even under an
            # unsubscribe-all; any other grant to an address that opted out is refused.
            holds = in_hubspot.get(purpose_id)
            if status is GRANTED and (
                holds is WITHDRAWN or (holds is None and hs.opted_out_at is not None)
            ):
                refused.add(purpose_id)
    return Answer(consents, bool(opt_outs), basis, frozenset(refused))


# -- what the emulators hold ---------------------------------------------------------------


@dataclass
class Seen:
    """One system's view of one person, in common terms, read back from its emulator."""

    record_id: str
    consents: dict[str, ConsentStatus] = field(default_factory=dict)
    opted_out: bool = False
    lawful_basis: LawfulBasis | None = None


def _rows(admin: httpx.Client, sobject: str) -> list[dict[str, Any]]:
    reply = admin.get("/__emulator/records", params={"type": sobject})
    reply.raise_for_status()
    rows: list[dict[str, Any]] = reply.json()["records"]
    return rows


def hubspot_view(admin: httpx.Client, purposes: Sequence[Purpose]) -> dict[str, Seen]:
    """Each HubSpot contact by email: subscription statuses, unsubscribe-all, hs_legal_basis."""
    state = admin.get("/__emulator/state", timeout=60).json()
    purpose_of = {p.hubspot_subscription_id: p.id for p in purposes}
    view: dict[str, Seen] = {}
    for contact in state["contacts"]:
        props = contact["properties"]
        basis = hubspot_basis(props.get("hs_legal_basis"))
        view[props["email"]] = Seen(
            contact["id"], lawful_basis=LawfulBasis(basis) if basis else None
        )
    for status in state["subscriptions"]:
        held = view.get(status["email"])
        if held is None:
            continue
        sub = status["subscriptionId"]
        if sub is None:
            held.opted_out = status["status"] == "UNSUBSCRIBED"
        elif str(sub) in purpose_of and status["status"] in HS_STATE:
            held.consents[purpose_of[str(sub)]] = HS_STATE[status["status"]]
    return view


def salesforce_view(admin: httpx.Client, purposes: Sequence[Purpose]) -> dict[str, Seen]:
    """Each Contact or Lead by email: the latest consent row per purpose of its Individual,
    ``HasOptedOutOfEmail`` and ``Lawful_Basis__c``."""
    names = {r["Id"]: r["Name"] for r in _rows(admin, "DataUsePurpose")}
    purpose_of = {p.salesforce_data_use_purpose: p.id for p in purposes}
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in _rows(admin, "ContactPointTypeConsent"):
        purpose = purpose_of.get(names.get(row["DataUsePurposeId"]))
        if purpose is None:
            continue
        key = (row["PartyId"], purpose)
        if key not in latest or row["CaptureDate"] >= latest[key]["CaptureDate"]:
            latest[key] = row
    by_party: dict[str, dict[str, ConsentStatus]] = {}
    for (party, purpose), row in latest.items():
        by_party.setdefault(party, {})[purpose] = SF_STATE[row["PrivacyConsentStatus"]]
    view: dict[str, Seen] = {}
    for sobject in ("Contact", "Lead"):
        for row in _rows(admin, sobject):
            basis = salesforce_basis(row.get("Lawful_Basis__c"))
            view[row["Email"].lower()] = Seen(
                row["Id"],
                consents=dict(by_party.get(row.get("IndividualId") or "", {})),
                opted_out=bool(row.get("HasOptedOutOfEmail")),
                lawful_basis=LawfulBasis(basis) if basis else None,
            )
    return view


def refusals(
    changes: Iterable[Mapping[str, Any]], hubspot: Mapping[str, Seen]
) -> set[tuple[str, str]]:
    """(email, purpose) of the HubSpot grants among a sync report's ``changes`` that ended
    as ``needs_self_service`` (or, listed under ``awaiting_person``, have no outcome)."""
    emails = {held.record_id: email for email, held in hubspot.items()}
    return {
        (emails[c["record_id"]], c["purpose"])
        for c in changes
        if c.get("outcome", "needs_self_service") == "needs_self_service"
        and c["system"] == "hubspot"
        and c["change"] == "consent"
    }


def discrepancies(
    people: Iterable[Person],
    purposes: Sequence[Purpose],
    hubspot: Mapping[str, Seen],
    salesforce: Mapping[str, Seen],
    refused: set[tuple[str, str]],
) -> list[str]:
    """Every way the emulators' state differs from the answer, one line each (empty: none).

    ``refused`` are the HubSpot refusals the sync reported; they must be exactly the ones
    the answer predicts, and HubSpot must hold a withdrawal (of the subscription or of all
    email) for each.
    """
    problems: list[str] = []
    people = list(people)
    expected_refusals = set()
    for person in people:
        want = answer(person, purposes)
        expected_refusals |= {(person.email, p) for p in want.refused}
        for name, spec, view in (
            ("hubspot", person.hubspot, hubspot),
            ("salesforce", person.salesforce, salesforce),
        ):
            got = view.get(person.email)
            if spec is None:
                if got is not None:
                    problems.append(f"{person.email}: a {name} record was created")
                continue
            if got is None:
                problems.append(f"{person.email}: the {name} record is gone")
                continue
            problems += _differences(person.email, name, want, got)
    if refused != expected_refusals:
        problems.append(
            f"needs_self_service: unexpected {sorted(refused - expected_refusals)[:5]}, "
            f"missing {sorted(expected_refusals - refused)[:5]}"
        )
    return problems


def _differences(email: str, system: str, want: Answer, got: Seen) -> list[str]:
    problems = []
    where = f"{email} {system} {got.record_id}"
    if got.opted_out is not want.opted_out:
        problems.append(f"{where}: opted out {got.opted_out}, answer {want.opted_out}")
    if got.lawful_basis is not want.lawful_basis:
        problems.append(f"{where}: lawful basis {got.lawful_basis}, answer {want.lawful_basis}")
    for purpose, status in want.consents.items():
        held = got.consents.get(purpose, UNKNOWN)
        if system == "hubspot" and purpose in want.refused:
            if held is GRANTED or not (held is WITHDRAWN or got.opted_out):
                problems.append(f"{where}: {purpose} {held} where HubSpot refused a grant")
        elif held is not status:
            problems.append(f"{where}: {purpose} {held}, answer {status}")
    return problems
