"""The sync and erasure as a user runs them with three CRMs: HubSpot, Salesforce and Dynamics
365 (issue 22), the CLI as a subprocess against the three emulators, each read back through
its own admin API. Also: 20% faults in all three converge, a SIGKILLed erasure of 40 people
completes once, and two of the three (Salesforce unconfigured) work alike."""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge import audit
from bridge.store.db import Store
from bridge_sandbox.emulators.dynamics_http import API_ROOT
from bridge_sandbox.emulators.people import Act, Held, Person, seed_hubspot, seed_salesforce
from tests.conftest import AUDIT_KEY, PURPOSES, BridgeCli, Crms, emulators
from tests.e2e.test_sync_cli import hs_statuses, sf_consents, sf_rows
from tests.three_crms import (
    InDynamics,
    consent_rows_of,
    people_rows,
    seed_contacts,
    seed_dynamics,
    tables,
    view,
)

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
EXAMPLE = Path(__file__).parents[2] / "config" / "bridge.example.toml"
SALESFORCE_ENV = "BRIDGE_SALESFORCE__"

# The CLI keeps its own SQLite database: one run per test, not one per database.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def crms(database_url: str) -> Iterator[Crms]:
    """The three emulators (HubSpot Enterprise, a Salesforce org with the privacy objects,
    a Dataverse environment), in place of conftest's two."""
    with emulators(database_url, dynamics=True) as running:
        yield running


@pytest.fixture
def cli(bridge: BridgeCli, crms: Crms) -> BridgeCli:
    """The CLI aimed at all three, with the shipped example settings (its purposes name a
    purpose in each CRM), on a migrated database."""
    bridge.env |= crms.env()
    (bridge.cwd / "config").mkdir()
    (bridge.cwd / "config" / "bridge.toml").write_text(EXAMPLE.read_text())
    assert bridge("db", "upgrade").returncode == 0
    return bridge


def dynamics(crms: Crms) -> httpx.Client:
    """The Dataverse emulator's admin client (the fixture always starts it)."""
    assert crms.dynamics is not None
    return crms.dynamics


