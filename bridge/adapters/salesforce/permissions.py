"""What the bridge's integration user needs in Salesforce: one list, which the permission sets
shipped in ``config/salesforce/``, the README's table and the adapter's own field lists are
held to (``tests/adapters/test_salesforce_permissions.py``).

A permission set cannot name a field Salesforce grants with its object (``permissionable`` is
false in the describe: ids, audit dates, names, required fields), and one that does, or that
names an object or field the org lacks, fails to deploy; those are listed apart. The facts:
docs/vendors/salesforce.md ("Permissions").
"""

from __future__ import annotations

from dataclasses import dataclass

READ, CREATE, EDIT, DELETE, VIEW_ALL, MODIFY_ALL = (
    "read", "create", "edit", "delete", "view_all", "modify_all",
)  # fmt: skip
EVERYTHING = (READ, CREATE, EDIT, DELETE, VIEW_ALL, MODIFY_ALL)
# Every person's row, whoever owns it: the sync reads them all, erasure deletes them all.
ALL_ROWS = (READ, EDIT, DELETE, VIEW_ALL, MODIFY_ALL)


@dataclass(frozen=True)
class Grant:
    """The integration user's access to one object: object permissions (``access``), the
    fields it reads and writes (``edit``) or only reads (``read``), and whether the object
    or field exists only with Data Protection and Privacy (``privacy``)."""

    sobject: str
    access: tuple[str, ...]
    edit: tuple[str, ...] = ()
    read: tuple[str, ...] = ()
    privacy: bool = False
    privacy_edit: tuple[str, ...] = ()
    """Fields of an object every org has that exist only with the privacy objects."""


# The person's flags, address and phones (rectify, anonymisation), and the lawful-basis
# picklist the org creates (``[salesforce] lawful_basis_field``, by default this one).
PERSON_EDIT = ("Email", "Phone", "MobilePhone", "HasOptedOutOfEmail", "DoNotCall")
LAWFUL_BASIS = "Lawful_Basis__c"

GRANTS: tuple[Grant, ...] = (
    Grant("Contact", ALL_ROWS, (*PERSON_EDIT, LAWFUL_BASIS), privacy_edit=("IndividualId",)),
    Grant("Lead", ALL_ROWS, (*PERSON_EDIT, LAWFUL_BASIS), privacy_edit=("IndividualId",)),
    Grant(
        "Individual",
        EVERYTHING,
        edit=("HasOptedOutSolicit",),
        read=("HasOptedOutProcessing",),
        privacy=True,
    ),
    Grant(
        "ContactPointTypeConsent",
        EVERYTHING,
        edit=(
            "DataUsePurposeId",
            "ContactPointType",
            "PrivacyConsentStatus",
            "CaptureDate",
            "CaptureSource",
            "CaptureContactPointType",
            "DoubleConsentCaptureDate",
        ),
        privacy=True,
    ),
    Grant("ContactPointEmail", ALL_ROWS, read=("ParentId", "IsPrimary"), privacy=True),
    Grant("DataUsePurpose", (READ, VIEW_ALL), read=("LegalBasisId",), privacy=True),
    Grant("DataUseLegalBasis", (READ, VIEW_ALL), privacy=True),
)
# System permissions: the REST API, and Bulk API hard delete (erasure without the recycle bin).
USER_PERMISSIONS = ("ApiEnabled", "BulkApiHardDelete")

# Granted with the object, so not listed: on every object, then on some.
WITH_EVERY_OBJECT = frozenset(
    {"Id", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp", "Name"}
)
WITH_THE_OBJECT = {
    "Contact": frozenset({"FirstName", "LastName", "LastActivityDate"}),
    "Lead": frozenset({"FirstName", "LastName", "LastActivityDate", "Company", "IsConverted"}),
    "Individual": frozenset({"FirstName", "LastName"}),
    "ContactPointTypeConsent": frozenset({"PartyId"}),  # required
    "ContactPointEmail": frozenset({"EmailAddress"}),  # required
}
# The shipped permission sets: one for orgs with the privacy objects, one for orgs without.
PERMISSION_SETS = {
    True: "config/salesforce/consent_bridge.permissionset-meta.xml",
    False: "config/salesforce/consent_bridge_basic.permissionset-meta.xml",
}


def grants(*, privacy: bool) -> list[Grant]:
    """What an org with (or without) the privacy objects needs granted."""
    return [
        Grant(g.sobject, g.access, g.edit + (g.privacy_edit if privacy else ()), g.read)
        for g in GRANTS
        if privacy or not g.privacy
    ]


def granted_with_object(sobject: str, field: str) -> bool:
    """Whether Salesforce grants ``field`` with read access to ``sobject``."""
    return field in WITH_EVERY_OBJECT or field in WITH_THE_OBJECT.get(sobject, frozenset())
