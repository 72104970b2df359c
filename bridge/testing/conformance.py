"""The adapter conformance suite: what every CRM adapter owes the bridge, stated once and
checked against each vendor's emulator over real HTTP, with the vendor's real client.

Every member of :class:`bridge.adapters.base.CrmAdapter` is checked here (``COVERAGE`` says
by which tests, and a test of its own fails when the contract grows a member nobody checks).
The tests speak in common terms only (people, purposes, consent states, lawful bases); what
the vendor holds is read back by the vendor's :class:`World` behind the adapter's back, so an
adapter never grades its own work.

A vendor joins without changing anything here. Its test module provides:

- a ``world`` fixture yielding something that satisfies :class:`World`: an emulator reset to
  empty, how to build the adapter against it, how to seed :class:`Person` records and how to
  read them back (:meth:`World.held`, :meth:`World.rows`);
- a subclass of :class:`AdapterConformance`, whose name starts with ``Test``::

      from bridge.testing.conformance import AdapterConformance

      @pytest.fixture
      def world(emulator: RunningServer) -> Iterator[AcmeWorld]:
          world = AcmeWorld(emulator)  # empty, no faults
          yield world
          world.close()  # closes the adapters it built

      class TestAcmeConformance(AdapterConformance):
          '''The adapter contract, held against the Acme emulator.'''

pytest then runs every test below against that vendor. A vendor whose accounts differ in
how consent is read and written (a product tier without batch consent endpoints, an org
without the privacy objects) runs ``CONSENT_TESTS`` against each account profile. What an
account cannot hold (``field_for`` says None: a purpose's consent, a do-not-call flag), it is
not tested for, and a write of it must answer ``NOT_HOLDABLE``, never fail. This module
imports pytest: tests import it, product code never does.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

import pytest
import uvicorn

from bridge.adapters.base import (
    AdapterError,
    AllowanceReporter,
    ConsentWrite,
    CrmAdapter,
    DueMark,
    ErasureResult,
    ErasureStatus,
    Failure,
    LawfulBasisWrite,
    ObjectUsage,
    Permanent,
    RateLimited,
    RecordRef,
    Transient,
    WriteOutcome,
    WriteStatus,
)
from bridge.identity import normalise_email
from bridge.model import Channel, ConsentStatus, CrmRecord, LawfulBasis, Purpose, RelatedRecords

GRANTED, WITHDRAWN, UNKNOWN = ConsentStatus.GRANTED, ConsentStatus.WITHDRAWN, ConsentStatus.UNKNOWN
SUCCESS = {WriteStatus.DONE, WriteStatus.ALREADY}
GONE = {ErasureStatus.ERASED, ErasureStatus.ALREADY_GONE}


def answered(results: Sequence[ErasureResult | AdapterError]) -> list[ErasureResult]:
    """Every answer of a batch erase, none of them an error."""
    errors = [r for r in results if isinstance(r, AdapterError)]
    assert not errors, [str(e) for e in errors]
    return [r for r in results if isinstance(r, ErasureResult)]


def statuses_of(results: Sequence[ErasureResult | AdapterError]) -> list[ErasureStatus]:
    return [r.status for r in answered(results)]


# Addresses that break naive code and every CRM accepts: case, a plus tag, a quote. (Non-ASCII
# local parts are valid for some vendors only; their own tests cover them.)
AWKWARD = ("Upper.Case@Example.COM", "plus+tag@example.com", "O'Brien@example.com")
# A common field name no adapter maps (the common ones: first_name, last_name, phone, ...).
UNMAPPED_FIELD = "favourite_colour"
# How long the emulator may take to see a closed connection go: well within uvicorn's 5 s
# keep-alive timeout, after which it would close an idle connection itself.
CLOSE_SECONDS = 1.0


@dataclass(frozen=True)
class Person:
    """Someone to seed, in common terms; ``consents`` maps purpose ids to states."""

    email: str
    additional_emails: tuple[str, ...] = ()
    first_name: str = "Ada"
    last_name: str = "Lovelace"
    lawful_basis: LawfulBasis | None = None
    consents: Mapping[str, ConsentStatus] = field(default_factory=dict)
    """Seeded where the account can hold a purpose's consent; left out where it cannot."""
    opted_out: bool = False
    modified_at: datetime | None = None
    do_not_call: bool = False


@dataclass(frozen=True)
class Held:
    """What the vendor holds for one address, read behind the adapter's back."""

    record_ids: frozenset[str]
    consents: Mapping[str, ConsentStatus]
    opted_out: bool
    lawful_basis: LawfulBasis | None
    last_names: frozenset[str]
    """The last name on every record of the person that holds one."""
    do_not_call: bool = False
    """Whether a record of the person says not to call (for vendors that hold such a flag)."""


@dataclass(frozen=True)
class Faults:
    """Faults the emulator injects into vendor calls (never into the world's own)."""

    error_rate: float = 0.0
    error_status: int = 503
    drop_rate: float = 0.0
    burst_429: int = 0
    seed: int = 4  # its first few dozen draws fail at about the nominal rate


@dataclass(frozen=True)
class Holds:
    """Two conditions on related rows, once the world has seeded a row pointing at a record:
    ``matching`` holds that record, ``missing`` (the same related object and link) does not."""

    matching: RelatedRecords
    missing: RelatedRecords


