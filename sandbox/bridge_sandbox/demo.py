"""``bridge demo``: the bridge's whole job against two or three emulators, every claim checked.

The chosen vendor emulators (HubSpot, Salesforce, Dynamics 365: any two, by default all
three) and the bridge's receiver run in this process, on free loopback ports,
with a fresh SQLite database in a temporary folder and keys made for the run; nothing of
the user's configuration is read. A few hundred realistic people are seeded
(:mod:`bridge_sandbox.demo_seed`), then each step runs one of the product's own services (the
reconciler, the daemon's inbox and propagation, erasure, the audit chain) and checks what it
did by reading the emulators and the database back (:mod:`bridge_sandbox.demo_crms`): a step's
``ok`` never comes from the service's own report. Each step prints one line; the exit code
is 0 when every check held, 1 when one failed, 130 when interrupted. Whatever happens, the
emulators, the receiver and the daemon's jobs are stopped and the folder removed before
returning (unless ``keep_running``: then they stay up until Ctrl-C, and the folder stays,
and the console's URL and an account's password are printed to sign in with, and the privacy
page's URL with the folder its emails land in).

The bridge's email goes to a local SMTP sink (:class:`bridge_sandbox.mailbox.Mailbox`), which
writes each message into the folder's ``mail`` folder; the portal's checks read their
sign-in link from it.

A step is one function in :data:`STEPS`, taking the :class:`World` and returning an
:class:`Outcome`; a step about one CRM's own act (an opt-out made there) runs when that CRM
is chosen, and every step checks every chosen CRM.
"""

from __future__ import annotations

import html
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from pydantic import SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from rich.console import Console

from bridge import audit
from bridge.adapters.base import CrmAdapter
from bridge.adapters.dynamics.settings import DynamicsSettings
from bridge.adapters.hubspot.settings import HubSpotSettings
from bridge.adapters.registry import VENDORS
from bridge.adapters.salesforce.settings import SalesforceSettings
from bridge.config import RetentionSettings, Settings, SmtpSettings, WebSettings
from bridge.errors import BridgeError
from bridge.identity import normalise_email
from bridge.logs import configure as configure_logging
from bridge.logs import get_logger
from bridge.model import RelatedRecords, System
from bridge.policies.retention import RetentionRule
from bridge.runtime.wiring import Wiring
from bridge.services.erasure import COMPLETED, ID_PREFIX
from bridge.services.plan import NEEDS_SELF_SERVICE
from bridge.store.db import Store
from bridge.store.records import all_reappearances
from bridge_sandbox.demo_crms import (
    DYNAMICS,
    GRANTED,
    HUBSPOT,
    SALESFORCE,
    SELLER_APP,
    SYSTEMS,
    TITLES,
    WITHDRAWN,
    Crms,
    Held,
    Person,
    wait_for,
)
from bridge_sandbox.demo_portal import PATH as PORTAL
from bridge_sandbox.demo_portal import (
    NoSuchForm,
    Visitor,
    portal_answers,
    sign_in_link,
    status_link,
)
from bridge_sandbox.demo_seed import (
    ERASED,
    KEPT_BY_CONSENT,
    KEPT_BY_DEAL,
    MARKETING,
    PORTAL_USER,
    PURPOSES,
    REP_OPT_OUT,
    SELLER_OPT_OUT,
    STALE,
    UNSUBSCRIBER,
    Cast,
    cast,
)
from bridge_sandbox.emulators.accounts import DEFAULT, Accounts
from bridge_sandbox.emulators.common import serve_in_thread
from bridge_sandbox.emulators.dynamics import DynamicsEmulatorConfig
from bridge_sandbox.emulators.dynamics import create_app as dynamics_emulator
from bridge_sandbox.emulators.dynamics_auth import AppRegistration
from bridge_sandbox.emulators.hubspot import HubSpotEmulatorConfig
from bridge_sandbox.emulators.hubspot import create_app as hubspot_emulator
from bridge_sandbox.emulators.hubspot_tiers import Profile
from bridge_sandbox.emulators.lawful_bases import SALESFORCE_LEGAL_BASIS
from bridge_sandbox.emulators.people import (
    DYNAMICS_ACTIVITY_FIELD,
    seed_dynamics,
    seed_hubspot,
    seed_salesforce,
)
from bridge_sandbox.emulators.people import Person as SeedPerson
from bridge_sandbox.emulators.salesforce import SalesforceEmulatorConfig
from bridge_sandbox.emulators.salesforce import create_app as salesforce_emulator
from bridge_sandbox.mailbox import Mailbox

log = get_logger("bridge_sandbox.demo")
ORGANIZATION_ID = "00D000000000DEMOAA"
PROPAGATION_TIMEOUT = 30.0  # seconds; the bridge's goal is one minute
SETTLE_SECONDS = 5.0  # for an emulator to note a delivery the receiver has answered
MAIL_TIMEOUT = 15.0  # seconds for an email the portal sends to reach the SMTP sink
ERASURE_TIMEOUT = 30.0  # for the daemon to complete the erasure asked on the portal
PORTAL_TRIGGER = "portal"  # the trigger of an erasure request asked on the privacy page
MAIL_FOLDER = "mail"  # in the demo's folder: every email the bridge sent, one .eml file each
OFFICER = "demo-officer"  # the console account (an admin: the demo shows every page)
RETAINED_ROLES = (STALE, KEPT_BY_DEAL, KEPT_BY_CONSENT)
DYNAMICS_WEBHOOK_HEADER = "x-bridge-key"  # the [dynamics] webhook_header default
# The bridge's app registration in the emulated tenant, a secret made for the run.
BRIDGE_APP = ("consent-bridge-demo", secrets.token_urlsafe(24))
# An open opportunity, as each CRM that has them asks it (SOQL, an OData $filter).
OPEN_OPPORTUNITY = {
    SALESFORCE: RelatedRecords(
        name="open_opportunity",
        related_object="Opportunity",
        link_field="ContactId",
        where="IsClosed = false",
        system=SALESFORCE,
    ),
    DYNAMICS: RelatedRecords(
        name="open_opportunity",
        related_object="opportunities",
        link_field="_parentcontactid_value",
        where="statecode eq 0",
        system=DYNAMICS,
    ),
}


def unqualified(crms: Sequence[str]) -> RetentionRule:
    """The example settings' first rule, with a deal keeping people too: the open
    opportunity of the first chosen CRM that has them (Salesforce, else Dynamics)."""
    deals = next(OPEN_OPPORTUNITY[crm] for crm in (SALESFORCE, DYNAMICS) if crm in crms)
    return RetentionRule(
        name="unqualified_leads",
        description="People no one qualified, idle for two years",
        covers={
            "salesforce.Lead": {"Status": ["Open - Not Contacted", "Working - Contacted"]},
            "salesforce.Contact": {},
            "hubspot.contact": {"lifecyclestage": ["", "subscriber", "lead"]},
            "dynamics.contact": {},
            "dynamics.lead": {},
        },
        keep_months=24,
        # Dataverse keeps no last activity on a row: the README's rollup column holds it.
        since=[f"dynamics.{table}.{DYNAMICS_ACTIVITY_FIELD}" for table in ("contact", "lead")],
        warning_days=30,
        action="delete",
        kept_while_consent=["marketing_email"],
        kept_while_related=[deals],
    )


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str


@dataclass(frozen=True)
class Officer:
    """The console account the demo makes: the check signs in with it, and a kept demo
    prints it for the user to sign in too."""

    name: str
    role: str
    password: str


