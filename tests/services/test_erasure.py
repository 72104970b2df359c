"""Erasure everywhere, verified and kept erased, against both emulators with the real clients."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge import audit
from bridge.adapters.base import CrmAdapter
from bridge.adapters.hubspot import HUBSPOT
from bridge.adapters.hubspot.adapter import HubSpotAdapter
from bridge.adapters.salesforce import SALESFORCE
from bridge.adapters.salesforce.adapter import SalesforceAdapter
from bridge.identity import subject_ref
from bridge.model import System
from bridge.sealing import Keyring
from bridge.services.erasure import COMPLETED, Erasure
from bridge.store import erasure as rows
from bridge.store.db import Store
from tests.conftest import PSEUDONYM_KEY, Crms, extreme_accounts

ANN = "ann.erase@example.com"
ANN_HOME = "ann.home@example.org"
PEOPLE = ("Contact", "Lead")
PRIVACY_ROWS = ("Individual", "ContactPointEmail", "ContactPointTypeConsent")


def seed_ann(crms: Crms) -> None:
    """Ann: a HubSpot contact with two emails; in Salesforce two Contacts (one per email, in
    different case), a Lead and, where the org has the privacy objects, an Individual with a
    ContactPointEmail and a consent row."""
    crms.seed_hubspot(email=ANN, additional_emails=[ANN_HOME], firstname="Ann", lastname="Erase")
    individual = None
    if crms.accounts.privacy:
        individual = crms.seed_salesforce("Individual", FirstName="Ann", LastName="Erase")
    linked = {"IndividualId": individual} if individual else {}
    crms.seed_salesforce("Contact", LastName="Erase", Email=ANN.upper(), **linked)
    crms.seed_salesforce("Contact", LastName="Erase", Email=ANN_HOME, **linked)
    crms.seed_salesforce("Lead", LastName="Erase", Company="Acme", Email=ANN)
    if individual is None:
        return
    crms.seed_salesforce("ContactPointEmail", EmailAddress=ANN, ParentId=individual)
    bases = crms.salesforce.get("/__emulator/records", params={"type": "DataUseLegalBasis"})
    consent_basis = next(r["Id"] for r in bases.json()["records"] if r["Name"] == "Consent")
    purpose = crms.seed_salesforce(
        "DataUsePurpose", Name="Marketing", CanDataSubjectOptOut=True, LegalBasisId=consent_basis
    )
    crms.seed_salesforce(
        "ContactPointTypeConsent", PartyId=individual, DataUsePurposeId=purpose, Name="Ann email",
        ContactPointType="Email", PrivacyConsentStatus="OptIn",
        CaptureDate="2026-01-05T10:00:00.000+0000", CaptureSource="web form",
        CaptureContactPointType="Email",
    )  # fmt: skip


def service(crms: Crms, store: Store, **options: Any) -> Erasure:
    """The erasure service over both adapters, which give up quickly: outages that outlast an
    adapter's own retries are the service's to handle."""
    settings = crms.settings
    adapters: dict[System, CrmAdapter] = {
        HUBSPOT: HubSpotAdapter(settings.hubspot, settings.purposes, attempts=2),
        SALESFORCE: SalesforceAdapter(settings.salesforce, settings.purposes, attempts=2),
    }
    keyring = Keyring(settings.require_encryption_keys())
    return Erasure(store, adapters, keyring, PSEUDONYM_KEY.encode(), **options)


def live_salesforce(crms: Crms, sobject: str) -> list[dict[str, object]]:
    return crms.salesforce.get("/__emulator/records", params={"type": sobject}).json()["records"]


@extreme_accounts
def test_a_person_in_every_object_is_erased_everywhere_and_verified(
    crms: Crms, store: Store
) -> None:
    """In an org without the privacy objects, from Contacts and Leads alone: no step for an
    object the org lacks is planned (it would fail ``INVALID_TYPE``)."""
    seed_ann(crms)
    erasure = service(crms, store)
    request_id = erasure.submit([ANN], "delete", "customer request", "cli")
    view = erasure.run(request_id)

    assert view["status"] == COMPLETED, view
    systems = view["systems"]
    assert set(systems) == {"hubspot", "salesforce"}
    people = {"contact", "lead"}
    if crms.accounts.privacy:
        privacy = {"individual", "contact_point_email", "contact_point_type_consent"}
        assert set(systems["salesforce"]["objects"]) >= people | privacy
    else:
        assert set(systems["salesforce"]["objects"]) == people
    state = crms.hubspot.get("/__emulator/state").json()
    assert state["contacts"] == []
    assert {e["email"] for e in state["blocklist"]} >= {ANN, ANN_HOME}
    for sobject in PEOPLE + (PRIVACY_ROWS if crms.accounts.privacy else ()):
        assert live_salesforce(crms, sobject) == [], sobject

    receipt = erasure.receipt(request_id)
    assert receipt["verification"] == {
        "ok": True, "emails_searched": 2, "records_found": {"hubspot": 0, "salesforce": 0},
    }  # fmt: skip
    text = json.dumps(receipt).lower()
    assert ANN not in text and ANN_HOME not in text and "ann" not in text
    request = rows.request(store, request_id)
    assert request is not None and request["emails_encrypted"] is None  # destroyed
    refs = {subject_ref(PSEUDONYM_KEY.encode(), e) for e in (ANN, ANN_HOME)}
    assert rows.suppressed(store, refs) == refs
    actions = [e["action"] for e in audit.events(store)]
    assert actions[0] == "erasure.requested" and actions[-1] == "erasure.completed"
    assert audit.verify(store).ok


def test_dry_run_lists_targets_and_changes_nothing(crms: Crms, store: Store) -> None:
    seed_ann(crms)
    planned = service(crms, store).dry_run([ANN])
    assert {t.system for t, _ in planned} == {"hubspot", "salesforce"}
    assert {hold for _, hold in planned} == {None}  # no legal holds configured
    assert rows.requests(store) == []
    assert len(crms.hubspot.get("/__emulator/state").json()["contacts"]) == 1
    assert len(live_salesforce(crms, "Contact")) == 2


def test_an_erasure_with_one_system_down_completes_later_and_shows_overdue(
    crms: Crms, store: Store
) -> None:
    seed_ann(crms)
    offset = [timedelta()]
    erasure = service(
        crms,
        store,
        backoff_seconds=0.01,
        max_attempts=3,
        clock=lambda: datetime.now(UTC) + offset[0],
    )
    request_id = erasure.submit([ANN], "delete", None, "cli")
    erasure.plan([request_id])
    crms.salesforce.put("/__emulator/faults", json={"error_rate": 1.0}).raise_for_status()
    view = erasure.run(request_id, wait_seconds=5)
    assert view["status"] != COMPLETED
    assert view["failures"]  # Salesforce steps dead-lettered, with the vendor's reason
    assert "hubspot" in view["systems"]
    offset[0] = timedelta(days=31)
    assert erasure.view(request_id)["overdue"]
    assert [v["id"] for v in erasure.requests(overdue=True)] == [request_id]

    crms.salesforce.delete("/__emulator/faults").raise_for_status()
    view = erasure.retry(request_id)
    assert view["status"] == COMPLETED, view
    assert not view["overdue"]
    assert live_salesforce(crms, "Contact") == []
