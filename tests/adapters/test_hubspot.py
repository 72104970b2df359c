"""The HubSpot adapter against its emulator: the real SDK, real HTTP, a server in-process.

``TestHubSpotConformance`` runs the public suite (``bridge.testing.conformance``) with
``HubSpotHarness`` as its world, its consent tests on every Marketing Hub tier. The tests
after it prove what only HubSpot has: the consent path each tier allows, the 10,000-result
search cap, its rate-limit headers (one window per app in a process) and 5/s search limit,
v3's refusal to resubscribe, blocklisting by address, erasure at the fewest calls HubSpot
allows, exactly-once writes under faults, the error table, the v4 transport
(with respx), and the lawful-basis vocabularies (property-tested).
"""

from __future__ import annotations

import json
import math
import re
import string
import unicodedata
from collections.abc import Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
import structlog
from hubspot.crm.contacts.exceptions import ApiException as ContactsApiException
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from pydantic import SecretStr
from urllib3.exceptions import MaxRetryError, ProtocolError

from bridge.adapters.base import (
    ConsentWrite,
    ErasureResult,
    ErasureStatus,
    ErasureTarget,
    Failure,
    LawfulBasisWrite,
    NotFound,
    Permanent,
    RateLimited,
    RecordRef,
    Transient,
    WriteStatus,
    classify,
)
from bridge.adapters.hubspot import HUBSPOT
from bridge.adapters.hubspot.adapter import HubSpotAdapter, _refusals
from bridge.adapters.hubspot.capabilities import BATCH_READ, ConsentPaths, Path
from bridge.adapters.hubspot.preferences import Preferences
from bridge.adapters.hubspot.settings import HubSpotSettings
from bridge.adapters.hubspot.transport import ERRORS, HubSpotLimits, MissingScopes, Transport
from bridge.adapters.hubspot.vocabulary import (
    DEFAULT_HUBSPOT,
    HUBSPOT_PROPERTY,
    HUBSPOT_SUBSCRIPTION,
)
from bridge.adapters.vocabulary import Unmappable, Vocabulary
from bridge.identity import normalise_email
from bridge.model import ConsentStatus, LawfulBasis, Purpose
from bridge.testing.conformance import (
    CONSENT_TESTS,
    AdapterConformance,
    Faults,
    Held,
    Holds,
    Person,
    answered,
    by_id,
    consent_of,
    open_connections,
)
from bridge_sandbox.emulators.common import RunningServer, serve_in_thread
from bridge_sandbox.emulators.hubspot import HubSpotEmulatorConfig, RateLimits, create_app
from bridge_sandbox.emulators.hubspot_properties import LEGAL_BASIS_OPTIONS
from bridge_sandbox.emulators.hubspot_tiers import TIERS, Tier
from bridge_sandbox.emulators.lawful_bases import (
    HUBSPOT_LEGAL_BASIS,
    HUBSPOT_LEGAL_BASIS_READ,
    HUBSPOT_SUBSCRIPTION_LEGAL_BASIS,
    HUBSPOT_SUBSCRIPTION_LEGAL_BASIS_READ,
    hubspot_basis,
)

TOKEN = "test-token"
# Private apps of their own, for tests of pacing from the published limits: the test app's
# window in this process (one per app, bridge.adapters.pacing) holds earlier tests' calls.
APP_TOKENS: dict[Tier, str] = {tier: f"{tier}-app-token" for tier in TIERS}
PORTAL_ID = 4_242_424  # the Hub ID the adapter links records with
PURPOSES = (
    Purpose(id="marketing", hubspot_subscription_id="1"),
    Purpose(id="product_updates", hubspot_subscription_id="2"),
)
# Twenty times HubSpot's rates, so that a retry after a 429 waits half a second, not ten; the
# tests of pacing set the published limits themselves.
EMULATOR_LIMITS = RateLimits(burst_max=100, burst_interval_ms=500, search_max=100)
ADAPTER_LIMITS = HubSpotLimits(burst_max=100, burst_seconds=0.5, search_max=100)
STATES = {"SUBSCRIBED": ConsentStatus.GRANTED, "UNSUBSCRIBED": ConsentStatus.WITHDRAWN}
SEED_STATES = {state: name for name, state in STATES.items()}
V4_READ = "https://hubspot.test/communication-preferences/v4/statuses/batch/read"
CALLS, ERRORS_METRIC = "bridge_adapter_calls_total", "bridge_adapter_errors_total"


def make_adapter(
    url: str, token: str = TOKEN, purposes: Sequence[Purpose] = PURPOSES, **options: Any
) -> HubSpotAdapter:
    settings = HubSpotSettings(access_token=SecretStr(token), base_url=url, portal_id=PORTAL_ID)
    return HubSpotAdapter(settings, purposes, **({"limits": ADAPTER_LIMITS} | options))


def common_basis(name: str | None) -> LawfulBasis | None:
    """A basis the sandbox read back (its own words for it), as the common model's."""
    return LawfulBasis(name) if name else None


def seed_json(person: Person) -> dict[str, Any]:
    """A ``Person`` as the emulator's seed API takes it."""
    subscriptions: list[dict[str, Any]] = [
        {"subscription_id": p.hubspot_subscription_id, "status": SEED_STATES[person.consents[p.id]]}
        for p in PURPOSES
        if person.consents.get(p.id) in SEED_STATES
    ]
    if person.opted_out:
        subscriptions.append({"status": "UNSUBSCRIBED"})
    return {
        "email": person.email,
        "additional_emails": list(person.additional_emails),
        "firstname": person.first_name,
        "lastname": person.last_name,
        "hs_legal_basis": HUBSPOT_LEGAL_BASIS[person.lawful_basis.value]
        if person.lawful_basis
        else None,
        "lastmodifieddate": person.modified_at.isoformat() if person.modified_at else None,
        "subscriptions": subscriptions,
    }


class HubSpotHarness:
    """The conformance harness: the emulator's admin API behind the adapter's back."""

    purposes: Sequence[Purpose] = PURPOSES

    def __init__(self, server: RunningServer, admin: httpx.Client) -> None:
        self.server = server
        self.admin = admin
        self._adapters: dict[tuple[str, int], HubSpotAdapter] = {}

    def _cached(self, token: str, attempts: int) -> HubSpotAdapter:
        key = (token, attempts)
        if key not in self._adapters:
            self._adapters[key] = make_adapter(self.server.url, token, attempts=attempts)
        return self._adapters[key]

    def adapter(self, *, attempts: int = 8) -> HubSpotAdapter:
        return self._cached(TOKEN, attempts)

    def unauthorised_adapter(self) -> HubSpotAdapter:
        return self._cached("revoked-token", 1)

    def ref(self, record_id: str) -> RecordRef:
        return RecordRef(HUBSPOT, "contact", record_id)

    def seed(self, people: Sequence[Person]) -> list[str]:
        body = {"contacts": [seed_json(p) for p in people]}
        response = self.admin.post("/__emulator/seed", json=body)
        response.raise_for_status()
        return [c["id"] for c in response.json()["contacts"]]

    def state(self) -> dict[str, Any]:
        response = self.admin.get("/__emulator/state")
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        return state

    def held(self, email: str) -> Held:
        address = normalise_email(email)
        state = self.state()
        contacts = [c for c in state["contacts"] if address in emails_of(c)]
        statuses = [s for s in state["subscriptions"] if s["email"] == address]
        purposes = {p.hubspot_subscription_id: p.id for p in PURPOSES}
        return Held(
            record_ids=frozenset(c["id"] for c in contacts),
            consents={
                purposes[s["subscriptionId"]]: STATES[s["status"]]
                for s in statuses
                if s["subscriptionId"] in purposes
            },
            opted_out=any(
                s["subscriptionId"] is None and s["status"] == "UNSUBSCRIBED" for s in statuses
            ),
            lawful_basis=common_basis(
                hubspot_basis(contacts[0]["properties"].get("hs_legal_basis"))
            )
            if contacts
            else None,
            last_names=frozenset(
                name for c in contacts if (name := c["properties"].get("lastname"))
            ),
        )

    def rows(self, vendor_object: str) -> list[dict[str, Any]]:
        """Contacts are HubSpot's only object here: every property of each, mirrors too."""
        assert vendor_object == "contact", vendor_object
        return [c["properties"] for c in self.state()["contacts"]]

    def ui_url(self, record_id: str) -> str:
        return f"https://app.hubspot.com/contacts/{PORTAL_ID}/record/0-1/{record_id}"

    def holds(self, record_id: str) -> Holds | None:
        """The adapter reads no related rows: a won deal holds no HubSpot contact."""
        return None

    def connections(self) -> frozenset[Hashable]:
        return open_connections(self.server.server)

    def set_faults(self, faults: Faults | None) -> None:
        if faults is None:
            self.admin.delete("/__emulator/faults").raise_for_status()
        else:
            self.admin.put("/__emulator/faults", json=vars(faults)).raise_for_status()

    def counters(self) -> dict[str, Any]:
        counters: dict[str, Any] = self.admin.get("/__emulator/counters").json()
        return counters

    def close(self) -> None:
        for adapter in self._adapters.values():
            adapter.close()