@dataclass
class World:
    """What the steps act on: the seeded people, the bridge's services, the chosen CRMs and
    the accounts they play."""

    cast: Cast
    context: Wiring
    crms: Crms
    workdir: Path
    services: dict[str, str]
    start_daemon: Callable[[], None]
    accounts: Accounts
    officer: Officer
    public_url: str
    """Where people reach the bridge (``[web] public_url``): the privacy page's root."""
    mailbox: Mailbox
    """The SMTP sink the bridge sends its email to; it writes each into ``workdir/mail``."""
    visitors: list[Visitor] = field(default_factory=list)
    _live: bool = False

    @property
    def store(self) -> Store:
        return self.context.store()

    @property
    def purposes(self) -> list[str]:
        return [p.id for p in PURPOSES]

    def visitor(self) -> Visitor:
        """A new browser on the privacy page (no cookies); closed with the world."""
        self.visitors.append(Visitor(self.public_url))
        return self.visitors[-1]

    def signed_in(self) -> Visitor | None:
        """The browser the portal's person signed in with, if the sign-in check got so far."""
        return next((v for v in self.visitors if v.signed_in), None)

    @property
    def two(self) -> bool:
        """Whether two CRMs were chosen (the lines then say "both" and "neither")."""
        return len(self.crms.chosen) == 2

    def live(self) -> None:
        """Point every chosen CRM's webhooks at the receiver and start the daemon's inbox
        job, as a deployment does once its first sync is done (so the sync's own writes are
        not all sent back as events)."""
        if self._live:
            return
        if self.crms.has(HUBSPOT):
            self._hubspot_webhooks()
        if self.crms.has(SALESFORCE):
            self._salesforce_outbound()
        if self.crms.has(DYNAMICS):
            key = self.context.settings.vendor("dynamics").webhook_key
            assert key is not None
            endpoint = {"url": f"{self.services['receiver']}/webhooks/dynamics",
                        "auth": "HttpHeader", "key_name": DYNAMICS_WEBHOOK_HEADER,
                        "key_value": key.get_secret_value()}  # fmt: skip
            self.crms.dynamics.put("/__emulator/webhooks", json=[endpoint]).raise_for_status()
        self.start_daemon()
        self._live = True

    def _hubspot_webhooks(self) -> None:
        secret = self.context.settings.vendor("hubspot").client_secret
        assert secret is not None
        self.crms.hubspot.put(
            "/__emulator/webhooks",
            json={"target_url": f"{self.services['receiver']}/webhooks/hubspot",
                  "client_secret": secret.get_secret_value()},
        ).raise_for_status()  # fmt: skip

    def _salesforce_outbound(self) -> None:
        token = self.context.settings.vendor("salesforce").outbound_token
        assert token is not None
        endpoint = f"{self.services['receiver']}/webhooks/salesforce/{token.get_secret_value()}"
        watched = [
            ("Contact", ["HasOptedOutOfEmail", "DoNotCall"]),
            ("Lead", ["HasOptedOutOfEmail", "DoNotCall"]),
            *([("Individual", ["ShouldForget"])] if self.crms.privacy else []),
        ]
        messages = [
            {"object": sobject, "endpoint_url": endpoint, "watched_fields": fields}
            for sobject, fields in watched
        ]
        self.crms.salesforce.put(
            "/__emulator/outbound",
            json={"organization_id": ORGANIZATION_ID, "messages": messages},
        ).raise_for_status()


Check = Callable[[World], Outcome]
KINDS = {"opt_out": "opt-outs of all email", "consent": "consent", "lawful_basis": "lawful basis"}


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    """What the step does, shown while it runs."""
    run: Check
    needs: str | None = None
    """The CRM the step acts in, where it is about one: run only when it is chosen."""


# -- the steps -------------------------------------------------------------------------------


def plan(world: World) -> Outcome:
    """``sync --dry-run``: the plan, counted by kind of change; nothing written."""
    before = world.crms.fingerprint()
    report = world.context.reconciler().sync(dry_run=True, keep=None)
    unchanged = world.crms.fingerprint() == before
    kinds = Counter(change["change"] for change in report.changes)
    counted = ", ".join(f"{kinds[kind]} {name}" for kind, name in KINDS.items() if kinds[kind])
    people = len({change["subject_ref"] for change in report.changes})
    detail = (
        f"{len(report.changes)} changes for {people} of {report.subjects} people "
        f"({counted or 'none'}); read back, "
        + (
            ("neither CRM" if world.two else "no CRM") + " changed"
            if unchanged
            else "a CRM CHANGED"
        )
    )
    return Outcome(unchanged and bool(report.changes), detail)


def sync(world: World) -> Outcome:
    """The sync, then the CRMs read back: everyone held in two or more tells one story (told
    by what each account can hold: an org without the privacy objects holds no per-purpose
    consent, so its records are held to the opt-out and the lawful basis)."""
    hubspot = world.crms.has(HUBSPOT)
    before = world.crms.hubspot_calls() if hubspot else Counter[str]()
    report = world.context.reconciler().sync(keep=None)
    calls = world.crms.hubspot_calls() - before if hubspot else Counter[str]()
    counts = report.counts()
    refused = Counter(c["purpose"] for c in report.changes if c["outcome"] == NEEDS_SELF_SERVICE)
    both = [p for p in world.crms.people().values() if len(p.systems) > 1]
    waiting: Counter[str] = Counter()
    differing = resubscribing = 0
    unfounded = sum(all(r.basis is None for r in p.records) for p in both)
    for person in both:
        found = person.disagreements(world.purposes)
        left = _left_to_person(person, found)
        waiting.update(left)
        resubscribing += bool(left)
        differing += bool(found) and not left
    # A grant HubSpot refused for a contact opted out of all email there: the records agree
    # (the opt-out withdraws every purpose everywhere), and only the person can lift it.
    unsubscribed = {r.id for p in both for r in p.hubspot if r.opted_out}
    lifting = Counter(
        c["purpose"]
        for c in report.changes
        if c["outcome"] == NEEDS_SELF_SERVICE and c["record_id"] in unsubscribed
    )
    ok = not counts["failed"] and not differing and waiting + lifting == refused
    agree = len(both) - differing - resubscribing
    held = "opt-out, consent and lawful basis" if world.crms.privacy else "opt-out and lawful basis"
    where = "both CRMs" if world.two else "two CRMs or more"
    detail = (
        f"{counts['done']} changes written, {counts['failed']} failed; read back, {agree} of "
        f"the {len(both)} people in {where} agree on {held}"
    )
    if resubscribing:
        detail += f"; {resubscribing} must resubscribe in HubSpot themselves"
    if lifting:
        detail += (
            f"; {lifting.total()} newer grants wait for people opted out of all email, which "
            "only they can lift in HubSpot"
        )
    if unfounded:
        detail += f"; {unfounded} with no lawful basis anywhere still have none (not guessed)"
    if differing:
        detail += f"; {differing} DISAGREE"
    if not world.crms.privacy:
        detail += (
            "; Salesforce org without the privacy objects: checked its email opt-out instead "
            "of per-purpose consent, which it cannot hold"
        )
    if hubspot and not world.accounts.batch_consent:
        single, batch = _consent_calls(calls)
        detail += (
            f"; HubSpot {world.accounts.hubspot_tier} has no batch consent scopes: {single} "
            f"consent calls of one address each, {batch} batch"
        )
    return Outcome(ok, detail)


def _consent_calls(calls: Counter[str]) -> tuple[int, int]:
    """How many of these HubSpot calls read or wrote subscription statuses one address at
    a time, and how many in batches."""
    statuses = {
        route: count
        for route, count in calls.items()
        if "/communication-preferences/" in route and "/definitions" not in route
    }
    batch = sum(count for route, count in statuses.items() if "/batch/" in route)
    return sum(statuses.values()) - batch, batch


