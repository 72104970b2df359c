"""A real `bridge serve` process: an event its database cannot store is a 400, and the
requests committed alongside it are acknowledged and stored all the same."""

from __future__ import annotations

import httpx

from bridge.store.db import Store
from tests.conftest import BridgeCli, free_port, wait_until_healthy
from tests.runtime.conftest import (
    CLIENT_SECRET,
    UNSTORABLE,
    Receiver,
    hubspot_event,
    receiver_settings,
    send_together,
)

INNOCENT = [[hubspot_event(n)] for n in range(60)]


def test_unstorable_events_never_fail_their_neighbours_in_bridge_serve(
    bridge: BridgeCli, database_url: str
) -> None:
    settings = receiver_settings(database_url)
    assert settings.encryption_key is not None
    env = {
        "BRIDGE_DATABASE_URL": database_url,
        "BRIDGE_ENCRYPTION_KEY": settings.encryption_key.get_secret_value(),
        "BRIDGE_HUBSPOT__CLIENT_SECRET": CLIENT_SECRET,
    }
    assert bridge("db", "upgrade", **env).returncode == 0
    port = free_port()
    server = bridge.start("serve", "--port", str(port), **env)
    store = Store(database_url)
    try:
        with httpx.Client(timeout=30) as http:
            receiver = Receiver(f"http://127.0.0.1:{port}", store, settings, http)
            wait_until_healthy(receiver.url, server)
            responses = send_together(receiver.post_hubspot, INNOCENT + list(UNSTORABLE.values()))
        assert [r.status_code for r in responses] == [200] * 60 + [400] * len(UNSTORABLE)
        assert {r.json()["error"] for r in responses[60:]} == {"unstorable_event"}
        assert sorted(int(row["object_id"]) for row in receiver.rows()) == [
            event["objectId"] for [event] in INNOCENT
        ]
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0
        store.dispose()
    output = "".join(log.read_text() for log in bridge.cwd.glob("serve-*.log"))
    assert "Traceback" not in output
    assert "storage failed" not in output
