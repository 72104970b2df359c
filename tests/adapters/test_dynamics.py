"""The Dynamics 365 adapter against the Dataverse emulator, over real HTTP with MSAL and httpx.

``TestDynamicsConformance`` runs the public suite (``bridge.testing.conformance``); the tests
below it hold what only Dataverse has: consent per contact point, the upsert trap, the recycle
bin and audit history, service protection limits and expired sign-ins.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from bridge.adapters.base import (
    AdapterError,
    ConsentWrite,
    ErasureResult,
    ErasureStatus,
    Failure,
    LawfulBasisWrite,
    Permanent,
    RateLimited,
    WriteStatus,
)
from bridge.adapters.dynamics.adapter import DynamicsAdapter
from bridge.adapters.dynamics.transport import Request
from bridge.identity import normalise_email
from bridge.model import Channel, ConsentStatus, LawfulBasis
from bridge.testing.conformance import AdapterConformance, Person
from bridge_sandbox.emulators.common import serve_in_thread
from bridge_sandbox.emulators.dynamics import ServiceLimits, create_app
from bridge_sandbox.emulators.dynamics_auth import AppRegistration, Apps
from bridge_sandbox.emulators.dynamics_http import API_ROOT
from tests.adapters.dynamics_world import (
    CLIENT_ID,
    CLIENT_SECRET,
    CONSENT_VALUES,
    PURPOSES,
    DynamicsWorld,
    contact_json,
    web_api,
)
from tests.conftest import free_port


@pytest.fixture
def world(dynamics_world: DynamicsWorld) -> DynamicsWorld:
    return dynamics_world


class TestDynamicsConformance(AdapterConformance):
    """The adapter contract, held against the Dataverse emulator."""


# -- what only Dataverse has ------------------------------------------------------------------

ADA = "ada.lovelace@example.com"
ADA_ALIAS = "countess@example.org"
ORPHAN = "orphan.address@example.net"  # consent rows, no contact or lead
GRANTED, WITHDRAWN = ConsentStatus.GRANTED, ConsentStatus.WITHDRAWN
ANONYMISED = "Anonymised"


def dynamics_adapter(
    world: DynamicsWorld, *, attempts: int = 8, **settings: Any
) -> DynamicsAdapter:
    """An adapter over the world's environment with some settings changed; close it."""
    return DynamicsAdapter(
        world.settings().model_copy(update=settings),
        PURPOSES,
        keep_on_anonymize={},
        due_field="cb_purgedue",
        attempts=attempts,
    )


def state(world: DynamicsWorld) -> dict[str, Any]:
    response = world.admin.get("/__emulator/state")
    response.raise_for_status()
    snapshot: dict[str, Any] = response.json()
    return snapshot


def audited(world: DynamicsWorld) -> dict[str, list[dict[str, Any]]]:
    """Audit entries by record id."""
    return {entry["id"]: entry["entries"] for entry in state(world)["audit"]}


def consent_ids_of(world: DynamicsWorld, *emails: str) -> set[str]:
    wanted = {normalise_email(e) for e in emails}
    return {
        row["msdynmkt_contactpointconsent4id"]
        for row in world.rows("msdynmkt_contactpointconsent4")
        if normalise_email(row["msdynmkt_contactpointvalue"]) in wanted
    }


def seed_person_everywhere(world: DynamicsWorld) -> dict[str, Any]:
    """Ada as a contact (two addresses) and a lead (the alias), consent rows for both
    addresses, and an address with consent rows and no record at all."""
    made = world._seed(
        contacts=[
            contact_json(Person(ADA, additional_emails=(ADA_ALIAS,)))
            | {"description": "Met at the Analytical Society", "telephone1": "+44 20 7946 0000"}
            | {"donotbulkemail": True, "donotphone": True, "donotpostalmail": True}
        ],
        leads=[{"lastname": "Lovelace", "firstname": "Ada", "emailaddress1": ADA_ALIAS}],
        msdynmkt_contactpointconsent4s=[
            world.consent_json(ADA, "newsletter", GRANTED),
            world.consent_json(ADA_ALIAS, "product_updates", WITHDRAWN),
            world.consent_json(ORPHAN, "newsletter", GRANTED),
        ],
    )
    return {
        "contact": made["contacts"][0],
        "lead": made["leads"][0],
        "consents": set(made["msdynmkt_contactpointconsent4s"]),
    }


