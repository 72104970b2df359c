"""A sync's staged records: linked into the same people as ``link_subjects`` links them in
memory, given back whole people a partition at a time, sealed while held, gone after."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from bridge.identity import link_subjects
from bridge.model import CrmRecord, ObjectType, System
from bridge.services import staging
from bridge.services.staging import Staging
from bridge.store import staging as staging_rows
from bridge.store.db import Store
from bridge.store.tables import sync_staged, sync_staged_refs
from tests.conftest import PSEUDONYM_KEY, Crms
from tests.services.test_sync_recovery import reconciler, seeded

KEY = PSEUDONYM_KEY.encode()
ADDRESSES = ["ann@example.com", "Ann@Example.com ", "bo@example.com", "cy@example.com", "di@x.org"]
SYSTEMS = [System("hubspot"), System("salesforce")]


def people_of(records: Sequence[CrmRecord]) -> set[frozenset[tuple[str, str, str]]]:
    """Each person's records, by key, as linking in memory finds them."""
    return {frozenset(r.key for r in s.records) for s in link_subjects(KEY, records)}


def partitions(store: Store, records: Sequence[CrmRecord], per: int) -> list[list[CrmRecord]]:
    staging.PEOPLE_PER_PARTITION = per
    with Staging.held(store, KEY) as staged:
        staged.add(records)
        return list(staged.people())


@pytest.fixture
def small_partitions() -> Iterator[None]:
    kept = staging.PEOPLE_PER_PARTITION
    yield
    staging.PEOPLE_PER_PARTITION = kept


record_strategy = st.builds(
    lambda system, n, emails: CrmRecord(system, ObjectType.CONTACT, f"r{n}", emails=emails),
    st.sampled_from(SYSTEMS),
    st.integers(0, 15),
    st.lists(st.sampled_from(ADDRESSES), max_size=3).map(tuple),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(records=st.lists(record_strategy, max_size=14), per=st.integers(1, 3))
def test_partitions_hold_whole_people_as_linking_in_memory_finds_them(
    store: Store, small_partitions: None, records: list[CrmRecord], per: int
) -> None:
    first = {r.key: r for r in reversed(records)}  # a record read twice: kept as first read
    given = list(first.values())

    parts = partitions(store, records, per)

    staged = [r for part in parts for r in part]
    assert sorted(r.key for r in staged) == sorted(first)
    assert all(first[r.key] == r for r in staged)  # sealed and opened whole
    assert set().union(*(people_of(part) for part in parts)) == people_of(given)
    assert all(len(link_subjects(KEY, part)) <= per for part in parts)


def test_a_long_chain_of_shared_addresses_is_one_person(
    store: Store, small_partitions: None
) -> None:
    chain = [
        CrmRecord(
            SYSTEMS[i % 2], ObjectType.CONTACT, f"c{i}", emails=(f"{i}@x.org", f"{i + 1}@x.org")
        )
        for i in reversed(range(40))  # the least address last: the most rounds of linking
    ]
    alone = CrmRecord(SYSTEMS[0], ObjectType.LEAD, "alone", emails=("zz@x.org",))

    parts = partitions(store, [*chain, alone], per=1)

    assert [sorted(r.id for r in part) for part in parts] == [
        sorted(r.id for r in chain),
        ["alone"],
    ]


def test_staged_records_are_sealed_while_held_and_gone_after(store: Store) -> None:
    record = CrmRecord(
        SYSTEMS[1], ObjectType.LEAD, "00Q1", emails=("secret.person@example.com",),
        personal_fields={"LastName": "Secretson"},
    )  # fmt: skip
    with Staging.held(store, KEY) as staged:
        staged.add([record, record])
        with store.engine.connect() as conn:
            rows = [tuple(row) for row in conn.execute(select(sync_staged))]
            refs = [tuple(row) for row in conn.execute(select(sync_staged_refs))]
        assert staged.added == {"salesforce": 1} and len(rows) == 1 and len(refs) == 1
        held = repr(rows + refs).encode() + b"".join(
            v for row in rows for v in row if isinstance(v, bytes)
        )
        assert b"secret" not in held.lower() and b"Secretson" not in held
    with store.engine.connect() as conn:
        assert conn.execute(select(sync_staged)).first() is None
        assert conn.execute(select(sync_staged_refs)).first() is None


def test_the_rows_of_a_run_that_died_go_with_the_next_run(store: Store) -> None:
    with store.transaction() as conn:  # a run whose process died: its lock is free
        row = {"seq": 1, "system": "hubspot", "object_type": "contact", "record_id": "1",
               "part": "x", "sealed": b"unreadable"}  # fmt: skip
        staging_rows.stage(conn, "deadrun", [row], [(1, "x")])

    with Staging.held(store, KEY), store.engine.connect() as conn:
        assert conn.execute(select(sync_staged)).first() is None


def test_a_sync_planned_in_many_partitions_plans_what_one_partition_plans(
    crms: Crms, store: Store, small_partitions: None
) -> None:
    seeded(crms)
    whole = reconciler(crms, store).sync(dry_run=True, keep=None)
    staging.PEOPLE_PER_PARTITION = 1

    parted = reconciler(crms, store).sync(dry_run=True, keep=None)

    assert parted.counts() == whole.counts() and whole.counts()["planned"] > 0
    key = lambda c: (c["system"], c["record_id"], c["change"], c["purpose"])  # noqa: E731
    assert sorted(parted.changes, key=key) == sorted(whole.changes, key=key)
