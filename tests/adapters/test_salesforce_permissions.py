"""The permission sets shipped in ``config/salesforce/``, the README's table and the fields
the adapter really reads and writes all say the same as ``permissions.GRANTS``."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest
from defusedxml import ElementTree

from bridge.adapters.base import ConsentWrite, RecordRef
from bridge.adapters.salesforce import SALESFORCE
from bridge.adapters.salesforce.adapter import RECTIFIABLE
from bridge.adapters.salesforce.consent import ConsentWriter, _Change
from bridge.adapters.salesforce.permissions import (
    EDIT,
    PERMISSION_SETS,
    USER_PERMISSIONS,
    granted_with_object,
    grants,
)
from bridge.adapters.salesforce.records import (
    ADDRESS_FIELDS,
    CONSENT_FIELDS,
    FLAGS,
    INDIVIDUAL_FIELDS,
    LINK_FIELDS,
    PERSON_FIELDS,
    SOBJECTS,
)
from bridge.adapters.salesforce.settings import SalesforceSettings
from bridge.model import ConsentStatus, Purpose

ROOT = Path(__file__).parents[2]
NS = "{http://soap.sforce.com/2006/04/metadata}"
# Object permissions as the metadata and the README spell them.
ACCESS = {
    "allowRead": ("read", "Read"),
    "allowCreate": ("create", "Create"),
    "allowEdit": ("edit", "Edit"),
    "allowDelete": ("delete", "Delete"),
    "viewAllRecords": ("view_all", "View All"),
    "modifyAllRecords": ("modify_all", "Modify All"),
}
# Relationships the adapter's queries follow, to the object and the field that hold them.
RELATIONSHIPS = {
    ("Contact", "Individual"): ("Individual", "IndividualId"),
    ("Lead", "Individual"): ("Individual", "IndividualId"),
    ("ContactPointTypeConsent", "DataUsePurpose"): ("DataUsePurpose", "DataUsePurposeId"),
    ("DataUsePurpose", "LegalBasis"): ("DataUseLegalBasis", "LegalBasisId"),
}
# What describe-driven code writes (anonymisation puts a placeholder in the addresses).
ANONYMISED = {"Contact": {"Email"}, "Lead": {"Email"}, "ContactPointEmail": {"EmailAddress"}}

Needs = dict[str, dict[str, bool]]  # object -> field -> edited


def needs(*, privacy: bool) -> Needs:
    """What the adapter's own field lists and row builders read and write, per object."""
    used: Needs = defaultdict(dict)

    def read(sobject: str, path: str) -> None:
        *hops, field = path.split(".")
        for hop in hops:
            target, link = RELATIONSHIPS[(sobject, hop)]
            used[sobject].setdefault(link, False)
            sobject = target
        used[sobject].setdefault(field, False)

    def edit(sobject: str, field: str) -> None:
        used[sobject][field] = True

    lawful_basis = str(SalesforceSettings().lawful_basis_field)
    for sobject in ("Contact", "Lead"):
        for path in (*PERSON_FIELDS, *(LINK_FIELDS if privacy else ())):
            read(sobject, path)
        for field in (
            lawful_basis,
            *FLAGS[sobject.lower()].values(),
            *RECTIFIABLE[sobject].values(),
            *ANONYMISED[sobject],
            *(("IndividualId",) if privacy else ()),
        ):
            edit(sobject, field)
    read("Lead", "IsConverted")
    if privacy:
        for path in INDIVIDUAL_FIELDS:
            read("Individual", path)
        for field in (*FLAGS["individual"].values(), *RECTIFIABLE["Individual"].values()):
            edit("Individual", field)
        for path in (*CONSENT_FIELDS, "DataUsePurpose.Id"):
            read("ContactPointTypeConsent", path)
        for path in ("Id", "Name", "LegalBasis.Name"):
            read("DataUsePurpose", path)
        for path in ADDRESS_FIELDS:
            read("ContactPointEmail", path)
        for field in ANONYMISED["ContactPointEmail"]:
            edit("ContactPointEmail", field)
        for field in consent_row():
            edit("ContactPointTypeConsent", field)
    return used


