"""What the logs say as a user reads them: a command or the daemon as a subprocess against
both emulators, its stderr parsed line by line (JSON off a terminal)."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest

from bridge_sandbox.emulators.people import Person, seed_hubspot, seed_salesforce
from tests.conftest import PURPOSES, BridgeCli, Crms, free_port, wait_until_healthy
from tests.runtime.conftest import CLIENT_SECRET

PEOPLE = [Person(f"logged{n}@example.com") for n in range(3)]
HTTP_LIBRARIES = ("httpx", "httpcore", "urllib3", "hpack")

# The CLI keeps its own SQLite database: one run per test, not one per database.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def log_lines(text: str) -> list[dict[str, Any]]:
    """The JSON log lines of a process's output (other lines, such as the one-line error
    of a failed command, are left out)."""
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def from_http_libraries(lines: list[dict[str, Any]], *names: str) -> list[dict[str, Any]]:
    names = names or HTTP_LIBRARIES
    return [
        line
        for line in lines
        if any(str(line.get("logger")).split(".")[0] == name for name in names)
    ]


def assert_no_address(text: str) -> None:
    for person in PEOPLE:
        local = person.email.split("@")[0]
        assert local not in text, "an address reached the log"


def sync(cli: BridgeCli, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return cli("sync", "--dry-run", "--json", *args, **env)


def test_http_libraries_log_nothing_at_the_default_level(
    configured_cli: BridgeCli, crms: Crms
) -> None:
    seed_hubspot(crms.hubspot, PEOPLE, PURPOSES)
    seed_salesforce(crms.salesforce, PEOPLE, PURPOSES)
    result = configured_cli("sync", "--json")  # reads and writes both CRMs, over both clients
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["failed"] == 0
    assert from_http_libraries(log_lines(result.stderr)) == []
    assert "HTTP Request" not in result.stderr
    assert_no_address(result.stderr)


def test_at_debug_httpcore_speaks_only_when_the_wire_is_asked_for(
    configured_cli: BridgeCli, crms: Crms
) -> None:
    seed_hubspot(crms.hubspot, PEOPLE, PURPOSES)
    seed_salesforce(crms.salesforce, PEOPLE, PURPOSES)

    debug = sync(configured_cli, BRIDGE_LOG_LEVEL="debug")
    assert debug.returncode == 0, debug.stderr
    lines = log_lines(debug.stderr)
    assert from_http_libraries(lines, "httpx"), "at debug, one line per request"
    assert from_http_libraries(lines, "httpcore", "hpack") == []

    wire = sync(configured_cli, BRIDGE_LOG_LEVEL="debug", BRIDGE_LOG_WIRE="1")
    assert wire.returncode == 0, wire.stderr
    lines = log_lines(wire.stderr)
    assert from_http_libraries(lines, "httpcore"), "the wire, asked for"
    assert from_http_libraries(lines, "hpack") == []  # header values: never

    info = sync(configured_cli, BRIDGE_LOG_WIRE="1")  # the opt-in alone changes nothing
    assert info.returncode == 0, info.stderr
    assert from_http_libraries(log_lines(info.stderr)) == []


def test_a_retried_vendor_failure_is_info_and_one_that_fails_for_good_a_warning(
    configured_cli: BridgeCli, crms: Crms
) -> None:
    seed_hubspot(crms.hubspot, PEOPLE, PURPOSES)
    seed_salesforce(crms.salesforce, PEOPLE, PURPOSES)

    # Every other HubSpot call answers 503 at first: retried, and the sync still succeeds.
    faults = {"error_rate": 0.5, "error_status": 503, "seed": 7}
    crms.hubspot.put("/__emulator/faults", json=faults).raise_for_status()
    flaky = sync(configured_cli)
    assert flaky.returncode == 0, flaky.stderr
    injected = sum(crms.hubspot.get("/__emulator/counters").json()["injected"].values())
    assert injected > 0
    lines = log_lines(flaky.stderr)
    retried = [line for line in lines if line["event"] == "adapter.call_retrying"]
    assert len(retried) == injected
    assert {(line["level"], line["system"]) for line in retried} == {("info", "hubspot")}
    assert "503" in retried[0]["error"]
    assert [line for line in lines if line["level"] in ("warning", "error")] == []
    crms.hubspot.delete("/__emulator/faults").raise_for_status()

    # The day's quota used up: HubSpot refuses for good, the sync fails, and the log warns.
    limits = {"daily_max": 1}
    crms.hubspot.put("/__emulator/rate-limits", json=limits).raise_for_status()
    refused = sync(configured_cli)
    assert refused.returncode == 1, refused.stderr
    lines = log_lines(refused.stderr)
    [failed] = [line for line in lines if line["event"] == "adapter.call_failed"]
    assert (failed["level"], failed["system"], failed["attempts"]) == ("warning", "hubspot", 1)
    assert "daily API limit" in failed["error"]
    assert not any(line["event"] == "adapter.call_retrying" for line in lines)
    assert_no_address(refused.stderr)


def test_an_erasure_a_hubspot_deletion_starts_logs_one_info_line_when_complete(
    cli: BridgeCli, crms: Crms
) -> None:
    email = "forget.me@example.com"
    contact = crms.seed_hubspot(email=email, firstname="Forget")
    crms.seed_salesforce("Contact", LastName="Me", Email=email)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    daemon = cli.start(
        "run", "--port", str(port),
        BRIDGE_HUBSPOT__CLIENT_SECRET=CLIENT_SECRET,
        BRIDGE_SCHEDULE__INBOX_SECONDS="0.5",
        BRIDGE_SCHEDULE__ERASURE_SECONDS="0.5",
    )  # fmt: skip
    try:
        wait_until_healthy(url, daemon)
        # The first (full) sync runs at start: the bridge then knows whom the contact held.
        eventually(lambda: "sync.finished" in daemon_log(cli), 30, "the first sync")
        crms.hubspot.put(
            "/__emulator/webhooks",
            json={"target_url": f"{url}/webhooks/hubspot", "client_secret": CLIENT_SECRET,
                  "subscription_types": ["contact.privacyDeletion"]},
        ).raise_for_status()  # fmt: skip
        gdpr_delete = {"objectId": contact}
        reply = crms.hubspot.post(
            "/crm/v3/objects/contacts/gdpr-delete",
            json=gdpr_delete,
            headers={"Authorization": "Bearer pat-test"},
        )
        assert reply.status_code == 204, reply.text
        eventually(lambda: "erasure.completed" in daemon_log(cli), 60, "the erasure")
    finally:
        daemon.terminate()
        assert daemon.wait(timeout=30) == 0

    text = daemon_log(cli)
    completed = [line for line in log_lines(text) if line["event"] == "erasure.completed"]
    [request] = json.loads(cli("requests", "--json").stdout)["requests"]
    assert request["status"] == "completed" and request["trigger"] == "hubspot.privacyDeletion"
    assert [(c["level"], c["request"], c["trigger"]) for c in completed] == [
        ("info", request["id"], "hubspot.privacyDeletion")
    ]
    assert len(completed[0]["subject_ref"]) == 64  # the pseudonym, never the address
    assert "forget" not in text.lower()
    assert from_http_libraries(log_lines(text)) == []


def daemon_log(cli: BridgeCli) -> str:
    return "".join(path.read_text() for path in sorted(cli.cwd.glob("run-*.log")))


def eventually(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.2)