def emails_of(contact: dict[str, Any]) -> list[str]:
    properties = contact["properties"]
    extra = (properties.get("hs_additional_emails") or "").split(";")
    return [e for e in [properties.get("email"), *extra] if e]


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    config = HubSpotEmulatorConfig(
        strict_auth=True,
        access_tokens=[TOKEN, *APP_TOKENS.values()],
        rate_limits=EMULATOR_LIMITS,
        custom_properties=["notes"],
    )
    with serve_in_thread(create_app(config)) as running:
        yield running


@pytest.fixture(scope="module")
def admin(server: RunningServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=120) as client:
        yield client


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The conformance suite's consent tests run on every tier; the rest on the default."""
    if metafunc.function.__name__ in CONSENT_TESTS and "world" in metafunc.fixturenames:
        metafunc.parametrize("tier", TIERS)


@pytest.fixture
def tier() -> Tier:
    """The portal's Marketing Hub tier (tests that care parametrise it)."""
    return "enterprise"


@pytest.fixture
def harness(server: RunningServer, admin: httpx.Client, tier: Tier) -> Iterator[HubSpotHarness]:
    """An empty portal of the tier at the test limits, without faults, its counters at zero."""
    admin.post("/__emulator/reset").raise_for_status()
    admin.delete("/__emulator/faults").raise_for_status()
    admin.put("/__emulator/tier", json={"tier": tier}).raise_for_status()
    admin.put("/__emulator/rate-limits", json=EMULATOR_LIMITS.model_dump()).raise_for_status()
    admin.delete("/__emulator/counters").raise_for_status()
    running = HubSpotHarness(server, admin)
    yield running
    running.close()


@pytest.fixture
def world(harness: HubSpotHarness) -> HubSpotHarness:
    """The conformance suite's world: the harness."""
    return harness


class TestHubSpotConformance(AdapterConformance):
    """The adapter contract (``bridge.testing.conformance``), held against the HubSpot
    emulator."""


# -- the consent path each tier allows ---------------------------------------------------------

V4 = "/communication-preferences/v4/statuses"
SINGLE_READ = f"GET {V4}/{{subscriber:path}}"
SINGLE_WIDE_READ = f"GET {V4}/{{subscriber:path}}/unsubscribe-all"
SINGLE_WRITE = f"POST {V4}/{{subscriber:path}}"
SINGLE_UNSUBSCRIBE_ALL = f"POST {V4}/{{subscriber:path}}/unsubscribe-all"


def paths_logged(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "hubspot.consent_paths"]


@pytest.mark.parametrize("tier", TIERS)
def test_each_tier_takes_the_consent_path_its_token_allows_and_says_so_once(
    harness: HubSpotHarness, tier: Tier
) -> None:
    ids = harness.seed(
        [
            Person("ada@example.com", consents={"marketing": ConsentStatus.GRANTED}),
            Person("bob@example.com"),
        ]
    )
    adapter = harness.adapter()
    with structlog.testing.capture_logs() as logs:
        records = by_id(list(adapter.read()))
        write = ConsentWrite(harness.ref(ids[0]), "ada@example.com", None, ConsentStatus.WITHDRAWN)
        assert [o.status for o in adapter.write_consents([write])] == [WriteStatus.DONE]
    batch = tier == "enterprise"
    known = adapter.capabilities()
    assert (known.reads, known.writes) == ((Path.BATCH,) * 2 if batch else (Path.SINGLE,) * 2)
    assert known.scopes is not None and (BATCH_READ in known.scopes) is batch
    [line] = paths_logged(logs)
    assert (line["log_level"], line["reads"], line["writes"]) == ("info", known.reads, known.writes)
    assert any("single-address" in text for text in known.lines()) is not batch
    # Consent reads the same on every tier: the status and when it was set.
    [marketing] = [c for c in records[ids[0]].consents if c.purpose == "marketing"]
    assert marketing.status is ConsentStatus.GRANTED and marketing.changed_at is not None
    assert consent_of(records[ids[1]], "marketing") is ConsentStatus.UNKNOWN
    assert harness.held("ada@example.com").opted_out
    calls = harness.counters()["calls"]
    assert any("/statuses/batch/" in route for route in calls) is batch
    if not batch:  # one status read: for the one address whose properties show a status
        assert (calls[SINGLE_READ], calls[SINGLE_UNSUBSCRIBE_ALL]) == (1, 1)


@pytest.mark.parametrize("tier", ["professional"])
def test_below_enterprise_only_addresses_whose_properties_show_a_status_are_read(
    harness: HubSpotHarness,
) -> None:
    """220 contacts: 100 hold no status, 60 a subscription, 40 a withdrawal, 20 left all
    email. One status read each for the 100 with one, one opt-out read each for the 20."""
    granted = {"marketing": ConsentStatus.GRANTED}
    withdrawn = {"product_updates": ConsentStatus.WITHDRAWN}
    crowd = [
        *(Person(f"none{i}@example.com") for i in range(100)),
        *(Person(f"in{i}@example.com", consents=granted) for i in range(60)),
        *(Person(f"out{i}@example.com", consents=withdrawn) for i in range(40)),
        *(Person(f"left{i}@example.com", opted_out=True) for i in range(20)),
    ]
    ids = harness.seed(crowd)
    read = by_id(list(harness.adapter().read()))
    records = [read[i] for i in ids]
    calls = harness.counters()["calls"]
    assert calls["GET /crm/v3/objects/contacts"] == 3
    assert (calls[SINGLE_READ], calls[SINGLE_WIDE_READ]) == (100, 20)
    assert not [route for route in calls if "/statuses/batch/" in route]
    assert all(c.status is ConsentStatus.UNKNOWN for r in records[:100] for c in r.consents)
    assert all(consent_of(r, "marketing") is ConsentStatus.GRANTED for r in records[100:160])
    assert all(
        consent_of(r, "product_updates") is ConsentStatus.WITHDRAWN for r in records[160:200]
    )
    known = [
        c for r in records[100:200] for c in r.consents if c.status is not ConsentStatus.UNKNOWN
    ]
    assert len(known) == 100 and all(c.changed_at for c in known)
    assert all(r.opt_out and r.opt_out.email and r.opt_out.changed_at for r in records[200:])


