"""Fuzzing both endpoints (hypothesis): no 5xx, nothing stored unsigned.

Bodies, tokens and messages get 500 to 2,000 examples each; header names and values (unicode
digits in the timestamp, any signature, any content type), XML encoding declarations and
SystemModstamps 150 to 200. Ids and event types the databases cannot store run on PostgreSQL
too: only it enforces column lengths and refuses NUL.
"""

from __future__ import annotations

import encodings
import encodings.aliases
import json
import pkgutil
import string
import time
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.adapters.hubspot.webhooks import sign_v3
from tests.runtime.conftest import (
    CLIENT_SECRET,
    OUTBOUND_TOKEN,
    Receiver,
    hubspot_event,
    outbound_message,
)

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


# Ids of any length (an event key over 200 characters, an object id over 100) and event types
# holding NUL: storable on SQLite, refused by PostgreSQL; either way 200 or 400, on both.
any_length_ids = st.one_of(
    st.integers(), st.integers(min_value=10**80, max_value=10**300).map(lambda n: n * (-1) ** n)
)
event_types = st.one_of(st.text(max_size=100), st.text(alphabet="contact.\x00", max_size=100))
stored_or_not = st.fixed_dictionaries(
    {"eventId": any_length_ids, "occurredAt": any_length_ids, "objectId": any_length_ids,
     "subscriptionType": event_types},
)  # fmt: skip


@settings(FUZZ, max_examples=150)
@given(events=st.lists(stored_or_not, min_size=1, max_size=4))
def test_hubspot_signed_fuzzed_ids_and_types_are_stored_whole_or_refused(
    receiver: Receiver, events: list[dict[str, object]]
) -> None:
    before = len(receiver.rows())
    response = receiver.post_hubspot(json.dumps(events).encode())
    assert response.status_code in (200, 400)
    if response.status_code == 400:
        assert response.json()["error"] in ("bad_payload", "unstorable_event")
        assert len(receiver.rows()) == before
    else:
        assert len(receiver.rows()) == before + response.json()["stored"]


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


