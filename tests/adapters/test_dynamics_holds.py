"""Conditions on related rows are one CRM's query: the Dynamics adapter reads those that name
it (or no CRM), and leaves another CRM's alone, in erasure and in ``bridge check --crm``."""

from __future__ import annotations

import pytest

from bridge.model import RelatedRecords
from bridge.testing.conformance import Person
from tests.adapters.dynamics_world import DynamicsWorld


@pytest.fixture
def world(dynamics_world: DynamicsWorld) -> DynamicsWorld:
    return dynamics_world


def test_a_condition_on_another_crms_rows_is_left_to_it(world: DynamicsWorld) -> None:
    [held] = world.seed([Person("held@example.com")])
    matching = world.holds(held).matching
    salesforce = RelatedRecords(
        name="won_deal",
        system="salesforce",
        related_object="Opportunity",
        link_field="ContactId",
        where="StageName = 'Closed Won'",
    )
    ours = matching.model_copy(update={"system": "dynamics"})
    adapter = world.adapter()
    [targets] = adapter.erasure_targets([["held@example.com"]])
    assert adapter.related(targets, [salesforce, matching]) == {held: matching}
    assert adapter.related(targets, [salesforce, ours]) == {held: ours}
    assert adapter.related(targets, [salesforce]) == {}
    checks = list(adapter.readiness([salesforce, ours]))
    assert [c.name for c in checks if c.name.startswith("related")] == [f"related {ours.name}"]
    assert all(c.ok for c in checks)
