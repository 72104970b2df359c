"""No personal data in logs, whichever way a log line is made."""

from __future__ import annotations

import io
import json
import logging
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.adapters.salesforce import SALESFORCE
from bridge.logs import configure, get_logger, looks_personal, redact_text
from bridge.model import CrmRecord, ObjectType

PEOPLE = [
    {"email": "ann.smith+news@example.com", "first_name": "Annabel", "last_name": "Smithers",
     "phone": "+44 20 7946 0958"},
    {"email": "O'Brien@Example.ie", "first_name": "Siobhan", "last_name": "O'Brien",
     "phone": "(01) 555-0199"},
    {"email": "jürgen.müller@exämple.de", "first_name": "Jürgen", "last_name": "Müller",
     "phone": "030 1234 5678"},
]  # fmt: skip


@pytest.fixture
def captured() -> io.StringIO:
    stream = io.StringIO()
    configure("debug", stream)
    yield stream
    configure("info")


def leaks(output: str) -> list[str]:
    return [
        value
        for person in PEOPLE
        for value in person.values()
        if value in output or value.lower() in output.lower()
    ]


def test_no_personal_data_reaches_any_log_path(captured: io.StringIO) -> None:
    log = get_logger("bridge.test")
    stdlib = logging.getLogger("tests.vendor_sdk")  # as a vendor SDK logs, through logging
    for person in PEOPLE:
        record = CrmRecord(
            SALESFORCE,
            ObjectType.CONTACT,
            "0035e00000AbCdEAAV",
            emails=(person["email"],),
            personal_fields={"first_name": person["first_name"], "phone": person["phone"]},
        )
        # structlog: in the message, as fields the model marks personal, nested, as objects.
        log.info(f"syncing {person['email']} at {person['phone']}", **person)
        log.warning("record", record=record, nested={"contact": {"emails": [person["email"]]}})
        log.info("search", body={"filters": [{"value": person["email"]}]}, names=person)
        # The standard library, with %-style arguments.
        stdlib.debug("POST /contacts %s %s", person["email"], person)
        try:
            raise ValueError(f"{person['email']} is already unsubscribed from subscription 1")
        except ValueError:
            log.exception("failed")
            stdlib.exception("vendor call failed for %s", person["phone"])

    output = captured.getvalue()
    assert leaks(output) == []
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert len(lines) >= 6 * len(PEOPLE)  # every call above was rendered
    assert output.count("[redacted]") >= 10 * len(PEOPLE)
    assert "0035e00000AbCdEAAV" in output  # record ids are not personal and stay useful


def test_values_that_only_look_like_numbers_survive(captured: io.StringIO) -> None:
    get_logger("t").info(
        "ok", at="2026-11-23T10:00:00+00:00", hubspot_id="12345678901", version="1.2.3"
    )
    line = json.loads(captured.getvalue().splitlines()[-1])
    assert (line["at"], line["hubspot_id"], line["version"]) == (
        "2026-11-23T10:00:00+00:00",
        "12345678901",
        "1.2.3",
    )


@given(st.uuids())
def test_a_guid_never_looks_like_a_phone_number(guid: uuid.UUID) -> None:
    """Dataverse's record ids are GUIDs, whose inner groups may all be digits; an audit event
    naming one must not be refused as personal data, nor a log line redacted."""
    for text in (str(guid), str(guid).upper(), f"contacts({guid})", f"id {guid} gone"):
        assert not looks_personal(text), text
        assert redact_text(text) == text


def test_an_all_digit_guid_survives_and_phone_numbers_still_do_not() -> None:
    guid = "12345678-1234-5678-9012-123456789012"
    assert not looks_personal(guid) and redact_text(f"row {guid}") == f"row {guid}"
    for person in PEOPLE:
        assert looks_personal(f"call {person['phone']} now"), person["phone"]