class World(Protocol):
    """One vendor, served by its emulator: everything the suite needs besides the adapter.

    The ``world`` fixture yields it empty (no people, no faults) and closes every adapter it
    built once the test ends.
    """

    @property
    def purposes(self) -> Sequence[Purpose]:
        """At least two purposes, both mapped for this vendor."""
        ...

    def adapter(self, *, attempts: int = 8) -> CrmAdapter:
        """The adapter under test, aimed at the emulator (``attempts`` per call)."""
        ...

    def unauthorised_adapter(self) -> CrmAdapter:
        """An adapter whose credentials the vendor refuses."""
        ...

    def ref(self, record_id: str) -> RecordRef:
        """The reference of a seeded person's record, for writes."""
        ...

    def seed(self, people: Sequence[Person]) -> list[str]:
        """Create the people; the ids of their records, in order."""
        ...

    def held(self, email: str) -> Held: ...

    def rows(self, vendor_object: str, /) -> Sequence[Mapping[str, Any]]:
        """Every live record of a vendor object (``contact``, ``Contact``, ...) as the vendor
        holds it, field name to value: one entry per record."""
        ...

    def ui_url(self, record_id: str) -> str:
        """Where the vendor's own UI shows a seeded person's record."""
        ...

    def holds(self, record_id: str) -> Holds | None:
        """Seed a related row pointing at the record (a won deal, say) and return conditions
        on it; None only if the adapter reads no related rows at all."""
        ...

    def connections(self) -> frozenset[Hashable]:
        """The TCP connections open at the emulator, by client address
        (:func:`open_connections` reads them from a uvicorn server)."""
        ...

    def set_faults(self, faults: Faults | None) -> None: ...


def open_connections(server: uvicorn.Server) -> frozenset[Hashable]:
    """The client addresses of the connections a uvicorn server holds open."""
    while True:
        try:
            current = list(server.server_state.connections)
        except RuntimeError:  # the server's thread changed the set while it was copied
            continue
        return frozenset(getattr(c, "client", None) or id(c) for c in current)


def by_id(records: Sequence[CrmRecord]) -> dict[str, CrmRecord]:
    return {r.id: r for r in records}


def consent_of(record: CrmRecord, purpose: str) -> ConsentStatus:
    return next((c.status for c in record.consents if c.purpose == purpose), UNKNOWN)


def people(count: int, consents: Mapping[str, ConsentStatus] | None = None) -> list[Person]:
    return [Person(f"person{i}@example.com", consents=consents or {}) for i in range(count)]


def statuses(outcomes: Sequence[WriteOutcome]) -> dict[str, WriteStatus]:
    return {o.record.id: o.status for o in outcomes}


def holds_consent(adapter: CrmAdapter, ref: RecordRef, purpose: str) -> bool:
    """Whether this account can hold the purpose's consent on such a record."""
    return adapter.field_for(ref.object_type, f"consent:{purpose}") is not None


def needs_consent(adapter: CrmAdapter, ref: RecordRef, purpose: str) -> None:
    """Skip a test of per-purpose consent where the account cannot hold it."""
    if not holds_consent(adapter, ref, purpose):
        pytest.skip(f"this {adapter.system} account holds no per-purpose consent")


def holds_a_value(value: Any) -> bool:
    """What ``field_usage`` counts as filled: not null, not empty text, not an unticked
    checkbox. Zero is a value."""
    return value is not None and value is not False and value != ""


def values(world: World, vendor_object: str, vendor_field: str) -> Counter[str]:
    """Every record's value of one field, in any order."""
    return Counter(repr(row.get(vendor_field)) for row in world.rows(vendor_object))


