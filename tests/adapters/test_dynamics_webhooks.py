"""Dataverse webhooks at the intake: the key in a header or ``?code=``, execution contexts
classified once, nothing of the person kept, and fuzzed requests only ever accepted or
refused with a 4xx."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from bridge.adapters import spec
from bridge.adapters.dynamics.settings import DynamicsSettings
from bridge.adapters.dynamics.webhooks import MAX_ATTRIBUTES, Intake, occurred_at
from bridge.adapters.spec import CONSENT, DELETION, OTHER, Accepted, Rejected, WebhookRequest
from bridge.store import inbox

KEY = "s3cret+key/with=chars"
SECTION = DynamicsSettings(webhook_key=SecretStr(KEY))
INTAKE: spec.Intake = Intake()
URL = "https://bridge.example.com/webhooks/dynamics"
CONTACT_ID = "6D81597F-0F9F-E711-8122-000D3AA2331C"
OPERATION_ID = "4af10637-4ea2-e711-8122-000d3aa2331c"
FIRSTNAME, EMAIL = "Zebulon", "zebulon.quark@example.org"
# The Update example of Microsoft's "Use WebHooks" page, trimmed, with the person's values
# seeded in each place a context can carry them.
DOC_CONTEXT: dict[str, Any] = {
    "BusinessUnitId": "e2b9dd85-e89e-e711-8122-000d3aa2331c",
    "CorrelationId": "b374239d-4233-41a9-8b17-a86cb4f737b5",
    "Depth": 1,
    "InputParameters": [
        {
            "key": "Target",
            "value": {
                "__type": "Entity:http://schemas.microsoft.com/xrm/2011/Contracts",
                "Attributes": [
                    {"key": "firstname", "value": FIRSTNAME},
                    {"key": "emailaddress1", "value": EMAIL},
                    {"key": "contactid", "value": CONTACT_ID.lower()},
                    {"key": "modifiedon", "value": "/Date(1506384247000)/"},
                    {
                        "key": "modifiedby",
                        "value": {
                            "__type": "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts",
                            "Id": "75c2dd85-e89e-e711-8122-000d3aa2331c",
                            "KeyAttributes": [],
                            "LogicalName": "systemuser",
                            "Name": None,
                            "RowVersion": None,
                        },
                    },
                ],
                "EntityState": None,
                "FormattedValues": [],
                "Id": CONTACT_ID.lower(),
                "KeyAttributes": [],
                "LogicalName": "contact",
                "RelatedEntities": [],
                "RowVersion": None,
            },
        }
    ],
    "MessageName": "Update",
    "Mode": 1,
    "OperationCreatedOn": "/Date(1506409448000-0700)/",
    "OperationId": OPERATION_ID,
    "OrganizationId": "4ef5b371-e89e-e711-8122-000d3aa2331c",
    "OrganizationName": "OrgName",
    "OutputParameters": [],
    "ParentContext": {
        "InputParameters": [
            {"key": "Target", "value": {"Attributes": [{"key": "firstname", "value": FIRSTNAME}]}}
        ]
    },
    "PostEntityImages": [
        {
            "key": "AsynchronousStepPrimaryName",
            "value": {"Attributes": [{"key": "fullname", "value": f"{FIRSTNAME} Quark"}]},
        }
    ],
    "PreEntityImages": [],
    "PrimaryEntityId": CONTACT_ID,
    "PrimaryEntityName": "contact",
    "SecondaryEntityName": "none",
    "Stage": 40,
    "UserId": "75c2dd85-e89e-e711-8122-000d3aa2331c",
}


def context(
    message: str = "Update",
    entity: str = "contact",
    columns: list[str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """The documented context as ``message`` on ``entity``; ``columns``: the Target's."""
    body = copy.deepcopy(DOC_CONTEXT)
    body.update(MessageName=message, PrimaryEntityName=entity)
    target = body["InputParameters"][0]["value"]
    target["LogicalName"] = entity
    if columns is not None:
        target["Attributes"] = [{"key": name, "value": True} for name in columns]
    body.update(fields)
    return body


