"""HubSpot signatures: the published test vectors, and agreement with the SDK's own helper."""

from __future__ import annotations

import pytest
from hubspot.utils.signature import Signature

from bridge.adapters.hubspot.webhooks import (
    HubSpotEvent,
    SignatureError,
    decode_uri,
    sign_v1,
    sign_v2,
    sign_v3,
    verify,
)

SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
URI = "https://www.example.com/webhook_uri"
DOC_BODY = (
    b'[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,'
    b'"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,'
    b'"changeSource":"CRM","changeFlag":"NEW","appId":54321}]'
)
SDK_BODY = b"{'example_field':'example_value'}"


def test_reference_vectors() -> None:
    assert sign_v1(SECRET, DOC_BODY) == (
        "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
    )
    assert sign_v2(SECRET, "GET", URI, b"") == (
        "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"
    )
    assert sign_v1(SECRET, SDK_BODY) == (
        "69fc6631a867edd4f9e9e627fc5c1148e3fbdd8b21837b6d2b8901c1fa57f750"
    )
    assert sign_v2(SECRET, "POST", URI, SDK_BODY) == (
        "4fe4e3a7d3cf09db53be39d0a58130e2aaba074ec123a9e355b876a689a1c383"
    )
    assert sign_v3(SECRET, "POST", URI, SDK_BODY, "1693657560000") == (
        "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y="
    )
    assert sign_v3(SECRET, "POST", URI, DOC_BODY, "1564113600000") == (
        "DxmVAjFNa2xfF3YgQjdZP6TNcok9k1oaH7UXombPtvw="
    )


def test_vectors_pass_the_verifier() -> None:
    ts = "1693657560000"
    headers = {
        "x-hubspot-signature-v3": "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y=",
        "x-hubspot-request-timestamp": ts,
    }
    assert verify(headers, "POST", URI, SDK_BODY, SECRET, now_ms=int(ts) + 1000) == "v3"
    legacy = {"x-hubspot-signature": sign_v1(SECRET, DOC_BODY), "x-hubspot-signature-version": "v1"}
    assert verify(legacy, "POST", URI, DOC_BODY, SECRET, 0, accept_legacy=True) == "v1"
    with pytest.raises(SignatureError, match="missing_signature"):
        verify(legacy, "POST", URI, DOC_BODY, SECRET, 0)  # legacy only when configured


@pytest.mark.parametrize("skew_ms", [-301_000, 301_000])
def test_timestamps_beyond_five_minutes_either_way_are_refused(skew_ms: int) -> None:
    ts = 1_700_000_000_000
    headers = {
        "x-hubspot-signature-v3": sign_v3(SECRET, "POST", URI, b"[]", str(ts)),
        "x-hubspot-request-timestamp": str(ts),
    }
    with pytest.raises(SignatureError, match="stale_timestamp"):
        verify(headers, "POST", URI, b"[]", SECRET, now_ms=ts + skew_ms)
    assert verify(headers, "POST", URI, b"[]", SECRET, now_ms=ts + skew_ms // 2) == "v3"


def test_uri_decoding_table_is_applied_before_hashing() -> None:
    encoded = "https://hooks.example.com/a%3Ab%2Fc?x=%40y%21%24%27%28%29%2a%2C%3B%20"
    assert decode_uri(encoded) == "https://hooks.example.com/a:b/c?x=@y!$'()*,;%20"
    ts = "1700000000000"
    headers = {
        "x-hubspot-signature-v3": sign_v3(SECRET, "POST", decode_uri(encoded), b"[]", ts),
        "x-hubspot-request-timestamp": ts,
    }
    assert verify(headers, "POST", encoded, b"[]", SECRET, now_ms=int(ts)) == "v3"


def test_our_v3_signature_matches_the_sdk_helper() -> None:
    ts = "1700000000000"
    ours = sign_v3(SECRET, "POST", URI, DOC_BODY, ts)
    theirs = Signature.get_signature(
        signature_version="v3",
        client_secret=SECRET,
        request_body=DOC_BODY.decode(),
        http_uri=URI,
        http_method="POST",
        timestamp=ts,
    )
    assert ours == theirs


@pytest.mark.parametrize(
    ("subscription_type", "property_name", "kind"),
    [
        ("contact.privacyDeletion", None, "deletion"),
        ("contact.deletion", None, "other"),  # also sent for an ordinary, restorable delete
        ("contact.propertyChange", "hs_email_optout", "consent"),
        ("contact.propertyChange", "hs_email_optout_7", "consent"),
        ("contact.propertyChange", "hs_legal_basis", "consent"),
        ("contact.propertyChange", "firstname", "other"),
        ("contact.creation", None, "other"),
    ],
)
def test_each_event_is_classified_once_at_intake(
    subscription_type: str, property_name: str | None, kind: str
) -> None:
    event = {"eventId": 1, "occurredAt": 1, "objectId": 2, "subscriptionType": subscription_type}
    if property_name:
        event["propertyName"] = property_name
    assert HubSpotEvent.model_validate(event).kind == kind
