"""The Dataverse emulator the Dynamics 365 adapter's tests share: one per test module, reset
to an empty environment (with the conformance purposes' rows) for each test."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from bridge_sandbox.emulators.common import RunningServer
from tests.adapters.dynamics_world import DynamicsWorld, serve_dynamics


@pytest.fixture(scope="module")
def dynamics_emulator() -> Iterator[tuple[RunningServer, httpx.Client]]:
    with serve_dynamics() as running:
        yield running


@pytest.fixture
def dynamics_world(
    dynamics_emulator: tuple[RunningServer, httpx.Client],
) -> Iterator[DynamicsWorld]:
    """An empty environment with the two purposes, no faults, counters at zero."""
    running = DynamicsWorld.fresh(*dynamics_emulator)
    yield running
    running.close()
