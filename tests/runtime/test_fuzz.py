"""Fuzzing both endpoints (hypothesis, 2,000+ examples each): no 5xx, nothing stored unsigned."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.runtime.conftest import OUTBOUND_TOKEN, Receiver, outbound_message

FUZZ = settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
header_text = st.text(alphabet=string.printable.strip() + " ", max_size=80).map(str.strip)
hubspot_headers = st.fixed_dictionaries(
    {},
    optional={
        "X-HubSpot-Signature-v3": header_text,
        "X-HubSpot-Signature": header_text,
        "X-HubSpot-Signature-Version": st.sampled_from(["v1", "v2", "v3", "v9", ""]),
        "X-HubSpot-Request-Timestamp": st.one_of(header_text, st.integers().map(str)),
        "Content-Type": st.sampled_from(["application/json", "text/plain", "x/y"]),
    },
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "eventId": st.one_of(st.integers(), st.text()),
        "occurredAt": st.one_of(st.integers(), st.text()),
        "objectId": st.one_of(st.integers(), st.none()),
        "subscriptionType": st.text(max_size=120),
        "eventType": st.text(max_size=20),
        "propertyName": st.text(max_size=20),
        "propertyValue": json_values,
    },
)
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@sqlite_only
@FUZZ
@given(headers=hubspot_headers, body=st.binary(max_size=2000))
def test_hubspot_fuzzed_headers_and_bodies(
    receiver: Receiver, headers: dict[str, str], body: bytes
) -> None:
    response = receiver.http.post(f"{receiver.url}/webhooks/hubspot", content=body, headers=headers)
    assert response.status_code in (401, 413)
    assert receiver.rows() == []


@sqlite_only
@settings(FUZZ, max_examples=500)
@given(payload=st.one_of(json_values, st.lists(event_like, max_size=110)))
def test_hubspot_signed_fuzzed_payloads_never_fail_the_server(
    receiver: Receiver, payload: object
) -> None:
    response = receiver.post_hubspot(json.dumps(payload).encode())
    assert response.status_code in (200, 400)


@sqlite_only
@FUZZ
@given(
    token=st.text(alphabet=string.ascii_letters + string.digits + "-_.~", min_size=1, max_size=40),
    body=st.binary(max_size=2000),
)
def test_salesforce_fuzzed_tokens_and_bodies(receiver: Receiver, token: str, body: bytes) -> None:
    response = receiver.post_salesforce(body, token=token)
    assert response.status_code in ((400, 403, 200) if token == OUTBOUND_TOKEN else (404,))
    if token != OUTBOUND_TOKEN:
        assert receiver.rows() == []


notification = st.tuples(
    st.text(string.ascii_letters + string.digits, min_size=0, max_size=45),
    st.sampled_from(["Contact", "Lead", "Individual", "Account", "", "sf:x"]),
    st.dictionaries(
        st.sampled_from(["Id", "Email", "HasOptedOutOfEmail", "ShouldForget", "SystemModstamp"]),
        st.text(string.printable, max_size=30),
    ),
)


@sqlite_only
@settings(FUZZ, max_examples=500)
@given(notes=st.lists(notification, max_size=4), org=st.sampled_from(["00D000000000001EAA", "x"]))
def test_salesforce_fuzzed_messages_with_the_right_token(
    receiver: Receiver, notes: list[tuple[str, str, dict[str, str]]], org: str
) -> None:
    response = receiver.post_salesforce(outbound_message(notes, org=org))
    assert response.status_code in (200, 400, 403)