def post(
    body: Mapping[str, Any] | bytes,
    headers: Mapping[str, str] | None = None,
    url: str = URL,
    section: DynamicsSettings = SECTION,
) -> Accepted:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"x-bridge-key": KEY} if headers is None else headers
    INTAKE.admit(section, {})
    return INTAKE.accept(section, WebhookRequest("POST", url, sent, content), now_ms=0)


def only_event(accepted: Accepted) -> spec.IncomingEvent:
    [event] = accepted.events
    return event


def test_the_documented_update_is_one_event_with_the_key_in_a_header() -> None:
    accepted = post(DOC_CONTEXT)
    event = only_event(accepted)
    assert event.key == f"{OPERATION_ID}:{CONTACT_ID.lower()}"
    assert event.event_type == "contact.update"
    assert event.kind == OTHER  # firstname and the platform's own columns: no consent
    assert (event.object_type, event.object_id) == ("contact", CONTACT_ID.lower())
    # The milliseconds are UTC; the -0700 only says the writer's zone.
    assert event.occurred_at == "2017-09-26T07:04:08.000000+00:00"
    assert event.payload == {
        "message": "Update",
        "entity": "contact",
        "id": CONTACT_ID.lower(),
        "attributes": ["firstname", "emailaddress1", "contactid", "modifiedon", "modifiedby"],
    }
    assert accepted.reply(1, 0) == (b'{"stored": 1, "duplicates": 0}', "application/json")


@pytest.mark.parametrize(
    "query",
    [
        f"code={quote(KEY, safe='')}",  # percent-encoded, as a URL should carry it
        f"code={KEY}",  # as is: "+" would decode to a space
        f"other=1&code={quote(KEY, safe='')}#fragment",
    ],
)
def test_the_key_in_the_code_query_parameter_is_accepted(query: str) -> None:
    assert only_event(post(DOC_CONTEXT, headers={}, url=f"{URL}?{query}")).kind == OTHER


def test_the_configured_header_is_found_whatever_its_case() -> None:
    section = DynamicsSettings(webhook_key=SecretStr(KEY), webhook_header="X-Our-Key")
    assert post(DOC_CONTEXT, headers={"x-our-key": KEY}, section=section).events
    assert post(DOC_CONTEXT, headers={"X-OUR-KEY": KEY}, section=section).events
    with pytest.raises(Rejected):  # the default header is not the configured one
        post(DOC_CONTEXT, headers={"x-bridge-key": KEY}, section=section)


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({}, ""),
        ({"x-bridge-key": ""}, ""),
        ({"x-bridge-key": KEY[:-1]}, ""),  # shorter: compare_digest answers, never raises
        ({"x-bridge-key": KEY + "x"}, ""),
        ({"x-bridge-key": KEY.upper()}, ""),
        ({"x-bridge-key": "ключ\udcff"}, ""),  # non-ASCII, even a lone surrogate
        ({"authorization": KEY}, ""),  # the key under another header
        ({}, "code="),
        ({}, "code=wrong"),
        ({}, f"Code={KEY}"),
        ({}, f"key={KEY}"),
        ({}, f"code=wrong&code={KEY}"),  # only the first code counts
        ({"x-bridge-key": "wrong"}, "code=also-wrong"),
    ],
)
def test_a_missing_or_wrong_key_is_refused_401(headers: dict[str, str], query: str) -> None:
    with pytest.raises(Rejected) as refused:
        post(DOC_CONTEXT, headers=headers, url=f"{URL}?{query}")
    assert (refused.value.status, refused.value.reason) == (401, "bad_key")
    assert KEY not in refused.value.detail


@pytest.mark.parametrize("key", [None, SecretStr("")])
def test_no_key_configured_is_refused_before_the_body(key: SecretStr | None) -> None:
    section = DynamicsSettings(webhook_key=key)
    with pytest.raises(Rejected) as refused:
        INTAKE.admit(section, {})
    assert 400 <= refused.value.status < 500
    assert refused.value.reason == "not_configured"
    INTAKE.admit(SECTION, {})


