"""`bridge run` as real processes: it serves, drains, stops in order on SIGTERM, and several
instances on one PostgreSQL database share the erasure work, survive the SIGKILL of their
leader, and execute no step twice (the emulators' call counters say so)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import pytest

from bridge import audit
from bridge.store import erasure as rows
from bridge.store.db import Store
from tests.conftest import BridgeCli, Crms, free_port, wait_until_healthy

T = TypeVar("T")
GDPR_DELETE = "POST /crm/v3/objects/contacts/gdpr-delete"
SF_DELETE = "DELETE /services/data/v{version}/composite/sobjects"


def eventually(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def leader_gauge(port: int) -> float | None:
    """The instance's ``bridge_scheduler_leader`` (1 leads, 0 follows); None if unreachable."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("bridge_scheduler_leader "):
            return float(line.split()[1])
    return None


def slow_vendors(crms: Crms, latency_ms: int) -> None:
    """Every vendor call takes ``latency_ms`` more: kills and signals land mid-step."""
    for admin in (crms.hubspot, crms.salesforce):
        admin.put("/__emulator/faults", json={"latency_ms": latency_ms}).raise_for_status()


def seed_people(crms: Crms, people: list[str]) -> None:
    """One HubSpot contact and one Salesforce Contact each; vendor limits out of the way."""
    crms.hubspot.put("/__emulator/rate-limits", json={"enabled": False}).raise_for_status()
    crms.salesforce.patch(
        "/__emulator/settings", json={"daily_api_limit": 1_000_000}
    ).raise_for_status()
    crms.seed_people(people, name="P")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_daemon_serves_and_exits_0_on_sigterm_finishing_the_step_under_way(
    cli: BridgeCli, crms: Crms, stopped_at_end: list[subprocess.Popen[str]]
) -> None:
    people = ["sigterm.a@example.com", "sigterm.b@example.com"]
    seed_people(crms, people)
    submitted = cli("erase", *people, "--no-wait", "--json")
    assert submitted.returncode == 0, submitted.stderr
    slow_vendors(crms, latency_ms=800)
    port = free_port()
    daemon = cli.start("run", "--port", str(port), BRIDGE_SCHEDULE__ERASURE_SECONDS="0.2")
    stopped_at_end.append(daemon)
    wait_until_healthy(f"http://127.0.0.1:{port}", daemon)
    eventually(lambda: leader_gauge(port) == 1, 10, "on SQLite the one instance leads")

    store = Store(cli.env["BRIDGE_DATABASE_URL"])
    request_ids = [r["id"] for r in rows.requests(store)]

    def claimed() -> list[dict[str, Any]]:
        steps = [s for r in request_ids for s in rows.steps(store, r)]
        return [s for s in steps if s["status"] == "processing"]

    eventually(claimed, 20, "the daemon claims erasure steps")
    began = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0
    assert time.monotonic() - began < 30

    steps = [s for r in request_ids for s in rows.steps(store, r)]
    assert [s for s in steps if s["status"] == "processing"] == []  # the batch finished
    # It stopped early: work was left (the verification at least, which the next run does).
    assert {r["status"] for r in rows.requests(store)} == {"planned"}
    log = next(cli.cwd.glob("run-*.log")).read_text()
    assert '"daemon.stopped"' in log
    store.dispose()

    # The next start carries on where this one stopped, and completes every request.
    slow_vendors(crms, latency_ms=0)
    again = cli.start("run", "--port", str(port), BRIDGE_SCHEDULE__ERASURE_SECONDS="0.2")
    stopped_at_end.append(again)
    store = Store(cli.env["BRIDGE_DATABASE_URL"])
    eventually(
        lambda: {r["status"] for r in rows.requests(store)} == {"completed"},
        30,
        "every request completes after the restart",
    )
    again.send_signal(signal.SIGTERM)
    assert again.wait(timeout=30) == 0
    store.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_second_daemon_on_one_sqlite_file_is_refused_while_the_first_runs(
    cli: BridgeCli, crms: Crms, stopped_at_end: list[subprocess.Popen[str]]
) -> None:
    port = free_port()
    first = cli.start("run", "--port", str(port))
    stopped_at_end.append(first)
    wait_until_healthy(f"http://127.0.0.1:{port}", first)
    database = (cli.cwd / "bridge.db").resolve()

    second = cli("run", "--port", str(free_port()))
    assert second.returncode == 2, second.stderr
    assert second.stderr.splitlines() == [
        f"bridge: another bridge run already uses {database} (pid {first.pid}); run one daemon"
        " per SQLite database, or use PostgreSQL (BRIDGE_DATABASE_URL=postgresql://...) to run"
        " several"
    ]
    assert "Traceback" not in second.stdout + second.stderr
    # Another path to the same file is the same database.
    (cli.cwd / "alias").mkdir()
    (cli.cwd / "alias" / "bridge.db").symlink_to(database)
    aliased = cli(
        "run", "--port", str(free_port()), BRIDGE_DATABASE_URL="sqlite:///alias/bridge.db"
    )
    assert aliased.returncode == 2 and "another bridge run already uses" in aliased.stderr

    # The receiver alone does not lead: it may run beside the daemon.
    serve_port = free_port()
    receiver = cli.start("serve", "--port", str(serve_port))
    stopped_at_end.append(receiver)
    wait_until_healthy(f"http://127.0.0.1:{serve_port}", receiver)

    assert first.poll() is None and leader_gauge(port) == 1  # the first runs on, leading
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0
    receiver.send_signal(signal.SIGTERM)
    assert receiver.wait(timeout=30) == 0

    # Once it has stopped, the next daemon starts (the lock file left behind is no obstacle).
    again = cli.start("run", "--port", str(port))
    stopped_at_end.append(again)
    wait_until_healthy(f"http://127.0.0.1:{port}", again)
    again.send_signal(signal.SIGTERM)
    assert again.wait(timeout=30) == 0


