"""`bridge check --crm` with Dynamics 365 alone configured, as a user runs it against the
Dataverse emulator: an environment set up as the README says passes line by line; a refused
secret is one line naming the vendor's code and the settings to fix, never a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge_sandbox.emulators.common import RunningServer
from tests.adapters.dynamics_world import (
    CLIENT_ID,
    CLIENT_SECRET,
    TENANT,
    DynamicsWorld,
    serve_dynamics,
)
from tests.conftest import BridgeCli, said

CONFIG = """
[[purposes]]
id = "newsletter"
dynamics_purpose = "Newsletter"

[[purposes]]
id = "product_updates"
dynamics_purpose = "Product updates"
"""


@pytest.fixture
def dynamics_cli(bridge: BridgeCli) -> Iterator[tuple[BridgeCli, DynamicsWorld]]:
    """The CLI aimed at an emulated environment with the purposes' rows, nothing else."""
    with serve_dynamics() as (server, admin):
        world: DynamicsWorld = DynamicsWorld.fresh(server, admin)
        (bridge.cwd / "config").mkdir()
        (bridge.cwd / "config" / "bridge.toml").write_text(CONFIG)
        bridge.env |= environment(server)
        assert bridge("db", "upgrade").returncode == 0
        yield bridge, world
        world.close()


def environment(server: RunningServer) -> dict[str, str]:
    return {
        "BRIDGE_DYNAMICS__TENANT_ID": TENANT,
        "BRIDGE_DYNAMICS__CLIENT_ID": CLIENT_ID,
        "BRIDGE_DYNAMICS__CLIENT_SECRET": CLIENT_SECRET,
        "BRIDGE_DYNAMICS__ENVIRONMENT_URL": server.url,
        "BRIDGE_DYNAMICS__BASE_URL": server.url,
    }


def test_a_ready_environment_passes_every_line(
    dynamics_cli: tuple[BridgeCli, DynamicsWorld],
) -> None:
    cli, _world = dynamics_cli
    result = cli("check", "--crm")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert all(line.startswith("ok    ") for line in lines), result.stdout
    for expected in ("dynamics: credentials:", "dynamics: change tracking: contact: on"):
        assert any(expected in line for line in lines), result.stdout
    assert any("dynamics: purpose newsletter:" in line for line in lines)


def test_a_refused_secret_is_one_line_with_the_code_and_the_fix(
    dynamics_cli: tuple[BridgeCli, DynamicsWorld], tmp_path: Path
) -> None:
    cli, _world = dynamics_cli
    result = cli("check", "--crm", BRIDGE_DYNAMICS__CLIENT_SECRET="not-the-secret")
    assert result.returncode == 1
    failing = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failing) == 1, result.stdout
    [line] = failing
    assert line.startswith("FAIL  dynamics: ")
    assert "invalid_client" in line and "__CLIENT_SECRET" in line
    for output in (result.stdout, result.stderr):
        assert "Traceback" not in output and "not-the-secret" not in output
    assert said(result) == [] or all("dynamics" in s for s in said(result))


def test_a_table_without_change_tracking_fails_naming_it(
    dynamics_cli: tuple[BridgeCli, DynamicsWorld],
) -> None:
    cli, world = dynamics_cli
    world.admin.put("/__emulator/settings", json={"untracked_tables": ["lead"]}).raise_for_status()
    result = cli("check", "--crm")
    assert result.returncode == 1
    failing = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert failing == [
        "FAIL  dynamics: change tracking: lead: off; turn on 'Track changes' in the lead "
        "table's properties"
    ], result.stdout