def _left_to_person(person: Person, found: list[tuple[str, str, str]]) -> set[str]:
    """The purposes a person must resubscribe to in HubSpot themselves, if those are all the
    records disagree about: HubSpot holds the person's own withdrawal (the v3 API cannot
    resubscribe them), the other CRMs a newer, evidenced grant."""
    if not person.hubspot or any(not what.startswith("consent:") for what, _, _ in found):
        return set()
    hubspot = person.hubspot[0]
    others = [r for r in person.records if r.system != HUBSPOT and r.holds_consent]
    purposes = {what.removeprefix("consent:") for what, _, _ in found}
    held = bool(found) and all(
        not hubspot.opted_out
        and hubspot.consent.get(purpose) == WITHDRAWN
        and all(r.effective(purpose) == GRANTED for r in others)
        for purpose in purposes
    )
    return purposes if held else set()


def _in_every_crm(world: World, role: str) -> tuple[Person, list[str]]:
    """The person playing ``role``, and why they cannot be acted on (not held by every
    chosen CRM, or opted out somewhere already); empty when they can."""
    person = world.crms.person(world.cast.roles[role])
    missing = [TITLES[c] for c in world.crms.chosen if c not in person.systems]
    problems = [f"not in {', '.join(missing)}"] if missing else []
    if any(r.opted_out for r in person.records):
        problems.append("opted out already")
    return person, problems


def _others(world: World, person: Person, system: str) -> list[Held]:
    """The person's records in the chosen CRMs but ``system``."""
    return [r for r in person.records if r.system != system]


def hubspot_opt_out(world: World) -> Outcome:
    """A person unsubscribes in HubSpot; the signed webhook reaches the receiver, the
    daemon propagates it, and every other chosen CRM shows the opt-out."""
    world.live()
    person, problems = _in_every_crm(world, UNSUBSCRIBER)
    if problems:
        return Outcome(False, f"the person to unsubscribe is {'; '.join(problems)}")
    delivered = world.crms.webhooks()["delivered"]
    world.crms.unsubscribe_all_in_hubspot(world.cast.roles[UNSUBSCRIBER])
    others = _others(world, person, HUBSPOT)

    def accepted() -> bool:  # the receiver answers 2xx only to a valid signature, once stored
        hooks = world.crms.webhooks()
        return hooks["delivered"] > delivered and all(d["ok"] for d in hooks["deliveries"])

    delay = wait_for(lambda: world.crms.opted_out(others), PROPAGATION_TIMEOUT)
    signed = wait_for(accepted, SETTLE_SECONDS) is not None
    target = " and ".join(r.label for r in others)
    if delay is None:
        return Outcome(False, f"{target} not opted out after {PROPAGATION_TIMEOUT:.0f} s")
    detail = (
        f"{person.hubspot[0].label} unsubscribed from all email; signed webhook "
        f"{'accepted' if signed else 'NOT accepted'}; {target} opted out {delay:.1f} s later"
    )
    return Outcome(signed, detail)


def salesforce_opt_out(world: World) -> Outcome:
    """A rep ticks Email Opt Out in Salesforce; the outbound message reaches the receiver
    and every other chosen CRM shows the person opted out of all email."""
    world.live()
    person, problems = _in_every_crm(world, REP_OPT_OUT)
    contacts = [r for r in person.salesforce if r.object_type == "Contact"]
    if problems or not contacts:
        return Outcome(False, f"the person to opt out is {'; '.join(problems) or 'no Contact'}")
    contact = contacts[0]
    world.crms.rep_update("Contact", contact.id, {"HasOptedOutOfEmail": True})
    others = _others(world, person, SALESFORCE)

    def acknowledged() -> bool:  # the receiver acks only a stored message of this org
        notes = [n for n in world.crms.outbound()["notifications"] if n["record_id"] == contact.id]
        return bool(notes) and all(n["status"] == "delivered" for n in notes)

    delay = wait_for(lambda: world.crms.opted_out(others), PROPAGATION_TIMEOUT)
    acked = wait_for(acknowledged, SETTLE_SECONDS) is not None
    target = " and ".join(r.label for r in others)
    if delay is None:
        return Outcome(False, f"{target} not opted out after {PROPAGATION_TIMEOUT:.0f} s")
    unsubscribed = "unsubscribed from" if others[0].system == HUBSPOT else "opted out of"
    detail = (
        f"a rep ticked Email Opt Out on {contact.label}; outbound message "
        f"{'acknowledged' if acked else 'NOT acknowledged'}; {target} {unsubscribed} all "
        f"email {delay:.1f} s later"
    )
    return Outcome(acked, detail)


def dynamics_opt_out(world: World) -> Outcome:
    """A seller sets "Bulk Email: Do Not Allow" on a contact in Dynamics 365; the
    environment's webhook, its key in a header, reaches the receiver, and every other chosen
    CRM shows the person opted out of all email."""
    world.live()
    person, problems = _in_every_crm(world, SELLER_OPT_OUT)
    contacts = [r for r in person.dynamics if r.object_type == "contact"]
    if problems or not contacts:
        return Outcome(False, f"the person to opt out is {'; '.join(problems) or 'no contact'}")
    contact = contacts[0]
    before = len(world.crms.dynamics_deliveries()["deliveries"])
    world.crms.seller_update("contacts", contact.id, {"donotbulkemail": True})
    others = _others(world, person, DYNAMICS)

    def accepted() -> bool:  # the receiver answers 2xx only to the right key, once stored
        hooks = world.crms.dynamics_deliveries()
        mine = [d for d in hooks["deliveries"][before:] if d["id"] == contact.id]
        return bool(mine) and all(d["delivered"] for d in mine)

    delay = wait_for(lambda: world.crms.opted_out(others), PROPAGATION_TIMEOUT)
    keyed = wait_for(accepted, SETTLE_SECONDS) is not None
    target = " and ".join(r.label for r in others)
    if delay is None:
        return Outcome(False, f"{target} not opted out after {PROPAGATION_TIMEOUT:.0f} s")
    detail = (
        f"a seller set Bulk Email: Do Not Allow on {contact.label}; keyed webhook "
        f"{'accepted' if keyed else 'NOT accepted'}; {target} opted out {delay:.1f} s later"
    )
    return Outcome(keyed, detail)


def erasure(world: World) -> Outcome:
    """An erasure request (the address in capitals, as people type it): every chosen CRM
    searched again, the recycle bins too, and empty (Dynamics' consent rows of the address
    too); the receipt, which holds no address. An org without the privacy objects has no
    Individual or consent rows: none may be planned."""
    email = world.cast.roles[ERASED]
    person = world.crms.person(email)
    salesforce = world.crms.has(SALESFORCE) and world.crms.privacy
    individuals, consents = _privacy_rows(world, person) if salesforce else (set(), [])
    dynamics_rows = [h for h in world.crms.holding(email) if h.startswith("Dynamics consent")]
    service = world.context.erasure()
    request_id = service.submit([email.upper()], "delete", "demo: the person asked", "demo")
    service.run(request_id)
    left = [
        *world.crms.holding(email),
        *(f"Individual {i}" for i in world.crms.surviving("Individual", individuals)),
        *(f"consent {c}" for c in world.crms.surviving("ContactPointTypeConsent", consents)),
    ]
    receipt = service.receipt(request_id)
    text = json.dumps(receipt).lower()
    private = any(spelling.lower() in text for spelling in world.cast.spellings())
    outcomes = _outcomes(receipt)
    steps = sum(outcomes.values())
    erased_kinds = set(receipt["systems"].get("salesforce", {}).get("objects", {}))
    beyond = sorted(erased_kinds - PEOPLE_OBJECTS) if not world.crms.privacy else []
    ok = (
        bool(person.records)
        and not left
        and receipt["verification"]["ok"]
        and not private
        and not beyond
    )
    records = ", ".join(r.label for r in person.records)
    if dynamics_rows:
        records += f", {len(dynamics_rows)} Dynamics consent rows"
    if not world.crms.has(SALESFORCE):
        erased = records
    elif world.crms.privacy:
        erased = f"{records}, {len(individuals)} Individuals and {len(consents)} consent rows"
    else:
        erased = (
            f"{records} (Salesforce org without the privacy objects: no Individual or consent "
            f"rows to erase, {'and none planned' if not beyond else 'YET PLANNED ' + str(beyond)})"
        )
    detail = (
        f"erased {erased}; searched again, recycle bin too: "
        f"{', '.join(left) + ' LEFT' if left else 'nothing'}; "
        f"receipt {request_id[:8]}: {outcomes['erased']} of {steps} records erased, "
        f"verified, {'no address in it' if not private else 'HOLDS AN ADDRESS'}"
    )
    return Outcome(ok, detail)


