"""Input a client controls never answers 5xx (issue 18): each case once, over real HTTP."""

from __future__ import annotations

import json
import time

import pytest

from bridge.adapters.hubspot.webhooks import sign_v3
from tests.runtime.conftest import CLIENT_SECRET, Receiver, hubspot_event, outbound_message

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@sqlite_only
@pytest.mark.parametrize("timestamp", ["²", "1764000000000³", "¹²³", "١٢٣", "１２３", "𝟙𝟚𝟛"])
def test_a_timestamp_of_unicode_digits_is_a_missing_timestamp(
    receiver: Receiver, timestamp: str
) -> None:
    body = json.dumps([hubspot_event(1)]).encode()
    target = f"{receiver.url}/webhooks/hubspot"
    # Signed over the very header value, so only the timestamp check can refuse it.
    signature = sign_v3(CLIENT_SECRET, "POST", target, body, timestamp)
    # Servers read header bytes as latin-1, where ¹²³ are the only non-ASCII digits.
    encoding = "latin-1" if set(timestamp) <= set("0123456789¹²³") else "utf-8"
    response = receiver.http.post(
        target,
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-HubSpot-Signature-v3": signature,
            "X-HubSpot-Request-Timestamp": timestamp.encode(encoding),
        },
    )
    assert response.status_code == 401
    assert response.json()["error"] == "missing_timestamp"
    assert receiver.rows() == []


@sqlite_only
@pytest.mark.parametrize("digits", [4301, 12000])
def test_a_timestamp_too_long_for_int_is_a_missing_timestamp(
    receiver: Receiver, digits: int
) -> None:
    # int() refuses strings of over 4,300 digits (ValueError); HubSpot sends 13.
    timestamp = "1" * digits
    body = json.dumps([hubspot_event(1)]).encode()
    target = f"{receiver.url}/webhooks/hubspot"
    signature = sign_v3(CLIENT_SECRET, "POST", target, body, timestamp)
    response = receiver.http.post(
        target,
        content=body,
        headers={"X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": timestamp},
    )
    assert response.status_code == 401
    assert response.json()["error"] == "missing_timestamp"


@sqlite_only
def test_an_ascii_timestamp_still_verifies(receiver: Receiver) -> None:
    response = receiver.post_hubspot([hubspot_event(1)], timestamp_ms=int(time.time() * 1000))
    assert response.status_code == 200


@sqlite_only
@pytest.mark.parametrize(
    "encoding", ["shift_jis", "utf-7", "utf-32", "big5", "no-such-encoding", "rot13", "idna"]
)
def test_a_declared_encoding_expat_cannot_read_is_a_bad_payload(
    receiver: Receiver, encoding: str
) -> None:
    body = outbound_message([("04l000000000001AAA", "Contact", {"Id": "003000000000001AAA"})])
    body = body.replace(b'encoding="UTF-8"', f'encoding="{encoding}"'.encode(), 1)
    response = receiver.post_salesforce(body)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_payload"
    assert receiver.rows() == []


@sqlite_only
@pytest.mark.parametrize(
    "modstamp",
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "not a time", ""],
)
def test_a_system_modstamp_out_of_range_is_stored_without_a_time(
    receiver: Receiver, modstamp: str
) -> None:
    fields = {"Id": "003000000000001AAA", "HasOptedOutOfEmail": "true", "SystemModstamp": modstamp}
    response = receiver.post_salesforce(
        outbound_message([("04l000000000001AAA", "Contact", fields)])
    )
    assert response.status_code == 200
    [row] = receiver.rows()
    assert row["occurred_at"] is None


@sqlite_only
def test_a_system_modstamp_in_range_is_normalised_to_utc(receiver: Receiver) -> None:
    fields = {"Id": "003000000000001AAA", "SystemModstamp": "2026-01-02T03:04:05.000+01:00"}
    response = receiver.post_salesforce(
        outbound_message([("04l000000000001AAA", "Contact", fields)])
    )
    assert response.status_code == 200
    [row] = receiver.rows()
    assert row["occurred_at"] == "2026-01-02T02:04:05.000000+00:00"
