"""The receiver as a real `bridge serve` process: SIGKILLed mid-stream, it loses no ack."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
from cryptography.fernet import Fernet

from bridge.adapters.hubspot.webhooks import sign_v3
from bridge.store import inbox
from bridge.store.db import Store
from tests.conftest import BridgeCli, free_port, wait_until_healthy
from tests.runtime.conftest import CLIENT_SECRET, hubspot_event

EVENTS = 1000


def serve_env(bridge: BridgeCli) -> dict[str, str]:
    return {
        "BRIDGE_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "BRIDGE_HUBSPOT__CLIENT_SECRET": CLIENT_SECRET,
    }


def test_every_acknowledged_event_survives_sigkill_of_the_receiver(bridge: BridgeCli) -> None:
    env = serve_env(bridge)
    assert bridge("db", "upgrade").returncode == 0
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = bridge.start("serve", "--port", str(port), **env)
    wait_until_healthy(url, server)

    acknowledged: list[str] = []
    failures = 0

    def send() -> None:
        """A vendor: each event is retried until acknowledged, as HubSpot retries."""
        nonlocal failures
        with httpx.Client(timeout=5) as http:
            for n in range(EVENTS):
                event = hubspot_event(n)
                body = json.dumps([event]).encode()
                while True:
                    ts = str(int(time.time() * 1000))
                    headers = {
                        "Content-Type": "application/json",
                        "X-HubSpot-Signature-v3": sign_v3(
                            CLIENT_SECRET, "POST", f"{url}/webhooks/hubspot", body, ts
                        ),
                        "X-HubSpot-Request-Timestamp": ts,
                    }
                    try:
                        response = http.post(
                            f"{url}/webhooks/hubspot", content=body, headers=headers
                        )
                    except httpx.HTTPError:
                        response = None
                    if response is not None and response.status_code == 200:
                        acknowledged.append(
                            f"{event['eventId']}:{event['occurredAt']}:{event['objectId']}"
                        )
                        break
                    failures += 1
                    time.sleep(0.02)

    sender = threading.Thread(target=send)
    sender.start()
    kills = 0
    for threshold in (250, 600):
        while len(acknowledged) < threshold:
            time.sleep(0.005)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        kills += 1
        time.sleep(0.3)  # the sender keeps retrying against a dead port
        server = bridge.start("serve", "--port", str(port), **env)
        wait_until_healthy(url, server)
    sender.join(timeout=240)
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=30) == 0

    assert kills == 2 and failures > 0  # the kills really interrupted the stream
    store = Store(bridge.env["BRIDGE_DATABASE_URL"])
    stored = {row["event_key"] for row in inbox.all_rows(store)}
    assert len(acknowledged) == EVENTS
    assert set(acknowledged) <= stored
    assert len(inbox.all_rows(store)) == EVENTS  # retries of unacknowledged events: no duplicates
    store.dispose()
