"""A changed BRIDGE_ENCRYPTION_KEY as an operator meets it: nothing held is lost or dead-lettered,
the old key listed second keeps everything working, and `bridge keys rotate` retires it."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

import httpx
import pytest
from cryptography.fernet import Fernet

from bridge.store import inbox
from bridge.store.db import Store
from tests.conftest import BridgeCli, Crms, free_port, said, wait_until_healthy
from tests.runtime.conftest import (
    CLIENT_SECRET,
    ORG_ID,
    OUTBOUND_TOKEN,
    Receiver,
    hubspot_event,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()
ADA, BO, CY = "ada.rotate@example.com", "bo.rotate@example.com", "cy.rotate@example.com"
DAEMON = {
    "BRIDGE_HUBSPOT__CLIENT_SECRET": CLIENT_SECRET,
    "BRIDGE_SALESFORCE__ORGANIZATION_ID": ORG_ID,
    "BRIDGE_SALESFORCE__OUTBOUND_TOKEN": OUTBOUND_TOKEN,
    "BRIDGE_SCHEDULE__INBOX_SECONDS": "0.5",
    "BRIDGE_SCHEDULE__ERASURE_SECONDS": "1",
    "BRIDGE_SCHEDULE__INCREMENTAL_SYNC_MINUTES": "600",
}


def fix(what: str) -> str:
    return (
        f"bridge: {what} is encrypted under a key that is no longer configured; add the old key "
        "after the new one in BRIDGE_ENCRYPTION_KEY, then run `bridge keys rotate`"
    )


def test_a_key_change_strands_nothing_and_rotation_retires_the_old_key(
    cli: BridgeCli, crms: Crms
) -> None:
    for email in (ADA, BO):
        crms.seed_hubspot(email=email, firstname="Rotate")
        crms.seed_salesforce("Contact", LastName="Rotate", Email=email)
    cy = crms.seed_hubspot(email=CY, firstname="Rotate")

    # Under the old key: two open requests, and a HubSpot privacy deletion waiting in the inbox.
    first, second = (requested(cli("erase", e, "--no-wait", "--json", BRIDGE_ENCRYPTION_KEY=OLD))
                     for e in (ADA, BO))  # fmt: skip
    port = free_port()
    serving = cli.start("serve", "--port", str(port), BRIDGE_ENCRYPTION_KEY=OLD, **DAEMON)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(url, serving)
        with httpx.Client(timeout=10) as http:
            receiver = Receiver(url, Store(cli.env["BRIDGE_DATABASE_URL"]), crms.settings, http)
            deletion = hubspot_event(1, "contact.privacyDeletion", objectId=int(cy))
            assert receiver.post_hubspot([deletion]).status_code == 200
    finally:
        stop(serving)

    # The new key alone, before rotating: the problem said plainly, and nothing given up on.
    retried = cli("requests", "--retry", first, BRIDGE_ENCRYPTION_KEY=NEW)
    assert (retried.returncode, said(retried)) == (2, [fix(f"erasure request {first}")])
    rotated = cli("keys", "rotate", BRIDGE_ENCRYPTION_KEY=NEW)
    assert rotated.returncode == 1
    for what in (f"erasure request {first}", f"erasure request {second}", "inbox event 1"):
        assert f"no configured key opens {what}\n" in rotated.stdout
    assert said(rotated) == [
        "bridge: 3 held values no configured key opens; add the old key after the new one in "
        "BRIDGE_ENCRYPTION_KEY, then run `bridge keys rotate` again"
    ]
    waits = "inbox event waits for its key"
    daemon(cli, NEW, until=lambda log: waits in log and log.count("erasure.drain_failed") >= 2)
    [event] = inbox.all_rows(Store(cli.env["BRIDGE_DATABASE_URL"]))
    assert (event["status"], event["attempts"]) == ("pending", 0)
    # Still open, none failed: the retried one went back to be planned again.
    assert statuses(cli) == {first: "received", second: "planned"}

    # The old key listed second: work goes on, and rotation moves it all to the new key.
    both = f"{NEW},{OLD}"
    retried = cli("requests", "--retry", first, "--json", BRIDGE_ENCRYPTION_KEY=both)
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["requests"][0]["status"] == "completed"
    rotated = cli("keys", "rotate", BRIDGE_ENCRYPTION_KEY=f"{NEW}\n{OLD}")
    assert (rotated.returncode, said(rotated)) == (0, [])
    assert rotated.stdout == (
        "under the newest key: 2 data keys re-wrapped, 0 values stored before data keys converted\n"
    )

    # The new key alone again: everything still opens, and runs to the end (Cy's deletion
    # event becomes a third request).
    def all_done(_log: str) -> bool:
        events = inbox.all_rows(Store(cli.env["BRIDGE_DATABASE_URL"]))
        requests = statuses(cli)
        return (
            [e["status"] for e in events] == ["done"]
            and len(requests) == 3
            and set(requests.values()) == {"completed"}
        )

    daemon(cli, NEW, until=all_done)
    actions = [e["action"] for e in json.loads(cli("audit", "--json").stdout)["events"]]
    assert "inbox.dead_letter" not in actions
    assert actions.count("keys.rotated") == 2
    for path in cli.cwd.iterdir():
        data = path.read_bytes()
        for email in (ADA, BO, CY):
            assert email.encode() not in data, path.name


def requested(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    [request] = json.loads(result.stdout)["requests"]
    return str(request["id"])


def statuses(cli: BridgeCli) -> dict[str, str]:
    listed = cli("requests", "--json", BRIDGE_ENCRYPTION_KEY=NEW)
    assert listed.returncode == 0, listed.stderr
    return {r["id"]: r["status"] for r in json.loads(listed.stdout)["requests"]}


def daemon(cli: BridgeCli, key: str, until: Callable[[str], bool]) -> None:
    """``bridge run`` under ``key`` until its log (or the store) shows ``until``."""
    earlier = set(cli.cwd.glob("run-*.log"))
    process = cli.start("run", "--port", str(free_port()), BRIDGE_ENCRYPTION_KEY=key, **DAEMON)
    [log] = set(cli.cwd.glob("run-*.log")) - earlier
    try:
        deadline = time.monotonic() + 90
        while not until(log.read_text()):
            assert process.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.5)
    finally:
        stop(process)


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    assert process.wait(timeout=30) == 0