PEOPLE_OBJECTS = {"contact", "lead"}  # how an erasure receipt names Salesforce's people


def _outcomes(receipt: Mapping[str, Any]) -> Counter[str]:
    """How many records an erasure's receipt counts by outcome (``erased``, ...)."""
    outcomes: Counter[str] = Counter()
    for system in receipt["systems"].values():
        for counted in system["objects"].values():
            outcomes.update(counted)
    return outcomes


def _privacy_rows(world: World, person: Person) -> tuple[set[str], list[str]]:
    """The person's Individuals and their consent rows, in an org that has them."""
    ids = {r.id for r in person.salesforce}
    individuals = {
        row["IndividualId"]
        for sobject in ("Contact", "Lead")
        for row in world.crms.salesforce_rows(sobject)
        if row["Id"] in ids and row["IndividualId"]
    }
    consents = [
        row["Id"]
        for row in world.crms.salesforce_rows("ContactPointTypeConsent")
        if row["PartyId"] in individuals
    ]
    return individuals, consents


def suppression(world: World) -> Outcome:
    """The erased person is typed in again in every chosen CRM: the next sync neither links
    nor writes them, and flags every record."""
    erased = world.cast.playing(ERASED)
    email = erased.email
    made: list[str] = []
    if world.crms.has(HUBSPOT):
        hubspot_id = world.crms.create_hubspot_contact(
            {"email": email, "firstname": erased.first_name, "lastname": erased.last_name}
        )
        made.append(f"HubSpot contact {hubspot_id}")
    if world.crms.has(SALESFORCE):
        basis = SALESFORCE_LEGAL_BASIS["legitimate_interests"]
        lead_id = world.crms.rep_create(
            "Lead",
            {"FirstName": erased.first_name, "LastName": erased.last_name,
             "Email": email.title(), "Company": "Analytical Engines Ltd",
             "Lawful_Basis__c": basis},
        )  # fmt: skip
        made.append(f"Salesforce Lead {lead_id}")
    if world.crms.has(DYNAMICS):
        contact_id = world.crms.seller_create(
            "contacts",
            {"firstname": erased.first_name, "lastname": erased.last_name,
             "emailaddress1": email.upper()},
        )  # fmt: skip
        made.append(f"Dynamics contact {contact_id}")
    ids = {label.rpartition(" ")[2] for label in made}
    before = world.crms.person(email)
    report = world.context.reconciler().sync()
    after = world.crms.person(email)
    flagged = {row["record_id"] for row in all_reappearances(world.store)}
    untouched = before.records == after.records and len(after.records) == len(made)
    ok = untouched and ids <= flagged and report.suppressed >= 1
    basis = " (the Lead's lawful basis not copied)" if world.crms.has(SALESFORCE) else ""
    detail = (
        f"re-entered as {' and '.join(made)}; the next sync "
        f"{'wrote nothing to them' if untouched else 'CHANGED THEM'}{basis} and flagged "
        f"{len(ids & flagged)} of {len(made)} as re-appeared"
    )
    return Outcome(ok, detail)


def audit_verify(world: World) -> Outcome:
    """``audit --verify``: the chain holds; no seeded address in the log or the database."""
    result = audit.verify(world.store)
    spellings = world.cast.spellings()
    events = json.dumps(list(audit.events(world.store)), default=str).encode()
    in_log = _found(events, spellings)
    files = sorted(world.workdir.glob("bridge.db*"))  # the database, its WAL and shared memory
    data = _read_elsewhere(files)
    in_database = _found(data, spellings)
    ok = result.ok and result.checked > 0 and not in_log and not in_database
    chain = "intact" if result.ok else f"BROKEN at row {result.broken_at}"
    found = (
        "none"
        if not in_log and not in_database
        else f"{in_log} in the log and {in_database} in the database"
    )
    detail = (
        f"chain of {result.checked} events {chain}; seeded addresses ({len(spellings)} "
        f"spellings) in the audit log or the {len(data) // 1024} kB database: {found}"
    )
    return Outcome(ok, detail)


_CONCATENATE = (
    "import sys\nfor name in sys.argv[1:]:\n    sys.stdout.buffer.write(open(name, 'rb').read())"
)


def _read_elsewhere(files: Sequence[Path]) -> bytes:
    """The files' bytes as on disk (every page, free ones and the WAL's stale frames too),
    read by a child process. Never read here: this process holds SQLite connections to these
    files, and closing any other descriptor of a file drops every POSIX lock the process holds
    on it; a ``bridge`` command run beside a kept demo would then write under the daemon's
    feet and corrupt the database."""
    if not files:
        return b""
    child = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _CONCATENATE, *map(str, files)],
        capture_output=True,
        check=True,
        timeout=120,
    )
    return child.stdout


def retention(world: World) -> Outcome:
    """``purge --preview --within 60d`` after a rep opens a deal with one of three people
    idle for 25 months: the one with nothing to keep them is listed, with the reason and a
    link to each record; the deal and a consent keep the others off; nothing is written."""
    everyone = world.crms.people()  # one read of the CRMs for the three people
    people = {
        role: everyone.get(normalise_email(world.cast.roles[role]), Person(()))
        for role in RETAINED_ROLES
    }
    close = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    if world.crms.has(SALESFORCE):  # the CRM whose opportunities the rule asks about
        contact = next(r for r in people[KEPT_BY_DEAL].salesforce if r.object_type == "Contact")
        deal = {"Name": "Renewal", "StageName": "Negotiation/Review", "CloseDate": close}
        world.crms.rep_create("Opportunity", deal | {"ContactId": contact.id})
    else:
        contact = next(r for r in people[KEPT_BY_DEAL].dynamics if r.object_type == "contact")
        world.crms.seller_create(
            "opportunities",
            {"name": "Renewal", "parentcontactid@odata.bind": f"/contacts({contact.id})"},
        )  # fmt: skip
    before = world.crms.fingerprint()
    report = world.context.retention().preview(timedelta(days=60))
    unchanged = world.crms.fingerprint() == before
    listed = report.as_dict()["due"]
    text = json.dumps(listed).lower()
    private = any(spelling.lower() in text for spelling in world.cast.spellings())
    stale = normalise_email(world.cast.roles[STALE])
    due = [c for c in report.candidates if stale in c.subject.emails]
    linked = all(r["url"] for item in listed for r in item["records"])
    ok = len(listed) == 1 and len(due) == 1 and unchanged and linked and not private
    records = ", ".join(r.label for r in people[STALE].records)
    verdict = f"due {listed[0]['due_on']}, {listed[0]['action']}" if listed else "NOT LISTED"
    detail = (
        f"{len(listed)} of {len(world.cast.addresses)} people fall due: {records} ({verdict}: "
        f"{due[0].verdict.why if due else '-'}); kept: "
        f"{people[KEPT_BY_DEAL].records[0].label} by the open deal, "
        f"{people[KEPT_BY_CONSENT].records[0].label} by consent; "
        f"{'nothing written' if unchanged else 'a CRM CHANGED'}, "
        f"{'a link to every record' if linked else 'LINKS MISSING'}, "
        f"{'no address in the list' if not private else 'ADDRESSES IN THE LIST'}"
    )
    return Outcome(ok, detail)


CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


def console_today(world: World) -> Outcome:
    """The privacy officer's console as a browser uses it: the demo's operator signs in over
    HTTP; Today lists every request of the demo (open ones by due date, the others among
    those ended this week) and Requests every request, by the first characters of its id,
    and neither page shows a seeded address."""
    officer = world.officer
    requests = world.context.erasure().requests()
    every = [r["id"][:ID_PREFIX] for r in requests]
    url = f"{world.services['receiver']}/console"
    with httpx.Client(base_url=url, timeout=30) as browser:
        form = browser.get("/login")
        token = CSRF_FIELD.search(form.text)
        answer = browser.post(
            "/login",
            data={"name": officer.name, "password": officer.password,
                  "csrf": token.group(1) if token else ""},
        )  # fmt: skip
        if answer.status_code != 303:
            return Outcome(False, f"signing in as {officer.name} answered {answer.status_code}")
        today, listed = browser.get("/"), browser.get("/requests")
    shown = today.status_code == listed.status_code == 200
    headed = "<h1>Today</h1>" in today.text and "<h1>Requests</h1>" in listed.text
    signed_in = f"{officer.name} ({officer.role})" in today.text
    on_today = [ref for ref in every if ref in today.text]
    on_list = [ref for ref in every if ref in listed.text]
    spellings = world.cast.spellings()
    private = _found((today.text + listed.text).encode(), spellings)
    ok = (
        shown and headed and signed_in and bool(every) and not private
        and on_today == every and on_list == every
    )  # fmt: skip
    detail = (
        f"signed in over HTTP as {officer.name} ({officer.role}); Requests lists {len(on_list)} "
        f"of the demo's {len(every)} requests ({', '.join(every) or 'none'}), Today "
        f"{len(on_today)}; seeded addresses on either page: {private or 'none'}"
    )
    if not shown or not headed:
        detail += f"; PAGES NOT SHOWN (Today {today.status_code}, Requests {listed.status_code})"
    return Outcome(ok, detail)


def portal_sign_in(world: World) -> Outcome:
    """A person asks the privacy page for a sign-in link (the address form, then the code
    form), reads the email the SMTP sink received, opens its link (a landing page, whose
    button uses the link up: a mail scanner's fetch must not) and sees every record both CRMs
    hold under their address, and no one else's address."""
    email = world.cast.roles[PORTAL_USER]
    person = world.crms.person(email)
    visitor = world.visitor()
    visitor.open("/")
    asked = time.monotonic()
    to_code = visitor.submit("/sign-in", email=email).url.path == f"{PORTAL}/check"
    message = _mail_to(world, email)
    if message is None:
        return Outcome(False, f"no sign-in email reached the SMTP sink in {MAIL_TIMEOUT:.0f} s")
    delivered = time.monotonic() - asked
    link = sign_in_link(message)
    if link is None or not link.startswith(f"{world.public_url}{PORTAL}/"):
        return Outcome(False, "the sign-in email holds no link built from [web] public_url")
    landing = visitor.open(link)
    private = landing.headers.get("referrer-policy") == "no-referrer"
    visitor.submit("/verify")
    me = visitor.open("/me")
    visitor.signed_in = me.status_code == 200 and me.url.path == f"{PORTAL}/me"
    shown = [r.label for r in person.records if r.id in me.text]
    others = [s for s in world.cast.spellings() if normalise_email(s) != normalise_email(email)]
    strangers = _found(html.unescape(me.text).encode(), others)
    ok = (
        to_code and private and visitor.signed_in and bool(person.records)
        and len(shown) == len(person.records) and not strangers
    )  # fmt: skip
    detail = (
        f"asked on {PORTAL}/ for a sign-in link, "
        f"{'then shown the code form' if to_code else 'NOT SHOWN THE CODE FORM'}; the email "
        f"reached the SMTP sink {delivered:.1f} s later, its link built from [web] public_url "
        f"to a landing page {'sent with' if private else 'WITHOUT'} Referrer-Policy "
        f"no-referrer; signed in by its button, {PORTAL}/me "
        + (
            f"lists {', '.join(shown) or 'NO RECORD'} ({len(shown)} of the "
            f"{len(person.records)} {'both CRMs' if world.two else 'the CRMs'} hold); other "
            f"people's addresses on it: "
            f"{strangers or 'none'}"
            if visitor.signed_in
            else f"NOT SHOWN (answered {me.status_code} at {me.url.path})"
        )
    )
    return Outcome(ok, detail)


def portal_withdrawal(world: World) -> Outcome:
    """Signed in, the person withdraws marketing email on the privacy page: the page lists
    each CRM's answer, and both CRMs, read back through the emulators, hold the withdrawal
    (those that can: an org without the privacy objects holds no per-purpose consent)."""
    visitor = world.signed_in()
    if visitor is None:
        return Outcome(False, "nobody signed in to the privacy page (see portal_sign_in)")
    email = world.cast.roles[PORTAL_USER]
    before = world.crms.person(email)
    holding = [r for r in before.records if r.holds_consent]
    granted = all(r.effective(MARKETING) == GRANTED for r in holding)
    visitor.open("/me")
    answered = visitor.submit("/consent", {"action": "withdraw", "purpose": MARKETING})
    answers = portal_answers(answered.text)

    def withdrawn() -> bool:
        now = {r.id: r for r in world.crms.person(email).records}
        return all(r.id in now and now[r.id].effective(MARKETING) == WITHDRAWN for r in holding)

    held = wait_for(withdrawn, SETTLE_SECONDS) is not None
    systems = {r.system for r in before.records}
    # The page names each CRM by its title ("Dynamics 365"), as the registry has it.
    titled = {vendor.title.lower(): name for name, vendor in VENDORS.items()}
    named = {titled.get(name, name) for name in answers}
    ok = (
        answered.status_code == 200 and granted and held and bool(holding)
        and named == systems
    )  # fmt: skip
    told = ", ".join(f"{system} {answer}" for system, answer in sorted(answers.items()))
    records = " and ".join(r.label for r in holding)
    detail = (
        f"withdrew {MARKETING} on {PORTAL}/me; the page lists each CRM's answer "
        f"({told or 'NONE'}); read back, {records or 'NO RECORD'} "
        + (
            ("holds" if len(holding) == 1 else "hold") + " the withdrawal"
            if held
            else "DO NOT HOLD IT"
        )
    )
    if not granted:
        detail += "; the person was not subscribed to begin with"
    if not world.crms.privacy:
        detail += "; Salesforce org without the privacy objects: it holds no per-purpose consent"
    return Outcome(ok, detail)