def consent_row() -> list[str]:
    """The fields the writer sets on a new consent row, built by the writer itself."""
    purpose = Purpose(id="p", salesforce_data_use_purpose="P")
    write = ConsentWrite(RecordRef(SALESFORCE, "contact", "003"), "", "p", ConsentStatus.GRANTED)
    writer = ConsentWriter.__new__(ConsentWriter)
    row = writer._new_row("0PK", _Change(0, write, purpose, "0ZW"))
    return [name for name in row if name != "attributes"]


def granted(*, privacy: bool) -> Needs:
    return {
        g.sobject: {f: f in g.edit for f in (*g.edit, *g.read)} for g in grants(privacy=privacy)
    }


@pytest.mark.parametrize("privacy", [True, False])
def test_the_grants_are_exactly_what_the_adapter_reads_and_writes(privacy: bool) -> None:
    used = needs(privacy=privacy)
    listed = {
        sobject: {f: edited for f, edited in fields.items() if not granted_with_object(sobject, f)}
        for sobject, fields in used.items()
    }
    assert granted(privacy=privacy) == listed
    objects = {g.sobject: g.access for g in grants(privacy=privacy)}
    assert set(objects) == set(used)
    written = {sobject for sobject, fields in used.items() if any(fields.values())}
    assert {s for s, access in objects.items() if EDIT in access} == written
    assert set(SOBJECTS.values()) <= set(used) if privacy else set(used) == {"Contact", "Lead"}


def parse(path: Path) -> tuple[Needs, dict[str, set[str]], set[str]]:
    """Field permissions, object permissions and user permissions of a permission set file."""
    root = ElementTree.parse(path).getroot()
    assert root.tag == f"{NS}PermissionSet"
    fields: Needs = defaultdict(dict)
    for element in root.findall(f"{NS}fieldPermissions"):
        sobject, _, field = element.findtext(f"{NS}field", "").partition(".")
        assert element.findtext(f"{NS}readable") == "true"
        fields[sobject][field] = element.findtext(f"{NS}editable") == "true"
    objects = {
        element.findtext(f"{NS}object", ""): {
            common
            for tag, (common, _) in ACCESS.items()
            if element.findtext(f"{NS}{tag}") == "true"
        }
        for element in root.findall(f"{NS}objectPermissions")
    }
    users = {
        element.findtext(f"{NS}name", "")
        for element in root.findall(f"{NS}userPermissions")
        if element.findtext(f"{NS}enabled") == "true"
    }
    assert root.findtext(f"{NS}label") and root.findtext(f"{NS}description")
    return fields, objects, users


@pytest.mark.parametrize("privacy", [True, False])
def test_each_shipped_permission_set_grants_exactly_the_list(privacy: bool) -> None:
    fields, objects, users = parse(ROOT / PERMISSION_SETS[privacy])
    expected = granted(privacy=privacy)
    assert dict(fields) == {s: f for s, f in expected.items() if f}
    assert objects == {g.sobject: set(g.access) for g in grants(privacy=privacy)}
    assert users == set(USER_PERMISSIONS)


def readme_table() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Salesforce") :]
    header = section.index("| object | access |")
    rows = section[header:].split("\n\n", 1)[0].splitlines()[2:]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


@pytest.mark.parametrize("privacy", [True, False])
def test_the_readme_table_lists_exactly_what_the_permission_sets_grant(privacy: bool) -> None:
    """Its rows: objects, access, fields read and edited, fields read; ¹ marks what exists
    only with the privacy objects."""
    words = {word: common for common, word in ACCESS.values()}
    fields: Needs = {}
    objects: dict[str, set[str]] = {}
    for names, access, edited, read in readme_table():
        for name in names.split(", "):
            if name.endswith("¹") and not privacy:
                continue
            sobject = name.removesuffix("¹")
            objects[sobject] = {words[w] for w in access.split(", ")}
            fields[sobject] = {}
            for cell, editable in ((edited, True), (read, False)):
                for field, only_private in re.findall(r"`([^`]+)`(¹?)", cell):
                    if privacy or not only_private:
                        fields[sobject][field] = editable
    assert fields == granted(privacy=privacy)
    assert objects == {g.sobject: set(g.access) for g in grants(privacy=privacy)}
    for path in PERMISSION_SETS.values():
        assert path.removeprefix("config/salesforce/") in (ROOT / "README.md").read_text()