def personal_text(*texts: str) -> list[str]:
    """The texts that quote a seeded address or name."""
    needles = (ADA, ADA_ALIAS, ORPHAN, "Lovelace", "Ada ", "Byron", "Augusta")
    return [t for t in texts if any(n.casefold() in t.casefold() for n in needles)]


class TestUpsertTrap:
    """A PATCH to a deleted row re-creates it unless ``If-Match: *`` is sent
    (docs/vendors/dynamics.md, "Web API basics"): a write to a person deleted behind the
    adapter's back must fail and bring nothing back."""

    def test_writes_to_a_contact_deleted_beforehand_fail_and_recreate_nothing(
        self, world: DynamicsWorld
    ) -> None:
        [contact] = world.seed([Person(ADA)])
        ref = world.ref(contact)
        with web_api(world.url) as api:
            api.delete(f"contacts({contact})").raise_for_status()
        adapter = world.adapter()
        outcomes = adapter.write_consents(
            [
                ConsentWrite(ref, ADA, None, WITHDRAWN),
                ConsentWrite(ref, ADA, None, WITHDRAWN, channel=Channel.PHONE),
            ]
        )
        outcomes += adapter.write_lawful_bases([LawfulBasisWrite(ref, LawfulBasis.CONSENT)])
        assert [o.status for o in outcomes] == [WriteStatus.FAILED] * 3
        assert world.rows("contact") == []

    def test_a_purpose_write_for_an_erased_contact_recreates_no_consent_row(
        self, world: DynamicsWorld
    ) -> None:
        """Erased in Dynamics (the contact and its consent rows): a later consent write for
        the record must not put the address back into consent4."""
        [contact] = world.seed([Person(ADA, consents={"newsletter": GRANTED})])
        with web_api(world.url) as api:
            for row_id in consent_ids_of(world, ADA):
                api.delete(f"msdynmkt_contactpointconsent4s({row_id})").raise_for_status()
            api.delete(f"contacts({contact})").raise_for_status()
        [outcome] = world.adapter().write_consents(
            [ConsentWrite(world.ref(contact), ADA, "newsletter", WITHDRAWN)]
        )
        assert outcome.status is WriteStatus.FAILED
        assert consent_ids_of(world, ADA) == set()
        assert world.rows("contact") == []

    @pytest.mark.parametrize("write", ["opt_out", "lawful_basis", "rectify"])
    def test_a_contact_deleted_between_the_read_and_the_patch_is_not_recreated(
        self, world: DynamicsWorld, monkeypatch: pytest.MonkeyPatch, write: str
    ) -> None:
        """The race the read-first cannot close: the row goes after the adapter read it,
        before its PATCH lands. Only ``If-Match: *`` turns that PATCH into a 404."""
        [contact] = world.seed([Person(ADA)])
        ref = world.ref(contact)
        with web_api(world.url) as api, dynamics_adapter(world) as adapter:
            send = adapter.transport.batch

            def deleted_first(requests: Sequence[Request], operation: str) -> list[Any]:
                if any(r.method == "PATCH" for r in requests) and world.rows("contact"):
                    api.delete(f"contacts({contact})").raise_for_status()
                return send(requests, operation)

            monkeypatch.setattr(adapter.transport, "batch", deleted_first)
            if write == "opt_out":
                outcomes = adapter.write_consents([ConsentWrite(ref, ADA, None, WITHDRAWN)])
            elif write == "lawful_basis":
                outcomes = adapter.write_lawful_bases(
                    [LawfulBasisWrite(ref, LawfulBasis.LEGITIMATE_INTERESTS)]
                )
            else:
                outcomes = adapter.rectify([ADA], {"last_name": "Byron"})
        assert [o.status for o in outcomes] == [WriteStatus.FAILED]
        assert world.rows("contact") == []
        assert personal_text(*(o.detail for o in outcomes)) == []

    def test_a_consent_row_deleted_between_the_read_and_the_patch_is_not_recreated(
        self, world: DynamicsWorld, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        [contact] = world.seed([Person(ADA, consents={"newsletter": GRANTED})])
        [row_id] = consent_ids_of(world, ADA)
        with web_api(world.url) as api, dynamics_adapter(world) as adapter:
            send = adapter.transport.send

            def deleted_first(requests: Sequence[Request], operation: str) -> list[Any]:
                if any(r.method == "PATCH" for r in requests) and consent_ids_of(world, ADA):
                    api.delete(f"msdynmkt_contactpointconsent4s({row_id})").raise_for_status()
                return send(requests, operation)

            monkeypatch.setattr(adapter.transport, "send", deleted_first)
            [outcome] = adapter.write_consents(
                [ConsentWrite(world.ref(contact), ADA, "newsletter", WITHDRAWN)]
            )
        assert row_id not in consent_ids_of(world, ADA)  # no upsert of the deleted row
        if outcome.status is WriteStatus.DONE:  # then a new row holds the withdrawal
            assert world.held(ADA).consents == {"newsletter": WITHDRAWN}
        else:
            assert outcome.status is WriteStatus.FAILED


class TestErasure:
    """A person is their contacts, leads and the consent4 rows of every address they hold;
    nothing cascades to consent4, and audit history and the recycle bin keep what a delete
    leaves (docs/vendors/dynamics.md, "Deletion, recycle bin and audit history")."""

    def test_delete_removes_records_consent_rows_and_their_history(
        self, world: DynamicsWorld
    ) -> None:
        seeded = seed_person_everywhere(world)
        kept = world._seed(contacts=[contact_json(Person("someone.else@example.com"))])
        adapter = world.adapter()
        [targets] = adapter.erasure_targets([[ADA, ADA_ALIAS, ORPHAN]])
        assert {t.id for t in targets} == {seeded["contact"], seeded["lead"], *seeded["consents"]}
        results = adapter.erase(targets, "delete")
        assert all(isinstance(r, ErasureResult) for r in results), results
        assert {r.status for r in results if isinstance(r, ErasureResult)} == {ErasureStatus.ERASED}
        assert [r["contactid"] for r in world.rows("contact")] == kept["contacts"]
        assert world.rows("lead") == []
        assert consent_ids_of(world, ADA, ADA_ALIAS, ORPHAN) == set()
        history = audited(world)
        assert seeded["contact"] not in history and seeded["lead"] not in history
        assert kept["contacts"][0] in history  # the history of others stays

    def test_delete_removes_the_history_of_the_consent_rows_too(self, world: DynamicsWorld) -> None:
        """A consent4 row's audit entries hold the address itself."""
        seeded = seed_person_everywhere(world)
        adapter = world.adapter()
        [targets] = adapter.erasure_targets([[ADA, ADA_ALIAS, ORPHAN]])
        adapter.erase(targets, "delete")
        history = audited(world)
        assert [i for i in seeded["consents"] if i in history] == []
        assert personal_text(json.dumps(state(world)["audit"])) == []

    def test_without_history_deletion_the_results_say_it_remains(
        self, world: DynamicsWorld
    ) -> None:
        seeded = seed_person_everywhere(world)
        with dynamics_adapter(world, delete_change_history=False) as adapter:
            [targets] = adapter.erasure_targets([[ADA, ADA_ALIAS]])
            results = adapter.erase(targets, "delete")
        by_id = {r.target.id: r for r in results if isinstance(r, ErasureResult)}
        assert len(by_id) == len(targets)
        for record in (seeded["contact"], seeded["lead"]):
            assert by_id[record].status is ErasureStatus.ERASED
            assert "history remains" in by_id[record].detail
        history = audited(world)
        assert seeded["contact"] in history and seeded["lead"] in history
        assert world.rows("contact") == [] and world.rows("lead") == []

    def test_with_the_recycle_bin_on_the_rows_are_reported_restorable(
        self, world: DynamicsWorld
    ) -> None:
        world.admin.put("/__emulator/settings", json={"recycle_bin_days": 30}).raise_for_status()
        seeded = seed_person_everywhere(world)
        adapter = world.adapter()
        [targets] = adapter.erasure_targets([[ADA, ADA_ALIAS]])
        results = adapter.erase(targets, "delete")
        answered = [r for r in results if isinstance(r, ErasureResult)]
        assert len(answered) == len(targets)
        assert {r.status for r in answered} == {ErasureStatus.IN_RECYCLE_BIN}
        assert all("30 days" in r.detail for r in answered)
        assert world.rows("contact") == []
        binned = {(b["entity_set"], b["id"]) for b in state(world)["recycle_bin"]}
        assert ("contacts", seeded["contact"]) in binned
        restored = world.admin.post(
            "/__emulator/restore", json={"entity_set": "contacts", "id": seeded["contact"]}
        )
        restored.raise_for_status()
        assert [r["contactid"] for r in world.rows("contact")] == [seeded["contact"]]

    def test_anonymise_keeps_the_records_without_personal_data_and_drops_consent_rows(
        self, world: DynamicsWorld
    ) -> None:
        seeded = seed_person_everywhere(world)
        adapter = world.adapter()
        [targets] = adapter.erasure_targets([[ADA, ADA_ALIAS, ORPHAN]])
        results = adapter.erase(targets, "anonymize")
        statuses = {r.target.id: r.status for r in results if isinstance(r, ErasureResult)}
        assert statuses[seeded["contact"]] is ErasureStatus.ANONYMIZED
        assert statuses[seeded["lead"]] is ErasureStatus.ANONYMIZED
        [contact] = world.rows("contact")
        [lead] = world.rows("lead")
        assert contact["contactid"] == seeded["contact"]
        for row in (contact, lead):
            assert row["firstname"] == ANONYMISED and row["lastname"] == ANONYMISED
            held = [row[c] for c in ("emailaddress1", "emailaddress2", "emailaddress3") if row[c]]
            assert held and all(a.endswith("@invalid.example") for a in held)
            assert not row["description"] and not row["telephone1"]
        assert contact["emailaddress1"] != contact["emailaddress2"]
        assert contact["donotbulkemail"] and contact["donotphone"] and contact["donotpostalmail"]
        assert consent_ids_of(world, ADA, ADA_ALIAS, ORPHAN) == set()
        assert personal_text(json.dumps(world.tables())) == []

    def test_anonymise_leaves_no_old_value_in_the_audit_history(self, world: DynamicsWorld) -> None:
        """The audit history keeps each old value of an update: an anonymised row's history
        still names the person unless it is deleted too."""
        seeded = seed_person_everywhere(world)
        adapter = world.adapter()
        [targets] = adapter.erasure_targets([[ADA, ADA_ALIAS]])
        adapter.erase(targets, "anonymize")
        history = audited(world)
        kept = [history.get(seeded["contact"], []), history.get(seeded["lead"], [])]
        assert personal_text(json.dumps(kept)) == []


def api_calls(world: DynamicsWorld) -> int:
    """Web API calls the emulator received (admitted or refused), token calls left out."""
    counted = world.admin.get("/__emulator/counters").json()["calls"]
    return sum(n for key, n in counted.items() if API_ROOT in key)


def admitted(world: DynamicsWorld) -> int:
    """Requests the service protection limits let through in their window, any app."""
    usage = state(world)["limits_usage"]
    return sum(int(used["requests"]) for used in usage.values())


class TestServiceProtection:
    """Each limit answers 429 with ``Retry-After`` in seconds (docs/vendors/dynamics.md,
    "Service protection limits"): the adapter waits that long and carries on."""

    @pytest.mark.parametrize(
        "limits",
        [
            {"max_requests": 2, "window_s": 2.0},
            {"max_execution_ms": 40, "cost_ms": 20, "window_s": 2.0},
        ],
        ids=["requests", "execution_time"],
    )
    def test_a_read_waits_out_the_429s_and_returns_every_record(
        self, world: DynamicsWorld, limits: dict[str, Any]
    ) -> None:
        people = [Person(f"reader{i}@example.com") for i in range(30)]
        ids = set(world.seed(people))
        world.admin.put(
            "/__emulator/limits", json=ServiceLimits().model_dump() | limits
        ).raise_for_status()
        world.admin.delete("/__emulator/counters").raise_for_status()
        started = time.monotonic()
        with dynamics_adapter(world) as adapter:
            read = [r.id for r in adapter.read()]
        took = time.monotonic() - started
        assert sorted(read) == sorted(ids)
        calls = api_calls(world)
        refused = calls - admitted(world)
        # Five requests for a full read (the leads probe, purposes, consent rows, contacts,
        # leads) against two per two seconds: some are refused, each waited out.
        assert calls >= 5 and refused >= 1, (calls, refused)
        assert took >= 1.0

    def test_retry_after_is_the_limits_own_when_the_adapter_does_not_retry(
        self, world: DynamicsWorld
    ) -> None:
        world.admin.put(
            "/__emulator/limits",
            json=ServiceLimits().model_dump() | {"max_requests": 1, "window_s": 120.0},
        ).raise_for_status()

        def retry_after(api: httpx.Client) -> float:
            refused = api.get("contacts", params={"$top": "1"})
            assert refused.status_code == 429
            return float(refused.headers["Retry-After"])

        with web_api(world.url) as api, dynamics_adapter(world, attempts=1) as adapter:
            assert api.get("contacts", params={"$top": "1"}).status_code == 200
            before = retry_after(api)
            with pytest.raises(RateLimited) as limited:
                list(adapter.read())
            after = retry_after(api)
        assert limited.value.code == "0x80072322"
        assert after <= (limited.value.retry_after or 0) <= before
        assert 100 <= before <= 120


class TestSignIn:
    """Tokens come from Entra ID through MSAL; the Web API refuses one it no longer knows
    (401) and refuses an app that is no application user (403, 0x80072560)."""

    def test_a_token_the_environment_refuses_is_replaced_once_and_the_call_succeeds(self) -> None:
        """An environment that forgets the token the adapter holds (here: restarted on the
        same address). MSAL serves a cached token until five minutes before it expires, so
        an emulator token lifetime shorter than that never reaches a 401."""
        port = free_port()
        with (
            serve_in_thread(create_app(), port=port) as first,
            httpx.Client(base_url=first.url, timeout=30) as admin,
        ):
            world = DynamicsWorld(first, admin)
            adapter = dynamics_adapter(world)
            world.seed([Person(ADA)])
            assert [r.emails for r in adapter.find_by_emails([ADA])] == [(ADA,)]
        try:
            with (
                serve_in_thread(create_app(), port=port) as second,
                httpx.Client(base_url=second.url, timeout=30) as admin,
            ):
                world = DynamicsWorld(second, admin)
                [contact] = world.seed([Person(ADA)])
                found = adapter.find_by_emails([ADA])
                counted = admin.get("/__emulator/counters").json()["calls"]
        finally:
            adapter.close()
        assert [r.id for r in found] == [contact]
        tokens = sum(n for key, n in counted.items() if key.endswith("/oauth2/v2.0/token"))
        assert tokens == 1  # one fresh token, after the one 401
        assert sum(n for key, n in counted.items() if API_ROOT in key) >= 4

    def test_an_app_that_is_no_application_user_is_a_credentials_failure(
        self, world: DynamicsWorld
    ) -> None:
        apps = Apps(apps=[AppRegistration(client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                                          application_user=False)])  # fmt: skip
        world.admin.put("/__emulator/apps", json=apps.model_dump()).raise_for_status()
        try:
            with dynamics_adapter(world) as adapter, pytest.raises(AdapterError) as refused:
                adapter.find_by_emails([ADA])
        finally:
            world.admin.put("/__emulator/apps", json=Apps().model_dump()).raise_for_status()
        assert isinstance(refused.value, Permanent)
        assert refused.value.failure is Failure.CREDENTIALS
        assert refused.value.code == "0x80072560"
        assert "0x80072560" in refused.value.line()
        assert "application user" in refused.value.line()


class TestReadSince:
    """Consent lives on consent4 rows, not on the contact: a changed consent row makes its
    person changed, though the contact itself is untouched."""

    def test_a_contact_whose_consent_row_changed_after_the_cursor_is_read(
        self, world: DynamicsWorld
    ) -> None:
        old = datetime(2020, 1, 1, tzinfo=UTC)
        cursor = datetime(2024, 1, 1, tzinfo=UTC)
        changed_person, quiet_person = "changed@example.com", "quiet@example.com"
        stale = {"createdon": old.isoformat(), "modifiedon": old.isoformat()}
        made = world._seed(
            contacts=[
                contact_json(Person(changed_person, modified_at=old)),
                contact_json(Person(quiet_person, modified_at=old)),
            ],
            msdynmkt_contactpointconsent4s=[
                world.consent_json(changed_person, "newsletter", GRANTED) | stale,
                world.consent_json(quiet_person, "newsletter", GRANTED) | stale,
            ],
        )
        changed_id = made["contacts"][0]
        [row_id] = consent_ids_of(world, changed_person)
        with web_api(world.url) as api:
            api.patch(
                f"msdynmkt_contactpointconsent4s({row_id})",
                json={"msdynmkt_value": CONSENT_VALUES[WITHDRAWN]},
                headers={"If-Match": "*"},
            ).raise_for_status()
        read = list(world.adapter().read(since=cursor))
        assert [r.id for r in read] == [changed_id]
        [consent] = read[0].consents
        assert (consent.purpose, consent.status) == ("newsletter", WITHDRAWN)


class TestNoPersonalDataInFailures:
    """An error or a failed write's detail is read by people and logged: it names tables,
    columns and codes, never an address or a name."""

    def test_a_too_long_last_name_fails_without_quoting_it(self, world: DynamicsWorld) -> None:
        world.seed([Person(ADA, additional_emails=(ADA_ALIAS,))])
        too_long = "Augusta Ada King, Countess of Lovelace, née Byron " * 3
        outcomes = world.adapter().rectify([ADA], {"last_name": too_long})
        assert [o.status for o in outcomes] == [WriteStatus.FAILED]
        assert "lastname" in outcomes[0].detail
        assert personal_text(*(o.detail for o in outcomes)) == []
        assert world.held(ADA).last_names == {"Lovelace"}

    def test_a_refused_consent_row_fails_without_quoting_the_address(
        self, world: DynamicsWorld
    ) -> None:
        """consent4's contact point value holds 400 characters: Dataverse's 400 names the
        column, and the outcome must not quote the address."""
        long_address = "ada.lovelace." + "x" * 400 + "@example.com"
        [contact] = world.seed([Person(ADA)])
        [outcome] = world.adapter().write_consents(
            [ConsentWrite(world.ref(contact), long_address, "newsletter", GRANTED)]
        )
        assert outcome.status is WriteStatus.FAILED
        assert "msdynmkt_contactpointvalue" in outcome.detail
        assert "lovelace" not in outcome.detail.casefold()
        assert "x" * 20 not in outcome.detail

    def test_errors_of_a_refused_sign_in_and_a_lost_table_quote_nobody(
        self, world: DynamicsWorld
    ) -> None:
        world.seed([Person(ADA)])
        lines: list[str] = []
        with pytest.raises(AdapterError) as refused:
            world.unauthorised_adapter().find_by_emails([ADA])
        lines += [str(refused.value), refused.value.line()]
        with (
            dynamics_adapter(world, lawful_basis_field="cb_nosuchcolumn") as adapter,
            pytest.raises(AdapterError) as lost,
        ):
            adapter.find_by_emails([ADA, "Ada Lovelace <ada@example.com>"])
        lines += [str(lost.value), lost.value.line()]
        assert lost.value.failure is Failure.CONFIGURATION
        assert personal_text(*lines) == []
