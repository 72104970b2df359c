"""The webhook receiver over real HTTP: verify, store once, acknowledge; refuse the rest."""

from __future__ import annotations

import random
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest

from bridge.adapters.salesforce.outbound import ACK
from bridge.events.inbox import InboxEvent, InboxWorker
from bridge.runtime.receiver import create_app
from bridge.sealing import Keyring
from bridge.store.db import Store
from bridge_sandbox.emulators.common import serve_in_thread
from tests.runtime.conftest import Receiver, hubspot_event, outbound_message, receiver_settings


def test_signed_hubspot_batch_is_stored_then_acknowledged(receiver: Receiver) -> None:
    events = [
        hubspot_event(1),
        hubspot_event(2, "contact.privacyDeletion"),
        hubspot_event(3, "contact.creation"),
    ]
    response = receiver.post_hubspot(events)
    assert response.status_code == 200
    assert response.json() == {"stored": 3, "duplicates": 0}
    rows = receiver.rows()
    assert [(r["event_type"], r["kind"], r["object_id"]) for r in rows] == [
        ("contact.propertyChange", "consent", "5001"),
        ("contact.privacyDeletion", "deletion", "5002"),
        ("contact.creation", "other", "5003"),
    ]
    assert {r["status"] for r in rows} == {"pending"}


def test_event_type_is_accepted_in_place_of_subscription_type(receiver: Receiver) -> None:
    event = hubspot_event(7, "contact.deletion")
    event["eventType"] = event.pop("subscriptionType")
    assert receiver.post_hubspot([event]).status_code == 200
    assert receiver.rows()[0]["event_type"] == "contact.deletion"


def test_event_id_alone_does_not_deduplicate(receiver: Receiver) -> None:
    same_id = [hubspot_event(1), hubspot_event(1, objectId=9999)]
    assert receiver.post_hubspot(same_id).json() == {"stored": 2, "duplicates": 0}
    assert receiver.post_hubspot(same_id).json() == {"stored": 0, "duplicates": 2}


def test_bad_signatures_are_401_and_store_nothing(receiver: Receiver) -> None:
    events = [hubspot_event(1)]
    six_minutes = 6 * 60 * 1000
    now = int(time.time() * 1000)
    assert receiver.post_hubspot(events, timestamp_ms=now - six_minutes).status_code == 401
    assert receiver.post_hubspot(events, timestamp_ms=now + six_minutes).status_code == 401
    assert receiver.post_hubspot(events, secret="another-secret").status_code == 401
    other_uri = "https://attacker.example.com/webhooks/hubspot"
    assert receiver.post_hubspot(events, uri=other_uri).status_code == 401
    # a changed byte: sign one body, send another
    good = receiver.post_hubspot(events)
    assert good.status_code == 200
    signed = good.request
    tampered = signed.content.replace(b'"true"', b'"fals"')
    changed = receiver.http.post(signed.url, content=tampered, headers=signed.headers)
    assert changed.status_code == 401
    unsigned = receiver.http.post(f"{receiver.url}/webhooks/hubspot", json=events)
    assert unsigned.status_code == 401
    assert len(receiver.rows()) == 1  # only the good one


def test_malformed_and_oversized_bodies(receiver: Receiver) -> None:
    assert receiver.post_hubspot(b"[{not json").status_code == 400
    assert receiver.post_hubspot(b'{"eventId": 1}').status_code == 400
    assert receiver.post_hubspot([{"eventId": "x"}]).status_code == 400
    assert receiver.post_hubspot([]).status_code == 400
    too_many = [hubspot_event(n) for n in range(101)]
    assert receiver.post_hubspot(too_many).status_code == 400
    huge = b"[" + b" " * (1024 * 1024) + b"]"
    assert receiver.post_hubspot(huge).status_code == 413
    assert receiver.rows() == []


def test_salesforce_outbound_message_is_stored_and_acknowledged_exactly(
    receiver: Receiver,
) -> None:
    body = outbound_message(
        [
            ("04l000000000001AAA", "Contact", {"Id": "003000000000001AAA",
             "Email": "kyle@example.com", "HasOptedOutOfEmail": "true",
             "SystemModstamp": "2026-11-03T17:24:20.000Z"}),
            ("04l000000000002AAA", "Individual", {"Id": "0PK000000000001AAA",
             "ShouldForget": "true"}),
        ]
    )  # fmt: skip
    response = receiver.post_salesforce(body)
    assert response.status_code == 200
    assert response.text == ACK
    assert response.headers["content-type"].startswith("text/xml")
    rows = receiver.rows()
    assert [(r["object_type"], r["kind"], r["event_key"]) for r in rows] == [
        ("Contact", "consent", "04l000000000001AAA"),
        ("Individual", "deletion", "04l000000000002AAA"),
    ]
    assert rows[0]["occurred_at"] == "2026-11-03T17:24:20.000000+00:00"
    assert receiver.post_salesforce(body).text == ACK  # a redelivery is acknowledged...
    assert len(receiver.rows()) == 2  # ...and not stored again


