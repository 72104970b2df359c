"""What `bridge check --crm` says about a Dataverse environment, read from the emulator over
real HTTP: change tracking per table, the configured columns, the Journeys purposes, the
recycle bin and the legal-hold conditions (docs/vendors/dynamics.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from bridge.adapters.base import Check
from bridge.adapters.dynamics.adapter import DynamicsAdapter
from bridge.model import Purpose, RelatedRecords
from tests.adapters.dynamics_world import PURPOSES, DynamicsWorld

WON = RelatedRecords(
    name="won_opportunity",
    related_object="opportunities",
    link_field="_parentcontactid_value",
    where="statecode eq 1",
)


@pytest.fixture
def world(dynamics_world: DynamicsWorld) -> DynamicsWorld:
    return dynamics_world


def checks(
    world: DynamicsWorld,
    related: Sequence[RelatedRecords] = (),
    purposes: Sequence[Purpose] = PURPOSES,
    **settings: Any,
) -> dict[str, list[Check]]:
    """The readiness lines by name (a per-table check has one line per table), from an
    adapter with these settings changed."""
    with DynamicsAdapter(
        world.settings().model_copy(update=settings),
        purposes,
        keep_on_anonymize={},
        due_field="cb_purgedue",
    ) as adapter:
        lines = list(adapter.readiness(related))
    named: dict[str, list[Check]] = {}
    for line in lines:
        named.setdefault(line.name, []).append(line)
    return named


def failing(found: dict[str, list[Check]]) -> list[str]:
    """The names of the lines that do not hold, once per line."""
    return sorted(name for name, lines in found.items() for line in lines if not line.ok)


def one(found: dict[str, list[Check]], name: str) -> Check:
    [line] = found[name]
    return line


def test_a_ready_environment_holds_every_check(world: DynamicsWorld) -> None:
    found = checks(world, [WON])
    assert failing(found) == []
    for name in (
        "credentials",
        "tables",
        "change tracking: contact",
        "change tracking: lead",
        "lawful_basis_field",
        "purpose newsletter",
        "purpose product_updates",
        "recycle bin",
        "related won_opportunity",
    ):
        assert name in found, sorted(found)
    assert "leads" in one(found, "tables").found
    assert len(found["lawful_basis_field"]) == 2  # contact and lead


def test_a_table_without_change_tracking_fails_with_the_fix(world: DynamicsWorld) -> None:
    world.admin.put("/__emulator/settings", json={"untracked_tables": ["lead"]}).raise_for_status()
    found = checks(world)
    assert failing(found) == ["change tracking: lead"]
    line = one(found, "change tracking: lead")
    assert line.found == "off"
    assert "lead" in line.fix and "Track changes" in line.fix
    assert one(found, "change tracking: contact").ok


def test_a_purpose_the_environment_lacks_fails_and_names_it(world: DynamicsWorld) -> None:
    surveys = Purpose(id="surveys", dynamics_purpose="Customer surveys")
    found = checks(world, purposes=[*PURPOSES, surveys])
    assert failing(found) == ["purpose surveys"]
    line = one(found, "purpose surveys")
    assert "Customer surveys" in line.found and "Customer surveys" in line.fix


def test_a_phone_purpose_mapped_to_dynamics_fails_as_one_the_bridge_cannot_keep(
    world: DynamicsWorld,
) -> None:
    """A Voice consent row is per phone number, which no consent write carries: the purpose
    is not kept in Dynamics 365, and the check says so rather than let a sync skip it."""
    calls = Purpose(id="sales_calls", channel="phone", dynamics_purpose="Newsletter")
    found = checks(world, purposes=[*PURPOSES, calls])
    assert failing(found) == ["purpose sales_calls"]
    assert "dynamics_purpose" in one(found, "purpose sales_calls").fix


def test_a_lawful_basis_column_that_is_missing_fails_with_the_fix(world: DynamicsWorld) -> None:
    found = checks(world, lawful_basis_field="cb_legalground")
    assert failing(found) == ["lawful_basis_field"] * 2  # on contact and on lead
    for line, table in zip(found["lawful_basis_field"], ("contact", "lead"), strict=True):
        assert line.found == f"{table}.cb_legalground is missing"
        assert "cb_legalground" in line.fix and table in line.fix


def test_a_legal_hold_on_a_missing_column_fails_and_a_good_one_holds(
    world: DynamicsWorld,
) -> None:
    broken = RelatedRecords(
        name="signed_contract",
        related_object="opportunities",
        link_field="_parentcontactid_value",
        where="cb_contractsigned eq true",
    )
    found = checks(world, [WON, broken])
    assert failing(found) == ["related signed_contract"]
    line = one(found, "related signed_contract")
    assert line.fix and "opportunities" in line.found
    assert one(found, "related won_opportunity").ok


def test_a_legal_hold_on_a_missing_table_fails(world: DynamicsWorld) -> None:
    nowhere = RelatedRecords(
        name="invoices",
        related_object="cb_invoices",
        link_field="_cb_contactid_value",
        where="statecode eq 0",
    )
    found = checks(world, [nowhere])
    assert failing(found) == ["related invoices"]


@pytest.mark.parametrize("days", [None, 30])
def test_the_recycle_bin_line_says_on_or_off_with_its_days(
    world: DynamicsWorld, days: int | None
) -> None:
    world.admin.put("/__emulator/settings", json={"recycle_bin_days": days}).raise_for_status()
    line = one(checks(world), "recycle bin")
    assert line.ok
    if days is None:
        assert line.found.startswith("off")
    else:
        assert line.found.startswith("on") and "30 days" in line.found
