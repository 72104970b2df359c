"""What every CRM adapter must do, stated once and run against each vendor's emulator.

A vendor test module provides a ``harness`` fixture (anything that satisfies ``Harness``) and
a subclass of ``AdapterConformance``; pytest then runs every test below against that vendor.
Salesforce joins by writing its own harness. The tests speak only in common terms (people,
purposes, consent states, lawful bases); what a vendor holds is read back by the harness
behind the adapter's back, so the adapter never grades its own work.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

import pytest

from bridge.adapters.base import (
    ConsentWrite,
    CrmAdapter,
    DueMark,
    ErasureStatus,
    LawfulBasisWrite,
    Permanent,
    RateLimited,
    RecordRef,
    Transient,
    WriteStatus,
)
from bridge.model import ConsentStatus, CrmRecord, LawfulBasis, Purpose

GRANTED, WITHDRAWN, UNKNOWN = ConsentStatus.GRANTED, ConsentStatus.WITHDRAWN, ConsentStatus.UNKNOWN
SUCCESS = {WriteStatus.DONE, WriteStatus.ALREADY}
GONE = {ErasureStatus.ERASED, ErasureStatus.ALREADY_GONE}
# Addresses that break naive code and every CRM accepts: case, a plus tag, a quote. (Non-ASCII
# local parts are valid for some vendors only; their own tests cover them.)
AWKWARD = ("Upper.Case@Example.COM", "plus+tag@example.com", "O'Brien@example.com")


@dataclass(frozen=True)
class Person:
    """Someone to seed, in common terms; ``consents`` maps purpose ids to states."""

    email: str
    additional_emails: tuple[str, ...] = ()
    first_name: str = "Ada"
    last_name: str = "Lovelace"
    lawful_basis: LawfulBasis | None = None
    consents: Mapping[str, ConsentStatus] = field(default_factory=dict)
    opted_out: bool = False
    modified_at: datetime | None = None


@dataclass(frozen=True)
class Held:
    """What the vendor holds for one address, read behind the adapter's back."""

    record_ids: frozenset[str]
    consents: Mapping[str, ConsentStatus]
    opted_out: bool
    lawful_basis: LawfulBasis | None


@dataclass(frozen=True)
class Faults:
    """Faults the emulator injects into vendor calls (never into the harness's own)."""

    error_rate: float = 0.0
    error_status: int = 503
    drop_rate: float = 0.0
    burst_429: int = 0
    seed: int = 4  # its first few dozen draws fail at about the nominal rate


class Harness(Protocol):
    """One vendor, served by its emulator: everything the tests need besides the adapter."""

    @property
    def purposes(self) -> Sequence[Purpose]:
        """At least two purposes, both mapped for this vendor."""
        ...

    def adapter(self, *, attempts: int = 8) -> CrmAdapter: ...

    def ref(self, record_id: str) -> RecordRef:
        """The reference of a seeded person's record, for writes."""
        ...

    def unauthorised_adapter(self) -> CrmAdapter:
        """An adapter whose credentials the vendor refuses."""
        ...

    def seed(self, people: Sequence[Person]) -> list[str]:
        """Create the people; the ids of their records, in order."""
        ...

    def held(self, email: str) -> Held: ...

    def set_faults(self, faults: Faults | None) -> None: ...


def by_id(records: Sequence[CrmRecord]) -> dict[str, CrmRecord]:
    return {r.id: r for r in records}


def consent_of(record: CrmRecord, purpose: str) -> ConsentStatus:
    return next((c.status for c in record.consents if c.purpose == purpose), UNKNOWN)


def people(count: int, consents: Mapping[str, ConsentStatus] | None = None) -> list[Person]:
    return [Person(f"person{i}@example.com", consents=consents or {}) for i in range(count)]