@pytest.mark.parametrize("tier", ["starter", "professional"])
def test_a_token_that_hides_its_scopes_switches_on_the_first_missing_scopes_answer(
    harness: HubSpotHarness, tier: Tier
) -> None:
    """HubSpot lists no scopes for some tokens: batch is tried, and its 403 MISSING_SCOPES
    moves reads, then writes, to the single-address path for good, each with one line."""
    ids = harness.seed(
        [
            Person(f"p{i}@example.com", consents={"marketing": ConsentStatus.GRANTED})
            for i in range(3)
        ]
    )
    settings = HubSpotSettings(access_token=SecretStr(TOKEN), base_url=harness.server.url)
    transport = Transport(settings, ADAPTER_LIMITS, attempts=1, timeout=5.0)
    paths = ConsentPaths()  # no probe: the scopes are unknown
    preferences = Preferences(transport, PURPOSES, HUBSPOT_SUBSCRIPTION, paths, lambda *_: {})
    emails = [f"p{i}@example.com" for i in range(3)]
    writes = [
        ConsentWrite(harness.ref(i), e, "marketing", ConsentStatus.WITHDRAWN)
        for i, e in zip(ids, emails, strict=True)
    ]
    with structlog.testing.capture_logs() as logs:
        for _ in range(2):
            assert set(preferences.statuses(emails)) == set(emails)
            assert {o.status for o in preferences.write(writes)} <= {
                WriteStatus.DONE,
                WriteStatus.ALREADY,
            }
    transport.close()
    assert [(e["reads"], e["writes"]) for e in paths_logged(logs)] == [
        ("batch", "batch"), ("single", "batch"), ("single", "single")
    ]  # fmt: skip
    assert "MISSING_SCOPES to a batch write" in paths.current().lines()[-1]
    calls = harness.counters()["calls"]
    assert calls[f"POST {V4}/batch/read"] == 1 and calls[f"POST {V4}/batch/write"] == 1
    assert (calls[SINGLE_READ], calls[SINGLE_WRITE]) == (6, 6)
    assert all(harness.held(e).consents["marketing"] is ConsentStatus.WITHDRAWN for e in emails)


@respx.mock
def test_one_address_at_a_time_a_refused_status_read_is_left_out_without_personal_data(
    transport: Transport,
) -> None:
    """What HubSpot will not answer for one address does not fail the others; the contact's
    opt-out properties then say what they can (``mirrored``)."""
    paths = ConsentPaths(lambda: frozenset())  # a token without the batch scopes
    preferences = Preferences(transport, PURPOSES, HUBSPOT_SUBSCRIPTION, paths, lambda *_: {})
    status = {"subscriberIdString": "ada@example.com", "subscriptionId": 1, "status": "SUBSCRIBED"}
    respx.get(url__regex=r".*/statuses/ada%40example\.com\?channel=EMAIL$").mock(
        return_value=httpx.Response(200, json={"status": "COMPLETE", "results": [status]})
    )
    respx.get(url__regex=r".*/statuses/grace%40example\.com\?channel=EMAIL$").mock(
        return_value=error(400, {"category": "VALIDATION_ERROR", "message": "grace@example.com?"})
    )
    with structlog.testing.capture_logs() as logs:
        found = preferences.statuses(["Ada@Example.com", "grace@example.com"])
    assert found == {"ada@example.com": [status]}
    assert [e["operation"] for e in logs if e["event"] == "hubspot.status_unread"] == [
        "read_statuses"
    ]
    assert "grace" not in json.dumps(logs, default=str)
    properties = {"hs_email_optout_1": "false", "hs_email_optout_2": "true"}
    assert preferences.mirrored(properties) == [{"subscriptionId": "2", "status": "UNSUBSCRIBED"}]
    respx.get(url__regex=r".*/statuses/ada%40example\.com\?channel=EMAIL$").mock(
        return_value=error(403, {"category": "MISSING_SCOPES"})
    )
    with pytest.raises(MissingScopes):  # a token that may not read statuses at all
        preferences.statuses(["ada@example.com"])


# -- reading at scale and at the published limits ------------------------------------------------


def test_read_since_pages_past_the_10000_result_cap_exactly_once(harness: HubSpotHarness) -> None:
    """12,000 contacts changed in one window: every one comes back once, 200 per search.

    No purpose is configured, so the read is search alone: the emulator scans every contact
    on every search, and this test is about the window, not consent.
    """
    fast_search = EMULATOR_LIMITS.model_copy(update={"search_max": 10_000})
    harness.admin.put("/__emulator/rate-limits", json=fast_search.model_dump()).raise_for_status()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    older = [Person(f"old{i}@example.com", modified_at=start - timedelta(days=1)) for i in range(5)]
    changed = [
        Person(f"c{i}@example.com", modified_at=start + timedelta(seconds=i)) for i in range(12_000)
    ]
    expected = [i for at in range(0, 12_000, 4_000) for i in harness.seed(changed[at : at + 4_000])]
    harness.seed(older)
    harness.admin.delete("/__emulator/counters")
    limits = HubSpotLimits(burst_max=100, burst_seconds=1.0, search_max=10_000)
    with make_adapter(harness.server.url, purposes=(), limits=limits) as adapter:
        ids = [record.id for record in adapter.read(since=start)]
    assert len(ids) == len(set(ids)) == 12_000
    assert set(ids) == set(expected)
    calls = harness.counters()["calls"]
    assert calls["POST /crm/v3/objects/contacts/search"] == 12_000 // 200


@pytest.mark.parametrize("tier", TIERS)
def test_full_read_follows_rate_limit_headers_and_receives_no_429(
    harness: HubSpotHarness, tier: Tier
) -> None:
    """HubSpot's rate in a 1 s window, most of it already used by another app on the portal;
    below Enterprise the 40 opted out are read one address at a time, still without a 429."""
    limits = RateLimits(burst_max=10, burst_interval_ms=1_000)
    harness.admin.put("/__emulator/rate-limits", json=limits.model_dump()).raise_for_status()
    crowd = [Person(f"p{i}@example.com", opted_out=i % 10 == 0) for i in range(400)]
    harness.seed(crowd)
    for _ in range(7):
        harness.admin.get("/crm/v3/properties/contacts/email").raise_for_status()
    harness.admin.delete("/__emulator/counters")
    # Starts from the published limits; the first answer's headers correct them. Time runs ten
    # times faster here than in HubSpot's 10 s window: the margin stays what it is there (0.3 s),
    # so that a busy machine's stalls do not count as the adapter's pacing.
    published = HubSpotLimits(min_margin_seconds=0.3)
    with make_adapter(harness.server.url, APP_TOKENS[tier], limits=published) as adapter:
        records = list(adapter.read())
    assert len(records) == 400
    assert sum(r.opt_out is not None and r.opt_out.email for r in records) == 40
    # The minimum, after the token's scopes: 4 pages, then 4 status reads and 1 unsubscribe-all
    # read in batch, or (no status shows on the contacts) 40 unsubscribe-all reads one by one.
    consent = 5 if tier == "enterprise" else 40
    assert harness.counters()["total"] == 1 + 4 + consent  # nothing was refused


