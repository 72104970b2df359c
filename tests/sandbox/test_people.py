"""The sandbox's own vendor words for lawful bases, and the seeders that write them.

The tables in ``bridge_sandbox.emulators.lawful_bases`` are what tests and the demo compute
expected vendor values with, so they are checked here against the emulators' own option lists
and against literal strings from the vendor references, never against the bridge.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, get_args

import httpx
import pytest

from bridge_sandbox.emulators.common import serve_in_thread
from bridge_sandbox.emulators.hubspot import create_app as hubspot_app
from bridge_sandbox.emulators.hubspot_properties import LEGAL_BASIS_OPTIONS
from bridge_sandbox.emulators.hubspot_state import LegalBasis
from bridge_sandbox.emulators.lawful_bases import (
    HUBSPOT_LEGAL_BASIS,
    HUBSPOT_LEGAL_BASIS_READ,
    HUBSPOT_SUBSCRIPTION_LEGAL_BASIS,
    HUBSPOT_SUBSCRIPTION_LEGAL_BASIS_READ,
    SALESFORCE_LEGAL_BASIS,
    UnknownBasis,
    hubspot_basis,
    salesforce_basis,
)
from bridge_sandbox.emulators.people import (
    Act,
    Held,
    Person,
    normalise_email,
    purpose_names,
    seed_hubspot,
    seed_salesforce,
)
from bridge_sandbox.emulators.salesforce import create_app as salesforce_app
from bridge_sandbox.emulators.salesforce_config import LEGAL_BASES

BASES = {
    "consent",
    "contract",
    "legal_obligation",
    "vital_interests",
    "public_task",
    "legitimate_interests",
    "not_applicable",
}
AT = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


class TablePurpose:
    """A ``[[purposes]]`` table, as the seeders read one (the bridge's model does the same)."""

    def __init__(self, **table: Any) -> None:
        self.table = table

    def model_dump(self) -> dict[str, Any]:
        return dict(self.table)


PURPOSES = [
    TablePurpose(
        id="marketing", hubspot_subscription_id="1", salesforce_data_use_purpose="Marketing"
    ),
    TablePurpose(id="updates", hubspot_subscription_id="2", salesforce_data_use_purpose=None),
]


def test_the_tables_name_only_common_bases() -> None:
    for table in (HUBSPOT_LEGAL_BASIS, HUBSPOT_SUBSCRIPTION_LEGAL_BASIS, SALESFORCE_LEGAL_BASIS):
        assert set(table) <= BASES
    for read in (HUBSPOT_LEGAL_BASIS_READ, HUBSPOT_SUBSCRIPTION_LEGAL_BASIS_READ):
        assert set(read.values()) <= BASES


def test_hubspot_words_are_the_emulators_options() -> None:
    assert set(HUBSPOT_LEGAL_BASIS_READ) == set(LEGAL_BASIS_OPTIONS)
    assert set(HUBSPOT_LEGAL_BASIS.values()) <= set(LEGAL_BASIS_OPTIONS)
    # PROCESS_AND_STORE is the one enum value HubSpot does not tie to an Art. 6 basis.
    assert set(HUBSPOT_SUBSCRIPTION_LEGAL_BASIS_READ) == set(get_args(LegalBasis)) - {
        "PROCESS_AND_STORE"
    }
    assert set(HUBSPOT_SUBSCRIPTION_LEGAL_BASIS.values()) <= set(get_args(LegalBasis))
    for table, read in (
        (HUBSPOT_LEGAL_BASIS, HUBSPOT_LEGAL_BASIS_READ),
        (HUBSPOT_SUBSCRIPTION_LEGAL_BASIS, HUBSPOT_SUBSCRIPTION_LEGAL_BASIS_READ),
    ):
        assert {read[value] for value in table.values()} == set(table)
        assert all(read[value] == basis for basis, value in table.items())


def test_salesforce_words_are_the_emulated_orgs_legal_bases() -> None:
    assert sorted(SALESFORCE_LEGAL_BASIS.values()) == sorted(name for name, _ in LEGAL_BASES)
    assert set(SALESFORCE_LEGAL_BASIS) == BASES - {"not_applicable"}


def test_hubspot_options_keep_hubspots_exact_dashes() -> None:
    assert HUBSPOT_LEGAL_BASIS["legitimate_interests"] == "Legitimate interest - other"
    assert hubspot_basis("Legitimate interest \u2013 existing customer") == "legitimate_interests"
    with pytest.raises(UnknownBasis):
        hubspot_basis("Legitimate interest - existing customer")  # a hyphen: not an option


def test_a_multi_select_reads_only_when_its_options_agree() -> None:
    both = "Legitimate interest - other;Legitimate interest \u2013 prospect/lead"
    assert hubspot_basis(both) == "legitimate_interests"
    assert hubspot_basis("") is None and hubspot_basis(None) is None
    with pytest.raises(UnknownBasis):
        hubspot_basis("Performance of a contract;Freely given consent from contact")


def test_salesforce_reads_exact_names() -> None:
    assert salesforce_basis("Vital Interests") == "vital_interests"
    assert salesforce_basis(None) is None
    with pytest.raises(UnknownBasis):
        salesforce_basis("Because")


def test_addresses_are_normalised_as_the_design_says() -> None:
    assert normalise_email("  Zoe\u0308@Example.COM ") == "zo\u00eb@example.com"
    assert normalise_email("a.b+tag@example.com") == "a.b+tag@example.com"


def test_purpose_names_read_the_configured_keys() -> None:
    assert purpose_names(PURPOSES, "hubspot_subscription_id") == {"marketing": "1", "updates": "2"}
    assert purpose_names(PURPOSES, "salesforce_data_use_purpose") == {"marketing": "Marketing"}


@pytest.fixture
def admins() -> Iterator[tuple[httpx.Client, httpx.Client]]:
    with (
        serve_in_thread(hubspot_app()) as hubspot,
        serve_in_thread(salesforce_app()) as salesforce,
        httpx.Client(base_url=hubspot.url, timeout=30) as hubspot_admin,
        httpx.Client(base_url=salesforce.url, timeout=30) as salesforce_admin,
    ):
        yield hubspot_admin, salesforce_admin


def test_seeders_write_the_vendors_own_words(admins: tuple[httpx.Client, httpx.Client]) -> None:
    hubspot, salesforce = admins
    person = Person(
        "Ada@Example.com",
        hubspot=Held((Act("marketing", "granted", AT),), lawful_basis="legitimate_interests"),
        salesforce=Held(
            (Act("marketing", "withdrawn", AT),), lawful_basis="contract", object_type="lead"
        ),
    )
    seed_hubspot(hubspot, [person], PURPOSES)
    seed_salesforce(salesforce, [person], PURPOSES)

    state = hubspot.get("/__emulator/state").json()
    [contact] = state["contacts"]
    assert contact["properties"]["hs_legal_basis"] == "Legitimate interest - other"
    [status] = state["subscriptions"]
    assert (status["subscriptionId"], status["status"], status["legalBasis"]) == (
        "1",
        "SUBSCRIBED",
        "CONSENT_WITH_NOTICE",
    )

    def rows(sobject: str) -> list[dict[str, Any]]:
        reply = salesforce.get("/__emulator/records", params={"type": sobject})
        records: list[dict[str, Any]] = reply.json()["records"]
        return records

    [lead] = rows("Lead")
    assert lead["Lawful_Basis__c"] == "Contract"
    [purpose] = rows("DataUsePurpose")
    consent_basis = {r["Id"]: r["Name"] for r in rows("DataUseLegalBasis")}[purpose["LegalBasisId"]]
    assert (purpose["Name"], consent_basis) == ("Marketing", "Consent")
    [row] = rows("ContactPointTypeConsent")
    assert (row["DataUsePurposeId"], row["PrivacyConsentStatus"]) == (purpose["Id"], "OptOut")


def test_a_basic_org_is_seeded_with_the_flags_and_basis_it_can_hold(
    admins: tuple[httpx.Client, httpx.Client],
) -> None:
    _, salesforce = admins
    salesforce.put("/__emulator/org", json={"org": "basic"}).raise_for_status()
    person = Person(
        "ada@example.com",
        hubspot=None,
        salesforce=Held(
            (Act("marketing", "granted", AT),), lawful_basis="contract", do_not_call_at=AT
        ),
    )
    seed_salesforce(salesforce, [person], PURPOSES)
    [contact] = salesforce.get("/__emulator/records", params={"type": "Contact"}).json()["records"]
    assert (contact["DoNotCall"], contact["HasOptedOutOfEmail"]) == (True, False)
    assert contact["Lawful_Basis__c"] == "Contract" and "IndividualId" not in contact
    assert contact["LastModifiedDate"].startswith("2025-03-01T09:00:00")
