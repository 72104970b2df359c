"""The contact property schema: which properties exist, their types, options and writability.

HubSpot rejects writes to read-only and unknown properties and to enumeration values that are
not options; the ``hs_legal_basis`` options are exact strings with mixed dashes, which is the
kind of detail a lawful-basis mapping gets wrong, so the emulator validates them the same way
(docs/vendors/hubspot.md, "Contacts" and "Lawful-basis vocabularies").
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from bridge_sandbox.emulators.hubspot_http import HubSpotError, iso

PropertyType = Literal["string", "number", "date", "datetime", "enumeration", "bool"]

LEGAL_BASIS_OPTIONS = (
    "Legitimate interest – prospect/lead",
    "Legitimate interest – existing customer",
    "Legitimate interest - other",
    "Performance of a contract",
    "Freely given consent from contact",
    "Not applicable",
)
LIFECYCLE_STAGES = (
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
)
# "Original source": HubSpot sets it, a user may change it (docs/vendors/hubspot.md).
ORIGINAL_SOURCES = (
    "ORGANIC_SEARCH",
    "PAID_SEARCH",
    "EMAIL_MARKETING",
    "SOCIAL_MEDIA",
    "REFERRALS",
    "OTHER_CAMPAIGNS",
    "DIRECT_TRAFFIC",
    "OFFLINE",
    "PAID_SOCIAL",
)
OPTOUT = "hs_email_optout"
OPTOUT_PREFIX = "hs_email_optout_"
ADDITIONAL_EMAILS = "hs_additional_emails"
# Returned by list/get/search when the caller names no properties.
DEFAULT_PROPERTIES = (
    "createdate",
    "email",
    "firstname",
    "hs_object_id",
    "lastmodifieddate",
    "lastname",
)
# Returned alongside whatever the caller names.
ALWAYS_RETURNED = ("createdate", "hs_object_id", "lastmodifieddate")
# Searched by a free-text ``query``.
QUERY_PROPERTIES = (
    "email",
    "firstname",
    "lastname",
    "phone",
    "mobilephone",
    "company",
    ADDITIONAL_EMAILS,
)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_CATALOG_EPOCH = datetime(2019, 8, 6, tzinfo=UTC)


@dataclass(frozen=True)
class PropertyDef:
    name: str
    label: str
    type: PropertyType = "string"
    field_type: str = "text"
    read_only: bool = False
    options: tuple[str, ...] = ()
    multi: bool = False
    calculated: bool = False
    group: str = "contactinformation"
    hubspot_defined: bool = True

    def to_api(self) -> dict[str, Any]:
        """The ``Property`` object of ``GET /crm/v3/properties/contacts/{name}``."""
        labels = {"true": "Yes", "false": "No"} if self.field_type == "booleancheckbox" else {}
        return {
            "updatedAt": iso(_CATALOG_EPOCH),
            "createdAt": iso(_CATALOG_EPOCH),
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "fieldType": self.field_type,
            "description": self.label,
            "groupName": self.group,
            "options": [
                {
                    "label": labels.get(value, value),
                    "value": value,
                    "displayOrder": index,
                    "hidden": False,
                }
                for index, value in enumerate(self.options)
            ],
            "displayOrder": -1,
            "calculated": self.calculated,
            "externalOptions": False,
            "hasUniqueValue": False,
            "hidden": False,
            "hubspotDefined": self.hubspot_defined,
            "modificationMetadata": {
                "archivable": True,
                "readOnlyDefinition": True,
                "readOnlyValue": self.read_only,
            },
            "formField": not self.read_only,
            "archived": False,
        }


def _text(name: str, label: str, field_type: str = "text") -> PropertyDef:
    return PropertyDef(name, label, field_type=field_type)


_STANDARD = (
    _text("email", "Email"),
    _text("firstname", "First Name"),
    _text("lastname", "Last Name"),
    _text("salutation", "Salutation"),
    _text("phone", "Phone Number", "phonenumber"),
    _text("mobilephone", "Mobile Phone Number", "phonenumber"),
    _text("fax", "Fax Number", "phonenumber"),
    _text("company", "Company Name"),
    _text("jobtitle", "Job Title"),
    _text("website", "Website URL"),
    _text("address", "Street Address"),
    _text("city", "City"),
    _text("state", "State/Region"),
    _text("zip", "Postal Code"),
    _text("country", "Country/Region"),
    _text("date_of_birth", "Date of birth"),
    _text("hubspot_owner_id", "Contact owner"),
    _text("hs_lead_status", "Lead Status"),
    _text(ADDITIONAL_EMAILS, "Additional email addresses", "textarea"),
    # A default property forms fill with whatever the person writes (multi-line text).
    _text("message", "Message", "textarea"),
    PropertyDef(
        "hs_legal_basis",
        "Legal basis for processing contact's data",
        "enumeration",
        "checkbox",
        options=LEGAL_BASIS_OPTIONS,
        multi=True,
    ),
    PropertyDef(
        "lifecyclestage", "Lifecycle Stage", "enumeration", "radio", options=LIFECYCLE_STAGES
    ),
    PropertyDef(
        "hs_analytics_source", "Original Source", "enumeration", "select", options=ORIGINAL_SOURCES
    ),
    PropertyDef("createdate", "Create Date", "datetime", "date", read_only=True),
    PropertyDef("lastmodifieddate", "Last Modified Date", "datetime", "date", read_only=True),
    # HubSpot sets it from logged calls, emails, meetings and notes (an engagement), never
    # from property edits; the emulator has no engagements, so tests seed it.
    PropertyDef("notes_last_updated", "Last Activity Date", "datetime", "date", read_only=True),
    PropertyDef("hs_object_id", "Record ID", "number", "number", read_only=True),
    PropertyDef(
        OPTOUT,
        "Opted out of all email",
        "enumeration",
        "booleancheckbox",
        read_only=True,
        options=("true", "false"),
        calculated=True,
    ),
)


@dataclass(frozen=True)
class PropertyProblem:
    name: str
    code: str
    message: str


class PropertyCatalog:
    """Every contact property the emulator knows, including one opt-out per subscription."""

    def __init__(self, subscriptions: Mapping[str, str], custom: Iterable[str] = ()) -> None:
        optouts = (
            PropertyDef(
                f"{OPTOUT_PREFIX}{sub_id}",
                f"Opted out of email: {name}",
                "enumeration",
                "booleancheckbox",
                read_only=True,
                options=("true", "false"),
                calculated=True,
            )
            for sub_id, name in subscriptions.items()
        )
        customs = (_text(name, name) for name in custom)
        self._defs = {prop.name: prop for prop in (*_STANDARD, *optouts, *customs)}

    def get(self, name: str) -> PropertyDef | None:
        return self._defs.get(name)

    def create(self, prop: PropertyDef) -> PropertyDef:
        """A portal's own property (``POST /crm/v3/properties/contacts``); a taken name is
        409 ``OBJECT_ALREADY_EXISTS``."""
        if prop.name in self._defs:
            raise HubSpotError(
                409, f"A property named '{prop.name}' already exists.", "OBJECT_ALREADY_EXISTS"
            )
        self._defs[prop.name] = prop
        return prop

    def all(self) -> list[PropertyDef]:
        return list(self._defs.values())

    def kind(self, name: str) -> PropertyType:
        prop = self._defs.get(name)
        return prop.type if prop else "string"

    def problems(self, values: Mapping[str, str]) -> list[PropertyProblem]:
        """What HubSpot would refuse in this write: read-only, unknown, bad options, bad emails."""
        found: list[PropertyProblem] = []
        for name, value in values.items():
            prop = self._defs.get(name)
            if prop is None:
                found.append(
                    PropertyProblem(
                        name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist'
                    )
                )
            elif prop.read_only:
                found.append(
                    PropertyProblem(
                        name,
                        "READ_ONLY_VALUE",
                        f"{name} is a read only property; its value cannot be set",
                    )
                )
            elif value and prop.options:
                chosen = value.split(";") if prop.multi else [value]
                for option in (option for option in chosen if option not in prop.options):
                    allowed = ", ".join(prop.options)
                    message = f"{option} was not one of the allowed options: [{allowed}]"
                    found.append(PropertyProblem(name, "INVALID_OPTION", message))
            elif value and prop.type == "date" and not _is_date(value):
                message = f"{value} is not a valid date: use YYYY-MM-DD or midnight UTC in ms"
                found.append(PropertyProblem(name, "INVALID_DATE", message))
            elif value and name in ("email", ADDITIONAL_EMAILS):
                for email in (e for e in value.split(";") if not valid_email(e)):
                    found.append(
                        PropertyProblem(name, "INVALID_EMAIL", f"Email address {email} is invalid")
                    )
        return found


def _is_date(value: str) -> bool:
    """HubSpot date properties take a day, or a millisecond timestamp at midnight UTC."""
    if value.isdigit():
        return int(value) % 86_400_000 == 0
    try:
        datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        return False
    return True


def validation_error(problems: list[PropertyProblem]) -> HubSpotError:
    """One refused write, as a 400 ``VALIDATION_ERROR``.

    A single problem keeps its exact message (e.g. ``"hs_email_optout is a read only property;
    its value cannot be set"``); several are listed as HubSpot's ``Property values were not
    valid`` summary. ``errors`` always names each property and its code.
    """
    if len(problems) == 1:
        message = problems[0].message
    else:
        summary = [
            {"isValid": False, "message": p.message, "error": p.code, "name": p.name}
            for p in problems
        ]
        listed = json.dumps(summary, ensure_ascii=False, separators=(",", ":"))
        message = f"Property values were not valid: {listed}"
    errors = [
        {"message": p.message, "code": p.code, "context": {"propertyName": [p.name]}}
        for p in problems
    ]
    return HubSpotError(400, message, "VALIDATION_ERROR", errors=errors)


def valid_email(value: str) -> bool:
    return bool(_EMAIL.match(value))


def normalise_email(value: str) -> str:
    """HubSpot stores addresses trimmed and lower-cased and looks them up the same way."""
    return value.strip().lower()


def to_property_value(value: object) -> str:
    """JSON values as HubSpot stores them: strings, with booleans as ``true``/``false``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
