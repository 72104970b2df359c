"""Retention under frozen clocks: both emulators, the real clients, the real erasure.

The seeded dates lie ahead of today's real date and the clock only ever travels forward
from there (time-machine), so every vendor date and every "now" agree.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import time_machine
from apscheduler.triggers.cron import CronTrigger

from bridge import audit
from bridge.config import ErasureSettings, RetentionSettings, Settings
from bridge.identity import subject_ref
from bridge.model import RelatedRecords
from bridge.policies.retention import RetentionRule
from bridge.runtime.wiring import Wiring, connect
from bridge.sealing import Keyring
from bridge.services.erasure import COMPLETED, Erasure
from bridge.services.retention import Retention
from bridge.store import erasure as erasure_rows
from bridge.store.db import Store
from tests.conftest import PSEUDONYM_KEY, Crms, extreme_accounts
from tests.events.test_erasure_triggers import WON
from tests.services.test_erasure import live_salesforce

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

# The last sign of life of every idle person below; 24 months later they fall due.
ACTIVE = "2027-01-15"
DUE = "2029-01-15"
STALE_LEADS = RetentionRule(
    name="stale_leads",
    covers={
        "salesforce.Lead": {"Status": ["Open - Not Contacted", "Working - Contacted"]},
        "salesforce.Contact": {},
        "hubspot.contact": {"lifecyclestage": ["", "lead"]},
    },
    keep_months=24,
    warning_days=30,
    action="delete",
    kept_while_consent=["marketing_email"],
    kept_while_related=[
        RelatedRecords(
            name="open_opportunity",
            related_object="Opportunity",
            link_field="ContactId",
            where="IsClosed = false",
        )
    ],
)


def at(day: str) -> Any:
    """The clock at noon UTC on ``day``, ticking on from there."""
    return time_machine.travel(datetime.fromisoformat(f"{day}T12:00:00+00:00"), tick=True)


@pytest.fixture
def settings(crms: Crms) -> Settings:
    return crms.settings.model_copy(
        update={
            "retention": RetentionSettings(rules=[STALE_LEADS]),
            "erasure": ErasureSettings(legal_holds=[WON]),
        }
    )


@pytest.fixture
def retention(settings: Settings, store: Store) -> Iterator[Retention]:
    adapters = connect(settings)
    yield Retention(
        store,
        adapters,
        PSEUDONYM_KEY.encode(),
        settings.purposes,
        settings.retention.rules,
        settings.erasure.legal_holds,
    )
    for adapter in adapters.values():
        adapter.close()


def erasure_for(retention: Retention, settings: Settings) -> Erasure:
    return Erasure(
        retention.store,
        retention.adapters,
        Keyring(settings.require_encryption_keys()),
        PSEUDONYM_KEY.encode(),
        holds=settings.erasure.legal_holds,
    )


def ref(email: str) -> str:
    return subject_ref(PSEUDONYM_KEY.encode(), email)


def idle_lead(crms: Crms, email: str, last_active: str = ACTIVE) -> str:
    return crms.seed_salesforce(
        "Lead", LastName="Idle", Company="Acme", Email=email,
        CreatedDate="2026-12-01T09:00:00.000+0000", LastActivityDate=last_active,
    )  # fmt: skip


def idle_contact(
    crms: Crms, email: str, stage: str = "lead", last_active: str = f"{ACTIVE}T10:00:00Z"
) -> str:
    return crms.seed_hubspot(
        email=email, firstname="Ida", lastname="Idle", lifecyclestage=stage,
        createdate="2026-12-01T09:00:00Z", notes_last_updated=last_active,
    )  # fmt: skip


def due_refs(retention: Retention, within_days: int = 0) -> set[str]:
    return {c.ref for c in retention.preview(timedelta(days=within_days)).candidates}


def hubspot_due(crms: Crms, email: str) -> str | None:
    contacts = crms.hubspot.get("/__emulator/state").json()["contacts"]
    (contact,) = [c for c in contacts if c["properties"].get("email") == email]
    return contact["properties"].get("bridge_purge_due") or None


def salesforce_due(crms: Crms, sobject: str, record_id: str) -> str | None:
    (row,) = [r for r in live_salesforce(crms, sobject) if r["Id"] == record_id]
    return row.get("Purge_Due__c")


def test_a_lead_idle_23_months_is_not_due_at_24_months_it_is(
    crms: Crms, retention: Retention
) -> None:
    idle_lead(crms, "lena.lead@example.com")
    with at("2028-12-15"):
        assert due_refs(retention) == set()
        assert due_refs(retention, within_days=31) == {ref("lena.lead@example.com")}
    with at(DUE):
        (candidate,) = retention.preview(timedelta(0)).candidates
    assert candidate.ref == ref("lena.lead@example.com")
    assert candidate.verdict.due_on.isoformat() == DUE  # type: ignore[union-attr]
    assert "no activity since 2027-01-15 (24 months)" in candidate.verdict.why
    assert "no consent for marketing_email" in candidate.verdict.why


def test_the_preview_marks_those_due_before_today_as_overdue(
    crms: Crms, retention: Retention
) -> None:
    late, today, soon = (f"{n}@example.com" for n in ("olga.late", "tess.today", "finn.soon"))
    idle_lead(crms, late)  # due 2029-01-15
    idle_lead(crms, today, last_active="2027-02-01")  # due 2029-02-01
    idle_contact(crms, soon, last_active="2027-02-20T10:00:00Z")  # due 2029-02-20
    with at("2029-02-01"):
        report = retention.preview(timedelta(days=30)).as_dict()
    due = {item["subject_ref"]: (item["due_on"], item["overdue"]) for item in report["due"]}
    assert due == {
        ref(late): (DUE, True),
        ref(today): ("2029-02-01", False),  # due today: on time, not late
        ref(soon): ("2029-02-20", False),
    }
    with at("2029-02-02"):
        report = retention.preview(timedelta(0)).as_dict()
    assert {item["subject_ref"]: item["overdue"] for item in report["due"]} == {
        ref(late): True,
        ref(today): True,
    }


def test_an_open_opportunity_in_salesforce_keeps_the_matching_hubspot_contact(
    crms: Crms, retention: Retention
) -> None:
    for email, stage in (("otto.open@example.com", "Prospecting"),
                         ("lou.lost@example.com", "Closed Lost")):  # fmt: skip
        idle_contact(crms, email)
        contact = crms.seed_salesforce(
            "Contact", LastName="Idle", Email=email.upper(),
            CreatedDate="2026-12-01T09:00:00.000+0000", LastActivityDate=ACTIVE,
        )  # fmt: skip
        crms.seed_salesforce(
            "Opportunity", Name="Deal", StageName=stage, CloseDate="2027-03-31", ContactId=contact
        )
    with at("2029-02-01"):
        assert due_refs(retention) == {ref("lou.lost@example.com")}


@extreme_accounts  # consent read in a batch, or from properties and one address at a time
def test_granted_consent_keeps_a_person_and_re_engaging_leaves_the_preview(
    crms: Crms, retention: Retention
) -> None:
    idle_contact(crms, "rita.returns@example.com")
    idle_contact(crms, "carl.consents@example.com")
    with at("2029-02-01"):
        assert due_refs(retention) == {
            ref("rita.returns@example.com"),
            ref("carl.consents@example.com"),
        }
        idle_contact(crms, "rita.returns@example.com", last_active="2029-01-30T10:00:00Z")
        granted = {
            "subscription_id": "1",
            "status": "SUBSCRIBED",
            "legal_basis": "CONSENT_WITH_NOTICE",
            "timestamp": "2029-01-31T10:00:00Z",
        }
        crms.seed_hubspot(email="carl.consents@example.com", subscriptions=[granted])  # fmt: skip
        assert due_refs(retention) == set()
        # Rita is due again 24 months after her new activity.
        assert due_refs(retention, within_days=800) == {ref("rita.returns@example.com")}


def test_the_warning_mark_appears_and_disappears_in_both_crms(
    crms: Crms, retention: Retention, settings: Settings
) -> None:
    email = "wanda.warned@example.com"
    idle_contact(crms, email)
    lead = idle_lead(crms, email)
    erasure = erasure_for(retention, settings)
    with at("2028-12-10"):  # before the warning period: nothing to mark
        report = retention.apply(erasure)
        assert (report.marked, report.requests) == (0, [])
    assert hubspot_due(crms, email) is None
    with at("2028-12-20"):  # inside it
        report = retention.apply(erasure)
        assert (report.marked, report.unmarked, report.requests) == (2, 0, [])
        assert retention.apply(erasure).marked == 0  # marked already: no second write
    assert hubspot_due(crms, email) == DUE
    assert salesforce_due(crms, "Lead", lead) == DUE
    with at("2028-12-22"):  # she comes back: the marks go by themselves
        idle_contact(crms, email, last_active="2028-12-21T10:00:00Z")
        report = retention.apply(erasure)
        assert (report.marked, report.unmarked) == (0, 2)
    assert hubspot_due(crms, email) is None
    assert salesforce_due(crms, "Lead", lead) is None
    actions = [e["action"] for e in audit.events(retention.store, ref(email))]
    assert actions.count("retention.marked") == 2
    assert actions.count("retention.unmarked") == 2


@extreme_accounts
def test_a_legal_hold_turns_delete_into_anonymise(
    crms: Crms, retention: Retention, settings: Settings
) -> None:
    email = "hanna.held@example.com"
    contact = crms.seed_salesforce(
        "Contact", FirstName="Hanna", LastName="Held", Email=email, LeadSource="Web",
        CreatedDate="2026-12-01T09:00:00.000+0000", LastActivityDate=ACTIVE,
    )  # fmt: skip
    crms.seed_salesforce(
        "Opportunity", Name="Won", StageName="Closed Won", CloseDate="2027-01-10", ContactId=contact
    )
    idle_contact(crms, email)
    with at("2029-02-01"):
        (candidate,) = retention.preview(timedelta(0)).candidates
        assert candidate.verdict.rule.action == "delete"
        assert {r: h.name for r, h in candidate.holds.items()} == {contact: "closed_won"}
        report = retention.apply(erasure_for(retention, settings))
        (request_id,) = report.requests
        view = erasure_for(retention, settings).run(request_id)
    assert view["status"] == COMPLETED, view
    (row,) = live_salesforce(crms, "Contact")
    assert (row["Id"], row["LastName"], row["LeadSource"]) == (contact, "Anonymised", "Web")
    assert crms.hubspot.get("/__emulator/state").json()["contacts"] == []
    assert {(h["record_id"], h["outcome"]) for h in view["legal_holds"]} == {
        (contact, "anonymized")
    }


@extreme_accounts
def test_preview_and_apply_agree_exactly_on_who_is_purged(
    crms: Crms, retention: Retention, settings: Settings
) -> None:
    due = ["dora.due@example.com", "dan.due@example.com", "dee.due@example.com"]
    for email in due[:2]:
        idle_lead(crms, email)
    idle_contact(crms, due[2])
    idle_lead(crms, "nina.notyet@example.com", last_active="2027-03-01")
    idle_contact(crms, "cora.customer@example.com", stage="customer")
    erasure = erasure_for(retention, settings)
    with at("2029-01-20"):
        previewed = due_refs(retention)
        report = retention.apply(erasure)
        views = [erasure.run(request_id) for request_id in report.requests]
    assert previewed == {ref(e) for e in due}
    requested = {erasure_rows.request(retention.store, r)["subject_ref"] for r in report.requests}
    assert requested == previewed
    assert all(v["status"] == COMPLETED for v in views)
    leads = {r["Email"] for r in live_salesforce(crms, "Lead")}
    assert leads == {"nina.notyet@example.com"}
    contacts = crms.hubspot.get("/__emulator/state").json()["contacts"]
    assert {c["properties"]["email"] for c in contacts} == {"cora.customer@example.com"}
    events = [e for e in audit.events(retention.store) if e["action"] == "retention.due"]
    assert {e["subject_ref"] for e in events} == previewed
    assert {e["reason"] for e in events} == {"retention rule stale_leads"}
    with at("2029-01-21"):  # erased people stay erased: nothing left to purge
        assert due_refs(retention) == set()


def test_the_daemon_runs_retention_daily_on_the_leader_and_hands_the_due_to_erasure(
    crms: Crms, settings: Settings, store: Store
) -> None:
    idle_lead(crms, "dirk.daily@example.com")
    context = Wiring(config=None, _settings=settings.model_copy(update={"database_url": store.url}))
    jobs = {job.name: job for job in context.daemon_jobs()}
    job = jobs["retention"]
    assert job.leader_only
    assert str(job.trigger) == str(CronTrigger.from_crontab(settings.schedule.retention_cron))
    with at(DUE):
        job.run(threading.Event())
        jobs["erasure"].run(threading.Event())
    (request,) = erasure_rows.requests(store)
    assert (request["subject_ref"], request["status"]) == (ref("dirk.daily@example.com"), COMPLETED)
    assert live_salesforce(crms, "Lead") == []
