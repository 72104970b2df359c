"""The allow-list judging what the CRMs hold: pure, names and counts only."""

from __future__ import annotations

from bridge.policies.minimisation import FieldInUse, Minimisation, ObjectInUse, UsageReport

ALLOWED = Minimisation({"hubspot.contact": ["email", "hs_email_optout*"], "salesforce.Lead": []})


def test_fields_in_use_are_judged_outside_first_and_empty_ones_left_out() -> None:
    found = ALLOWED.in_use(
        "hubspot",
        "contact",
        10,
        {"email": 10, "message": 2, "hs_email_optout_1": 4, "website": 1, "phone": 0},
        free_text={"message", "phone"},
    )
    assert found == ObjectInUse(
        "hubspot",
        "contact",
        10,
        (
            FieldInUse("message", 2, allowed=False, free_text=True),
            FieldInUse("website", 1, allowed=False, free_text=False),
            FieldInUse("email", 10, allowed=True, free_text=False),
            FieldInUse("hs_email_optout_1", 4, allowed=True, free_text=False),
        ),
    )
    assert [f.name for f in found.outside] == ["message", "website"]


def test_an_object_the_list_does_not_name_allows_nothing() -> None:
    found = ALLOWED.in_use("salesforce", "Individual", 3, {"FirstName": 3})
    assert found.outside == [FieldInUse("FirstName", 3, allowed=False, free_text=False)]


def test_the_report_totals_outside_fields_across_systems_as_json() -> None:
    report = UsageReport(
        (
            ALLOWED.in_use("hubspot", "contact", 2, {"email": 2, "message": 1}, {"message"}),
            ALLOWED.in_use("salesforce", "Lead", 1, {"Description": 1, "Company": 1}),
            ALLOWED.in_use("salesforce", "Individual", 0, {}),
        )
    )
    assert (report.outside, report.free_text_outside) == (3, 1)
    document = report.as_dict()
    assert document["outside"] == 3
    assert [(s["system"], s["object"], s["records"]) for s in document["systems"]] == [
        ("hubspot", "contact", 2),
        ("salesforce", "Lead", 1),
        ("salesforce", "Individual", 0),
    ]
    assert document["systems"][0]["fields"][0] == {
        "name": "message",
        "filled": 1,
        "allowed": False,
        "free_text": True,
    }