def portal_erasure(world: World) -> Outcome:
    """The person asks to be forgotten on the privacy page: shown which records it erases,
    they confirm; the running daemon completes the request (trigger ``portal``), both CRMs searched
    again hold nothing under the address, and the status page, opened from the link in the
    confirmation email in another browser, shows the receipt."""
    visitor = world.signed_in()
    if visitor is None:
        return Outcome(False, "nobody signed in to the privacy page (see portal_sign_in)")
    world.live()  # the daemon runs the request, as deployed
    email = world.cast.roles[PORTAL_USER]
    records = world.crms.person(email).records
    shown = visitor.open("/erase").text
    planned = [r.label for r in records if r.id in shown]
    visitor.submit("/erase")
    service = world.context.erasure()
    asked = [r for r in service.requests() if r["trigger"] == PORTAL_TRIGGER]
    if len(asked) != 1:
        return Outcome(False, f"{len(asked)} erasure requests from the portal, not 1")
    request_id = asked[0]["id"]

    def completed() -> bool:
        return str(service.view(request_id)["status"]) == COMPLETED

    took = wait_for(completed, ERASURE_TIMEOUT, every=0.25)
    message = _mail_to(world, email)
    link = status_link(message) if message is not None else None
    status = world.visitor().open(link) if link else None
    left = world.crms.holding(email)
    receipt = service.receipt(request_id) if took is not None else {"systems": {}}
    outcomes = _outcomes(receipt)
    erased, steps = outcomes["erased"], sum(outcomes.values())
    # The receipt: the request, and every kind of record it counts, on the page.
    kinds = {kind for system in receipt["systems"].values() for kind in system["objects"]}
    shows = (
        status is not None and status.status_code == 200 and request_id in status.text
        and all(kind in status.text for kind in kinds)
    )  # fmt: skip
    ok = (
        took is not None and not left and shows and erased == steps >= len(records) > 0
        and len(planned) == len(records)
    )  # fmt: skip
    detail = (
        f"asked to be forgotten on {PORTAL}/erase, shown first what it erases "
        f"({len(planned)} of the {len(records)} records); request {request_id[:ID_PREFIX]} "
        + (f"completed by the daemon {took:.1f} s later" if took is not None else "NOT COMPLETED")
        + f" ({erased} of {steps} records erased); searched again: "
        + (", ".join(left) + " LEFT" if left else "nothing")
        + "; the status page from the confirmation email "
        + (
            "shows the receipt"
            if shows
            else ("NOT FOUND IN THE EMAIL" if link is None else "DOES NOT SHOW THE RECEIPT")
        )
    )
    return Outcome(ok, detail)


def _mail_to(world: World, email: str) -> EmailMessage | None:
    """The next email the SMTP sink received for ``email``; None if none came in time (the
    sink's own error would name the address)."""
    try:
        return world.mailbox.wait_for(email, MAIL_TIMEOUT)
    except TimeoutError:
        return None


_ADDRESS_RUN = re.compile(rb"[a-z0-9._'+@-]*@[a-z0-9._'+@-]*")


def _found(data: bytes, spellings: Sequence[str]) -> int:
    """How many of these addresses occur in ``data``, in any case. Each occurrence lies
    inside a run of address characters holding an ``@``; there are few such runs, so this
    is one pass over the data, not one per address."""
    runs = set(_ADDRESS_RUN.findall(data.lower()))
    return sum(any(s.lower().encode() in run for run in runs) for s in spellings)


STEPS: list[Step] = [
    Step("plan", "sync --dry-run: what the sync would change", plan),
    Step("sync", "sync, then the CRMs read back", sync),
    Step("hubspot_opt_out", "a person unsubscribes in HubSpot", hubspot_opt_out, HUBSPOT),
    Step(
        "salesforce_opt_out",
        "a rep ticks Email Opt Out in Salesforce",
        salesforce_opt_out,
        SALESFORCE,
    ),
    Step(
        "dynamics_opt_out",
        "a seller sets Bulk Email: Do Not Allow in Dynamics 365",
        dynamics_opt_out,
        DYNAMICS,
    ),
    Step("erasure", "an erasure request, every CRM searched again", erasure),
    Step("suppression", "the erased person typed in again, then a sync", suppression),
    Step("retention", "purge --preview --within 60d: who the retention rule purges", retention),
    Step("console", "the console, signed in over HTTP: Today and Requests", console_today),
    Step("portal_sign_in", "a person signs in to the privacy page by email", portal_sign_in),
    Step("portal_withdrawal", "they withdraw marketing email there", portal_withdrawal),
    Step("portal_erasure", "they ask to be forgotten there", portal_erasure),
    Step("audit", "audit --verify, and a search for seeded addresses", audit_verify),
]


# -- running ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    name: str
    ok: bool
    detail: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail,
                "seconds": round(self.seconds, 2)}  # fmt: skip


def run(
    people: int,
    *,
    accounts: Accounts = DEFAULT,
    crms: Sequence[str] = SYSTEMS,
    keep_running: bool = False,
    as_json: bool = False,
    steps: Sequence[Step] = STEPS,
    console: Console | None = None,
) -> int:
    """Set up the chosen emulators (two or three of :data:`SYSTEMS`; HubSpot and Salesforce
    as ``accounts``), run every step that applies to them, tear down; the exit code (0 all
    held, 1 one failed, 130 interrupted)."""
    chosen = tuple(system for system in SYSTEMS if system in crms)
    if len(chosen) < 2 or len(chosen) != len(set(crms)):
        raise ValueError(f"the demo runs two or more of {', '.join(SYSTEMS)}")
    steps = [step for step in steps if step.needs is None or step.needs in chosen]
    console = console or Console(highlight=False)
    configure_logging(_log_level())
    started = time.monotonic()
    results: list[Result] = []
    notes = Console(stderr=True, highlight=False) if as_json else console
    services: dict[str, str] = {}
    restore = _interrupt_on_signals()
    try:
        with _world(people, keep_running, accounts, chosen) as world:
            services = world.services
            if not as_json:
                _header(console, world)
            for number, step in enumerate(steps, 1):
                results.append(_run_step(console, number, step, world, quiet=as_json))
            if keep_running:
                _report(console, results, started, services, accounts, chosen, as_json,
                        stopped=False, kept=_kept(world))  # fmt: skip
                with suppress(KeyboardInterrupt):  # Ctrl-C is how a kept demo ends
                    _announce_and_wait(notes, world)
    except KeyboardInterrupt:
        notes.print("interrupted: emulators, receiver and daemon stopped", style="yellow")
        return 130
    finally:
        restore()
    if keep_running:
        notes.print(
            f"emulators, receiver and daemon stopped; {world.workdir} is yours to remove",
            markup=False,
            soft_wrap=True,
        )
    else:
        _report(console, results, started, services, accounts, chosen, as_json, stopped=True)
    return 0 if all(r.ok for r in results) else 1


def _run_step(console: Console, number: int, step: Step, world: World, quiet: bool) -> Result:
    began = time.monotonic()
    status = console.status(f"{number} {step.title}") if console.is_terminal and not quiet else None
    try:
        if status:
            status.start()
        outcome = step.run(world)
    except (httpx.HTTPError, BridgeError, NoSuchForm) as error:
        log.debug("demo.step_failed", step=step.name, exc_info=True)
        outcome = Outcome(False, f"failed: {type(error).__name__}: {error}")
    except Exception as error:
        log.debug("demo.step_failed", step=step.name, exc_info=True)
        outcome = Outcome(False, f"failed: {type(error).__name__} (BRIDGE_LOG_LEVEL=debug)")
    finally:
        if status:
            status.stop()
    result = Result(step.name, outcome.ok, outcome.detail, time.monotonic() - began)
    if not quiet:
        mark = "[green]ok  [/]" if result.ok else "[bold red]FAIL[/]"
        _say(console, f"{number} {step.name}: {result.detail}", mark)
    return result


def _say(console: Console, text: str, mark: str = "") -> None:
    """One paragraph, wrapped to the console (80 columns off a terminal) with a hanging
    indent; ``mark`` (Rich markup, four columns) in front of its first line."""
    width = max(console.width, 40)
    lines = textwrap.wrap(text, width - 5, break_on_hyphens=False) or [""]
    console.print(f"{mark} " if mark else "     ", end="")
    console.print(lines[0], markup=False)
    for line in lines[1:]:
        console.print(f"     {line}", markup=False)