@pytest.mark.parametrize(
    ("message", "entity", "columns", "kind"),
    [
        ("Update", "contact", ["donotbulkemail", "modifiedon"], CONSENT),
        ("Update", "contact", ["firstname"], OTHER),
        ("Update", "contact", [], OTHER),
        ("Update", "contact", ["followemail"], CONSENT),
        ("Update", "contact", ["msdyn_gdproptout"], CONSENT),
        ("Update", "contact", ["cb_lawfulbasis"], CONSENT),  # the configured lawful basis field
        ("Update", "contact", ["DoNotEmail"], CONSENT),
        ("Update", "lead", ["donotphone"], CONSENT),
        ("Update", "lead", ["donotpostalmail", "donotfax"], CONSENT),
        ("update", "contact", ["donotemail"], CONSENT),
        ("Create", "contact", ["firstname"], CONSENT),  # a new person: re-read and reconciled
        ("Create", "lead", [], CONSENT),
        ("Delete", "contact", None, OTHER),  # housekeeping, no request to be forgotten
        ("Delete", "lead", None, OTHER),
        ("Update", "account", ["donotemail"], OTHER),  # not a person the bridge keeps
        ("Delete", "account", None, OTHER),
        ("Update", "msdynmkt_contactpointconsent4", ["msdynmkt_value"], OTHER),
        ("Assign", "contact", ["ownerid"], OTHER),
    ],
)
def test_each_context_is_classified_once_at_intake(
    message: str, entity: str, columns: list[str] | None, kind: str
) -> None:
    event = only_event(post(context(message, entity, columns)))
    assert event.kind == kind
    assert event.event_type == f"{entity}.{message}".lower()
    assert event.object_type == entity


def test_the_lawful_basis_column_is_the_configured_one() -> None:
    elsewhere = DynamicsSettings(webhook_key=SecretStr(KEY), lawful_basis_field="new_Basis")
    unheld = DynamicsSettings(webhook_key=SecretStr(KEY), lawful_basis_field=None)
    assert only_event(post(context(columns=["new_basis"]), section=elsewhere)).kind == CONSENT
    assert only_event(post(context(columns=["cb_lawfulbasis"]), section=elsewhere)).kind == OTHER
    assert only_event(post(context(columns=["cb_lawfulbasis"]), section=unheld)).kind == OTHER


@pytest.mark.parametrize(("message", "kind"), [("Update", CONSENT), ("Delete", OTHER)])
def test_a_context_over_256_kb_is_still_an_event(message: str, kind: str) -> None:
    """Dataverse drops InputParameters, the images and ParentContext: the entity and id are
    all there is, so an update is re-read as if it touched consent."""
    body = context(message)
    for dropped in ("InputParameters", "PreEntityImages", "PostEntityImages", "ParentContext"):
        del body[dropped]
    headers = {"x-bridge-key": KEY, "x-ms-dynamics-msg-size-exceeded": "true"}
    event = only_event(post(body, headers=headers))
    assert event.kind == kind
    assert event.object_id == CONTACT_ID.lower()
    assert event.payload["attributes"] is None


def test_an_update_whose_columns_are_unknown_is_consent() -> None:
    no_target = context(InputParameters=[{"key": "SuppressDuplicateDetection", "value": False}])
    reference = context(
        InputParameters=[{"key": "Target", "value": {"LogicalName": "contact", "Id": OPERATION_ID}}]
    )
    assert only_event(post(no_target)).kind == CONSENT
    assert only_event(post(reference)).kind == CONSENT


def test_a_delete_is_recorded_whatever_the_shape_of_its_target() -> None:
    """The Delete Target's shape is not documented (an EntityReference by analogy); the
    event is kept, as a delete, and asks for nothing."""
    for target in ({"LogicalName": "contact", "Id": CONTACT_ID}, CONTACT_ID, [1, 2], None):
        body = context("Delete", InputParameters=[{"key": "Target", "value": target}])
        event = only_event(post(body))
        assert (event.kind, event.event_type.rpartition(".")[2]) == (OTHER, "delete")