def sync(cli: BridgeCli, *args: str) -> dict[str, Any]:
    result = cli("sync", "--json", "--changes", "all", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def erase(cli: BridgeCli, *addresses: str) -> list[dict[str, Any]]:
    result = cli("erase", *addresses, "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    requests: list[dict[str, Any]] = json.loads(result.stdout)["requests"]
    return requests


def snapshot(crms: Crms) -> dict[str, Any]:
    """Everything the three hold that a write would change (Dataverse bumps a row's
    ``versionnumber`` on every write, even of the same value)."""
    hubspot = crms.hubspot.get("/__emulator/state").json()
    salesforce = {
        sobject: sf_rows(crms, sobject)
        for sobject in ("Contact", "Lead", "Individual", "ContactPointTypeConsent")
    }
    return {
        "hubspot": (hubspot["contacts"], hubspot["subscriptions"]),
        "salesforce": salesforce,
        "dynamics": tables(dynamics(crms)),
    }


GRANTED_MARKETING = (Act("marketing_email", "granted", T0),)


def seed_everywhere(
    crms: Crms, emails: list[str], name: str = "P", *, hard_delete: bool = True
) -> None:
    """A HubSpot contact, a Salesforce Contact and a Dynamics contact with a consent4 row
    (marketing, granted) for each address; HubSpot's and Salesforce's limits out of the way
    (Dataverse's stay: 6,000 calls in 5 minutes are plenty here). ``hard_delete``: the org
    permits Bulk hard deletes, which take a job of several calls."""
    crms.hubspot.put("/__emulator/rate-limits", json={"enabled": False}).raise_for_status()
    settings = {"daily_api_limit": 1_000_000, "hard_delete_permission": hard_delete}
    crms.salesforce.patch("/__emulator/settings", json=settings).raise_for_status()
    crms.seed_people(emails, name=name)
    seed_contacts(dynamics(crms), emails, PURPOSES, GRANTED_MARKETING, name=name)


def gone_everywhere(crms: Crms, emails: list[str]) -> None:
    """No record of these addresses in any CRM, and no consent4 row of theirs."""
    wanted = {e.lower() for e in emails}
    hubspot = crms.hubspot.get("/__emulator/state").json()["contacts"]
    assert not [c for c in hubspot if c["properties"]["email"].lower() in wanted]
    salesforce = sf_rows(crms, "Contact") + sf_rows(crms, "Lead")
    assert not [r for r in salesforce if (r["Email"] or "").lower() in wanted]
    held = tables(dynamics(crms))
    assert not [r for r in held["contacts"] + held["leads"]
                if (r["emailaddress1"] or "").lower() in wanted]  # fmt: skip
    consent = held["msdynmkt_contactpointconsent4s"]
    assert not [r for r in consent if r["msdynmkt_contactpointvalue"].lower() in wanted]


# -- 1. the sync ---------------------------------------------------------------------------------


PEOPLE = [
    Person(
        "ada@example.com",
        hubspot=Held(acts=GRANTED_MARKETING),
        salesforce=Held(acts=GRANTED_MARKETING),
    ),
    Person(
        "grace@example.com",
        hubspot=Held(acts=GRANTED_MARKETING),
        salesforce=Held(acts=(Act("marketing_email", "withdrawn", T0 + timedelta(days=1)),)),
    ),
    Person("hedy@example.com", hubspot=Held(lawful_basis="contract")),
]


def test_sync_of_three_crms_settles_each_disagreement_everywhere_then_writes_nothing(
    cli: BridgeCli, crms: Crms
) -> None:
    """Ada opted out in Dynamics alone (her Dynamics lead did not); Grace withdrew marketing
    in Salesforce alone; Hedy's lawful basis is in HubSpot alone."""
    seed_hubspot(crms.hubspot, PEOPLE, PURPOSES)
    seed_salesforce(crms.salesforce, PEOPLE, PURPOSES)
    admin = dynamics(crms)
    ada_lead = Held(acts=GRANTED_MARKETING, object_type="lead")
    seed_dynamics(
        admin,
        [
            InDynamics("ada@example.com", Held(opted_out_at=T0 + timedelta(days=1))),
            InDynamics("ada@example.com", ada_lead),
            InDynamics("grace@example.com", Held(acts=GRANTED_MARKETING)),
            InDynamics("hedy@example.com"),
        ],
        PURPOSES,
    )

    report = sync(cli)

    counts = report["counts"]
    assert counts["failed"] == 0 and counts["planned"] == counts["done"] > 0, counts
    assert report["not_allowed"] == [], "minimisation left out a change the sync must make"
    assert {c["system"] for c in report["changes"]} == {"hubspot", "salesforce", "dynamics"}
    # Ada's opt-out, from Dynamics, everywhere: each of her Dynamics rows too.
    assert hs_statuses(crms, "ada@example.com")[None]["status"] == "UNSUBSCRIBED"
    [ada] = [r for r in sf_rows(crms, "Contact") if r["Email"] == "ada@example.com"]
    assert ada["HasOptedOutOfEmail"] is True
    assert sf_consents(crms, ada["IndividualId"]) == {
        "Marketing": "OptOut", "Product Updates": "OptOut"
    }  # fmt: skip
    seen = view(admin, "ada@example.com", PURPOSES)
    assert len(seen.records) == 2 and seen.opted_out, "the lead follows the contact's opt-out"
    assert seen.consents == {"marketing_email": "withdrawn", "product_updates": "withdrawn"}
    # Grace's withdrawal, from Salesforce, in HubSpot and in Dynamics' consent4 row.
    assert hs_statuses(crms, "grace@example.com")["1"]["status"] == "UNSUBSCRIBED"
    assert view(admin, "grace@example.com", PURPOSES).consents == {"marketing_email": "withdrawn"}
    [grace_row] = consent_rows_of(admin, "grace@example.com")  # updated, not a second row
    assert "salesforce" in (grace_row["msdynmkt_reason"] or "")
    assert not view(admin, "grace@example.com", PURPOSES).opted_out, "a purpose, not all email"
    # Hedy's basis, from HubSpot, in Salesforce's picklist and Dynamics' choice column.
    [hedy] = [r for r in sf_rows(crms, "Contact") if r["Email"] == "hedy@example.com"]
    assert hedy["Lawful_Basis__c"] == "Contract"
    assert view(admin, "hedy@example.com", PURPOSES).lawful_basis == "contract"
    assert "@example.com" not in cli("sync", "--dry-run").stdout

    before = snapshot(crms)
    for args in ((), ("--full",)):
        again = sync(cli, *args)
        assert again["counts"]["planned"] == 0, again["changes"][:5]
    assert snapshot(crms) == before, "a sync right after a sync writes nothing"


# -- 2. erasure ----------------------------------------------------------------------------------

ADA = "Ada.Erase@Example.com"


def test_erase_removes_the_person_from_all_three_and_only_them(cli: BridgeCli, crms: Crms) -> None:
    admin = dynamics(crms)
    # A last name no hex digest or hash in the database can hold by chance.
    crms.seed_hubspot(email=ADA.lower(), firstname="Ada", lastname="Quixwell")
    crms.seed_salesforce("Contact", LastName="Quixwell", Email=ADA)
    crms.seed_salesforce("Lead", LastName="Quixwell", Company="Acme", Email=ADA.lower())
    both = (*GRANTED_MARKETING, Act("product_updates", "withdrawn", T0))
    seed_dynamics(
        admin,
        [
            InDynamics(ADA, Held(acts=both), last_name="Quixwell"),
            InDynamics(ADA.lower(), Held(object_type="lead"), last_name="Quixwell"),
            InDynamics("keep@example.com", Held(acts=GRANTED_MARKETING)),
        ],
        PURPOSES,
    )
    seed_everywhere(crms, ["other@example.com"])
    assert len(consent_rows_of(admin, ADA)) == 2

    dry = cli("erase", ADA, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    targets = json.loads(dry.stdout)["targets"]
    assert {t["system"] for t in targets} == {"hubspot", "salesforce", "dynamics"}
    result = cli("erase", ADA, "--reason", "ticket 4711", "--json")

    assert result.returncode == 0, result.stderr[-2000:]
    [request] = json.loads(result.stdout)["requests"]
    assert request["status"] == "completed"
    assert set(request["systems"]) == {"hubspot", "salesforce", "dynamics"}
    gone_everywhere(crms, [ADA])
    assert view(admin, ADA, PURPOSES).records == frozenset()
    kept = {r["emailaddress1"] for r in people_rows(admin)}
    assert kept == {"keep@example.com", "other@example.com"}
    assert len(consent_rows_of(admin, "keep@example.com")) == 1
    assert len(consent_rows_of(admin, "other@example.com")) == 1
    assert [c["properties"]["email"] for c in crms.hubspot.get("/__emulator/state").json()
            ["contacts"]] == ["other@example.com"]  # fmt: skip
    assert [r["Email"] for r in sf_rows(crms, "Contact")] == ["other@example.com"]

    receipt = cli("erase", "--receipt", request["id"], "--json")
    assert receipt.returncode == 0, receipt.stderr[-2000:]
    assert json.loads(receipt.stdout)["verification"]["ok"] is True
    [again] = erase(cli, ADA)
    assert again["status"] == "completed", "erasing the erased again is success"
    assert cli("audit", "--verify").returncode == 0

    for path in cli.cwd.iterdir():  # the database, its WAL and every log
        if path.is_file():
            data = path.read_bytes().lower()
            assert ADA.lower().encode() not in data, path.name
            assert b"quixwell" not in data, path.name
    for output in (dry, result, receipt):
        assert "quixwell" not in (output.stdout + output.stderr).lower()


# -- 3. faults -----------------------------------------------------------------------------------

MAX_RUNS = 6
# ~20% of calls fail (5% dropped, 95% x 16% a 5xx), after a burst of 429s: three in a row of
# Salesforce and Dataverse.
FAULTS = {"error_rate": 0.16, "drop_rate": 0.05}


def faults_on(crms: Crms, seed: int) -> None:
    """Faults in every CRM; no 429 burst for HubSpot, whose 429 asks for ten seconds (its
    own tests hold it). Dynamics' are in Dataverse's calls; its token comes from Entra ID,
    another service."""
    some = FAULTS | {"seed": seed}
    crms.hubspot.put("/__emulator/faults", json=some).raise_for_status()
    crms.salesforce.put("/__emulator/faults", json=some | {"burst_429": 3}).raise_for_status()
    dataverse = some | {"burst_429": 3, "endpoints": [f"* {API_ROOT}/*"]}
    dynamics(crms).put("/__emulator/faults", json=dataverse).raise_for_status()


def faults_off(crms: Crms) -> list[dict[str, int]]:
    """Faults lifted; what each emulator injected."""
    injected = []
    for admin in (crms.hubspot, crms.salesforce, dynamics(crms)):
        admin.delete("/__emulator/faults").raise_for_status()
        injected.append(admin.get("/__emulator/counters").json()["injected"])
    assert all(sum(i.values()) > 0 for i in injected), injected
    return injected


def until_done(cli: BridgeCli, *args: str) -> tuple[list[int], str]:
    """Run a command again until it succeeds (exit 0), at most ``MAX_RUNS`` times; the exit
    codes and the last run's stdout."""
    codes: list[int] = []
    for _ in range(MAX_RUNS):
        result = cli(*args)
        assert result.returncode in (0, 1), result.stderr[-2000:]
        codes.append(result.returncode)
        if result.returncode == 0:
            return codes, result.stdout
    pytest.fail(f"{args[0]} still failing after {MAX_RUNS} runs: {codes}")


def test_sync_of_three_crms_converges_under_twenty_percent_faults(
    cli: BridgeCli, crms: Crms
) -> None:
    """Thirty people, each opted out in one of the three CRMs and granting marketing in the
    other two."""
    emails = [f"crowd{n:02d}@example.com" for n in range(30)]
    where = {e: ("hubspot", "salesforce", "dynamics")[n % 3] for n, e in enumerate(emails)}
    out = Held(opted_out_at=T0 + timedelta(days=1))

    def held(email: str, system: str) -> Held:
        return out if where[email] == system else Held(acts=GRANTED_MARKETING)

    seed_hubspot(crms.hubspot, [
        Person(e, hubspot=held(e, "hubspot"), salesforce=None) for e in emails
    ], PURPOSES)  # fmt: skip
    seed_salesforce(crms.salesforce, [
        Person(e, hubspot=None, salesforce=held(e, "salesforce")) for e in emails
    ], PURPOSES)  # fmt: skip
    seed_dynamics(dynamics(crms), [InDynamics(e, held(e, "dynamics")) for e in emails], PURPOSES)
    crms.hubspot.put("/__emulator/rate-limits", json={"enabled": False}).raise_for_status()
    settings = {"daily_api_limit": 1_000_000}
    crms.salesforce.patch("/__emulator/settings", json=settings).raise_for_status()

    faults_on(crms, seed=7)
    codes, _ = until_done(cli, "sync", "--json", "--changes", "none")
    injected = faults_off(crms)

    admin = dynamics(crms)
    for email in emails:
        assert hs_statuses(crms, email)[None]["status"] == "UNSUBSCRIBED", where[email]
        [contact] = [r for r in sf_rows(crms, "Contact") if r["Email"] == email]
        assert contact["HasOptedOutOfEmail"] is True, where[email]
        assert sf_consents(crms, contact["IndividualId"])["Marketing"] == "OptOut"
        seen = view(admin, email, PURPOSES)
        assert seen.opted_out, where[email]
        assert seen.consents == {"marketing_email": "withdrawn", "product_updates": "withdrawn"}
        assert len(consent_rows_of(admin, email)) == 2, "a row per purpose, none twice"
    full = sync(cli, "--full")
    assert full["counts"]["planned"] == 0, full["changes"][:5]
    print(f"sync runs: {codes}; injected: {injected}")


def test_erasure_of_three_crms_converges_under_twenty_percent_faults(
    cli: BridgeCli, crms: Crms
) -> None:
    emails = [f"faulty{n:02d}@example.com" for n in range(12)]
    seed_everywhere(crms, [*emails, "kept@example.com"], hard_delete=False)

    faults_on(crms, seed=8)
    codes, last = until_done(cli, "erase", *emails, "--json")
    injected = faults_off(crms)

    requests = json.loads(last)["requests"]
    assert len(requests) == len(emails) and {r["status"] for r in requests} == {"completed"}
    gone_everywhere(crms, emails)
    assert {r["emailaddress1"] for r in people_rows(dynamics(crms))} == {"kept@example.com"}
    assert len(consent_rows_of(dynamics(crms), "kept@example.com")) == 1
    print(f"erase runs: {codes}; injected: {injected}")


# -- 4. SIGKILL mid-erasure ----------------------------------------------------------------------

KILLED = [f"killed{n:02d}@example.com" for n in range(40)]


def test_erasure_of_three_crms_survives_kills_and_erases_each_record_once(
    cli: BridgeCli, crms: Crms
) -> None:
    seed_everywhere(crms, KILLED, name="K")
    cli.env["BRIDGE_ERASURE__LEASE_SECONDS"] = "5"  # a killed run's claims lapse soon
    rnd = random.Random(22)
    for _ in range(6):
        process = cli.start("erase", *KILLED, "--json")
        time.sleep(rnd.uniform(1.0, 2.5))  # imports take about a second; then it erases
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    requests = erase(cli, *KILLED)

    assert len(requests) == len(KILLED)
    assert {r["status"] for r in requests} == {"completed"}
    gone_everywhere(crms, KILLED)
    listed = json.loads(cli("requests", "--json").stdout)["requests"]
    assert {r["status"] for r in listed} == {"completed"}  # every interrupted request resumed
    store = Store(cli.env["BRIDGE_DATABASE_URL"], AUDIT_KEY)
    try:
        assert audit.verify(store).ok
        done = Counter(
            (e["system"], e["record_id"], e["details"]["object_type"])
            for e in audit.events(store)
            if e["action"] == "erasure.step" and e["details"]["status"] == "done" and e["record_id"]
        )
    finally:
        store.dispose()
    per_system = Counter((system, kind) for system, _, kind in done)
    assert per_system == {
        ("hubspot", "contact"): 40,
        ("salesforce", "contact"): 40,
        ("dynamics", "contact"): 40,
        ("dynamics", "msdynmkt_contactpointconsent4"): 40,
    }, per_system
    assert [key for key, n in done.items() if n > 1] == [], "no record erased (recorded) twice"


# -- 5. two of the three -------------------------------------------------------------------------


def test_hubspot_and_dynamics_alone_sync_and_erase(cli: BridgeCli, crms: Crms) -> None:
    """Salesforce unconfigured: the bridge never calls it, and the other two work alike."""
    for key in [k for k in cli.env if k.startswith(SALESFORCE_ENV)]:
        del cli.env[key]
    admin = dynamics(crms)
    seed_hubspot(crms.hubspot, [
        Person("ada@example.com", hubspot=Held(acts=GRANTED_MARKETING), salesforce=None),
        Person("grace@example.com", salesforce=None, hubspot=Held(
            acts=(Act("marketing_email", "withdrawn", T0 + timedelta(days=1)),))),
    ], PURPOSES)  # fmt: skip
    seed_dynamics(admin, [
        InDynamics("ada@example.com", Held(opted_out_at=T0 + timedelta(days=1))),
        InDynamics("grace@example.com", Held(acts=GRANTED_MARKETING)),
    ], PURPOSES)  # fmt: skip
    crms.salesforce.delete("/__emulator/counters").raise_for_status()

    report = sync(cli)

    assert report["counts"]["failed"] == 0 and report["not_allowed"] == [], report["counts"]
    assert {c["system"] for c in report["changes"]} == {"hubspot", "dynamics"}
    assert hs_statuses(crms, "ada@example.com")[None]["status"] == "UNSUBSCRIBED"
    assert view(admin, "grace@example.com", PURPOSES).consents == {"marketing_email": "withdrawn"}
    assert sync(cli, "--full")["counts"]["planned"] == 0

    [request] = erase(cli, "ada@example.com")
    assert request["status"] == "completed"
    assert set(request["systems"]) == {"hubspot", "dynamics"}
    gone_everywhere(crms, ["ada@example.com"])
    assert view(admin, "grace@example.com", PURPOSES).records, "only Ada was erased"
    assert crms.salesforce.get("/__emulator/counters").json()["total"] == 0


def test_default_minimisation_lets_the_sync_write_dynamics_consent(
    cli: BridgeCli, crms: Crms
) -> None:
    """Without a ``[minimisation.allowed]`` table the vendors' defaults apply: they must let
    the sync write the consent4 rows it keeps a purpose's consent in, as Salesforce's let it
    write ContactPointTypeConsent."""
    settings = cli.cwd / "config" / "bridge.toml"
    text = settings.read_text()
    start = text.index("[minimisation.allowed]\n")
    settings.write_text(text[:start] + text[text.index("\n\n", start) + 2 :])
    withdrawn = (Act("marketing_email", "withdrawn", T0 + timedelta(days=1)),)
    seed_hubspot(crms.hubspot, [Person("grace@example.com", hubspot=Held(acts=withdrawn),
                                       salesforce=None)], PURPOSES)  # fmt: skip
    seed_dynamics(dynamics(crms), [InDynamics("grace@example.com", Held(acts=GRANTED_MARKETING))],
                  PURPOSES)  # fmt: skip

    report = sync(cli)

    assert report["not_allowed"] == [], "the defaults left the change out"
    assert view(dynamics(crms), "grace@example.com", PURPOSES).consents == {
        "marketing_email": "withdrawn"
    }