# Headers as a client can send them: any bytes HTTP allows in a value, which the server reads
# as latin-1, so b"\xb2" arrives as "²" (str.isdigit() accepts it, int() refuses it).
SMALL = settings(FUZZ, max_examples=150)
LATIN1_DIGITS = "0123456789¹²³"
HOP_BY_HOP = {
    "content-length", "transfer-encoding", "host", "connection", "upgrade", "expect", "te",
    "keep-alive", "trailer", "proxy-connection",
}  # fmt: skip
header_bytes = st.one_of(
    # Not DEL: the HTTP parser answers 400 before the app sees the request.
    st.text(alphabet=[chr(c) for c in range(0x20, 0x100) if c != 0x7F], max_size=60),
    st.text(alphabet=LATIN1_DIGITS, min_size=1, max_size=20),
    st.integers().map(str),
).map(lambda value: value.strip(" ").encode("latin-1"))
KNOWN_HEADERS = [
    "X-HubSpot-Signature-v3", "X-HubSpot-Signature", "X-HubSpot-Signature-Version",
    "X-HubSpot-Request-Timestamp", "Content-Type", "SOAPAction", "Accept", "Content-Encoding",
    "Authorization",
]  # fmt: skip
CONTENT_TYPES = [
    "application/json", "application/json; charset=utf-8", "text/xml",
    "text/xml; charset=shift_jis", "application/soap+xml; charset=utf-7",
    "multipart/form-data; boundary=x", "application/x-www-form-urlencoded", "",
]  # fmt: skip
header_names = st.one_of(
    st.sampled_from(KNOWN_HEADERS),
    st.text(alphabet=string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~", min_size=1),
).filter(lambda name: name.lower() not in HOP_BY_HOP)
content_types = st.one_of(st.sampled_from(CONTENT_TYPES), header_bytes)
any_headers = st.dictionaries(header_names, header_bytes, max_size=6)
timestamps = st.one_of(
    st.text(alphabet=LATIN1_DIGITS, min_size=1, max_size=20),
    st.text(alphabet=st.characters(categories=["Nd", "No"]), min_size=1, max_size=14),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.integers(min_value=4290, max_value=6000).map(lambda digits: "1" * digits),
    st.integers(min_value=-400_000, max_value=400_000).map(
        lambda skew: str(int(time.time() * 1000) + skew)
    ),
)


def _latin1_or_utf8(value: str) -> bytes:
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode()


@sqlite_only
@SMALL
@given(
    extra=any_headers,
    signature=st.one_of(st.none(), header_bytes),
    timestamp=st.one_of(st.none(), timestamps),
    content_type=content_types,
    body=st.binary(max_size=500),
)
def test_hubspot_fuzzed_header_names_and_values(
    receiver: Receiver,
    extra: dict[str, bytes],
    signature: bytes | None,
    timestamp: str | None,
    content_type: str | bytes,
    body: bytes,
) -> None:
    headers: dict[str, str | bytes] = {**extra, "Content-Type": content_type}
    if signature is not None:
        headers["X-HubSpot-Signature-v3"] = signature
    if timestamp is not None:
        headers["X-HubSpot-Request-Timestamp"] = _latin1_or_utf8(timestamp)
    response = receiver.http.post(f"{receiver.url}/webhooks/hubspot", content=body, headers=headers)
    assert response.status_code < 500
    assert response.status_code != 200
    assert receiver.rows() == []


@sqlite_only
@SMALL
@given(timestamp=timestamps, extra=any_headers, content_type=content_types)
def test_hubspot_correctly_signed_over_fuzzed_timestamps(
    receiver: Receiver, timestamp: str, extra: dict[str, bytes], content_type: str | bytes
) -> None:
    """Signed over the very timestamp sent, so only the timestamp check stands in the way."""
    body = json.dumps([hubspot_event(1)]).encode()
    target = f"{receiver.url}/webhooks/hubspot"
    headers: dict[str, str | bytes] = {
        **{name: value for name, value in extra.items() if not name.lower().startswith("x-hub")},
        "Content-Type": content_type,
        "X-HubSpot-Signature-v3": sign_v3(CLIENT_SECRET, "POST", target, body, timestamp),
        "X-HubSpot-Request-Timestamp": _latin1_or_utf8(timestamp),
    }
    response = receiver.http.post(target, content=body, headers=headers)
    assert response.status_code in (200, 401)
    if response.status_code == 401:
        assert response.json()["error"] in ("missing_timestamp", "stale_timestamp")


@sqlite_only
@SMALL
@given(extra=any_headers, content_type=content_types, body=st.binary(max_size=500))
def test_salesforce_fuzzed_headers(
    receiver: Receiver, extra: dict[str, bytes], content_type: str | bytes, body: bytes
) -> None:
    message = outbound_message([("04l000000000001AAA", "Contact", {"Id": "003000000000001AAA"})])
    headers: dict[str, str | bytes] = {**extra, "Content-Type": content_type}
    url = f"{receiver.url}/webhooks/salesforce/{OUTBOUND_TOKEN}"
    assert receiver.http.post(url, content=message, headers=headers).status_code == 200
    assert receiver.http.post(url, content=body, headers=headers).status_code in (200, 400, 403)


CODEC_NAMES = sorted(
    set(encodings.aliases.aliases.values())
    | set(encodings.aliases.aliases)
    | {module.name for module in pkgutil.iter_modules(encodings.__path__)}
    | {"utf-7", "shift_jis", "x-unknown", "UTF-8", "ISO-8859-1"}
)
declared_encodings = st.one_of(
    st.sampled_from(CODEC_NAMES),
    st.text(alphabet=string.ascii_letters + string.digits + "-_.", min_size=1, max_size=20),
)


@sqlite_only
@settings(FUZZ, max_examples=200)
@given(
    encoding=declared_encodings,
    quote=st.sampled_from(['"', "'"]),
    text=st.binary(max_size=20),
)
def test_salesforce_fuzzed_xml_encoding_declarations(
    receiver: Receiver, encoding: str, quote: str, text: bytes
) -> None:
    fields = {"Id": "003000000000001AAA", "Email": "FUZZ"}
    body = outbound_message([("04l000000000001AAA", "Contact", fields)])
    body = body.replace(b'encoding="UTF-8"', f"encoding={quote}{encoding}{quote}".encode(), 1)
    response = receiver.post_salesforce(body.replace(b"FUZZ", text, 1))
    assert response.status_code in (200, 400)


offsets = st.integers(min_value=-1439, max_value=1439).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
modstamps = st.one_of(
    st.datetimes(timezones=st.one_of(st.none(), offsets)).map(datetime.isoformat),
    st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59.999-00:01"]),
    st.text(alphabet=string.digits + "-:T.+Z ", max_size=32),
)


@sqlite_only
@settings(FUZZ, max_examples=200)
@given(modstamp=modstamps)
def test_salesforce_fuzzed_system_modstamps(receiver: Receiver, modstamp: str) -> None:
    fields = {"Id": "003000000000001AAA", "SystemModstamp": modstamp}
    response = receiver.post_salesforce(
        outbound_message([("04l000000000001AAA", "Contact", fields)])
    )
    assert response.status_code == 200