def test_adapters_of_one_app_in_one_process_share_its_window_and_receive_no_429(
    harness: HubSpotHarness,
) -> None:
    """Sync and erasure each build their own adapter; eight threads call through both at
    once. HubSpot counts the app's calls in one window, and so do they (issue 17)."""
    limits = RateLimits(burst_max=10, burst_interval_ms=1_000, search_max=100)
    harness.admin.put("/__emulator/rate-limits", json=limits.model_dump()).raise_for_status()
    [record_id] = harness.seed([Person("shared@example.com")])
    harness.admin.delete("/__emulator/counters")
    pace = HubSpotLimits(burst_max=10, burst_seconds=1.0, min_margin_seconds=0.3)
    calls = 30
    with (
        make_adapter(harness.server.url, limits=pace) as sync,
        make_adapter(harness.server.url, limits=pace) as erasure,
        ThreadPoolExecutor(max_workers=8) as pool,
    ):
        adapters = [sync, erasure]
        emails = list(
            pool.map(lambda i: adapters[i % 2].emails_of(harness.ref(record_id)), range(calls))
        )
    assert emails == [["shared@example.com"]] * calls
    # The emulator counts every call it answers, a 429 too: each read was answered once.
    assert harness.counters()["total"] == calls


def test_incremental_read_keeps_search_under_five_a_second(harness: HubSpotHarness) -> None:
    published = EMULATOR_LIMITS.model_copy(update={"search_max": 5})
    harness.admin.put("/__emulator/rate-limits", json=published.model_dump()).raise_for_status()
    harness.seed([Person(f"p{i}@example.com") for i in range(1_200)])
    harness.admin.delete("/__emulator/counters")
    since = datetime.now(UTC) - timedelta(hours=1)
    with make_adapter(harness.server.url, limits=HubSpotLimits(burst_seconds=1.0)) as adapter:
        assert len(list(adapter.read(since=since))) == 1_200
    calls = harness.counters()["calls"]
    assert calls["POST /crm/v3/objects/contacts/search"] == 6  # none refused, none repeated


def test_find_by_emails_batches_100_and_searches_additional_addresses_five_a_call(
    harness: HubSpotHarness,
) -> None:
    crowd = [
        Person(f"p{i}@example.com", additional_emails=(f"alias{i}@example.com",))
        for i in range(150)
    ]
    ids = harness.seed(crowd)
    # The first 138 by primary address (their aliases come along), the last 12 by alias only.
    asked = [p.email for p in crowd[:138]] + [f"alias{i}@example.com" for i in range(138, 150)]
    found = harness.adapter().find_by_emails([*asked, "x@example.com", "X@example.com"])
    assert sorted(r.id for r in found) == sorted(ids)
    calls = harness.counters()["calls"]
    assert calls["POST /crm/v3/objects/contacts/batch/read"] == 2  # 151 addresses; 207s
    assert calls["POST /crm/v3/objects/contacts/search"] == math.ceil(13 / 5)


def test_find_by_emails_reaches_unicode_local_parts_in_either_normal_form(
    harness: HubSpotHarness,
) -> None:
    addresses = ["jörg.müller@example.com", "δοκιμή@example.com"]
    ids = harness.seed([Person(a) for a in addresses])
    asked = [unicodedata.normalize("NFD", addresses[0]).upper(), addresses[1].upper()]
    found = harness.adapter().find_by_emails(asked)
    assert sorted(r.id for r in found) == sorted(ids)
    assert sorted(e for r in found for e in r.emails) == sorted(addresses)


def test_unmappable_legal_basis_is_reported_with_the_record_id_never_guessed(
    harness: HubSpotHarness,
) -> None:
    [record_id] = harness.seed([Person("mixed@example.com")])
    both = "Performance of a contract;Freely given consent from contact"
    update = {"contacts": [{"email": "mixed@example.com", "hs_legal_basis": both}]}
    harness.admin.post("/__emulator/seed", json=update).raise_for_status()
    with structlog.testing.capture_logs() as logs:
        [record] = harness.adapter().find_by_emails(["mixed@example.com"])
    assert record.lawful_basis is None
    [warning] = [e for e in logs if e["event"] == "hubspot.unmappable_lawful_basis"]
    assert warning["record_id"] == record_id and warning["value"] == both


# -- consent writes --------------------------------------------------------------------------------


@pytest.mark.parametrize("tier", TIERS)
def test_grant_after_an_opt_out_needs_self_service_and_is_not_retried(
    harness: HubSpotHarness,
) -> None:
    ids = harness.seed(
        [
            Person("withdrew@example.com", consents={"marketing": ConsentStatus.WITHDRAWN}),
            Person("left@example.com", opted_out=True),
        ]
    )
    writes = [
        ConsentWrite(
            harness.ref(record_id), email, "marketing", ConsentStatus.GRANTED, LawfulBasis.CONSENT
        )
        for record_id, email in zip(ids, ["withdrew@example.com", "left@example.com"], strict=True)
    ]
    with structlog.testing.capture_logs() as logs:
        outcomes = harness.adapter().write_consents(writes)
    assert [o.status for o in outcomes] == [WriteStatus.NEEDS_SELF_SERVICE] * 2
    calls = harness.counters()["calls"]
    # Their statuses, read first in one batch (below Enterprise: their contacts' opt-out
    # properties), already say HubSpot would refuse: no attempt.
    assert "POST /communication-preferences/v3/subscribe" not in calls
    assert harness.held("withdrew@example.com").consents["marketing"] is ConsentStatus.WITHDRAWN
    assert "@example.com" not in json.dumps(logs, default=str)  # HubSpot's refusal names it


def test_writes_that_cannot_be_expressed_fail_alone_without_personal_data(
    harness: HubSpotHarness,
) -> None:
    [record_id] = harness.seed([Person("fine@example.com")])
    ref = harness.ref(record_id)
    outcomes = harness.adapter().write_consents(
        [
            ConsentWrite(ref, "bad address@example.com", "marketing", ConsentStatus.WITHDRAWN),
            ConsentWrite(ref, "fine@example.com", "marketing", ConsentStatus.WITHDRAWN),
            ConsentWrite(ref, "fine@example.com", "unmapped", ConsentStatus.WITHDRAWN),
            ConsentWrite(ref, "fine@example.com", "product_updates", ConsentStatus.UNKNOWN),
            ConsentWrite(ref, "fine@example.com", None, ConsentStatus.GRANTED),
            ConsentWrite(
                ref,
                "fine@example.com",
                "product_updates",
                ConsentStatus.GRANTED,
                LawfulBasis.LEGAL_OBLIGATION,
            ),
        ]
    )
    assert [o.status for o in outcomes] == [
        WriteStatus.FAILED,  # HubSpot's 207 names the invalid address
        WriteStatus.DONE,
        WriteStatus.FAILED,  # a purpose without a HubSpot subscription
        WriteStatus.FAILED,  # unknown is not a state
        WriteStatus.NEEDS_SELF_SERVICE,  # only the person lifts an unsubscribe-all
        WriteStatus.FAILED,  # no subscription legal basis says "legal obligation"
    ]
    assert "invalid email" in outcomes[0].detail.lower()
    assert "@example.com" not in outcomes[0].detail