class AdapterConformance:
    """Every adapter, whatever its vendor, passes these against its emulator."""

    # -- reading --------------------------------------------------------------------------

    def test_read_returns_every_record_exactly_once(self, harness: Harness) -> None:
        ids = harness.seed(people(250))
        read = [r.id for r in harness.adapter().read()]
        assert sorted(read) == sorted(ids)

    def test_read_since_returns_only_records_changed_at_or_after_the_cursor(
        self, harness: Harness
    ) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        ages = {"old": 3, "edge": 2, "new": 1}
        ids = harness.seed(
            [
                Person(f"{name}@example.com", modified_at=now - timedelta(hours=h))
                for name, h in ages.items()
            ]
        )
        since = [r.id for r in harness.adapter().read(since=now - timedelta(hours=2))]
        assert sorted(since) == sorted(ids[1:])

    def test_read_maps_consent_opt_out_and_lawful_basis(self, harness: Harness) -> None:
        first, second = (p.id for p in harness.purposes[:2])
        ids = harness.seed(
            [
                Person(
                    "consents@example.com",
                    lawful_basis=LawfulBasis.CONTRACT,
                    consents={first: GRANTED, second: WITHDRAWN},
                ),
                Person("left@example.com", opted_out=True),
            ]
        )
        records = by_id(list(harness.adapter().read()))
        consenting, left = records[ids[0]], records[ids[1]]
        assert consenting.lawful_basis is LawfulBasis.CONTRACT
        assert consent_of(consenting, first) is GRANTED
        assert consent_of(consenting, second) is WITHDRAWN
        assert all(c.changed_at is not None for c in consenting.consents if c.status != UNKNOWN)
        assert consenting.opt_out is not None and not consenting.opt_out.email
        assert left.opt_out is not None and left.opt_out.email
        assert left.opt_out.changed_at is not None

    def test_find_by_emails_ignores_case_and_reaches_additional_addresses(
        self, harness: Harness
    ) -> None:
        ids = harness.seed(
            [
                Person(
                    "three@example.com", additional_emails=("two@example.com", "one@example.com")
                ),
                Person("other@example.com"),
            ]
        )
        adapter = harness.adapter()
        for address in ("THREE@example.com", "Two@Example.com", "one@example.com"):
            found = adapter.find_by_emails([address])
            assert [r.id for r in found] == [ids[0]]
            assert len(found[0].emails) == 3
        everything = adapter.find_by_emails(
            ["one@example.com", "two@example.com", "three@example.com"]
        )
        assert [r.id for r in everything] == [ids[0]]

    def test_find_by_emails_handles_awkward_addresses_and_unknown_ones(
        self, harness: Harness
    ) -> None:
        ids = harness.seed([Person(email) for email in AWKWARD])
        unknown = [f"nobody{i}@example.com" for i in range(120)]  # more than one batch
        found = harness.adapter().find_by_emails([*(e.swapcase() for e in AWKWARD), *unknown])
        assert sorted(r.id for r in found) == sorted(ids)

    # -- consent and lawful basis --------------------------------------------------------------

    def test_withdrawal_round_trips_and_repeats_as_already(self, harness: Harness) -> None:
        purpose = harness.purposes[0].id
        [record_id] = harness.seed([Person("ada@example.com", consents={purpose: GRANTED})])
        adapter = harness.adapter()
        write = ConsentWrite(harness.ref(record_id), "Ada@Example.com", purpose, WITHDRAWN)
        assert [o.status for o in adapter.write_consents([write])] == [WriteStatus.DONE]
        assert [o.status for o in adapter.write_consents([write])] == [WriteStatus.ALREADY]
        assert harness.held("ada@example.com").consents[purpose] is WITHDRAWN
        [record] = adapter.find_by_emails(["ada@example.com"])
        assert consent_of(record, purpose) is WITHDRAWN

    def test_grant_round_trips_with_lawful_basis_and_explanation(self, harness: Harness) -> None:
        purpose = harness.purposes[1].id
        [record_id] = harness.seed([Person("grace@example.com")])
        adapter = harness.adapter()
        write = ConsentWrite(
            harness.ref(record_id),
            "grace@example.com",
            purpose,
            GRANTED,
            lawful_basis=LawfulBasis.CONSENT,
            explanation="ticked the box on the sign-up form",
        )
        assert [o.status for o in adapter.write_consents([write])] == [WriteStatus.DONE]
        assert harness.held("grace@example.com").consents[purpose] is GRANTED
        [record] = adapter.find_by_emails(["grace@example.com"])
        [consent] = [c for c in record.consents if c.purpose == purpose]
        assert consent.status is GRANTED
        assert consent.lawful_basis is LawfulBasis.CONSENT
        assert consent.explanation == "ticked the box on the sign-up form"

    def test_global_opt_out_round_trips_and_repeats_as_already(self, harness: Harness) -> None:
        [record_id] = harness.seed([Person("alan@example.com")])
        adapter = harness.adapter()
        write = ConsentWrite(harness.ref(record_id), "alan@example.com", None, WITHDRAWN)
        assert [o.status for o in adapter.write_consents([write])] == [WriteStatus.DONE]
        assert [o.status for o in adapter.write_consents([write])] == [WriteStatus.ALREADY]
        assert harness.held("alan@example.com").opted_out
        [record] = adapter.find_by_emails(["alan@example.com"])
        assert record.opt_out is not None and record.opt_out.email

    def test_lawful_basis_round_trips_and_repeats_as_already(self, harness: Harness) -> None:
        [record_id] = harness.seed([Person("edsger@example.com", lawful_basis=LawfulBasis.CONSENT)])
        adapter = harness.adapter()
        write = LawfulBasisWrite(harness.ref(record_id), LawfulBasis.CONTRACT)
        assert [o.status for o in adapter.write_lawful_bases([write])] == [WriteStatus.DONE]
        assert [o.status for o in adapter.write_lawful_bases([write])] == [WriteStatus.ALREADY]
        assert harness.held("edsger@example.com").lawful_basis is LawfulBasis.CONTRACT
        [record] = adapter.find_by_emails(["edsger@example.com"])
        assert record.lawful_basis is LawfulBasis.CONTRACT

    def test_purge_due_mark_round_trips_and_clears(self, harness: Harness) -> None:
        [record_id] = harness.seed([Person("grace@example.com")])
        adapter = harness.adapter()
        due = date(2031, 5, 17)
        for mark in (due, None):
            written = adapter.mark_purge_due([DueMark(harness.ref(record_id), mark)])
            assert [o.status for o in written] == [WriteStatus.DONE]
            [record] = adapter.find_by_emails(["grace@example.com"])
            assert record.purge_due == mark

    # -- erasure and export -----------------------------------------------------------------

    def test_erase_delete_removes_every_record_and_twice_is_success(self, harness: Harness) -> None:
        [record_id, other_id] = harness.seed(
            [
                Person("gone@example.com", additional_emails=("alias@example.com",)),
                Person("stays@example.com"),
            ]
        )
        adapter = harness.adapter()
        targets = adapter.erasure_targets(["alias@example.com", "never-seen@example.com"])
        records = [t.id for t in targets if t.id is not None]
        assert record_id in records and other_id not in records
        assert len(records) == len(set(records))
        assert {adapter.erase(t, "delete").status for t in targets} <= GONE
        assert adapter.find_by_emails(["gone@example.com", "alias@example.com"]) == []
        assert not harness.held("gone@example.com").record_ids
        assert harness.held("stays@example.com").record_ids
        again = [adapter.erase(t, "delete") for t in targets]
        assert {r.status for r in again} <= GONE
        assert {r.status for r in again if r.target.id is not None} == {ErasureStatus.ALREADY_GONE}

    def test_erase_anonymize_keeps_the_record_without_personal_data(self, harness: Harness) -> None:
        [record_id] = harness.seed(
            [
                Person(
                    "hidden@example.com",
                    additional_emails=("alias@example.com",),
                    first_name="Hedy",
                    last_name="Lamarr",
                )
            ]
        )
        adapter = harness.adapter()
        for target in adapter.erasure_targets(["hidden@example.com"]):
            status = adapter.erase(target, "anonymize").status
            assert status in {ErasureStatus.ANONYMIZED, *GONE}
        assert adapter.find_by_emails(["hidden@example.com", "alias@example.com"]) == []
        [kept] = [r for r in adapter.read() if r.id == record_id]
        text = json.dumps([kept.emails, kept.personal_fields], ensure_ascii=False)
        assert "hidden" not in text and "alias" not in text
        assert "Hedy" not in text and "Lamarr" not in text
        assert all("@" in e for e in kept.emails)

    def test_export_holds_every_record_and_consent_as_json(self, harness: Harness) -> None:
        purpose = harness.purposes[0].id
        [record_id] = harness.seed(
            [Person("kept@example.com", first_name="Katherine", consents={purpose: GRANTED})]
        )
        exported = harness.adapter().export(["KEPT@example.com"])
        text = json.dumps(exported, ensure_ascii=False)
        assert record_id in text and "kept@example.com" in text and "Katherine" in text
        assert json.loads(text) == exported

    # -- failures ---------------------------------------------------------------------------

    def test_vendor_failures_map_to_the_four_errors(self, harness: Harness) -> None:
        harness.seed([Person("ok@example.com")])
        adapter = harness.adapter(attempts=1)
        harness.set_faults(Faults(error_rate=1.0, error_status=503))
        with pytest.raises(Transient):
            adapter.find_by_emails(["ok@example.com"])
        harness.set_faults(Faults(drop_rate=1.0))
        with pytest.raises(Transient):
            adapter.find_by_emails(["ok@example.com"])
        harness.set_faults(Faults(burst_429=1))
        with pytest.raises(RateLimited) as limited:
            adapter.find_by_emails(["ok@example.com"])
        assert limited.value.retry_after is None or limited.value.retry_after > 0
        harness.set_faults(None)
        with pytest.raises(Permanent) as refused:
            harness.unauthorised_adapter().find_by_emails(["ok@example.com"])
        assert "ok@example.com" not in str(refused.value)
        assert [r.id for r in adapter.find_by_emails(["ok@example.com"])]

    def test_reads_and_writes_survive_faults(self, harness: Harness) -> None:
        """20% of calls fail (5xx or a dropped connection), after a burst of 429s."""
        first, second = (p.id for p in harness.purposes[:2])
        crowd = people(150, consents={first: GRANTED})
        ids = harness.seed(crowd)
        refs = [harness.ref(i) for i in ids]
        adapter = harness.adapter()
        harness.set_faults(Faults(error_rate=0.12, drop_rate=0.1, burst_429=2))
        assert sorted(r.id for r in adapter.read()) == sorted(ids)
        writes = [
            *(ConsentWrite(refs[i], crowd[i].email, first, WITHDRAWN) for i in range(30)),
            *(ConsentWrite(refs[i], crowd[i].email, None, WITHDRAWN) for i in range(30, 40)),
            *(
                ConsentWrite(refs[i], crowd[i].email, second, GRANTED, LawfulBasis.CONSENT)
                for i in range(40, 44)
            ),
        ]
        assert {o.status for o in adapter.write_consents(writes)} == {WriteStatus.DONE}
        bases = [LawfulBasisWrite(r, LawfulBasis.LEGITIMATE_INTERESTS) for r in refs[:100]]
        assert {o.status for o in adapter.write_lawful_bases(bases)} == {WriteStatus.DONE}
        harness.set_faults(None)
        assert all(harness.held(p.email).consents[first] is WITHDRAWN for p in crowd[:30])
        assert all(harness.held(p.email).opted_out for p in crowd[30:40])
        assert all(harness.held(p.email).consents[second] is GRANTED for p in crowd[40:44])
        assert harness.held(crowd[0].email).lawful_basis is LawfulBasis.LEGITIMATE_INTERESTS
        assert harness.held(crowd[149].email).lawful_basis is None
