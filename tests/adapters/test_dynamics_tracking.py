"""Dataverse change tracking: the Dynamics adapter's ``track`` against the emulator, and the
sync reading from the token it keeps (a full read again once the token has expired).

docs/vendors/dynamics.md, "Change tracking": changed rows come whole, deleted ones as
``$deletedEntity``; consent4 rows are tracked too, since a person's consent changes there
and not on the contact.
"""

from __future__ import annotations

from typing import Any

import pytest

from bridge.adapters.base import ChangeTracker, ConsentWrite, TokenExpired
from bridge.model import ConsentStatus, System
from bridge.policies.minimisation import Minimisation
from bridge.services.reconcile import Reconciler
from bridge.services.watch import Watch
from bridge.store import records as record_rows
from bridge.store.db import Store
from bridge.testing.conformance import Person
from tests.adapters.dynamics_world import PURPOSES, DynamicsWorld, web_api
from tests.conftest import PSEUDONYM_KEY

WITHDRAWN = ConsentStatus.WITHDRAWN


@pytest.fixture
def world(dynamics_world: DynamicsWorld) -> DynamicsWorld:
    return dynamics_world


def behind_the_bridge(world: DynamicsWorld, method: str, path: str, body: Any = None) -> None:
    """A change made in Dynamics by someone else (a user, a flow)."""
    with web_api(world.url) as api:
        api.request(method, path, json=body, headers={"If-Match": "*"}).raise_for_status()


def test_a_token_reads_just_what_changed_since_and_counts_the_deletions(
    world: DynamicsWorld,
) -> None:
    first = PURPOSES[0].id
    ids = world.seed(
        [Person(f"p{i}@example.com", consents={first: ConsentStatus.GRANTED}) for i in range(6)]
    )
    adapter = world.adapter()
    assert isinstance(adapter, ChangeTracker)
    everything = adapter.track(None)
    assert sorted(r.id for r in everything.records) == sorted(ids)
    assert everything.token is not None
    # Behind the bridge: a name edited, a contact deleted, a consent withdrawn (on the
    # consent4 row alone: the contact itself does not change).
    behind_the_bridge(world, "PATCH", f"contacts({ids[0]})", {"firstname": "Edited"})
    behind_the_bridge(world, "DELETE", f"contacts({ids[1]})")
    [outcome] = adapter.write_consents(
        [ConsentWrite(world.ref(ids[2]), "p2@example.com", first, WITHDRAWN)]
    )
    assert outcome.status.value == "done"
    changes = adapter.track(everything.token)
    read = {r.id: r for r in changes.records}
    assert set(read) == {ids[0], ids[2]}
    assert [c.status for c in read[ids[2]].consents if c.purpose == first] == [WITHDRAWN]
    assert changes.deleted == 1
    assert changes.token and changes.token != everything.token
    quiet = adapter.track(changes.token)
    assert list(quiet.records) == [] and quiet.deleted == 0


def test_an_expired_or_foreign_token_raises_before_anything_is_read(world: DynamicsWorld) -> None:
    world.seed([Person("kept@example.com")])
    adapter = world.adapter()
    assert isinstance(adapter, ChangeTracker)
    first = adapter.track(None)
    assert len(list(first.records)) == 1 and first.token
    world.admin.post("/__emulator/change-tokens/expire").raise_for_status()
    with pytest.raises(TokenExpired) as expired:
        adapter.track(first.token)
    assert expired.value.code == "0x80044352"
    for foreign in ("not json", "[1, 2]", '{"contacts": 3}'):
        with pytest.raises(TokenExpired):
            adapter.track(foreign)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # no SQL of its own
def test_the_sync_keeps_the_token_reads_from_it_and_reads_all_once_it_expired(
    world: DynamicsWorld, store: Store
) -> None:
    ids = world.seed([Person(f"s{i}@example.com") for i in range(5)])
    system = System("dynamics")
    adapter: Any = world.adapter()
    reconciler = Reconciler(
        store,
        {system: adapter},
        PSEUDONYM_KEY.encode(),
        PURPOSES,
        Minimisation({}),
        watch=Watch(store, PSEUDONYM_KEY.encode()),
    )
    assert reconciler.sync().records == 5
    token = record_rows.cursor(store, "track:dynamics")
    assert token is not None
    behind_the_bridge(world, "PATCH", f"contacts({ids[3]})", {"donotbulkemail": True})
    changed = reconciler.sync()
    assert not changed.full and changed.records == 1
    moved = record_rows.cursor(store, "track:dynamics")
    assert moved is not None and moved != token
    world.admin.post("/__emulator/change-tokens/expire").raise_for_status()
    again = reconciler.sync()
    assert not again.full and again.records == 5  # the whole environment, read once more
    renewed = record_rows.cursor(store, "track:dynamics")
    assert renewed is not None
    behind_the_bridge(world, "PATCH", f"contacts({ids[4]})", {"lastname": "Renewed"})
    assert reconciler.sync().records == 1  # the renewed token reads changes again