def test_writes_land_exactly_once_under_faults(harness: HubSpotHarness) -> None:
    """20% of write calls fail (5xx or dropped); each batch still lands once, every outcome DONE."""
    crowd = [
        Person(f"p{i}@example.com", consents={"marketing": ConsentStatus.GRANTED})
        for i in range(200)
    ]
    ids = harness.seed(crowd)
    routes = [
        "POST /communication-preferences/v4/statuses/batch/write",
        "POST /communication-preferences/v4/statuses/batch/unsubscribe-all",
        "POST /communication-preferences/v3/subscribe",
        "POST /crm/v3/objects/contacts/batch/update",
    ]
    faults = {
        "error_rate": 0.2,
        "error_status": 502,
        "drop_rate": 0.1,
        "endpoints": routes,
        "seed": 11,
    }
    harness.admin.put("/__emulator/faults", json=faults).raise_for_status()
    refs = [harness.ref(i) for i in ids]
    consent_writes = [
        *(
            ConsentWrite(refs[i], crowd[i].email, "marketing", ConsentStatus.WITHDRAWN)
            for i in range(150)
        ),
        *(
            ConsentWrite(refs[i], crowd[i].email, None, ConsentStatus.WITHDRAWN)
            for i in range(150, 170)
        ),
        *(
            ConsentWrite(refs[i], crowd[i].email, "product_updates", ConsentStatus.GRANTED)
            for i in range(170, 182)
        ),
    ]
    adapter = harness.adapter()
    assert {o.status for o in adapter.write_consents(consent_writes)} == {WriteStatus.DONE}
    basis_writes = [LawfulBasisWrite(r, LawfulBasis.CONTRACT) for r in refs[:150]]
    assert {o.status for o in adapter.write_lawful_bases(basis_writes)} == {WriteStatus.DONE}
    counters = harness.counters()
    answered = sum(counters["calls"].get(route, 0) for route in routes)
    landed = answered - counters["injected"].get("error", 0)
    assert counters["injected"].get("error", 0) + counters["injected"].get("drop", 0) > 0
    assert landed == 2 + 1 + 12 + 2  # v4 batch writes, unsubscribe-all, subscribes, updates


def test_lawful_basis_writes_keep_a_specific_option_and_report_what_failed(
    harness: HubSpotHarness,
) -> None:
    customer = "Legitimate interest \u2013 existing customer"
    ids = harness.seed([Person("client@example.com"), Person("lead@example.com")])
    update = {"contacts": [{"email": "client@example.com", "hs_legal_basis": customer}]}
    harness.admin.post("/__emulator/seed", json=update).raise_for_status()
    client, lead = (harness.ref(i) for i in ids)
    outcomes = harness.adapter().write_lawful_bases(
        [
            LawfulBasisWrite(client, LawfulBasis.LEGITIMATE_INTERESTS),
            LawfulBasisWrite(client, LawfulBasis.LEGAL_OBLIGATION),
            LawfulBasisWrite(lead, LawfulBasis.CONTRACT),
            LawfulBasisWrite(lead, LawfulBasis.CONSENT),
            LawfulBasisWrite(harness.ref("999999"), LawfulBasis.CONSENT),
        ]
    )
    assert [(o.status, o.detail) for o in outcomes] == [
        (WriteStatus.ALREADY, ""),
        (WriteStatus.FAILED, "hubspot hs_legal_basis: no mapping for 'legal_obligation'"),
        (WriteStatus.FAILED, "superseded by a later write in this call"),
        (WriteStatus.DONE, ""),
        (WriteStatus.FAILED, "record not found"),
    ]
    properties = {c["properties"]["email"]: c["properties"] for c in harness.state()["contacts"]}
    assert properties["client@example.com"]["hs_legal_basis"] == customer
    assert properties["lead@example.com"]["hs_legal_basis"] == "Freely given consent from contact"


# -- erasure and export ----------------------------------------------------------------------------


def test_a_contact_with_three_addresses_is_erased_and_all_three_are_blocklisted(
    harness: HubSpotHarness,
) -> None:
    [record_id] = harness.seed(
        [Person("one@example.com", additional_emails=("two@example.com", "three@example.com"))]
    )
    adapter = harness.adapter()
    [targets] = adapter.erasure_targets([["Three@example.com", "stranger@example.com"]])
    assert [(t.id, t.email) for t in targets] == [
        (record_id, "one@example.com"),
        (None, "three@example.com"),
        (None, "stranger@example.com"),
        (None, "one@example.com"),
        (None, "two@example.com"),
    ]
    results = answered(adapter.erase(targets, "delete"))
    assert {r.status for r in results} == {ErasureStatus.ERASED}
    # The contact's deletion blocklisted its primary address: that one needed no call.
    assert results[3].detail == f"blocklisted by the gdpr-delete of contact {record_id}"
    blocked = {entry["email"] for entry in harness.state()["blocklist"]}
    assert blocked == {
        "one@example.com",
        "two@example.com",
        "three@example.com",
        "stranger@example.com",
    }
    rejected = harness.admin.post(
        "/__emulator/import", json={"contacts": [{"email": "two@example.com"}]}
    )
    assert rejected.json()["rejected"] == [{"email": "two@example.com", "reason": "BLOCKLISTED"}]
    assert harness.counters()["calls"]["POST /crm/v3/objects/contacts/gdpr-delete"] == 4


def test_erasing_many_people_costs_a_gdpr_delete_each_and_a_batch_read_per_hundred(
    harness: HubSpotHarness,
) -> None:
    """The minimum HubSpot allows: gdpr-delete has no batch form, so one per contact; the
    contacts of everyone are found 100 addresses per read; the contacts' deletions blocklist
    their addresses, which then need no call of their own. (Calls counted, not paced: the
    portal's limits are lifted, so a stall of this machine cannot add a retried 429.)"""
    unlimited = EMULATOR_LIMITS.model_copy(update={"enabled": False})
    harness.admin.put("/__emulator/rate-limits", json=unlimited.model_dump()).raise_for_status()
    people = 250
    emails = [f"person{i}@example.com" for i in range(people)]
    ids = harness.seed([Person(e) for e in emails])
    adapter = harness.adapter()
    found = adapter.erasure_targets([[e] for e in reversed(emails)])
    assert [[t.id for t in targets] for targets in found] == [[i, None] for i in reversed(ids)]
    results = answered(adapter.erase([t for targets in found for t in targets], "delete"))
    assert {r.status for r in results} == {ErasureStatus.ERASED}
    assert harness.counters()["calls"] == {
        "POST /crm/v3/objects/contacts/batch/read": math.ceil(people / 100),
        "POST /crm/v3/objects/contacts/gdpr-delete": people,
    }
    state = harness.state()
    assert state["contacts"] == []
    assert {e["email"] for e in state["blocklist"]} == set(emails)


def test_a_contact_two_people_reach_is_in_both_lists_and_erased_once(
    harness: HubSpotHarness,
) -> None:
    [shared, own] = harness.seed(
        [
            Person("family@example.com", additional_emails=("kid@example.com",)),
            Person("parent@example.com"),
        ]
    )
    adapter = harness.adapter()
    [kid, parent] = adapter.erasure_targets(
        [["Kid@example.com"], ["parent@example.com", "family@example.com"]]
    )
    assert [t.id for t in kid] == [shared, None, None]
    assert {t.id for t in parent[:2]} == {shared, own}
    assert [t.id for t in parent[2:]] == [None, None, None]
    assert {t.email for t in parent if t.id is None} == {
        "parent@example.com",
        "family@example.com",
        "kid@example.com",
    }
    results = answered(adapter.erase([*kid, *parent], "delete"))
    assert [r.target for r in results] == [*kid, *parent]
    assert {r.status for r in results} == {ErasureStatus.ERASED}
    # Two contacts, and the one address that was no deleted contact's primary.
    assert harness.counters()["calls"]["POST /crm/v3/objects/contacts/gdpr-delete"] == 3


