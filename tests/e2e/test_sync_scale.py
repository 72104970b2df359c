"""`bridge sync` at scale: 2,000 people both CRMs disagree about, the CLI as a subprocess.

The population and the answer each person must end with come from ``tests.services.world``,
which works the answer out from the seed spec by the policy's rules, never through the
reconciler. HubSpot's rate limits are lifted here (these tests are about convergence; the
limits are ``bench/reconcile.py``'s business), so one v3 call per grant does not dominate.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from bridge_sandbox.emulators.people import Person, seed_hubspot, seed_salesforce
from tests.conftest import PURPOSES, BridgeCli, Crms
from tests.e2e.test_sync_cli import sync
from tests.services.world import (
    discrepancies,
    hubspot_view,
    population,
    refusals,
    salesforce_view,
)

PEOPLE = 2_000
MAX_RUNS = 6
FAULTS = {"error_rate": 0.16, "drop_rate": 0.05, "seed": 7}  # ~20% of calls: 5% + 95% x 16%

# The CLI keeps its own SQLite database: one run per test, not one per database.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def world(crms: Crms) -> list[Person]:
    """The population, seeded into both emulators, with HubSpot's limits lifted."""
    limits = crms.hubspot.get("/__emulator/rate-limits").json()
    limits |= {"burst_max": 100_000, "search_max": 1_000}
    crms.hubspot.put("/__emulator/rate-limits", json=limits).raise_for_status()
    people = population(PEOPLE, PURPOSES)
    seed_hubspot(crms.hubspot, people, PURPOSES)
    seed_salesforce(crms.salesforce, people, PURPOSES)
    return people


def run(configured_cli: BridgeCli) -> tuple[int, dict[str, Any]]:
    result = configured_cli("sync", "--json", "--changes", "all")
    assert result.returncode in (0, 1), result.stderr[-2000:]
    report: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, report


def converged(crms: Crms, people: list[Person], refused: set[tuple[str, str]]) -> None:
    hubspot = hubspot_view(crms.hubspot, PURPOSES)
    salesforce = salesforce_view(crms.salesforce, PURPOSES)
    problems = discrepancies(people, PURPOSES, hubspot, salesforce, refused)
    assert not problems, f"{len(problems)} discrepancies, e.g.:\n" + "\n".join(problems[:30])


def quiesces(
    configured_cli: BridgeCli,
    crms: Crms,
    refused: set[tuple[str, str]],
    *,
    incremental: bool = True,
) -> None:
    """A sync right after plans nothing, and so does a full one, which meets every refused
    grant again (an incremental sync reads only what changed, and a refusal changed nothing)
    and leaves each to the person."""
    if incremental:
        again = sync(configured_cli, "--changes", "all")
        assert again["counts"]["planned"] == 0, again["changes"][:5]
    full = sync(configured_cli, "--full", "--changes", "all")
    assert full["counts"]["planned"] == 0, full["changes"][:5]
    hubspot = hubspot_view(crms.hubspot, PURPOSES)
    assert refusals(full["awaiting_person"], hubspot) == refused


def test_two_thousand_conflicting_people_converge_in_one_sync_and_then_quiesce(
    configured_cli: BridgeCli, crms: Crms, world: list[Person]
) -> None:
    started = time.monotonic()
    report = sync(configured_cli, "--changes", "all")
    first = time.monotonic() - started

    counts = report["counts"]
    assert counts["failed"] == 0 and counts["planned"] > 1_000, counts
    refused = refusals(report["changes"], hubspot_view(crms.hubspot, PURPOSES))
    assert refused, "the population holds grants HubSpot must refuse"
    converged(crms, world, refused)

    quiesces(configured_cli, crms, refused)
    print(f"first sync {first:.1f} s: {counts}")


def test_two_thousand_people_converge_under_twenty_percent_faults(
    configured_cli: BridgeCli, crms: Crms, world: list[Person]
) -> None:
    for admin in (crms.hubspot, crms.salesforce):
        admin.put("/__emulator/faults", json=FAULTS).raise_for_status()
    refused: set[tuple[str, str]] = set()
    runs: list[dict[str, Any]] = []
    for _ in range(MAX_RUNS):
        started = time.monotonic()
        code, report = run(configured_cli)
        refused |= refusals(report["changes"], hubspot_view(crms.hubspot, PURPOSES))
        runs.append(report["counts"] | {"seconds": round(time.monotonic() - started, 1)})
        if code == 0:
            assert report["counts"]["failed"] == 0
            break
    else:
        pytest.fail(f"still failing after {MAX_RUNS} runs: {runs}")
    injected = [
        a.get("/__emulator/counters").json()["injected"] for a in (crms.hubspot, crms.salesforce)
    ]
    assert all(sum(i.values()) > 0 for i in injected), injected

    for admin in (crms.hubspot, crms.salesforce):
        admin.delete("/__emulator/faults").raise_for_status()
    converged(crms, world, refused)
    quiesces(
        configured_cli, crms, refused, incremental=False
    )  # a full sync: every person read again
    print(f"runs: {runs}; faults injected (HubSpot, Salesforce): {injected}")