def test_daemon_refuses_an_old_schema_and_a_bad_schedule(bridge: BridgeCli) -> None:
    old = bridge("run")
    assert old.returncode == 2
    assert "run `bridge db upgrade`" in old.stderr and "Traceback" not in old.stderr
    assert bridge("db", "upgrade").returncode == 0
    bad = bridge("run", BRIDGE_SCHEDULE__FULL_SYNC_CRON="0 2 * * 0")
    assert bad.returncode == 2
    assert "schedule.full_sync_cron: write the weekday by name" in bad.stderr
    bad = bridge("run", BRIDGE_SCHEDULE__RETENTION_CRON="every day")
    assert bad.returncode == 2
    assert "schedule.retention_cron: not a crontab expression" in bad.stderr


PEOPLE = [f"daemon{n:02d}@example.com" for n in range(24)]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("instances", [2, 3])
def test_daemons_share_erasures_and_survive_leader_kill(
    instances: int,
    database_url: str,
    bridge: BridgeCli,
    crms: Crms,
    stopped_at_end: list[subprocess.Popen[str]],
) -> None:
    seed_people(crms, PEOPLE)
    bridge.env |= crms.env() | {"BRIDGE_DATABASE_URL": database_url}
    store = Store(database_url)
    store.upgrade()
    submitted = bridge("erase", *PEOPLE, "--no-wait", "--json")
    assert submitted.returncode == 0, submitted.stderr
    request_ids = [r["id"] for r in json.loads(submitted.stdout)["requests"]]
    assert len(request_ids) == len(PEOPLE)
    for admin in (crms.hubspot, crms.salesforce):
        admin.delete("/__emulator/counters").raise_for_status()
    slow_vendors(crms, latency_ms=40)

    schedule = {
        "BRIDGE_SCHEDULE__ERASURE_SECONDS": "0.5",
        "BRIDGE_SCHEDULE__LEADER_CHECK_SECONDS": "1",
        "BRIDGE_ERASURE__LEASE_SECONDS": "5",  # a killed instance's steps are retried after 5 s
    }
    ports = [free_port() for _ in range(instances)]
    daemons = {port: bridge.start("run", "--port", str(port), **schedule) for port in ports}
    stopped_at_end.extend(daemons.values())
    for port, daemon in daemons.items():
        wait_until_healthy(f"http://127.0.0.1:{port}", daemon, timeout=60)

    def the_leader() -> int | None:
        gauges = {port: leader_gauge(port) for port in ports}
        leading = [port for port, gauge in gauges.items() if gauge == 1]
        following = [port for port, gauge in gauges.items() if gauge == 0]
        return leading[0] if len(leading) == 1 and len(following) == instances - 1 else None

    leader = eventually(the_leader, 20, "exactly one instance leads")

    def completed() -> int:
        return sum(r["status"] == "completed" for r in rows.requests(store))

    eventually(lambda: completed() >= 3, 60, "the daemons complete requests")
    daemons[leader].send_signal(signal.SIGKILL)
    daemons[leader].wait(timeout=10)
    killed_at = time.monotonic()
    assert completed() < len(PEOPLE)  # the leader died mid-run
    # Whatever the dead instance held is among the steps claimed at this moment.
    in_flight = {
        s["id"] for r in request_ids for s in rows.steps(store, r) if s["status"] == "processing"
    }

    survivors = [port for port in ports if port != leader]
    eventually(
        lambda: [leader_gauge(p) for p in survivors].count(1) == 1,
        60,
        "another instance takes the lead",
    )
    assert time.monotonic() - killed_at < 60
    eventually(lambda: completed() == len(PEOPLE), 90, "every request completes")

    listed = bridge("requests", "--json")
    assert listed.returncode == 0
    assert {r["status"] for r in json.loads(listed.stdout)["requests"]} == {"completed"}
    assert [leader_gauge(p) for p in survivors].count(1) == 1  # still exactly one leader
    for port in survivors:
        daemons[port].send_signal(signal.SIGTERM)
    for port in survivors:
        assert daemons[port].wait(timeout=30) == 0

    # No step ran twice. A step runs again only when its lease expired, and leases expire
    # only on the steps the killed instance held: those are among `in_flight` (the batches it
    # was running, of several requests). Such a retry either finds the record already gone
    # (the killed call had reached the vendor) or erases it (it had not), so it adds at most
    # one vendor call per retried step, and a record is erased once either way. Any other
    # double run shows as a second attempt outside `in_flight`, or as more vendor calls than
    # steps plus retries.
    steps = [s for r in request_ids for s in rows.steps(store, r)]
    assert {s["status"] for s in steps} == {"done"}
    retried = [s for s in steps if s["attempts"] > 1]
    assert {s["id"] for s in retried} <= in_flight
    assert all(s["attempts"] == 2 for s in retried)
    assert all(s["outcome"] == "erased" for s in steps if s["attempts"] == 1)
    assert all(s["outcome"] in ("erased", "already_gone") for s in retried)

    per_system = Counter(s["system"] for s in steps)
    retried_per_system = Counter(s["system"] for s in retried)
    assert per_system == {"hubspot": 2 * len(PEOPLE), "salesforce": len(PEOPLE)}
    hubspot = crms.hubspot.get("/__emulator/counters").json()["calls"]
    salesforce = crms.salesforce.get("/__emulator/counters").json()["calls"]
    # A gdpr-delete per contact at least (its address is blocklisted with it, in one call).
    assert len(PEOPLE) <= hubspot[GDPR_DELETE]
    assert hubspot[GDPR_DELETE] <= per_system["hubspot"] + retried_per_system["hubspot"]
    # Collections deletes carry up to 200 rows: a call per batch, not per row.
    assert 1 <= salesforce[SF_DELETE] <= 1 + len(retried) + instances

    # Each request completed once, and everyone is gone from both systems.
    completions = Counter(
        e["reason"] for e in audit.events(store) if e["action"] == "erasure.completed"
    )
    assert completions == {f"request {r}": 1 for r in request_ids}
    assert crms.hubspot.get("/__emulator/state").json()["contacts"] == []
    contacts = crms.salesforce.get(
        "/__emulator/records", params={"type": "Contact", "include_deleted": "true"}
    ).json()["records"]
    assert contacts == []
    store.dispose()