def test_a_refusal_every_call_would_share_is_not_sent_again(harness: HubSpotHarness) -> None:
    """A refused token raises at the first call; the day's quota running out mid-batch is
    the answer of every target still needing a call, and the targets done keep theirs."""
    ids = harness.seed([Person(f"p{i}@example.com") for i in range(5)])
    contacts = [
        ErasureTarget(HUBSPOT, "contact", i, f"p{n}@example.com") for n, i in enumerate(ids)
    ]
    with pytest.raises(Permanent) as login:
        harness.unauthorised_adapter().erase(contacts, "delete")
    assert login.value.failure is Failure.CREDENTIALS
    assert harness.counters()["calls"]["POST /crm/v3/objects/contacts/gdpr-delete"] == 1
    adapter = harness.adapter()
    targets = [
        t
        for person in adapter.erasure_targets([[f"p{i}@example.com"] for i in range(5)])
        for t in person
    ]
    used = harness.counters()["total"] - 1  # the refused call counted nothing against the day
    day = EMULATOR_LIMITS.model_copy(update={"daily_max": used + 3})
    harness.admin.put("/__emulator/rate-limits", json=day.model_dump()).raise_for_status()
    results = adapter.erase(targets, "delete")
    erased = [r for r in results if isinstance(r, ErasureResult)]
    assert [r.target for r in erased] == targets[:6]  # three contacts, with their addresses
    assert {r.status for r in erased} == {ErasureStatus.ERASED}
    quota = [r for r in results if isinstance(r, Permanent)]
    assert quota == results[6:] and {r.code for r in quota} == {"DAILY"}
    assert harness.counters()["calls"]["POST /crm/v3/objects/contacts/gdpr-delete"] == 1 + 4
    with pytest.raises(Permanent, match="daily API limit"):
        adapter.erase(targets[6:], "delete")
    assert harness.counters()["calls"]["POST /crm/v3/objects/contacts/gdpr-delete"] == 1 + 5


def test_a_target_hubspot_refuses_alone_gets_its_error_and_the_rest_are_erased(
    harness: HubSpotHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = harness.seed([Person(f"p{i}@example.com") for i in range(3)])
    adapter = harness.adapter()
    basic = adapter._t.basic  # HubSpot's own refusal of one input, in the SDK's shape
    purge = basic.purge_with_http_info

    def refuse_the_second(request: Any, **options: Any) -> Any:
        if request.object_id == ids[1]:
            refusal = ContactsApiException(status=400, reason="Bad Request")
            refusal.body = json.dumps(
                {"category": "VALIDATION_ERROR", "message": "p1@example.com?"}
            )
            raise refusal
        return purge(request, **options)

    monkeypatch.setattr(basic, "purge_with_http_info", refuse_the_second)
    contacts = [ErasureTarget(HUBSPOT, "contact", i) for i in ids]
    [first, refused, third] = adapter.erase(contacts, "delete")
    assert isinstance(first, ErasureResult) and isinstance(third, ErasureResult)
    assert first.status is third.status is ErasureStatus.ERASED
    assert isinstance(refused, Permanent) and refused.code == "VALIDATION_ERROR"
    assert "p1@example.com" not in str(refused)
    assert [c["id"] for c in harness.state()["contacts"]] == [ids[1]]


def test_anonymised_contact_gets_placeholders_hubspot_accepts(harness: HubSpotHarness) -> None:
    [record_id] = harness.seed(
        [
            Person(
                "hidden@example.com",
                additional_emails=("alias@example.com",),
                consents={"marketing": ConsentStatus.GRANTED},
            )
        ]
    )
    adapter = harness.adapter()
    [targets] = adapter.erasure_targets([["hidden@example.com"]])
    results = answered(adapter.erase(targets, "anonymize"))
    assert [r.status for r in results] == [
        ErasureStatus.ANONYMIZED,
        ErasureStatus.ERASED,
        ErasureStatus.ERASED,
    ]
    state = harness.state()
    [contact] = state["contacts"]
    assert contact["id"] == record_id
    assert re.fullmatch(r"anon-[0-9a-f]{8}@invalid\.example", contact["properties"]["email"])
    assert contact["properties"]["firstname"] == contact["properties"]["lastname"] == "Anonymised"
    assert not contact["properties"].get("hs_additional_emails")
    # The address-level data went with the addresses: statuses erased, addresses blocklisted.
    assert [s for s in state["subscriptions"] if "example.com" in s["email"]] == []
    assert {e["email"] for e in state["blocklist"]} == {"hidden@example.com", "alias@example.com"}


def seed_customer(harness: HubSpotHarness) -> str:
    """A customer with statistics, personal details in free text, and an opt-out."""
    person = {
        "email": "customer@example.com",
        "firstname": "Siobhán",
        "lastname": "O'Brien",
        "phone": "+44 20 7946 0000",
        "lifecyclestage": "customer",
        "hs_legal_basis": "Performance of a contract",
        "properties": {
            "hs_lead_status": "CONNECTED",
            "company": "O'Brien Ltd",
            "jobtitle": "Head of Data",
            "notes": "Siobhán prefers calls after 5pm",
        },
        "subscriptions": [{"status": "UNSUBSCRIBED"}],
    }
    reply = harness.admin.post("/__emulator/seed", json={"contacts": [person]})
    reply.raise_for_status()
    record_id: str = reply.json()["contacts"][0]["id"]
    return record_id


def anonymise_customer(harness: HubSpotHarness, adapter: HubSpotAdapter) -> dict[str, Any]:
    """Anonymise the seeded customer by id; its properties afterwards."""
    record_id = seed_customer(harness)
    target = ErasureTarget(HUBSPOT, "contact", record_id, "customer@example.com")
    [result] = answered(adapter.erase([target], "anonymize"))
    assert result.status is ErasureStatus.ANONYMIZED
    [contact] = harness.state()["contacts"]
    properties: dict[str, Any] = contact["properties"]
    return properties


def test_anonymising_keeps_statistics_and_the_opt_out_and_empties_the_rest(
    harness: HubSpotHarness,
) -> None:
    properties = anonymise_customer(harness, harness.adapter())
    assert (properties["lifecyclestage"], properties["hs_lead_status"]) == ("customer", "CONNECTED")
    for emptied in ("phone", "company", "jobtitle", "notes", "hs_legal_basis"):
        assert not properties.get(emptied), emptied
    assert properties["firstname"] == properties["lastname"] == "Anonymised"
    assert re.fullmatch(r"anon-[0-9a-f]{8}@invalid\.example", properties["email"])
    assert "Brien" not in json.dumps(properties) and "Siobh" not in json.dumps(properties)
    # The opt-out is the address's: anonymising the contact leaves it where it was.
    assert harness.held("customer@example.com").opted_out


def test_a_property_added_to_the_keep_list_survives_anonymisation(
    harness: HubSpotHarness,
) -> None:
    keep = {"hubspot.contact": ["jobtitle"]}
    with make_adapter(harness.server.url, keep_on_anonymize=keep) as adapter:
        properties = anonymise_customer(harness, adapter)
    assert properties["jobtitle"] == "Head of Data"
    # The configured list replaces the default one: the lifecycle stage is no longer kept.
    assert not properties.get("lifecyclestage") and not properties.get("notes")


def test_export_lists_every_property_and_every_subscription_status(harness: HubSpotHarness) -> None:
    [record_id] = harness.seed(
        [
            Person(
                "kept@example.com",
                lawful_basis=LawfulBasis.CONSENT,
                consents={"marketing": ConsentStatus.GRANTED},
                opted_out=True,
            )
        ]
    )
    more = {
        "email": "kept@example.com",
        "phone": "+44 20 7946 0000",
        "properties": {"city": "London"},
    }
    harness.admin.post("/__emulator/seed", json={"contacts": [more]}).raise_for_status()
    exported = harness.adapter().export(["kept@example.com"])
    [contact] = exported["contacts"]
    assert contact["id"] == record_id
    assert contact["properties"]["city"] == "London"
    assert contact["properties"]["phone"] == "+44 20 7946 0000"
    assert contact["properties"]["hs_legal_basis"] == "Freely given consent from contact"
    [prefs] = exported["communication_preferences"]
    assert {(s["subscriptionId"], s["status"]) for s in prefs["subscriptions"]} == {
        (1, "SUBSCRIBED")
    }
    assert prefs["unsubscribed_from_all"]["status"] == "UNSUBSCRIBED"


def test_rectify_corrects_every_contact_holding_the_addresses(harness: HubSpotHarness) -> None:
    [primary, further, other] = harness.seed(
        [
            Person("ada@example.com"),
            Person("countess@example.com", additional_emails=("ada.king@example.com",)),
            Person("someone@example.com"),
        ]
    )
    adapter = harness.adapter()
    changes = {"last_name": "King", "phone": "+44 20 7946 0001"}
    outcomes = adapter.rectify(["ada@example.com", "ADA.King@example.com"], changes)
    assert {o.record.id: o.status for o in outcomes} == {
        primary: WriteStatus.DONE,
        further: WriteStatus.DONE,
    }
    assert {o.record.object_type for o in outcomes} == {"contact"}
    contacts = {c["id"]: c["properties"] for c in harness.state()["contacts"]}
    for record_id in (primary, further):
        assert contacts[record_id]["lastname"] == "King"
        assert contacts[record_id]["phone"] == "+44 20 7946 0001"
        assert contacts[record_id]["firstname"] == "Ada"  # not corrected: kept
    assert contacts[other]["lastname"] == "Lovelace" and not contacts[other].get("phone")
    again = adapter.rectify(["ada@example.com", "ada.king@example.com"], changes)
    assert {o.status for o in again} == {WriteStatus.ALREADY}
    assert harness.counters()["calls"]["POST /crm/v3/objects/contacts/batch/update"] == 1


def test_rectify_refuses_unmapped_fields_and_values_too_long_without_the_value(
    harness: HubSpotHarness,
) -> None:
    harness.seed([Person("ada@example.com")])
    adapter = harness.adapter()
    too_long = "K" * 65_537
    refused = adapter.rectify(["ada@example.com"], {"last_name": too_long, "first_name": "Augusta"})
    [outcome] = refused
    assert outcome.status is WriteStatus.FAILED
    assert "last_name" in outcome.detail and "65,536" in outcome.detail
    for personal in (too_long[:20], "Augusta", "ada@example.com"):
        assert personal not in outcome.detail
    [unmapped] = adapter.rectify(["ada@example.com"], {"nickname": "Augusta"})
    assert unmapped.status is WriteStatus.FAILED
    assert unmapped.detail == "hubspot has no field for nickname"
    assert "POST /crm/v3/objects/contacts/batch/update" not in harness.counters()["calls"]
    before = harness.counters()["calls"]
    assert [str(p) for p in adapter.check_rectify({"last_name": too_long, "phone": "1"})] == [
        "last_name: hubspot contact.lastname holds at most 65,536 characters"
    ]
    assert adapter.check_rectify({"first_name": "K" * 65_536}) == []
    assert harness.counters()["calls"] == before  # checked without asking HubSpot
    [contact] = harness.state()["contacts"]
    assert (contact["properties"]["firstname"], contact["properties"]["lastname"]) == (
        "Ada",
        "Lovelace",
    )


def test_rectify_reports_a_207s_refusals_by_category_and_property_never_the_message() -> None:
    errors = [
        {
            "category": "VALIDATION_ERROR",
            "message": "Ada Lovelace was not one of the allowed options",
            "context": {"id": ["7"]},
            "errors": [{"code": "INVALID_OPTION", "context": {"propertyName": ["lastname"]}}],
        },
        {"category": "OBJECT_NOT_FOUND", "message": "resource not found", "context": {"id": ["8"]}},
    ]
    assert _refusals(errors) == {"7": "VALIDATION_ERROR (lastname)", "8": "OBJECT_NOT_FOUND"}


# -- the error table and the v4 transport ----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (429, "DAILY", Permanent),
        (429, "TEN_SECONDLY_ROLLING", RateLimited),
        (429, "SECONDLY", RateLimited),
        (423, None, RateLimited),
        (477, None, RateLimited),
        (401, "INVALID_AUTHENTICATION", Permanent),
        (403, "MISSING_SCOPES", MissingScopes),  # a Permanent that switches the consent path
        (403, "BANNED", Permanent),
        (404, "OBJECT_NOT_FOUND", NotFound),
        (409, "CONFLICT", Permanent),
        (400, "VALIDATION_ERROR", Permanent),
        (500, "INTERNAL_ERROR", Transient),
        (502, None, Transient),
        (504, None, Transient),
        (0, None, Transient),
        (None, "CONNECTION", Transient),
    ],
)
def test_the_error_table(status: int | None, code: str | None, expected: type) -> None:
    assert classify(ERRORS, status, code) is expected