def _header(console: Console, world: World) -> None:
    counts = world.cast.counts()
    accounts = world.accounts
    org = "Data Protection and Privacy on" if accounts.privacy else "no privacy objects"
    held = {
        HUBSPOT: f"HubSpot (Marketing Hub {accounts.hubspot_tier}: "
        f"{counts['hubspot_contacts']} contacts)",
        SALESFORCE: f"Salesforce ({org}: {counts['salesforce_contacts']} Contacts, "
        f"{counts['salesforce_leads']} Leads)",
        DYNAMICS: f"Dynamics 365 ({counts['dynamics_contacts']} contacts, "
        f"{counts['dynamics_leads']} leads)",
    }
    *first, last = [held[crm] for crm in world.crms.chosen]
    people = len({normalise_email(p.email) for p in _seeded(world.cast, world.crms.chosen)})
    text = (
        f"{people} people seeded into emulated {', '.join(first)} and {last}, the bridge's "
        f"receiver and daemon on loopback:"
    )
    console.print("[bold]consent-bridge demo[/]", end="")
    console.print(":", markup=False)
    _say(console, text)


def _report(
    console: Console,
    results: list[Result],
    started: float,
    services: dict[str, str],
    accounts: Accounts,
    crms: Sequence[str],
    as_json: bool,
    stopped: bool,
    kept: dict[str, dict[str, str]] | None = None,
) -> None:
    seconds = time.monotonic() - started
    ok = all(r.ok for r in results)
    if as_json:
        document = {"steps": [r.as_dict() for r in results], "ok": ok,
                    "seconds": round(seconds, 2), "services": services,
                    "accounts": asdict(accounts), "crms": list(crms)}  # fmt: skip
        document |= kept or {}
        print(json.dumps(document, ensure_ascii=False), flush=True)
        return
    passed = sum(r.ok for r in results)
    mark = "[green]ok  [/]" if ok else "[bold red]FAIL[/]"
    tail = "; emulators, receiver and daemon stopped" if stopped else ""
    _say(console, f"{passed} of {len(results)} checks held in {seconds:.1f} s{tail}", mark)


def _announce_and_wait(console: Console, world: World) -> None:
    """Leave everything up until Ctrl-C (or SIGTERM), saying where it is and how to point
    the CLI at it."""
    env = world.workdir / "demo.env"
    env.write_text(_environment(world.context.settings), encoding="utf-8")
    env.chmod(0o600)  # the demo's keys
    kept = _kept(world)
    account, portal = kept["console"], kept["portal"]
    lines = [
        "The emulators, the receiver and the daemon stay up until Ctrl-C:",
        *(f"  {name:<11} {url}" for name, url in world.services.items()),
        f"  console     {account['url']}",
        f"              sign in as {account['name']} ({world.officer.role}) with the password "
        f"{account['password']}",
        f"  privacy     {portal['url']}",
        "              sign in with any address the emulators hold; the email goes to",
        f"  emails      {portal['emails']}",
        "              (one .eml file per email the bridge sent; any mail program opens it)",
        f"  database    {world.workdir / 'bridge.db'}",
        "Point the CLI at them (from any shell, any folder):",
        f"  . {shlex.quote(str(env))} && {_bridge_command()} sync --dry-run",
    ]
    console.print("\n".join(lines), markup=False, soft_wrap=True)
    while True:
        time.sleep(3600)


def _kept(world: World) -> dict[str, dict[str, str]]:
    """Where a kept demo's pages are: the console and how to sign in to it, the privacy page
    and the folder its sign-in emails land in."""
    console = f"{world.services['receiver']}/console/"
    return {
        "console": {"url": console, "name": world.officer.name,
                    "password": world.officer.password},
        "portal": {"url": f"{world.public_url}{PORTAL}/",
                   "emails": str(world.workdir / MAIL_FOLDER)},
    }  # fmt: skip


def _bridge_command() -> str:
    """How a shell reaches this ``bridge``: the script beside the running interpreter (the
    virtualenv's ``bin`` folder, which a new shell need not have on PATH), else the
    interpreter itself with ``-m bridge``."""
    script = Path(sys.executable).parent / "bridge"
    if script.is_file() and os.access(script, os.X_OK):
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m bridge"


def _environment(settings: Settings) -> str:
    """The demo's settings as shell exports, so that ``bridge`` commands reach its world:
    the chosen CRMs' sections only."""
    values = {
        "DATABASE_URL": settings.database_url,
        "PSEUDONYM_KEY": _reveal(settings.pseudonym_key),
        "ENCRYPTION_KEY": _reveal(settings.encryption_key),
    }
    hubspot, salesforce = settings.vendor("hubspot"), settings.vendor("salesforce")
    if hubspot.access_token:
        values |= {
            "HUBSPOT__BASE_URL": hubspot.base_url,
            "HUBSPOT__ACCESS_TOKEN": _reveal(hubspot.access_token),
            "HUBSPOT__CLIENT_SECRET": _reveal(hubspot.client_secret),
            "HUBSPOT__PORTAL_ID": str(hubspot.portal_id or ""),
        }
    if salesforce.username:
        values |= {
            "SALESFORCE__BASE_URL": salesforce.base_url or "",
            "SALESFORCE__USERNAME": salesforce.username or "",
            "SALESFORCE__PASSWORD": _reveal(salesforce.password),
            "SALESFORCE__SECURITY_TOKEN": _reveal(salesforce.security_token),
            "SALESFORCE__ORGANIZATION_ID": salesforce.organization_id or "",
            "SALESFORCE__OUTBOUND_TOKEN": _reveal(salesforce.outbound_token),
        }
    dynamics = settings.vendor("dynamics")
    if dynamics.client_id:
        values |= {
            "DYNAMICS__TENANT_ID": dynamics.tenant_id or "",
            "DYNAMICS__CLIENT_ID": dynamics.client_id or "",
            "DYNAMICS__CLIENT_SECRET": _reveal(dynamics.client_secret),
            "DYNAMICS__ENVIRONMENT_URL": dynamics.environment_url or "",
            "DYNAMICS__BASE_URL": dynamics.base_url or "",
            "DYNAMICS__WEBHOOK_KEY": _reveal(dynamics.webhook_key),
        }
    values |= {
        "PURPOSES": json.dumps([p.model_dump(mode="json") for p in settings.purposes]),
        "RETENTION__RULES": json.dumps(
            [r.model_dump(mode="json") for r in settings.retention.rules]
        ),
        "WEB__PUBLIC_URL": str(settings.web.public_url or ""),
        "SMTP__HOST": settings.smtp.host or "",
        "SMTP__PORT": str(settings.smtp.port),
        "SMTP__STARTTLS": str(settings.smtp.starttls).lower(),
        "LOG_LEVEL": "warning",
    }
    return "".join(f"export BRIDGE_{name}='{value}'\n" for name, value in values.items())


def _reveal(secret: SecretStr | None) -> str:
    return secret.get_secret_value() if secret else ""


def _log_level() -> str:
    """Errors only, so the narration stays readable; ``BRIDGE_LOG_LEVEL`` (the one setting
    the demo reads) shows more when a step fails."""
    level = os.environ.get("BRIDGE_LOG_LEVEL", "error").lower()
    return level if level in ("debug", "info", "warning", "error") else "error"