def eventually(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def contract_members() -> set[str]:
    """Every method and attribute ``CrmAdapter`` declares, through its capability protocols."""
    members: set[str] = set()
    for cls in CrmAdapter.__mro__:
        if cls in (Protocol, object) or not getattr(cls, "_is_protocol", False):
            continue
        declared = [*vars(cls), *getattr(cls, "__annotations__", {})]
        members |= {name for name in declared if not name.startswith("_")}
    return members


# Which tests check each member of the contract.
COVERAGE: dict[str, tuple[str, ...]] = {
    "system": ("test_adapter_names_its_system_on_everything_it_returns",),
    "close": ("test_close_releases_every_connection_and_twice_is_harmless",),
    "field_for": (
        "test_field_for_names_the_vendor_field_each_write_changes",
        "test_field_for_is_none_for_what_a_record_cannot_hold",
        "test_consent_the_account_cannot_hold_is_not_holdable_and_changes_nothing",
    ),
    "read": (
        "test_read_returns_every_record_exactly_once",
        "test_read_since_returns_only_records_changed_at_or_after_the_cursor",
        "test_read_maps_consent_opt_out_and_lawful_basis",
        "test_reads_and_writes_survive_faults",
    ),
    "find_by_emails": (
        "test_find_by_emails_ignores_case_and_reaches_additional_addresses",
        "test_find_by_emails_handles_awkward_addresses_and_unknown_ones",
        "test_vendor_failures_map_to_the_four_errors",
    ),
    "write_consents": (
        "test_withdrawal_round_trips_and_repeats_as_already",
        "test_grant_round_trips_with_lawful_basis_and_explanation",
        "test_global_opt_out_round_trips_and_repeats_as_already",
        "test_do_not_call_round_trips_and_leaves_the_email_opt_out_alone",
        "test_consent_the_account_cannot_hold_is_not_holdable_and_changes_nothing",
        "test_reads_and_writes_survive_faults",
    ),
    "write_lawful_bases": (
        "test_lawful_basis_round_trips_and_repeats_as_already",
        "test_reads_and_writes_survive_faults",
    ),
    "erase_batch": ("test_erase_many_people_at_once_each_answer_in_the_order_given",),
    "erasure_targets": (
        "test_erase_delete_removes_every_record_and_twice_is_success",
        "test_erase_many_people_at_once_each_answer_in_the_order_given",
    ),
    "erase": (
        "test_erase_delete_removes_every_record_and_twice_is_success",
        "test_erase_many_people_at_once_each_answer_in_the_order_given",
        "test_erase_anonymize_keeps_the_record_without_personal_data",
    ),
    "export": ("test_export_holds_every_record_and_consent_as_json",),
    "rectify": (
        "test_rectify_corrects_every_record_the_addresses_reach_and_repeats_as_already",
        "test_rectify_refuses_an_unmapped_field_whole_and_names_no_value",
        "test_check_rectify_names_field_place_and_limit_and_writes_nothing",
    ),
    "check_rectify": ("test_check_rectify_names_field_place_and_limit_and_writes_nothing",),
    "related": ("test_related_names_the_targets_a_condition_holds_first_condition_wins",),
    "mark_purge_due": ("test_purge_due_mark_round_trips_and_clears",),
    "record_url": ("test_record_url_opens_each_record_in_the_vendors_own_ui",),
    "emails_of": ("test_emails_of_lists_every_address_and_none_once_the_record_is_gone",),
    "emails_of_each": ("test_emails_of_each_answers_many_records_in_the_order_given",),
    "field_usage": ("test_field_usage_counts_what_the_vendor_holds_and_never_a_value",),
    "readiness": ("test_readiness_holds_on_a_ready_account_and_stops_at_refused_credentials",),
}


# The tests that read or write consent. A vendor whose accounts take different consent paths
# (product tiers, org editions) runs these against every account profile, the rest against one.
CONSENT_TESTS = frozenset(
    {
        "test_adapter_names_its_system_on_everything_it_returns",
        "test_read_maps_consent_opt_out_and_lawful_basis",
        "test_withdrawal_round_trips_and_repeats_as_already",
        "test_grant_round_trips_with_lawful_basis_and_explanation",
        "test_global_opt_out_round_trips_and_repeats_as_already",
        "test_do_not_call_round_trips_and_leaves_the_email_opt_out_alone",
        "test_consent_the_account_cannot_hold_is_not_holdable_and_changes_nothing",
        "test_field_for_names_the_vendor_field_each_write_changes",
        "test_export_holds_every_record_and_consent_as_json",
        "test_reads_and_writes_survive_faults",
    }
)


class AdapterConformance:
    """Every adapter, whatever its vendor, passes these against its emulator."""

    def test_the_suite_checks_every_member_of_the_contract(self) -> None:
        assert set(COVERAGE) == contract_members()
        for member, tests in COVERAGE.items():
            for name in tests:
                assert callable(getattr(AdapterConformance, name, None)), (member, name)
        for name in CONSENT_TESTS:
            assert callable(getattr(AdapterConformance, name, None)), name

    def test_adapter_names_its_system_on_everything_it_returns(self, world: World) -> None:
        first = world.purposes[0].id
        [record_id] = world.seed([Person("named@example.com", consents={first: GRANTED})])
        adapter = world.adapter()
        system = adapter.system
        assert isinstance(system, str) and system
        ref = world.ref(record_id)
        assert ref.system == system
        read = list(adapter.read())
        found = adapter.find_by_emails(["named@example.com"])
        assert read and found
        assert {r.system for r in [*read, *found]} == {system}
        held = {system} if holds_consent(adapter, ref, first) else set()
        assert {c.source_system for r in [*read, *found] for c in r.consents} == held
        [targets] = adapter.erasure_targets([["named@example.com"]])
        assert targets and {t.system for t in targets} == {system}
        [outcome] = adapter.write_consents(
            [ConsentWrite(ref, "named@example.com", None, WITHDRAWN)]
        )
        assert outcome.record == ref

    def test_close_releases_every_connection_and_twice_is_harmless(self, world: World) -> None:
        [record_id] = world.seed([Person("close@example.com", consents={})])
        before = world.connections()
        adapter = world.adapter()
        assert [r.id for r in adapter.find_by_emails(["close@example.com"])] == [record_id]
        adapter.emails_of(world.ref(record_id))
        opened = world.connections() - before
        assert opened, "the adapter should keep its connections open between calls"
        adapter.close()
        assert eventually(lambda: not world.connections() & opened, CLOSE_SECONDS), (
            f"still open after close(): {sorted(map(str, world.connections() & opened))}"
        )
        adapter.close()

    # -- reading --------------------------------------------------------------------------

    def test_read_returns_every_record_exactly_once(self, world: World) -> None:
        ids = world.seed(people(250))
        read = [r.id for r in world.adapter().read()]
        assert sorted(read) == sorted(ids)

    def test_read_since_returns_only_records_changed_at_or_after_the_cursor(
        self, world: World
    ) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        ages = {"old": 3, "edge": 2, "new": 1}
        ids = world.seed(
            [
                Person(f"{name}@example.com", modified_at=now - timedelta(hours=h))
                for name, h in ages.items()
            ]
        )
        since = [r.id for r in world.adapter().read(since=now - timedelta(hours=2))]
        assert sorted(since) == sorted(ids[1:])

    def test_read_maps_consent_opt_out_and_lawful_basis(self, world: World) -> None:
        first, second = (p.id for p in world.purposes[:2])
        ids = world.seed(
            [
                Person(
                    "consents@example.com",
                    lawful_basis=LawfulBasis.CONTRACT,
                    consents={first: GRANTED, second: WITHDRAWN},
                ),
                Person("left@example.com", opted_out=True),
            ]
        )
        adapter = world.adapter()
        records = by_id(list(adapter.read()))
        consenting, left = records[ids[0]], records[ids[1]]
        assert consenting.lawful_basis is LawfulBasis.CONTRACT
        if holds_consent(adapter, world.ref(ids[0]), first):
            assert consent_of(consenting, first) is GRANTED
            assert consent_of(consenting, second) is WITHDRAWN
        else:
            assert consenting.consents == ()
        assert all(c.changed_at is not None for c in consenting.consents if c.status != UNKNOWN)
        assert consenting.opt_out is not None and not consenting.opt_out.email
        assert left.opt_out is not None and left.opt_out.email
        assert left.opt_out.changed_at is not None

    def test_find_by_emails_ignores_case_and_reaches_additional_addresses(
        self, world: World
    ) -> None:
        ids = world.seed(
            [
                Person(
                    "three@example.com", additional_emails=("two@example.com", "one@example.com")
                ),
                Person("other@example.com"),
            ]
        )
        adapter = world.adapter()
        for address in ("THREE@example.com", "Two@Example.com", "one@example.com"):
            found = adapter.find_by_emails([address])
            assert [r.id for r in found] == [ids[0]]
            assert len(found[0].emails) == 3
        everything = adapter.find_by_emails(
            ["one@example.com", "two@example.com", "three@example.com"]
        )
        assert [r.id for r in everything] == [ids[0]]

    def test_find_by_emails_handles_awkward_addresses_and_unknown_ones(self, world: World) -> None:
        ids = world.seed([Person(email) for email in AWKWARD])
        unknown = [f"nobody{i}@example.com" for i in range(120)]  # more than one batch
        found = world.adapter().find_by_emails([*(e.swapcase() for e in AWKWARD), *unknown])
        assert sorted(r.id for r in found) == sorted(ids)

    def test_emails_of_lists_every_address_and_none_once_the_record_is_gone(
        self, world: World
    ) -> None:
        addresses = ("Many@Example.com", "second@example.com", "third@example.com")
        [record_id, other_id] = world.seed(
            [Person(addresses[0], additional_emails=addresses[1:]), Person("else@example.com")]
        )
        adapter = world.adapter()
        ref = world.ref(record_id)
        emails = adapter.emails_of(ref)
        assert len(emails) == len(addresses)
        assert {normalise_email(e) for e in emails} == {normalise_email(a) for a in addresses}
        other = adapter.emails_of(world.ref(other_id))
        assert [normalise_email(e) for e in other] == ["else@example.com"]
        [targets] = adapter.erasure_targets([[addresses[0]]])
        assert set(statuses_of(adapter.erase(targets, "delete"))) <= GONE
        assert adapter.emails_of(ref) == []
        assert [normalise_email(e) for e in adapter.emails_of(world.ref(other_id))] == [
            "else@example.com"
        ]

    def test_emails_of_each_answers_many_records_in_the_order_given(self, world: World) -> None:
        emails = ("first@example.com", "second@example.com", "gone@example.com")
        first, second, gone = world.seed([Person(email) for email in emails])
        adapter = world.adapter()
        [targets] = adapter.erasure_targets([[emails[2]]])
        assert set(statuses_of(adapter.erase(targets, "delete"))) <= GONE
        refs = [world.ref(i) for i in (second, gone, first, second)]
        answers = [[normalise_email(e) for e in found] for found in adapter.emails_of_each(refs)]
        assert answers == [[emails[1]], [], [emails[0]], [emails[1]]]

    def test_record_url_opens_each_record_in_the_vendors_own_ui(self, world: World) -> None:
        ids = world.seed([Person("shown@example.com"), Person("also.shown@example.com")])
        adapter = world.adapter()
        urls = [adapter.record_url(world.ref(record_id)) for record_id in ids]
        assert urls == [world.ui_url(record_id) for record_id in ids]
        assert len(set(urls)) == len(ids)
        # Absolute, on the scheme and host the world serves the UI from (an emulator may
        # serve plain http; a link must not claim https it does not have).
        assert all(url and urlsplit(url).scheme in ("http", "https") for url in urls)
        assert all(url and urlsplit(url).netloc for url in urls)

    # -- consent and lawful basis --------------------------------------------------------------

    def test_withdrawal_round_trips_and_repeats_as_already(self, world: World) -> None:
        purpose = world.purposes[0].id
        [record_id] = world.seed([Person("ada@example.com", consents={purpose: GRANTED})])
        adapter = world.adapter()
        needs_consent(adapter, world.ref(record_id), purpose)
        write = ConsentWrite(world.ref(record_id), "Ada@Example.com", purpose, WITHDRAWN)
        assert [o.status for o in adapter.write_consents([write])] == [WriteStatus.DONE]
        assert [o.status for o in adapter.write_consents([write])] == [WriteStatus.ALREADY]
        assert world.held("ada@example.com").consents[purpose] is WITHDRAWN
        [record] = adapter.find_by_emails(["ada@example.com"])
        assert consent_of(record, purpose) is WITHDRAWN

    def test_grant_round_trips_with_lawful_basis_and_explanation(self, world: World) -> None:
        purpose = world.purposes[1].id
        [record_id] = world.seed([Person("grace@example.com")])
        adapter = world.adapter()
        needs_consent(adapter, world.ref(record_id), purpose)
        write = ConsentWrite(
            world.ref(record_id),
            "grace@example.com",
            purpose,
            GRANTED,
            lawful_basis=LawfulBasis.CONSENT,
            explanation="ticked the box on the sign-up form",
        )
        assert [o.status for o in adapter.write_consents([write])] == [WriteStatus.DONE]
        assert world.held("grace@example.com").consents[purpose] is GRANTED
        [record] = adapter.find_by_emails(["grace@example.com"])
        [consent] = [c for c in record.consents if c.purpose == purpose]
        assert consent.status is GRANTED
        assert consent.lawful_basis is LawfulBasis.CONSENT
        assert consent.explanation == "ticked the box on the sign-up form"

    def test_global_opt_out_round_trips_and_repeats_as_already(self, world: World) -> None:
        [record_id] = world.seed([Person("alan@example.com")])
        adapter = world.adapter()
        write = ConsentWrite(world.ref(record_id), "alan@example.com", None, WITHDRAWN)
        assert [o.status for o in adapter.write_consents([write])] == [WriteStatus.DONE]
        assert [o.status for o in adapter.write_consents([write])] == [WriteStatus.ALREADY]
        assert world.held("alan@example.com").opted_out
        [record] = adapter.find_by_emails(["alan@example.com"])
        assert record.opt_out is not None and record.opt_out.email

    def test_do_not_call_round_trips_and_leaves_the_email_opt_out_alone(self, world: World) -> None:
        """Where the vendor holds a do-not-call flag (``field_for`` names it), the global
        opt-out of calls reaches it, repeats as ALREADY and reads back, on its own."""
        [record_id] = world.seed([Person("dial@example.com")])
        adapter = world.adapter()
        ref = world.ref(record_id)
        if adapter.field_for(ref.object_type, "do_not_call") is None:
            pytest.skip(f"{adapter.system} holds no do-not-call flag")
        write = ConsentWrite(ref, "dial@example.com", None, WITHDRAWN, channel=Channel.PHONE)
        assert [o.status for o in adapter.write_consents([write])] == [WriteStatus.DONE]
        assert [o.status for o in adapter.write_consents([write])] == [WriteStatus.ALREADY]
        held = world.held("dial@example.com")
        assert held.do_not_call and not held.opted_out
        [record] = adapter.find_by_emails(["dial@example.com"])
        assert record.opt_out is not None
        assert record.opt_out.do_not_call and not record.opt_out.email
        both = [write, ConsentWrite(ref, "dial@example.com", None, WITHDRAWN)]
        assert [o.status for o in adapter.write_consents(both)] == [
            WriteStatus.ALREADY,
            WriteStatus.DONE,
        ]
        assert world.held("dial@example.com").opted_out

    def test_consent_the_account_cannot_hold_is_not_holdable_and_changes_nothing(
        self, world: World
    ) -> None:
        """An account without per-purpose consent (``field_for`` says None) answers a write
        of it ``NOT_HOLDABLE``, not a failure, and still takes the global opt-out."""
        purpose = world.purposes[0].id
        [record_id] = world.seed([Person("basic@example.com")])
        adapter = world.adapter()
        ref = world.ref(record_id)
        if holds_consent(adapter, ref, purpose):
            pytest.skip(f"this {adapter.system} account holds per-purpose consent")
        writes = [
            ConsentWrite(ref, "basic@example.com", purpose, WITHDRAWN),
            ConsentWrite(ref, "basic@example.com", None, WITHDRAWN),
        ]
        outcomes = adapter.write_consents(writes)
        assert [o.status for o in outcomes] == [WriteStatus.NOT_HOLDABLE, WriteStatus.DONE]
        assert outcomes[0].detail and "basic@example.com" not in outcomes[0].detail
        held = world.held("basic@example.com")
        assert held.opted_out and held.consents == {}
        [record] = adapter.find_by_emails(["basic@example.com"])
        assert record.consents == ()

    def test_lawful_basis_round_trips_and_repeats_as_already(self, world: World) -> None:
        [record_id] = world.seed([Person("edsger@example.com", lawful_basis=LawfulBasis.CONSENT)])
        adapter = world.adapter()
        write = LawfulBasisWrite(world.ref(record_id), LawfulBasis.CONTRACT)
        assert [o.status for o in adapter.write_lawful_bases([write])] == [WriteStatus.DONE]
        assert [o.status for o in adapter.write_lawful_bases([write])] == [WriteStatus.ALREADY]
        assert world.held("edsger@example.com").lawful_basis is LawfulBasis.CONTRACT
        [record] = adapter.find_by_emails(["edsger@example.com"])
        assert record.lawful_basis is LawfulBasis.CONTRACT

    def test_field_for_names_the_vendor_field_each_write_changes(self, world: World) -> None:
        """Minimisation judges the sync's writes by these names: each must be the field the
        write really changes, read behind the adapter's back."""
        purpose = world.purposes[0].id
        email = "fields@example.com"
        [record_id] = world.seed(
            [Person(email, lawful_basis=LawfulBasis.CONSENT, consents={purpose: GRANTED})]
        )
        adapter = world.adapter()
        ref = world.ref(record_id)
        writes: dict[str, Callable[[], list[WriteOutcome]]] = {
            f"consent:{purpose}": lambda: adapter.write_consents(
                [ConsentWrite(ref, email, purpose, WITHDRAWN)]
            ),
            "lawful_basis": lambda: adapter.write_lawful_bases(
                [LawfulBasisWrite(ref, LawfulBasis.CONTRACT)]
            ),
            "opt_out": lambda: adapter.write_consents([ConsentWrite(ref, email, None, WITHDRAWN)]),
            "do_not_call": lambda: adapter.write_consents(
                [ConsentWrite(ref, email, None, WITHDRAWN, channel=Channel.PHONE)]
            ),
        }
        # What not every account holds is checked where it does (its own tests say the rest).
        optional = {f"consent:{purpose}", "do_not_call"}
        writes = {
            common: write
            for common, write in writes.items()
            if common not in optional or adapter.field_for(ref.object_type, common)
        }
        for common, write in writes.items():
            where = adapter.field_for(ref.object_type, common)
            assert where is not None, f"{ref.object_type} holds {common}, but field_for says not"
            vendor_object, vendor_field = where
            before = values(world, vendor_object, vendor_field)
            assert [o.status for o in write()] == [WriteStatus.DONE], common
            after = values(world, vendor_object, vendor_field)
            assert after != before, f"writing {common} left {vendor_object}.{vendor_field} alone"

    def test_field_for_is_none_for_what_a_record_cannot_hold(self, world: World) -> None:
        [record_id] = world.seed([Person("nothing@example.com")])
        adapter = world.adapter()
        object_type = world.ref(record_id).object_type
        assert adapter.field_for("no_such_object", "opt_out") is None
        assert adapter.field_for(object_type, "consent:no_such_purpose") is None
        assert adapter.field_for(object_type, UNMAPPED_FIELD) is None

    def test_purge_due_mark_round_trips_and_clears(self, world: World) -> None:
        [record_id] = world.seed([Person("grace@example.com")])
        adapter = world.adapter()
        due = date(2031, 5, 17)
        for mark in (due, None):
            written = adapter.mark_purge_due([DueMark(world.ref(record_id), mark)])
            assert [o.status for o in written] == [WriteStatus.DONE]
            [record] = adapter.find_by_emails(["grace@example.com"])
            assert record.purge_due == mark

    # -- rights: export and rectification -------------------------------------------------------

    def test_export_holds_every_record_and_consent_as_json(self, world: World) -> None:
        purpose = world.purposes[0].id
        [record_id, _stranger] = world.seed(
            [
                Person("kept@example.com", first_name="Katherine", consents={purpose: GRANTED}),
                Person("stranger@example.com", first_name="Dorothy"),
            ]
        )
        exported = world.adapter().export(["KEPT@example.com"])
        text = json.dumps(exported, ensure_ascii=False)
        assert record_id in text and "kept@example.com" in text and "Katherine" in text
        assert json.loads(text) == exported
        assert "stranger@example.com" not in text and "Dorothy" not in text

    def test_rectify_corrects_every_record_the_addresses_reach_and_repeats_as_already(
        self, world: World
    ) -> None:
        [record_id, other_id] = world.seed(
            [
                Person("fix@example.com", additional_emails=("fix.alias@example.com",)),
                Person("other@example.com"),
            ]
        )
        adapter = world.adapter()
        outcomes = adapter.rectify(["FIX.Alias@example.com"], {"last_name": "Byrne"})
        corrected = statuses(outcomes)
        assert len(corrected) == len(outcomes), "one outcome per record"
        assert record_id in corrected and other_id not in corrected
        assert set(corrected.values()) == {WriteStatus.DONE}
        assert {o.record.system for o in outcomes} == {adapter.system}
        assert world.held("fix@example.com").last_names == {"Byrne"}
        assert world.held("other@example.com").last_names == {"Lovelace"}
        again = adapter.rectify(["fix@example.com"], {"last_name": "Byrne"})
        assert statuses(again) == dict.fromkeys(corrected, WriteStatus.ALREADY)

    def test_rectify_refuses_an_unmapped_field_whole_and_names_no_value(self, world: World) -> None:
        [record_id] = world.seed([Person("whole@example.com", last_name="Lovelace")])
        adapter = world.adapter()
        changes = {"last_name": "Shiv", UNMAPPED_FIELD: "Teal"}
        outcomes = adapter.rectify(["whole@example.com"], changes)
        assert record_id in statuses(outcomes)
        assert set(statuses(outcomes).values()) == {WriteStatus.FAILED}
        for outcome in outcomes:
            assert UNMAPPED_FIELD in outcome.detail
            for personal in ("Shiv", "Teal", "whole@example.com"):
                assert personal not in outcome.detail
        # A record is corrected whole or not at all: the mapped field was not written either.
        assert world.held("whole@example.com").last_names == {"Lovelace"}

    def test_check_rectify_names_field_place_and_limit_and_writes_nothing(
        self, world: World
    ) -> None:
        """A caller refuses a correction whole when any system could not take it, so the
        check must find what ``rectify`` would refuse, before and without any write."""
        [record_id] = world.seed([Person("limits@example.com", last_name="Lovelace")])
        adapter = world.adapter()
        too_long = "Quetzal" * 10_000  # 70,000 characters: more than any CRM text field holds
        assert adapter.check_rectify({"last_name": "Byrne", "phone": "+44 20 7946 0000"}) == []
        problems = adapter.check_rectify({"last_name": too_long, "phone": "+44 20 7946 0000"})
        assert problems, "a value longer than any text field passed the check"
        for problem in problems:
            text = str(problem)
            assert (problem.system, problem.field) == (adapter.system, "last_name")
            assert problem.where and problem.where in text and "last_name" in text
            assert problem.limit is not None and 0 < problem.limit < len(too_long)
            assert f"{problem.limit:,}" in text and "Quetzal" not in text
        [unmapped] = adapter.check_rectify({UNMAPPED_FIELD: "Teal", "last_name": "Byrne"})
        assert (unmapped.system, unmapped.field, unmapped.where) == (
            adapter.system,
            UNMAPPED_FIELD,
            None,
        )
        assert UNMAPPED_FIELD in str(unmapped) and "Teal" not in str(unmapped)
        assert world.held("limits@example.com").last_names == {"Lovelace"}
        # What the check refuses, rectify refuses too, and writes nothing.
        refused = adapter.rectify(["limits@example.com"], {"last_name": too_long})
        assert record_id in statuses(refused)
        assert set(statuses(refused).values()) == {WriteStatus.FAILED}
        assert all("Quetzal" not in o.detail for o in refused)
        assert world.held("limits@example.com").last_names == {"Lovelace"}

    # -- erasure ----------------------------------------------------------------------------

    def test_erase_delete_removes_every_record_and_twice_is_success(self, world: World) -> None:
        [record_id, other_id] = world.seed(
            [
                Person("gone@example.com", additional_emails=("alias@example.com",)),
                Person("stays@example.com"),
            ]
        )
        adapter = world.adapter()
        [targets] = adapter.erasure_targets([["alias@example.com", "never-seen@example.com"]])
        records = [t.id for t in targets if t.id is not None]
        assert record_id in records and other_id not in records
        assert len(records) == len(set(records))
        assert set(statuses_of(adapter.erase(targets, "delete"))) <= GONE
        assert adapter.find_by_emails(["gone@example.com", "alias@example.com"]) == []
        assert not world.held("gone@example.com").record_ids
        assert world.held("stays@example.com").record_ids
        again = answered(adapter.erase(targets, "delete"))
        assert {r.status for r in again} <= GONE
        assert {r.status for r in again if r.target.id is not None} == {ErasureStatus.ALREADY_GONE}

    def test_erase_many_people_at_once_each_answer_in_the_order_given(self, world: World) -> None:
        crowd = [Person(f"crowd{i}@example.com") for i in range(7)]
        ids = world.seed([*crowd, Person("spared@example.com")])
        adapter = world.adapter()
        people = [[p.email] for p in crowd] + [["nobody@example.com"]]
        found = adapter.erasure_targets(people)
        assert len(found) == len(people)
        for record_id, targets in zip(ids[:-1], found[:-1], strict=True):  # the crowd's
            assert record_id in {t.id for t in targets}
            assert {t.id for t in targets} & set(ids) == {record_id}
        assert not {t.id for t in found[-1]} & set(ids)
        assert adapter.erase_batch >= 1
        mixed = [t for targets in reversed(found) for t in targets]
        results = answered(adapter.erase(mixed, "delete"))
        assert [r.target for r in results] == mixed
        assert {r.status for r in results} <= GONE
        assert adapter.find_by_emails([p.email for p in crowd]) == []
        assert world.held("spared@example.com").record_ids

    def test_erase_anonymize_keeps_the_record_without_personal_data(self, world: World) -> None:
        [record_id] = world.seed(
            [
                Person(
                    "hidden@example.com",
                    additional_emails=("alias@example.com",),
                    first_name="Hedy",
                    last_name="Lamarr",
                )
            ]
        )
        adapter = world.adapter()
        [targets] = adapter.erasure_targets([["hidden@example.com"]])
        assert set(statuses_of(adapter.erase(targets, "anonymize"))) <= {
            ErasureStatus.ANONYMIZED,
            *GONE,
        }
        assert adapter.find_by_emails(["hidden@example.com", "alias@example.com"]) == []
        [kept] = [r for r in adapter.read() if r.id == record_id]
        text = json.dumps([kept.emails, kept.personal_fields], ensure_ascii=False)
        assert "hidden" not in text and "alias" not in text
        assert "Hedy" not in text and "Lamarr" not in text
        assert all("@" in e for e in kept.emails)

    def test_related_names_the_targets_a_condition_holds_first_condition_wins(
        self, world: World
    ) -> None:
        [held_id, free_id] = world.seed([Person("held@example.com"), Person("free@example.com")])
        adapter = world.adapter()
        [targets] = adapter.erasure_targets([["held@example.com", "free@example.com"]])
        assert {held_id, free_id} <= {t.id for t in targets}
        holds = world.holds(held_id)
        if holds is None:  # the vendor has no related rows: nothing can hold a record
            deal = RelatedRecords(
                name="won_deal", related_object="Deal", link_field="ContactId", where="Won = 1"
            )
            assert adapter.related(targets, [deal]) == {}
            return
        matching, missing = holds.matching, holds.missing
        assert adapter.related(targets, [missing, matching]) == {held_id: matching}
        assert adapter.related(targets, [missing]) == {}
        again = matching.model_copy(update={"name": f"{matching.name}_again"})
        assert adapter.related(targets, [again, matching]) == {held_id: again}
        assert adapter.related(targets, [matching, again]) == {held_id: matching}
        assert adapter.related([t for t in targets if t.id != held_id], [matching]) == {}
        assert adapter.related(targets, []) == {}

    # -- minimisation -----------------------------------------------------------------------

    def test_field_usage_counts_what_the_vendor_holds_and_never_a_value(self, world: World) -> None:
        surnames = ("Quetzalcoatl", "Xochiquetzal", "Zephyrine")
        crowd = [
            Person(f"usage{i}@example.com", first_name="Ottoline", last_name=name)
            for i, name in enumerate(surnames)
        ]
        world.seed(crowd)
        usage: list[ObjectUsage] = world.adapter().field_usage()
        assert usage
        assert len({u.sobject for u in usage}) == len(usage)
        holding_names = []
        for found in usage:
            rows = world.rows(found.sobject)
            assert found.records == len(rows), found.sobject
            assert len({f.name for f in found.fields}) == len(found.fields), found.sobject
            for counted in found.fields:
                expected = sum(holds_a_value(row.get(counted.name)) for row in rows)
                assert counted.filled == expected, (found.sobject, counted.name)
                assert isinstance(counted.free_text, bool)
                if set(surnames) <= {row.get(counted.name) for row in rows}:
                    holding_names.append((found.sobject, counted.name))
        assert holding_names, "the field people's last names fill is not reported"
        text = repr(usage)
        for person in crowd:
            for value in (person.email, person.first_name, person.last_name):
                assert value not in text

    # -- limits -----------------------------------------------------------------------------

    def test_allowances_answer_after_one_call(self, world: World) -> None:
        """An adapter that reports its vendor's limits (``AllowanceReporter``: optional, not
        in ``CrmAdapter``) says each after one call, as numbers a page can show and a sync
        run can keep as JSON."""
        world.seed([Person("limits@example.com")])
        adapter = world.adapter()
        if not isinstance(adapter, AllowanceReporter):
            pytest.skip("this adapter reports no allowances")
        list(adapter.read())
        said = adapter.allowances()
        assert said, "no allowance reported after a call"
        assert len({a.name for a in said}) == len(said)
        for allowance in said:
            assert allowance.name and allowance.limit > 0, allowance
            assert 0 <= allowance.used <= allowance.limit, allowance
            assert allowance.window_seconds is None or allowance.window_seconds > 0, allowance
        json.dumps([asdict(a) for a in said])  # what a sync run records

    # -- failures ---------------------------------------------------------------------------

    def test_vendor_failures_map_to_the_four_errors(self, world: World) -> None:
        world.seed([Person("ok@example.com")])
        adapter = world.adapter(attempts=1)
        world.set_faults(Faults(error_rate=1.0, error_status=503))
        with pytest.raises(Transient) as failing:
            adapter.find_by_emails(["ok@example.com"])
        world.set_faults(Faults(drop_rate=1.0))
        with pytest.raises(Transient) as dropped:
            adapter.find_by_emails(["ok@example.com"])
        for down in (failing.value, dropped.value):  # a person reads what failed, and a fix
            assert down.failure is Failure.UNAVAILABLE and down.summary and down.fix
            assert down.line() == f"{down.summary}: {down.fix}"  # one try: none to count
        world.set_faults(Faults(burst_429=1))
        with pytest.raises(RateLimited) as limited:
            adapter.find_by_emails(["ok@example.com"])
        assert limited.value.retry_after is None or limited.value.retry_after > 0
        world.set_faults(None)
        with pytest.raises(Permanent) as refused:
            world.unauthorised_adapter().find_by_emails(["ok@example.com"])
        assert "ok@example.com" not in str(refused.value)
        assert refused.value.system == adapter.system
        assert [r.id for r in adapter.find_by_emails(["ok@example.com"])]

    def test_readiness_holds_on_a_ready_account_and_stops_at_refused_credentials(
        self, world: World
    ) -> None:
        """``bridge check --crm``'s lines: on the world's account (its purposes exist there)
        none fails, the first says the login holds, none names a person or their data; an
        adapter whose credentials the vendor refuses fails at once, as a credentials failure
        naming the vendor's code and a fix."""
        person = Person("ready@example.com", first_name="Readiness", last_name="Probe")
        world.seed([person])
        checks = list(world.adapter().readiness([]))
        assert checks[0].name == "credentials" and checks[0].ok
        assert [c for c in checks if not c.ok] == []
        said = repr(checks)
        assert all(value not in said for value in (person.email, "Readiness", "Probe"))
        with pytest.raises(AdapterError) as refused:
            list(world.unauthorised_adapter().readiness([]))
        error = refused.value
        assert error.failure is Failure.CREDENTIALS and error.code and error.fix
        assert error.code in error.line() and error.line().endswith(error.fix)

    def test_reads_and_writes_survive_faults(self, world: World) -> None:
        """20% of calls fail (5xx or a dropped connection), after a burst of 429s."""
        first, second = (p.id for p in world.purposes[:2])
        crowd = people(150, consents={first: GRANTED})
        ids = world.seed(crowd)
        refs = [world.ref(i) for i in ids]
        adapter = world.adapter()
        consent = holds_consent(adapter, refs[0], first)
        calls = adapter.field_for(refs[0].object_type, "do_not_call") is not None
        world.set_faults(Faults(error_rate=0.12, drop_rate=0.1, burst_429=2))
        assert sorted(r.id for r in adapter.read()) == sorted(ids)
        writes = [ConsentWrite(refs[i], crowd[i].email, None, WITHDRAWN) for i in range(30, 40)]
        if consent:
            writes += [ConsentWrite(refs[i], crowd[i].email, first, WITHDRAWN) for i in range(30)]
            writes += [
                ConsentWrite(refs[i], crowd[i].email, second, GRANTED, LawfulBasis.CONSENT)
                for i in range(40, 44)
            ]
        if calls:
            writes += [
                ConsentWrite(refs[i], crowd[i].email, None, WITHDRAWN, channel=Channel.PHONE)
                for i in range(44, 54)
            ]
        assert {o.status for o in adapter.write_consents(writes)} == {WriteStatus.DONE}
        bases = [LawfulBasisWrite(r, LawfulBasis.LEGITIMATE_INTERESTS) for r in refs[:100]]
        assert {o.status for o in adapter.write_lawful_bases(bases)} == {WriteStatus.DONE}
        world.set_faults(None)
        assert all(world.held(p.email).opted_out for p in crowd[30:40])
        if consent:
            assert all(world.held(p.email).consents[first] is WITHDRAWN for p in crowd[:30])
            assert all(world.held(p.email).consents[second] is GRANTED for p in crowd[40:44])
        if calls:
            assert all(world.held(p.email).do_not_call for p in crowd[44:54])
        assert world.held(crowd[0].email).lawful_basis is LawfulBasis.LEGITIMATE_INTERESTS
        assert world.held(crowd[149].email).lawful_basis is None