def test_a_redelivery_has_the_same_key_and_another_operation_does_not() -> None:
    first, again = only_event(post(DOC_CONTEXT)), only_event(post(copy.deepcopy(DOC_CONTEXT)))
    other = only_event(post(context(OperationId="5af10637-4ea2-e711-8122-000d3aa2331c")))
    assert first.key == again.key != other.key


def test_nothing_of_the_person_is_kept() -> None:
    accepted = post(context(columns=None))
    [event] = accepted.events
    kept = repr(accepted.events) + json.dumps(event.payload) + repr(accepted.reply(1, 0))
    assert FIRSTNAME not in kept
    assert EMAIL not in kept
    assert "Quark" not in kept


@pytest.mark.parametrize(
    ("created_on", "iso"),
    [
        ("/Date(1506409448000)/", "2017-09-26T07:04:08.000000+00:00"),
        ("/Date(1506409448000-0700)/", "2017-09-26T07:04:08.000000+00:00"),
        ("/Date(1506409448123+0100)/", "2017-09-26T07:04:08.123000+00:00"),
        ("/Date(-1000)/", "1969-12-31T23:59:59.000000+00:00"),
        (None, None),
        ("", None),
        ("2017-09-26T07:04:08Z", None),
        ("/Date(1506409448000)/ ", None),
        ("/Date(999999999999999)/", None),  # the year 33658
        ("/Date(१२३)/", None),  # digits of another script
    ],
)
def test_operation_created_on_becomes_iso_utc_or_none(created_on: str | None, iso: str) -> None:
    assert occurred_at(created_on) == iso
    assert only_event(post(context(OperationCreatedOn=created_on))).occurred_at == iso


MALFORMED: list[bytes | dict[str, Any]] = [
    b"",
    b"not json",
    b"\xff\xfe{}",
    b"[]",
    b"{}",
    b'{"MessageName": "Update"',
    b'{"a":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    context(PrimaryEntityId="6d81597f-0f9f-e711-8122-000d3aa2331"),
    context(PrimaryEntityId="{6d81597f-0f9f-e711-8122-000d3aa2331c}"),
    context(PrimaryEntityId=f"{FIRSTNAME}-{EMAIL}"),
    context(OperationId=None),
    context(OperationId=12),
    context(MessageName=""),
    context(MessageName="Up.date"),
    context(MessageName="U" * 50),
    context(PrimaryEntityName="contact\x00"),
    context(PrimaryEntityName="c" * 51),
    context(OperationCreatedOn=1506409448000),
    context(InputParameters={"Target": {}}),
    context(InputParameters=[{"value": 1}] * 101),
    context(InputParameters=[{"key": "Target", "value": FIRSTNAME}]),
    context(InputParameters=[{"key": "Target", "value": {"Attributes": {"firstname": "x"}}}]),
    context(columns=["first name"]),
    context(columns=[EMAIL]),
    context(columns=["c" * 101]),
    context(columns=["donotemail"] * (MAX_ATTRIBUTES + 1)),
]


@pytest.mark.parametrize("body", MALFORMED)
def test_a_malformed_context_is_refused_400_with_a_reason(body: bytes | dict[str, Any]) -> None:
    with pytest.raises(Rejected) as refused:
        post(body)
    assert (refused.value.status, refused.value.reason) == (400, "bad_payload")
    assert 0 < len(refused.value.detail) <= 200
    assert FIRSTNAME not in refused.value.detail
    assert EMAIL not in refused.value.detail


