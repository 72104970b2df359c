"""What `bridge check --crm` says about a Salesforce org: access held against the shipped
permission list and the settings' own fields, the lawful-basis picklist, the purposes and
which erasure the user may run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bridge.adapters.salesforce.permissions import CREATE, EDIT, READ, Grant
from bridge.adapters.salesforce.readiness import access, erasure, lawful_basis, needed, purposes

SIX = ("Consent", "Contract", "Legal Obligation", "Vital Interests", "Public Task")
SIX += ("Legitimate Interests",)


def field(name: str, *, updateable: bool = True, createable: bool = True) -> dict[str, Any]:
    return {"name": name, "updateable": updateable, "createable": createable}


def picklist(name: str, values: Sequence[str], kind: str = "picklist") -> dict[str, Any]:
    options = [{"value": v, "active": True} for v in values]
    return {"name": name, "type": kind, "picklistValues": options}


LISTED = {"queryable": True, "createable": True, "updateable": True, "deletable": True}


def test_needs_take_the_settings_fields_on_contact_and_lead() -> None:
    found = {
        g.sobject: g
        for g in needed(
            privacy=False,
            lawful_basis_field="Legal_Ground__c",
            due_field="Purge_Due__c",
            read_fields={"Contact": ["Contract_End__c", "Email"]},
        )
    }
    assert set(found) == {"Contact", "Lead"}  # no privacy objects in a basic org
    contact = found["Contact"]
    assert "Lawful_Basis__c" not in contact.edit  # the default field, replaced
    assert contact.edit[-2:] == ("Legal_Ground__c", "Purge_Due__c")
    assert contact.read == ("Contract_End__c",)  # Email is edited already
    assert "IndividualId" not in contact.edit
    bare = needed(privacy=True, lawful_basis_field=None, due_field=None, read_fields={})
    privacy = {g.sobject: g for g in bare}
    assert "IndividualId" in privacy["Lead"].edit and "Individual" in privacy
    assert not {"Lawful_Basis__c", "Purge_Due__c"} & set(privacy["Lead"].edit)


def test_access_names_each_missing_hidden_or_read_only_field_and_the_permission_set() -> None:
    grant = Grant("Contact", (READ, EDIT), edit=("Email", "Lawful_Basis__c", "DoNotCall"))
    fields = [field("Email"), field("DoNotCall", updateable=False)]
    check = access(grant, LISTED, fields, privacy=True)
    assert not check.ok
    assert check.found == (
        "no field Lawful_Basis__c (missing, or hidden from the user); DoNotCall read-only for "
        "the user"
    )
    assert "config/salesforce/consent_bridge.permissionset-meta.xml" in check.fix
    held = [field("Email"), field("DoNotCall"), field("Lawful_Basis__c")]
    whole = access(grant, LISTED, held, privacy=True)
    assert whole.ok and whole.found == "read, edit; 3 fields as the bridge uses them"


def test_access_names_what_the_user_may_not_do_to_an_object_or_that_it_is_absent() -> None:
    grant = Grant("ContactPointTypeConsent", (READ, CREATE, EDIT), edit=("CaptureDate",))
    refused = {**LISTED, "createable": False}
    check = access(grant, refused, [field("CaptureDate", createable=False)], privacy=True)
    # A row the bridge creates needs its fields createable too.
    assert check.found == (
        "the integration user may not create it; CaptureDate read-only for the user"
    )
    absent = access(grant, None, [], privacy=False)
    assert not absent.ok and absent.found == "not available to the integration user"
    assert "consent_bridge_basic.permissionset-meta.xml" in absent.fix


def describes(**fields: Mapping[str, Any]) -> Any:
    return lambda sobject: [fields[sobject]] if sobject in fields else []


def test_lawful_basis_values_must_each_name_a_basis_and_every_basis_have_one() -> None:
    good = picklist("Lawful_Basis__c", [*SIX, "Legitimate Interest"])
    assert lawful_basis("Lawful_Basis__c", describes(Contact=good, Lead=good)).ok
    odd = picklist("Lawful_Basis__c", [*SIX[:4], "Marketing OK"])
    text = picklist("Lawful_Basis__c", [], kind="string")
    check = lawful_basis("Lawful_Basis__c", describes(Contact=odd, Lead=text))
    assert not check.ok
    assert check.found == (
        "Contact.Lawful_Basis__c values 'Marketing OK' name no lawful basis; "
        "Contact.Lawful_Basis__c has no value for Public Task, Legitimate Interests; "
        "Lead.Lawful_Basis__c is a string field, not a picklist"
    )
    assert ", ".join(SIX) in check.fix
    assert lawful_basis(None, describes()).ok  # not held: nothing to map


def test_purposes_must_exist_by_name_whatever_the_case() -> None:
    rows = [
        {"Name": "Marketing", "LegalBasis": {"Name": "Consent"}},
        {"Name": "Product Updates", "LegalBasis": None},
    ]
    ok = purposes({"marketing_email": "marketing", "updates": "Product Updates"}, rows)
    assert ok.ok and ok.found == (
        "DataUsePurposes exist: marketing_email: marketing (Consent), updates: Product Updates"
    )
    wrong = purposes({"marketing_email": "Marketng"}, rows)
    assert not wrong.ok and wrong.found == "no DataUsePurpose for marketing_email names 'Marketng'"
    assert wrong.fix.endswith("one the org has ('Marketing', 'Product Updates')")


def test_erasure_says_hard_delete_or_the_fallback_and_fails_only_if_rows_stay_recoverable() -> None:
    assert erasure(True, empty_recycle_bin=False).found.startswith("hard delete (Bulk API 2.0)")
    fallback = erasure(False, empty_recycle_bin=True)
    assert fallback.ok
    assert fallback.found.endswith("delete, then empty the recycle bin (emptyRecycleBin)")
    unknown = erasure(None, empty_recycle_bin=True)
    assert unknown.ok and "UserPermissionAccess unreadable" in unknown.found
    kept = erasure(False, empty_recycle_bin=False)
    assert not kept.ok and "recoverable in the recycle bin for 15 days" in kept.found
    assert kept.fix == "grant Bulk API Hard Delete, or set salesforce.empty_recycle_bin = true"
