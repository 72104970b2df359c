"""The minimisation report over adapters: what a CRM that cannot be read does to it."""

from __future__ import annotations

from typing import cast

import pytest

from bridge.adapters.base import CrmAdapter, FieldUsage, ObjectUsage, Permanent
from bridge.adapters.hubspot import HUBSPOT
from bridge.adapters.salesforce import SALESFORCE
from bridge.model import System
from bridge.policies.minimisation import Minimisation
from bridge.services.minimise import usage_report


class Stub:
    def __init__(self, system: System, usage: list[ObjectUsage] | None) -> None:
        self.system = system
        self._usage = usage

    def field_usage(self) -> list[ObjectUsage]:
        if self._usage is None:
            raise Permanent(self.system, "list_properties: 403 MISSING_SCOPES")
        return self._usage


ALLOWED = Minimisation({"hubspot.contact": ["email"]})
CONTACTS = ObjectUsage("contact", 2, (FieldUsage("email", 2), FieldUsage("notes", 1, True)))


def adapters(*stubs: Stub) -> dict[System, CrmAdapter]:
    return {stub.system: cast(CrmAdapter, stub) for stub in stubs}


def test_every_systems_objects_are_judged_in_order() -> None:
    report = usage_report(
        adapters(
            Stub(HUBSPOT, [CONTACTS]),
            Stub(SALESFORCE, [ObjectUsage("Lead", 0, (FieldUsage("Email", 0),))]),
        ),
        ALLOWED,
    )
    assert [(o.system, o.sobject, o.records) for o in report.objects] == [
        ("hubspot", "contact", 2),
        ("salesforce", "Lead", 0),
    ]
    assert [(f.name, f.allowed, f.free_text) for f in report.objects[0].fields] == [
        ("notes", False, True),
        ("email", True, False),
    ]
    assert report.objects[1].fields == ()


def test_a_system_that_cannot_be_read_fails_the_report_rather_than_look_clean() -> None:
    with pytest.raises(Permanent) as refused:
        usage_report(adapters(Stub(HUBSPOT, [CONTACTS]), Stub(SALESFORCE, None)), ALLOWED)
    # The CRM's failure keeps its kind (the CLI's exit code), said as part of the report.
    assert refused.value.line().startswith("minimise: cannot count the fields in use: salesforce: ")