@pytest.fixture
def transport() -> Iterator[Transport]:
    settings = HubSpotSettings(access_token=SecretStr(TOKEN), base_url="https://hubspot.test")
    running = Transport(settings, HubSpotLimits(), attempts=1, timeout=5.0)
    yield running
    running.close()


@pytest.fixture
def preferences(transport: Transport) -> Preferences:
    """Preferences that assume batch until refused, and find no contacts."""
    return Preferences(transport, PURPOSES, HUBSPOT_SUBSCRIPTION, ConsentPaths(), lambda *_: {})


def error(status: int, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.Response(
        status, json={"status": "error", "correlationId": "c", **body}, headers=headers
    )


@respx.mock
@pytest.mark.parametrize(
    ("answer", "expected", "retry_after"),
    [
        (
            error(429, {"policyName": "TEN_SECONDLY_ROLLING", "errorType": "RATE_LIMIT"}),
            RateLimited,
            10.3,
        ),
        (error(429, {"policyName": "DAILY", "errorType": "RATE_LIMIT"}), Permanent, None),
        (error(423, {"category": "LOCKED"}), RateLimited, 2.0),
        (
            error(477, {"category": "MIGRATION_IN_PROGRESS"}, **{"Retry-After": "7"}),
            RateLimited,
            7.0,
        ),
        (error(503, {"category": "INTERNAL_ERROR"}), Transient, None),
        (error(404, {"category": "OBJECT_NOT_FOUND"}), NotFound, None),
        (error(403, {"category": "BANNED"}), Permanent, None),
        (httpx.Response(502, text="<html>Bad gateway</html>"), Transient, None),
    ],
)
def test_v4_answers_map_through_the_same_table(
    preferences: Preferences, answer: httpx.Response, expected: type, retry_after: float | None
) -> None:
    respx.post(V4_READ).mock(return_value=answer)
    with pytest.raises(expected) as caught:
        preferences.statuses(["ada@example.com"])
    assert getattr(caught.value, "retry_after", None) == pytest.approx(retry_after)
    if answer.status_code == 429 and expected is Permanent:
        assert "daily API limit" in str(caught.value)


@respx.mock
def test_v4_messages_lose_personal_data_and_connection_errors_are_transient(
    preferences: Preferences,
) -> None:
    message = "ada.lovelace@example.com is invalid; call +44 20 7946 0000"
    respx.post(V4_READ).mock(
        return_value=error(400, {"category": "VALIDATION_ERROR", "message": message})
    )
    with pytest.raises(Permanent) as caught:
        preferences.statuses(["ada.lovelace@example.com"])
    assert "ada.lovelace" not in str(caught.value) and "7946" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    respx.post(V4_READ).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(Transient):
        preferences.statuses(["ada@example.com"])


@respx.mock
def test_v4_partial_batches_keep_the_good_results_and_feed_the_limiter(
    preferences: Preferences, transport: Transport
) -> None:
    status = {"subscriberIdString": "ada@example.com", "subscriptionId": 1, "status": "SUBSCRIBED"}
    body = {
        "status": "COMPLETE",
        "results": [{"subscriberIdString": "ada@example.com", "statuses": [status]}],
        "numErrors": 1,
        "errors": [
            {
                "status": "error",
                "category": "VALIDATION_ERROR",
                "message": "bad",
                "context": {"subscriberIdString": ["x"]},
            }
        ],
    }
    headers = {
        "X-HubSpot-RateLimit-Max": "190",
        "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
        "X-HubSpot-RateLimit-Remaining": "150",
    }
    respx.post(V4_READ).mock(return_value=httpx.Response(207, json=body, headers=headers))
    with structlog.testing.capture_logs() as logs:
        found = preferences.statuses(["Ada@Example.com", "x"])
    assert found == {"ada@example.com": [status]}
    assert [e["errors"] for e in logs if e["event"] == "hubspot.partial_batch"] == [1]
    assert transport.burst_limiter.max_calls == 190  # a Professional portal's limit
    assert transport.burst_limiter.per_seconds == pytest.approx(10.3)


@pytest.mark.parametrize(
    "failure",
    [
        MaxRetryError(None, "/crm/v3/objects/contacts"),  # type: ignore[arg-type]
        ProtocolError("Connection aborted."),
        ContactsApiException(status=0, reason="SSLError"),
    ],
)
def test_sdk_calls_that_get_no_answer_are_transient(
    transport: Transport, failure: Exception
) -> None:
    def send() -> Any:
        raise failure

    with pytest.raises(Transient):
        transport.call("list_contacts", send)


def test_a_transient_failure_is_retried_and_every_attempt_counted() -> None:
    answers: list[Any] = [ProtocolError("reset"), ({"ok": True}, 200, {})]
    settings = HubSpotSettings(access_token=SecretStr(TOKEN), base_url="https://hubspot.test")
    retried = Transport(settings, HubSpotLimits(), attempts=2, timeout=5.0)

    def send() -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"vendor": "hubspot", **labels}) or 0.0

    calls, errors = sample(CALLS, operation="probe"), sample(ERRORS_METRIC, error="Transient")
    assert retried.call("probe", send) == {"ok": True}
    assert sample(CALLS, operation="probe") == calls + 2
    assert sample(ERRORS_METRIC, error="Transient") == errors + 1
    retried.close()