def _interrupt_on_signals() -> Callable[[], None]:
    """Ctrl-C and SIGTERM stop the demo, everything torn down (also where the shell started
    it with SIGINT ignored); returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


# -- the world -------------------------------------------------------------------------------


class _DemoSettings(Settings):
    """Settings from the given values alone: no ``BRIDGE_*`` variable, secrets folder or
    config file of the user's reaches the demo (its database least of all)."""

    model_config = SettingsConfigDict(**{**Settings.model_config, "toml_file": None})

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _settings(
    workdir: Path, urls: Mapping[str, str], public_url: str, mailbox: Mailbox
) -> Settings:
    """The bridge's settings for the run: a section for each chosen CRM (``urls``: their
    emulators), none for the others, so the bridge knows only those."""
    from cryptography.fernet import Fernet

    sections: dict[str, Any] = {}
    if HUBSPOT in urls:
        sections[HUBSPOT] = HubSpotSettings(
            access_token=secrets.token_urlsafe(16),
            base_url=urls[HUBSPOT],
            client_secret=secrets.token_urlsafe(24),
            portal_id=HubSpotEmulatorConfig().portal_id,
        )
    if SALESFORCE in urls:
        sections[SALESFORCE] = SalesforceSettings(
            base_url=urls[SALESFORCE],
            username="bridge@example.com",
            password=secrets.token_urlsafe(16),
            security_token=secrets.token_urlsafe(16),
            organization_id=ORGANIZATION_ID,
            outbound_token=secrets.token_urlsafe(24),
        )
    if DYNAMICS in urls:
        sections[DYNAMICS] = DynamicsSettings(
            tenant_id=DynamicsEmulatorConfig().tenant_id,
            client_id=BRIDGE_APP[0],
            client_secret=SecretStr(BRIDGE_APP[1]),
            environment_url=urls[DYNAMICS],
            base_url=urls[DYNAMICS],
            webhook_key=SecretStr(secrets.token_urlsafe(24)),
        )
    values: dict[str, Any] = dict(
        database_url=f"sqlite:///{workdir / 'bridge.db'}",
        pseudonym_key=secrets.token_hex(32),
        encryption_key=Fernet.generate_key().decode(),
        log_level=_log_level(),
        **sections,
        purposes=list(PURPOSES),
        retention=RetentionSettings(rules=[unqualified(list(urls))]),
        web=WebSettings(public_url=public_url),
        # The local sink, on loopback: no TLS to ask for (a real server wants STARTTLS).
        smtp=SmtpSettings(
            host=mailbox.host,
            port=mailbox.port,
            starttls=False,
            from_address="privacy@demo.example.com",
        ),
    )
    return _DemoSettings(**values)


def _seeded(seeded: Cast, crms: Sequence[str]) -> list[SeedPerson]:
    """The cast's entries as the chosen CRMs hold them: each side of a CRM not chosen left
    out, and an entry no chosen CRM holds dropped."""
    kept = []
    for entry in seeded.entries:
        chosen = replace(
            entry,
            hubspot=entry.hubspot if HUBSPOT in crms else None,
            salesforce=entry.salesforce if SALESFORCE in crms else None,
            dynamics=entry.dynamics if DYNAMICS in crms else None,
        )
        if chosen.hubspot or chosen.salesforce or chosen.dynamics:
            kept.append(chosen)
    return kept


@contextmanager
def _world(people: int, keep: bool, accounts: Accounts, crms: Sequence[str]) -> Iterator[World]:
    """Everything the steps need, torn down in reverse order on the way out, however the
    way out comes (a failed check, an error, Ctrl-C)."""
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="bridge-demo-"))
        if not keep:
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        servers = {crm: stack.enter_context(serve_in_thread(_emulator(crm, accounts)))
                   for crm in crms}  # fmt: skip
        mailbox = stack.enter_context(Mailbox(workdir / MAIL_FOLDER))
        # The receiver's port chosen first: the sign-in links are built from it.
        receiver_port = _free_port()
        public_url = f"http://127.0.0.1:{receiver_port}"
        urls = {crm: server.url for crm, server in servers.items()}
        settings = _settings(workdir, urls, public_url, mailbox)
        context = Wiring(None, _settings=settings)
        store = context.store(current_schema=False)
        stack.callback(store.dispose)
        store.upgrade()
        from bridge.cli.serve import web_apps

        receiver_app, _ = web_apps(context, store)  # the console mounted at /console
        receiver = stack.enter_context(serve_in_thread(receiver_app, port=receiver_port))
        officer = Officer(OFFICER, "admin", context.operators().add(OFFICER, "admin", "demo"))
        admins = {crm: stack.enter_context(httpx.Client(base_url=url, timeout=30))
                  for crm, url in urls.items()}  # fmt: skip
        crms_ = Crms(admins, PURPOSES, tenant_id=DynamicsEmulatorConfig().tenant_id)
        # Webhooks off before the emulators stop: nothing is sent to a receiver gone away.
        for crm in crms:
            stack.callback(_quietly, _webhooks_off(crm, admins[crm]))
        seeded = cast(people)
        entries = _seeded(seeded, crms)
        seeders = {HUBSPOT: seed_hubspot, SALESFORCE: seed_salesforce, DYNAMICS: seed_dynamics}
        for crm in crms:
            seeders[crm](admins[crm], entries, PURPOSES)
        stack.callback(_close_all, context.adapters())
        services = urls | {"receiver": receiver.url}
        world = World(
            seeded,
            context,
            crms_,
            workdir,
            services,
            lambda: _start_daemon(stack, context),
            accounts,
            officer,
            public_url,
            mailbox,
        )
        stack.callback(_close_visitors, world)
        yield world


def _emulator(crm: str, accounts: Accounts) -> Any:
    """The chosen CRM's emulator app: HubSpot and Salesforce as ``accounts`` say, Dynamics
    with the bridge's app and a seller's registered, and a recycle bin off (deletion is
    permanent, as by default)."""
    if crm == HUBSPOT:
        return hubspot_emulator(HubSpotEmulatorConfig(profile=Profile(tier=accounts.hubspot_tier)))
    if crm == SALESFORCE:
        org = SalesforceEmulatorConfig(
            org=accounts.salesforce_org,
            organization_id=ORGANIZATION_ID,
            hard_delete_permission=True,
        )
        return salesforce_emulator(org)
    apps = [AppRegistration(client_id=i, client_secret=s) for i, s in (BRIDGE_APP, SELLER_APP)]
    return dynamics_emulator(DynamicsEmulatorConfig(apps=apps))


def _webhooks_off(crm: str, admin: httpx.Client) -> Callable[[], object]:
    if crm == HUBSPOT:
        return lambda: admin.delete("/__emulator/webhooks")
    if crm == SALESFORCE:
        return lambda: admin.put("/__emulator/outbound", json={"messages": []})
    return lambda: admin.put("/__emulator/webhooks", json=[])


def _start_daemon(stack: ExitStack, context: Wiring) -> None:
    """The daemon's shared jobs (inbox, erasure), as ``bridge run`` has them; stopped, the
    item under way finished, before anything else."""
    from bridge.runtime.daemon import STOP_SECONDS, Daemon
    from bridge.store.leader import LeaderLock

    jobs = context.daemon_jobs(leader_jobs=False)
    every = context.settings.schedule
    daemon = Daemon(jobs, LeaderLock(context.store()), every.leader_check_seconds)
    context.wake_on_new_work(daemon)  # SQLite: in this process only, so no listener to stop
    daemon.start()
    stack.callback(lambda: daemon.close(time.monotonic() + STOP_SECONDS))


def _free_port() -> int:
    """A port free on loopback now (the receiver binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _close_visitors(world: World) -> None:
    for visitor in world.visitors:
        visitor.close()


def _close_all(adapters: Mapping[System, CrmAdapter]) -> None:
    for adapter in adapters.values():
        _quietly(adapter.close)


def _quietly(action: Callable[[], object]) -> None:
    try:
        action()
    except Exception:  # tearing down: one failure must not keep the rest running
        log.debug("demo.teardown_failed", exc_info=True)
