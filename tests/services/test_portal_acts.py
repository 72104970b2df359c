"""A person's own act on their privacy page, carried to every CRM by the sync's own plan,
apply, ledger and audit (``Reconciler.carry``), against both emulators over HTTP: read back
through the emulators' admin state, never through the bridge."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import structlog

from bridge import audit
from bridge.config import MinimisationSettings
from bridge.errors import BridgeError
from bridge.identity import subject_ref
from bridge.policies.minimisation import Minimisation
from bridge.runtime.wiring import connect
from bridge.services.reconcile import CarryReport, PersonAct, Reconciler
from bridge.services.watch import Watch
from bridge.store.db import Store
from bridge_sandbox.emulators.accounts import DEFAULT, Accounts
from bridge_sandbox.emulators.people import Act, Held, Person, seed_hubspot, seed_salesforce
from tests.conftest import PSEUDONYM_KEY, PURPOSES, Crms, on_accounts

KEY = PSEUDONYM_KEY.encode()
T0 = datetime(2025, 3, 1, tzinfo=UTC)
ADA = "ada@example.com"
WORK = "ada@work.example"
WITHDRAW = PersonAct("withdraw", "marketing_email")
GRANT = PersonAct("grant", "marketing_email")
# Both kinds of HubSpot path (v4 batch reads on Enterprise; the opt-out properties below it).
TIERS = on_accounts(DEFAULT, Accounts("starter", "privacy"))


def reconciler(crms: Crms, store: Store) -> Reconciler:
    return Reconciler(
        store,
        connect(crms.settings),
        KEY,
        PURPOSES,
        Minimisation(MinimisationSettings().allowed),
        watch=Watch(store, KEY),
    )


def seed(crms: Crms, status: str) -> None:
    """Ada in both CRMs with ``status`` for marketing email; a Salesforce Contact holding
    only her work address, which her HubSpot contact also holds (linked, not proved)."""
    acts = (Act("marketing_email", status, T0),)
    ada = Person(ADA, hubspot=Held(acts=acts), salesforce=Held(acts=acts))
    seed_hubspot(crms.hubspot, [ada], PURPOSES)
    seed_salesforce(crms.salesforce, [ada], PURPOSES)
    crms.seed_hubspot(email=ADA, additional_emails=[WORK])
    work = Person(WORK, last_name="Byron", hubspot=None, salesforce=Held(acts=acts))
    seed_salesforce(crms.salesforce, [work], PURPOSES)


def hubspot_status(crms: Crms, subscription: str | None) -> dict[str, Any] | None:
    state = crms.hubspot.get("/__emulator/state").json()
    found = [
        s
        for s in state["subscriptions"]
        if s["email"] == ADA and s["subscriptionId"] == subscription
    ]
    return found[0] if found else None


def salesforce_consent(crms: Crms, last_name: str) -> dict[str, Any]:
    """The latest marketing consent row of the person with ``last_name``."""

    def rows(sobject: str) -> list[dict[str, Any]]:
        reply = crms.salesforce.get("/__emulator/records", params={"type": sobject})
        return list(reply.json()["records"])

    [person] = [r for r in rows("Contact") if r["LastName"] == last_name]
    mine = [r for r in rows("ContactPointTypeConsent") if r["PartyId"] == person["IndividualId"]]
    return max(mine, key=lambda r: (r["CaptureDate"], r["LastModifiedDate"]))


def answers(report: CarryReport) -> dict[str, str]:
    return {answer.system: answer.status for answer in report.answers}


@TIERS
def test_a_withdrawal_reaches_both_crms_is_audited_as_the_portals_and_then_is_already(
    crms: Crms, store: Store
) -> None:
    seed(crms, "granted")
    sync = reconciler(crms, store)

    with structlog.testing.capture_logs() as logs:
        report = sync.carry([" Ada@Example.com"], WITHDRAW, actor="portal")

    assert answers(report) == {"hubspot": "applied", "salesforce": "applied"}
    assert hubspot_status(crms, "1")["status"] == "UNSUBSCRIBED"
    row = salesforce_consent(crms, "Lovelace")
    assert (row["PrivacyConsentStatus"], row["CaptureSource"]) == ("OptOut", "portal")
    # Only the proved address: the work address's Contact waits for the sync.
    assert salesforce_consent(crms, "Byron")["PrivacyConsentStatus"] == "OptIn"
    ref = subject_ref(KEY, ADA)
    events = list(audit.events(store, ref))
    written = [(e["actor"], e["action"], e["system"], e["outcome"]) for e in events[:-1]]
    assert sorted(written) == [
        ("portal", "sync.consent", "hubspot", "done"),
        ("portal", "sync.consent", "salesforce", "done"),
    ]
    assert all(e["details"]["follows"].startswith("portal/") for e in events[:-1])
    act = events[-1]
    assert (act["actor"], act["action"], act["outcome"]) == ("portal", "portal.act", "applied")
    assert act["details"] == {"kind": "withdraw", "purpose": "marketing_email"}
    assert ADA not in str(logs).lower() and "Lovelace" not in str(logs)

    again = sync.carry([ADA], WITHDRAW, actor="portal")

    assert answers(again) == {"hubspot": "already", "salesforce": "already"}
    assert [a.detail for a in again.answers] == ["nothing to change"] * 2
    events = list(audit.events(store, ref))
    assert [e["action"] for e in events[-1:]] == ["portal.act"] and len(events) == 4
    assert events[-1]["outcome"] == "already"
    assert audit.verify(store).ok
    # The sync reads the carried writes as the portal's act: nothing to undo, the work
    # address's Contact follows.
    report_ = sync.sync(full=True)
    assert {(c["system"], c["value"]) for c in report_.changes} == {("salesforce", "withdrawn")}


@TIERS
def test_a_grant_after_a_hubspot_opt_out_is_the_persons_own_on_hubspots_page(
    crms: Crms, store: Store
) -> None:
    seed(crms, "withdrawn")
    sync = reconciler(crms, store)

    report = sync.carry([ADA], GRANT, actor="portal")

    assert answers(report) == {"hubspot": "needs_self_service", "salesforce": "applied"}
    hubspot = next(a for a in report.answers if a.system == "hubspot")
    assert hubspot.preference_url is not None and ADA not in hubspot.preference_url
    assert "ada" not in hubspot.detail and "@" not in hubspot.detail
    row = salesforce_consent(crms, "Lovelace")
    assert (row["PrivacyConsentStatus"], row["CaptureSource"]) == ("OptIn", "portal")
    assert hubspot_status(crms, "1")["status"] == "UNSUBSCRIBED"
    page = httpx.get(hubspot.preference_url)
    assert page.status_code == 200 and "Marketing Information" in page.text
    [act] = [e for e in audit.events(store) if e["action"] == "portal.act"]
    assert act["outcome"] == "needs_self_service"
    refused = [e for e in audit.events(store) if e["action"] == "sync.consent"]
    assert sorted((e["actor"], e["system"], e["outcome"]) for e in refused) == [
        ("portal", "hubspot", "needs_self_service"),
        ("portal", "salesforce", "done"),
    ]

    httpx.post(hubspot.preference_url, data={"subscription": "1"}).raise_for_status()

    held = hubspot_status(crms, "1")
    assert (held["status"], held["source"]) == ("SUBSCRIBED", "SOURCE_RECIPIENT")
    assert answers(sync.carry([ADA], GRANT, actor="portal")) == {
        "hubspot": "already",
        "salesforce": "already",
    }


def test_unsubscribing_from_all_email_reaches_both_crms(crms: Crms, store: Store) -> None:
    seed(crms, "granted")
    sync = reconciler(crms, store)

    report = sync.carry([ADA], PersonAct("unsubscribe_all"), actor="portal")

    assert answers(report) == {"hubspot": "applied", "salesforce": "applied"}
    assert hubspot_status(crms, None)["status"] == "UNSUBSCRIBED"
    contacts = crms.salesforce.get("/__emulator/records", params={"type": "Contact"}).json()
    flags = {r["LastName"]: r["HasOptedOutOfEmail"] for r in contacts["records"]}
    assert flags == {"Lovelace": True, "Byron": False}
    assert salesforce_consent(crms, "Lovelace")["PrivacyConsentStatus"] == "OptOut"
    [act] = [e for e in audit.events(store) if e["action"] == "portal.act"]
    assert act["details"] == {"kind": "unsubscribe_all", "purpose": None}
    again = sync.carry([ADA], PersonAct("unsubscribe_all"), actor="portal")
    assert answers(again) == {"hubspot": "already", "salesforce": "already"}


def test_an_address_no_crm_holds_has_no_record_anywhere(crms: Crms, store: Store) -> None:
    report = reconciler(crms, store).carry(["nobody@example.com"], WITHDRAW, actor="portal")
    assert answers(report) == {"hubspot": "no_record", "salesforce": "no_record"}
    [act] = list(audit.events(store))
    assert (act["action"], act["outcome"]) == ("portal.act", "no_record")


@pytest.mark.parametrize(
    "act",
    [
        PersonAct("withdraw", "no_such_purpose"),
        PersonAct("grant"),
        PersonAct("unsubscribe_all", "marketing_email"),
        PersonAct("erase", "marketing_email"),  # type: ignore[arg-type]
    ],
)
def test_a_malformed_act_is_refused_before_any_crm_is_asked(
    crms: Crms, store: Store, act: PersonAct
) -> None:
    crms.hubspot.delete("/__emulator/counters").raise_for_status()
    with pytest.raises(BridgeError, match=r"^carry: "):
        reconciler(crms, store).carry([ADA], act, actor="portal")
    assert crms.hubspot.get("/__emulator/counters").json()["total"] == 0
    assert list(audit.events(store)) == []


@on_accounts(Accounts("enterprise", "basic"))
def test_an_org_without_per_purpose_consent_answers_that_it_does_not_keep_it(
    crms: Crms, store: Store
) -> None:
    """A Salesforce org without the privacy objects has no field for one purpose's consent:
    it says so, rather than claiming it held the choice already."""
    ada = Person(ADA, hubspot=Held(acts=(Act("marketing_email", "granted", T0),)))
    seed_hubspot(crms.hubspot, [ada], PURPOSES)
    seed_salesforce(crms.salesforce, [ada], PURPOSES)

    report = reconciler(crms, store).carry([ADA], WITHDRAW, actor="portal")

    assert answers(report) == {"hubspot": "applied", "salesforce": "not_kept"}
    assert hubspot_status(crms, "1")["status"] == "UNSUBSCRIBED"