def test_salesforce_wrong_token_or_organization_stores_nothing(receiver: Receiver) -> None:
    body = outbound_message([("04l1", "Contact", {"Id": "0031", "DoNotCall": "true"})])
    assert receiver.post_salesforce(body, token="guess").status_code == 404
    wrong_org = outbound_message(
        [("04l1", "Contact", {"Id": "0031", "DoNotCall": "true"})], org="00DEVIL"
    )
    assert receiver.post_salesforce(wrong_org).status_code == 403
    assert receiver.rows() == []


def test_billion_laughs_and_external_entities_are_refused_unexpanded(receiver: Receiver) -> None:
    fetched: list[str] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fetched.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"secret")

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        laughs = (
            b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
            b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
            b"<lolz>&lol3;</lolz>"
        )
        external = (
            f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY ext SYSTEM '
            f'"http://127.0.0.1:{server.server_port}/leak">]>'
            + outbound_message([("04l1", "Contact", {"Id": "&ext;"})]).decode().split("?>", 1)[1]
        ).encode()
        for body in (laughs, external):
            response = receiver.post_salesforce(body)
            assert response.status_code == 400
            assert "lollol" not in response.text
        assert fetched == []
        assert receiver.rows() == []
    finally:
        server.shutdown()


def test_the_same_100_events_three_times_shuffled_are_stored_and_processed_once(
    receiver: Receiver,
) -> None:
    events = [hubspot_event(n, random.choice(["contact.propertyChange", "contact.privacyDeletion"]))
              for n in range(100)]  # fmt: skip
    deliveries = events * 3
    random.Random(3).shuffle(deliveries)
    for start in range(0, len(deliveries), 20):
        assert receiver.post_hubspot(deliveries[start : start + 20]).status_code == 200
    assert len(receiver.rows()) == 100

    seen: list[str] = []

    def handle(event: InboxEvent) -> None:
        seen.append(f"{event.payload['eventId']}:{event.payload['objectId']}")

    keyring = Keyring(receiver.settings.require_encryption_keys())
    worker = InboxWorker(
        receiver.store, keyring, {"consent": handle, "deletion": handle}, backoff_seconds=0
    )
    assert worker.drain().processed == 100
    assert worker.drain().processed == 0
    assert sorted(seen) == sorted(f"{e['eventId']}:{e['objectId']}" for e in events)
    rows = receiver.rows()
    assert {r["status"] for r in rows} == {"done"}
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)


def test_readyz_names_no_database_detail_when_the_database_is_down() -> None:
    url = "postgresql://someuser:secretpw@127.0.0.1:1/x"
    store = Store(url)
    with (
        serve_in_thread(create_app(receiver_settings(url), store)) as server,
        httpx.Client(timeout=10) as http,
    ):
        response = http.get(f"{server.url}/readyz")
    store.dispose()
    assert response.status_code == 503
    assert response.json() == {"status": "not ready", "reason": "database unreachable"}
    for leak in ("someuser", "secretpw", "127.0.0.1", ":1/", "postgres", "psycopg", "refused"):
        assert leak not in response.text.lower(), leak


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_readyz_says_schema_not_current_and_nothing_more(database_url: str) -> None:
    store = Store(database_url)  # never upgraded
    with (
        serve_in_thread(create_app(receiver_settings(database_url), store)) as server,
        httpx.Client(timeout=10) as http,
    ):
        response = http.get(f"{server.url}/readyz")
    store.dispose()
    assert response.status_code == 503
    assert response.json() == {"status": "not ready", "reason": "schema not current"}


def test_health_readiness_and_metrics(receiver: Receiver) -> None:
    assert receiver.http.get(f"{receiver.url}/healthz").json() == {"status": "alive"}
    assert receiver.http.get(f"{receiver.url}/readyz").json() == {"status": "ready"}
    receiver.post_hubspot([hubspot_event(1)])
    receiver.post_hubspot([hubspot_event(1)])
    receiver.post_hubspot([hubspot_event(2)], secret="wrong")
    text = receiver.http.get(f"{receiver.url}/metrics").text
    assert 'bridge_webhook_events_total{outcome="stored",reason="",source="hubspot"}' in text
    assert 'outcome="duplicate"' in text
    assert (
        'bridge_webhook_events_total{outcome="rejected",reason="bad_signature",source="hubspot"}'
        in text
    )
    assert 'bridge_inbox_events{status="pending"} 1.0' in text
    assert "bridge_inbox_lag_seconds" in text