# Fuzzing: whatever arrives, the intake accepts or refuses with a 4xx, nothing else.
FUZZ = settings(max_examples=500, deadline=None)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
guids = st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper())
names = st.sampled_from(["Target", "ColumnSet", ""]) | st.text(max_size=10)
columns = st.sampled_from(["donotemail", "followemail", "firstname", "cb_lawfulbasis"]) | st.text()
target_like = st.fixed_dictionaries(
    {},
    optional={
        "LogicalName": st.sampled_from(["contact", "lead"]) | json_values,
        "Id": guids | json_values,
        "Attributes": st.lists(
            st.fixed_dictionaries({"key": columns | json_values, "value": json_values}),
            max_size=5,
        )
        | json_values,
    },
)
messages = st.sampled_from(["Create", "Update", "Delete", "Assign"])
entities = st.sampled_from(["contact", "lead", "account"])
created_on = st.from_regex(r"\A/Date\(-?[0-9]{1,17}([+-][0-9]{4})?\)/\Z") | json_values
parameters = (
    st.lists(st.fixed_dictionaries({"key": names, "value": target_like | json_values}), max_size=3)
    | json_values
)
# Contexts whose identifying fields are sound, so that the parameters get parsed, and
# contexts where anything may be missing or of any type.
context_like = st.fixed_dictionaries(
    {
        "MessageName": messages,
        "PrimaryEntityName": entities,
        "PrimaryEntityId": guids,
        "OperationId": guids,
    },
    optional={"OperationCreatedOn": created_on, "InputParameters": parameters},
) | st.fixed_dictionaries(
    {},
    optional={
        "MessageName": messages | st.text(),
        "PrimaryEntityName": entities | json_values,
        "PrimaryEntityId": guids | json_values,
        "OperationId": guids | json_values,
        "OperationCreatedOn": created_on,
        "InputParameters": parameters,
    },
)


def outcome(
    body: Mapping[str, Any] | bytes, headers: Mapping[str, str] | None = None, url: str = URL
) -> Accepted | Rejected:
    """What the intake makes of a request: anything else it raises fails the test."""
    try:
        return post(body, headers, url)
    except Rejected as refused:
        return refused


def accepted_or_400(body: bytes) -> None:
    answer = outcome(body)
    if isinstance(answer, Rejected):
        assert (answer.status, answer.reason) == (400, "bad_payload")
        assert len(answer.detail) <= 200
        return
    event = only_event(answer)
    assert event.kind in (CONSENT, DELETION, OTHER)
    row = {
        "event_key": event.key,
        "event_type": event.event_type,
        "kind": event.kind,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "occurred_at": event.occurred_at,
    }
    assert inbox.unstorable(row) is None  # fits every column on both databases
    json.dumps(event.payload).encode()


@FUZZ
@given(body=st.binary(max_size=2000))
def test_fuzzed_bytes_are_accepted_or_refused_400(body: bytes) -> None:
    accepted_or_400(body)


@FUZZ
@given(body=context_like)
def test_fuzzed_contexts_are_accepted_or_refused_400(body: dict[str, Any]) -> None:
    accepted_or_400(json.dumps(body).encode())


header_names = st.text(min_size=1, max_size=30).filter(lambda n: n.lower() != "x-bridge-key")
key_like = st.sampled_from([KEY, KEY[:-1], KEY + "=", ""]) | st.text(max_size=40)
# A code as it reaches the query: "&" and "#" would end it.
codes = st.one_of(key_like, key_like.map(lambda k: quote(k, safe=""))).filter(
    lambda c: not {"&", "#"} & set(c)
)


@FUZZ
@given(
    headers=st.dictionaries(header_names, st.text(max_size=60), max_size=5),
    key_header=st.tuples(st.sampled_from(["x-bridge-key", "X-Bridge-Key"]), key_like) | st.none(),
    code=st.none() | codes,
    query=st.text(max_size=40),
)
def test_fuzzed_headers_and_queries_are_accepted_only_with_the_key(
    headers: dict[str, str],
    key_header: tuple[str, str] | None,
    code: str | None,
    query: str,
) -> None:
    if key_header is not None:
        headers[key_header[0]] = key_header[1]
    url = f"{URL}?{query.replace('code', 'c0de')}"
    if code is not None:
        url = f"{URL}?code={code}&{query}"
    genuine = (key_header is not None and key_header[1] == KEY) or (
        code is not None and KEY in (code, unquote_plus(code))
    )
    answer = outcome(DOC_CONTEXT, headers, url)
    if genuine:
        assert isinstance(answer, Accepted)
    else:
        assert isinstance(answer, Rejected)
        assert (answer.status, answer.reason) == (401, "bad_key")