# -- the lawful-basis vocabularies ---------------------------------------------------------------

VOCABULARIES = (HUBSPOT_PROPERTY, HUBSPOT_SUBSCRIPTION)
# HubSpot's own words (what to write for each basis, what each value reads as), as the sandbox
# copied them from the reference: the vocabularies are checked against these, not themselves.
REFERENCE = {
    HUBSPOT_PROPERTY.name: (HUBSPOT_LEGAL_BASIS, HUBSPOT_LEGAL_BASIS_READ),
    HUBSPOT_SUBSCRIPTION.name: (
        HUBSPOT_SUBSCRIPTION_LEGAL_BASIS,
        HUBSPOT_SUBSCRIPTION_LEGAL_BASIS_READ,
    ),
}
# HubSpot has no option for these Art. 6 bases: writing them is refused, never approximated.
NO_HUBSPOT_WORD = {
    LawfulBasis.LEGAL_OBLIGATION,
    LawfulBasis.VITAL_INTERESTS,
    LawfulBasis.PUBLIC_TASK,
}


@given(st.sampled_from(LawfulBasis), st.sampled_from(VOCABULARIES))
def test_every_mappable_basis_maps_there_and_back(
    basis: LawfulBasis, vocabulary: Vocabulary
) -> None:
    if basis in NO_HUBSPOT_WORD:
        with pytest.raises(Unmappable, match=basis.value):
            vocabulary.to_vendor(basis)
        return
    written, _ = REFERENCE[vocabulary.name]
    assert vocabulary.to_vendor(basis) == written[basis.value]
    assert vocabulary.from_vendor(written[basis.value]) is basis
    assert vocabulary.from_multi(written[basis.value]) is basis


@pytest.mark.parametrize("vocabulary", VOCABULARIES, ids=lambda v: v.name)
def test_every_hubspot_value_reads_as_the_reference_says(vocabulary: Vocabulary) -> None:
    _, read = REFERENCE[vocabulary.name]
    assert {value: vocabulary.from_vendor(value) for value in read} == {
        value: LawfulBasis(basis) for value, basis in read.items()
    }


NEAR_MISSES = (
    "Legitimate interest",
    "Legitimate interest \u2013 other customer",
    "Performance of contract",
    "Consent",
    "LEGITIMATE_INTEREST",
    "PROCESS_AND_STORE",
)


@given(
    st.one_of(st.sampled_from(NEAR_MISSES), st.text(string.digits + string.punctuation + " ")),
    st.sampled_from(VOCABULARIES),
)
def test_an_unknown_vendor_value_is_never_guessed(value: str, vocabulary: Vocabulary) -> None:
    with pytest.raises(Unmappable) as caught:
        vocabulary.from_vendor(value)
    assert caught.value.value == value


@given(st.lists(st.sampled_from(sorted(HUBSPOT_LEGAL_BASIS_READ)), min_size=1, max_size=4))
def test_a_multi_select_maps_only_when_its_options_agree(options: list[str]) -> None:
    bases = {LawfulBasis(HUBSPOT_LEGAL_BASIS_READ[o]) for o in options}
    value = ";".join(options)
    if len(bases) == 1:
        assert HUBSPOT_PROPERTY.from_multi(value) in bases
    else:
        with pytest.raises(Unmappable):
            HUBSPOT_PROPERTY.from_multi(value)


def test_hubspot_options_are_written_with_hubspots_exact_dashes() -> None:
    written = set(DEFAULT_HUBSPOT.property.written.values())
    assert written <= set(LEGAL_BASIS_OPTIONS)  # the emulator holds HubSpot's exact strings
    assert set(DEFAULT_HUBSPOT.property.read) == set(LEGAL_BASIS_OPTIONS)
    en_dash = "Legitimate interest \u2013 prospect/lead"
    assert (
        HUBSPOT_PROPERTY.from_vendor(en_dash.replace("\u2013", "-"))
        is LawfulBasis.LEGITIMATE_INTERESTS
    )
    assert HUBSPOT_PROPERTY.from_multi("") is None
    with pytest.raises(Unmappable):
        HUBSPOT_SUBSCRIPTION.from_vendor("PROCESS_AND_STORE")  # undocumented basis: reported


def test_a_vocabulary_that_would_not_read_back_is_refused() -> None:
    with pytest.raises(ValueError, match="reads back"):
        Vocabulary("broken", {LawfulBasis.CONSENT: "Yes"}, {"Yes": LawfulBasis.CONTRACT})
