"""The Salesforce data model the emulator serves: objects, fields, ids, values and errors.

Field lists follow the object reference for the objects the bridge touches (see
docs/vendors/salesforce.md, "Consent model"); lengths, required fields and restricted picklists
are the ones Salesforce enforces, because the bridge must learn about them here, not in
production. A ``basic`` org lacks what Data Protection and Privacy brings (``PRIVACY_OBJECTS``
and the references to them), as most orgs do.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import BaseModel, Field

CustomFieldType = Literal[
    "string",
    "textarea",
    "email",
    "phone",
    "url",
    "boolean",
    "datetime",
    "date",
    "double",
    "picklist",
]
FieldType = Literal["id", "reference"] | CustomFieldType
TEXT_TYPES = frozenset({"string", "textarea", "email", "phone", "url", "picklist"})
ID_TYPES = frozenset({"id", "reference"})
SYSTEM_FIELDS = ("Id", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp")


@dataclass(frozen=True)
class ApiError:
    """One Salesforce error: its code, message and (where Salesforce names them) fields."""

    code: str
    message: str
    fields: tuple[str, ...] | None = None

    def rest(self) -> dict[str, Any]:
        """The REST shape: ``{"message", "errorCode", "fields"?}``."""
        body: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields is not None:
            body["fields"] = list(self.fields)
        return body

    def row(self) -> dict[str, Any]:
        """The per-row shape of sObject Collections, which says ``statusCode``."""
        return {"statusCode": self.code, "message": self.message, "fields": list(self.fields or ())}

    def bulk(self) -> str:
        """The ``sf__Error`` column of Bulk API 2.0 failed results."""
        return f"{self.code}:{self.message}:{','.join(self.fields or ()) or '--'}"


class SalesforceError(Exception):
    """A failed call or record: the HTTP status a single-record call answers, and the errors.

    ``body`` replaces the usual JSON array of errors where Salesforce answers something else
    (the 300 of an ambiguous upsert lists the matching records' URLs).
    """

    def __init__(self, status: int, *errors: ApiError, body: Any = None) -> None:
        super().__init__(errors[0].code)
        self.status = status
        self.errors = errors
        self.body = [error.rest() for error in errors] if body is None else body


def no_such_column(column: str, entity: str) -> str:
    """Salesforce's words for an unknown field in SOQL or in ``?fields=``."""
    return (
        f"No such column '{column}' on entity '{entity}'. If you are attempting to use a custom "
        "field, be sure to append the '__c' after the custom field name. Please reference your "
        "WSDL or the describe call for the appropriate names."
    )


def not_found() -> SalesforceError:
    return SalesforceError(404, ApiError("NOT_FOUND", "The requested resource does not exist", ()))


def entity_is_deleted() -> SalesforceError:
    return SalesforceError(404, ApiError("ENTITY_IS_DELETED", "entity is deleted", ()))


class CustomField(BaseModel):
    """A custom field declared in the configuration or through the admin API."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*__c$")
    type: CustomFieldType = "string"
    length: int = Field(255, ge=1, le=131072)
    values: list[str] = Field(default_factory=list, description="picklist values")
    restricted: bool = False
    external_id: bool = False
    unique: bool = False


@dataclass(frozen=True)
class FieldDef:
    """What Salesforce's describe says about a field, reduced to what the emulator enforces."""

    name: str
    type: FieldType
    length: int = 0
    required: bool = False
    default: Any = None
    createable: bool = True
    updateable: bool = True
    computed: bool = False
    references: tuple[str, ...] = ()
    relationship: str | None = None
    values: tuple[str, ...] = ()
    restricted: bool = False
    external_id: bool = False
    unique: bool = False
    custom: bool = False

    @property
    def label(self) -> str:
        """``LastName`` -> ``Last Name``; Salesforce's messages name fields by label."""
        base = self.name.removesuffix("__c").replace("_", " ")
        return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", base)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "length": self.length,
            "custom": self.custom,
            "nillable": not self.required and self.type not in ("boolean", "id"),
            "createable": self.createable,
            "updateable": self.updateable,
            "calculated": self.computed,
            "defaultedOnCreate": self.default is not None,
            "externalId": self.external_id,
            "unique": self.unique,
            "idLookup": self.type == "id" or self.external_id,
            "filterable": self.type != "textarea",
            "sortable": self.type != "textarea",
            "referenceTo": list(self.references),
            "relationshipName": self.relationship,
            "restrictedPicklist": self.restricted,
            "picklistValues": [
                {
                    "active": True,
                    "defaultValue": value == self.default,
                    "label": value,
                    "validFor": None,
                    "value": value,
                }
                for value in self.values
            ],
        }


Derive = Callable[[Mapping[str, Any]], dict[str, Any]]


@dataclass
class ObjectDef:
    """An sObject type: its key prefix, fields (case-insensitive) and computed fields."""

    name: str
    prefix: str
    fields: dict[str, FieldDef]
    derive: Derive | None = None
    _by_lower: dict[str, FieldDef] = field(default_factory=dict, repr=False)
    _by_relationship: dict[str, FieldDef] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for definition in list(self.fields.values()):
            self.add(definition)

    def add(self, definition: FieldDef) -> None:
        self.fields[definition.name] = definition
        self._by_lower[definition.name.lower()] = definition
        if definition.relationship:
            self._by_relationship[definition.relationship.lower()] = definition

    def field(self, name: str) -> FieldDef | None:
        return self._by_lower.get(name.lower())

    def relationship(self, name: str) -> FieldDef | None:
        return self._by_relationship.get(name.lower())

    def defaults(self) -> dict[str, Any]:
        return {name: definition.default for name, definition in self.fields.items()}

    def describe(self, version: str) -> dict[str, Any]:
        base = f"/services/data/v{version}/sobjects/{self.name}"
        custom = self.name.endswith("__c")
        return {
            "name": self.name,
            "label": self.name,
            "labelPlural": f"{self.name}s",
            "keyPrefix": self.prefix,
            "custom": custom,
            "createable": True,
            "updateable": True,
            "deletable": True,
            "queryable": True,
            "retrieveable": True,
            "searchable": True,
            "replicateable": True,
            "urls": {
                "sobject": base,
                "describe": f"{base}/describe",
                "rowTemplate": f"{base}/{{ID}}",
            },
        }


def _text(name: str, length: int, **options: Any) -> FieldDef:
    return FieldDef(name, "string", length, **options)


def _email(name: str, **options: Any) -> FieldDef:
    return FieldDef(name, "email", 80, **options)


def _phone(name: str) -> FieldDef:
    return FieldDef(name, "phone", 40)


def _textarea(name: str, length: int = 32000) -> FieldDef:
    return FieldDef(name, "textarea", length)


def _flag(name: str, **options: Any) -> FieldDef:
    return FieldDef(name, "boolean", default=False, **options)


def _when(name: str, **options: Any) -> FieldDef:
    return FieldDef(name, "datetime", **options)


def _day(name: str, **options: Any) -> FieldDef:
    return FieldDef(name, "date", **options)


def _ref(name: str, *targets: str, **options: Any) -> FieldDef:
    relationship = name[:-2] if name.endswith("Id") else name.replace("__c", "__r")
    return FieldDef(name, "reference", 18, references=targets, relationship=relationship, **options)


def _pick(name: str, values: Sequence[str], **options: Any) -> FieldDef:
    return FieldDef(name, "picklist", 255, values=tuple(values), **options)


def _computed(name: str, type_: FieldType = "string", length: int = 121) -> FieldDef:
    return FieldDef(name, type_, length, createable=False, updateable=False, computed=True)


def _read_only(definition: FieldDef) -> FieldDef:
    return replace(definition, createable=False, updateable=False)


def _full_name(values: Mapping[str, Any]) -> dict[str, Any]:
    parts = [values.get("FirstName"), values.get("LastName")]
    return {"Name": " ".join(part for part in parts if part) or None}


def _opportunity_stage(values: Mapping[str, Any]) -> dict[str, Any]:
    stage = values.get("StageName")
    return {"IsClosed": stage in ("Closed Won", "Closed Lost"), "IsWon": stage == "Closed Won"}


def _email_name(values: Mapping[str, Any]) -> dict[str, Any]:
    return {"Name": values.get("EmailAddress")}


# What Setup › Data Protection and Privacy brings: absent from a ``basic`` org, along with every
# reference to them (Contact and Lead ``IndividualId``; ContactPointEmail's parent is an Account).
USER_PERMISSIONS = "UserPermissionAccess"
PRIVACY_OBJECTS = frozenset(
    {"Individual", "ContactPointTypeConsent", "DataUsePurpose", "DataUseLegalBasis"}
)
CONTACT_POINT_TYPES = ("Email", "MailingAddress", "Phone", "Social", "Web")
PRIVACY_CONSENT_STATUSES = ("NotSeen", "Seen", "OptIn", "OptInPending", "OptOut", "OptOutPending")
LEAD_SOURCES = (
    "Web",
    "Phone Inquiry",
    "Partner Referral",
    "Purchased List",
    "Trade Show",
    "Seminar - Internal",
    "Seminar - Partner",
    "Other",
)
INDUSTRIES = ("Technology", "Finance", "Retail", "Other")
OPPORTUNITY_STAGES = (
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Value Proposition",
    "Id. Decision Makers",
    "Perception Analysis",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
)
# Key prefixes are Salesforce's. DataUsePurpose and DataUseLegalBasis use 0ZW and 0ZV: their
# real prefixes were not in the reference, so these are a documented choice.
_CONSENT_FLAGS = ("HasOptedOutOfEmail", "HasOptedOutOfFax", "DoNotCall")
_PRIVACY_FLAGS = (
    "HasOptedOutTracking",
    "HasOptedOutProfiling",
    "HasOptedOutProcessing",
    "HasOptedOutSolicit",
    "HasOptedOutGeoTracking",
    "ShouldForget",
    "SendIndividualData",
    "CanStorePiiElsewhere",
    "HasPrivacyHold",
)


def _person() -> list[FieldDef]:
    return [
        _text("Salutation", 40),
        _text("FirstName", 40),
        _text("LastName", 80, required=True),
        _computed("Name"),
    ]


def _address(prefix: str) -> list[FieldDef]:
    return [
        _text(f"{prefix}Street", 255),
        _text(f"{prefix}City", 40),
        _text(f"{prefix}PostalCode", 20),
        _text(f"{prefix}Country", 80),
    ]


def _standard_objects() -> list[tuple[str, str, list[FieldDef], Derive | None]]:
    """Name, key prefix, fields and derived fields of every standard object served."""
    return [
        (
            "Account",
            "001",
            [
                _text("Name", 255, required=True),
                _pick("Type", ("Prospect", "Customer - Direct", "Customer - Channel", "Other")),
                _pick("Industry", INDUSTRIES),
                _phone("Phone"),
                FieldDef("Website", "url", 255),
                *_address("Billing"),
                _textarea("Description"),
            ],
            None,
        ),
        (
            "Contact",
            "003",
            [
                *_person(),
                _ref("AccountId", "Account"),
                _ref("IndividualId", "Individual"),
                _email("Email"),
                _phone("Phone"),
                _phone("MobilePhone"),
                _text("Title", 128),
                _text("Department", 80),
                *_address("Mailing"),
                _day("Birthdate"),
                _pick("LeadSource", LEAD_SOURCES),
                _textarea("Description"),
                _read_only(_day("LastActivityDate")),
                *(_flag(name) for name in _CONSENT_FLAGS),
                _flag("IsEmailBounced"),
                _text("EmailBouncedReason", 255),
                _when("EmailBouncedDate"),
            ],
            _full_name,
        ),
        (
            "Lead",
            "00Q",
            [
                *_person(),
                _text("Company", 255, required=True),
                _ref("IndividualId", "Individual"),
                _email("Email"),
                _phone("Phone"),
                _phone("MobilePhone"),
                _text("Title", 128),
                *_address(""),
                _pick(
                    "Status",
                    (
                        "Open - Not Contacted",
                        "Working - Contacted",
                        "Closed - Converted",
                        "Closed - Not Converted",
                    ),
                    default="Open - Not Contacted",
                ),
                _pick("LeadSource", LEAD_SOURCES),
                _pick("Industry", INDUSTRIES),
                _pick("Rating", ("Hot", "Warm", "Cold")),
                _textarea("Description"),
                _read_only(_day("LastActivityDate")),
                *(_flag(name) for name in _CONSENT_FLAGS),
                _flag("IsConverted", updateable=False),
                _read_only(_day("ConvertedDate")),
                _read_only(_ref("ConvertedContactId", "Contact")),
                _read_only(_ref("ConvertedAccountId", "Account")),
                _read_only(_ref("ConvertedOpportunityId", "Opportunity")),
            ],
            _full_name,
        ),
        (
            "Opportunity",
            "006",
            [
                _text("Name", 120, required=True),
                _pick("StageName", OPPORTUNITY_STAGES, required=True),
                _day("CloseDate", required=True),
                FieldDef("Amount", "double"),
                _ref("AccountId", "Account"),
                _ref("ContactId", "Contact"),
                _computed("IsClosed", "boolean", 0),
                _computed("IsWon", "boolean", 0),
                _pick("LeadSource", LEAD_SOURCES),
                _textarea("Description"),
            ],
            _opportunity_stage,
        ),
        (
            "Task",
            "00T",
            [
                _text("Subject", 255),
                _pick(
                    "Status",
                    ("Not Started", "In Progress", "Completed", "Waiting on someone else"),
                    default="Not Started",
                    required=True,
                ),
                _pick("Priority", ("High", "Normal", "Low"), default="Normal", required=True),
                _ref("WhoId", "Contact", "Lead"),
                _ref("WhatId", "Account", "Opportunity"),
                _day("ActivityDate"),
                _textarea("Description"),
            ],
            None,
        ),
        (
            "Individual",
            "0PK",
            [
                *_person(),
                _day("BirthDate"),
                _pick("IndividualsAge", ("13 or Older", "16 or Older", "Under 13", "Under 16")),
                *(_flag(name) for name in _PRIVACY_FLAGS),
            ],
            _full_name,
        ),
        (
            "ContactPointEmail",
            "9PE",
            [
                _computed("Name", length=80),
                _email("EmailAddress", required=True),
                _ref("ParentId", "Individual", "Account"),
                _flag("IsPrimary"),
                _pick("UsageType", ("Home", "Temp", "Work"), restricted=True),
                _day("ActiveFromDate"),
                _day("ActiveToDate"),
                _when("EmailLatestBounceDateTime"),
                _text("EmailLatestBounceReasonText", 255),
            ],
            _email_name,
        ),
        (
            "ContactPointTypeConsent",
            "0ZY",
            [
                _text("Name", 255),
                _ref("PartyId", "Individual", required=True),
                _pick("ContactPointType", CONTACT_POINT_TYPES, restricted=True),
                _pick(
                    "PrivacyConsentStatus",
                    PRIVACY_CONSENT_STATUSES,
                    restricted=True,
                    default="NotSeen",
                ),
                _when("CaptureDate"),
                _text("CaptureSource", 255),
                _pick("CaptureContactPointType", CONTACT_POINT_TYPES, restricted=True),
                _ref("DataUsePurposeId", "DataUsePurpose"),
                _when("EffectiveFrom"),
                _when("EffectiveTo"),
                _when("DoubleConsentCaptureDate"),
            ],
            None,
        ),
        (
            "DataUsePurpose",
            "0ZW",
            [
                _text("Name", 80, required=True),
                _textarea("Description", 1000),
                _flag("CanDataSubjectOptOut"),
                _ref("LegalBasisId", "DataUseLegalBasis"),
            ],
            None,
        ),
        (
            "DataUseLegalBasis",
            "0ZV",
            [
                _text("Name", 80, required=True),
                _textarea("Description", 1000),
                _text("Source", 255),
            ],
            None,
        ),
        (
            # The running user's own permissions: one row, computed from the configuration
            # when queried (``SalesforceState``), never stored.
            USER_PERMISSIONS,
            "0Ux",
            [_read_only(_flag(f"Permissions{p}")) for p in ("ApiEnabled", "BulkApiHardDelete")],
            None,
        ),
    ]


def _system_fields() -> tuple[list[FieldDef], list[FieldDef]]:
    head = [
        FieldDef("Id", "id", 18, createable=False, updateable=False),
        _read_only(_flag("IsDeleted")),
    ]
    tail = [_read_only(_when(name)) for name in SYSTEM_FIELDS[2:]]
    return head, tail


def _without(definition: FieldDef, absent: frozenset[str]) -> FieldDef | None:
    """A field as an org lacking the ``absent`` objects has it: a reference keeps the targets
    that exist, and a reference to none of them does not exist either."""
    if not definition.references or absent.isdisjoint(definition.references):
        return definition
    targets = tuple(t for t in definition.references if t not in absent)
    return replace(definition, references=targets) if targets else None


def custom_field_def(spec: CustomField) -> FieldDef:
    length = {"boolean": 0, "datetime": 0, "date": 0, "double": 0}.get(spec.type, spec.length)
    return FieldDef(
        spec.name,
        spec.type,
        length,
        default=False if spec.type == "boolean" else None,
        values=tuple(spec.values),
        restricted=spec.restricted,
        external_id=spec.external_id,
        unique=spec.unique,
        custom=True,
    )


class Schema:
    """Every object one emulator instance serves, including its custom fields; without the
    privacy objects (``privacy`` false) as an org that never turned them on."""

    def __init__(
        self, custom_fields: Mapping[str, Iterable[CustomField]], *, privacy: bool = True
    ) -> None:
        head, tail = _system_fields()
        absent = frozenset() if privacy else PRIVACY_OBJECTS
        self.objects: dict[str, ObjectDef] = {}
        self._by_prefix: dict[str, ObjectDef] = {}
        for name, prefix, fields, derive in _standard_objects():
            if name in absent:
                continue
            kept = [f for f in (_without(f, absent) for f in fields) if f is not None]
            ordered = {f.name: f for f in (*head, *kept, *tail)}
            sobject = ObjectDef(name, prefix, ordered, derive)
            self.objects[name.lower()] = sobject
            self._by_prefix[prefix] = sobject
        for object_name, specs in custom_fields.items():
            if object_name in absent:
                continue
            for spec in specs:
                self.add_custom_field(object_name, spec)

    def object(self, name: str) -> ObjectDef | None:
        return self.objects.get(name.lower())

    def object_for_id(self, record_id: str) -> ObjectDef | None:
        return self._by_prefix.get(record_id[:3])

    def add_custom_field(self, object_name: str, spec: CustomField) -> FieldDef:
        sobject = self.object(object_name)
        if sobject is None:
            raise KeyError(object_name)
        definition = custom_field_def(spec)
        sobject.add(definition)
        return definition


# Ids: 15 case-sensitive characters (3-character key prefix, then a counter in base 62), plus
# Salesforce's 3-character suffix that encodes which of them are upper case.
_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_SUFFIX = string.ascii_uppercase + "012345"
_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")


def id_suffix(id15: str) -> str:
    suffix = ""
    for chunk in range(3):
        bits = sum(
            1 << i for i, char in enumerate(id15[chunk * 5 : chunk * 5 + 5]) if char.isupper()
        )
        suffix += _SUFFIX[bits]
    return suffix


def make_id(prefix: str, number: int) -> str:
    digits = ""
    while number:
        number, rest = divmod(number, 62)
        digits = _BASE62[rest] + digits
    body = prefix + digits.rjust(12, "0")
    return body + id_suffix(body)


def normalize_id(value: str) -> str | None:
    """The 18-character form of a 15- or 18-character id, or None if it is not an id."""
    if not _ID.match(value):
        return None
    return value + id_suffix(value) if len(value) == 15 else value


# Values: stored as Python values (datetime in UTC to the millisecond, date, bool, float, str).
_DATETIME_TEXT = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?)?$"
)
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)


def parse_datetime(text: str) -> datetime | None:
    """ISO 8601 as Salesforce accepts it (``2024-01-01T00:00:00.000+0000``, ``...Z``, a date)."""
    match = _DATETIME_TEXT.match(text.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    tz: timezone = UTC
    if zone and zone != "Z":
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        tz = timezone(-offset if zone[0] == "-" else offset)
    try:
        value = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "0")[:3].ljust(3, "0")) * 1000,
            tzinfo=tz,
        )
    except ValueError:
        return None
    return value.astimezone(UTC)


def now() -> datetime:
    """The current time as Salesforce stores it: UTC, to the millisecond."""
    current = datetime.now(UTC)
    return current.replace(microsecond=current.microsecond // 1000 * 1000)


def format_datetime(value: datetime) -> str:
    """``2024-01-01T00:00:00.000+0000``: the REST API's datetime format."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def json_value(value: Any) -> Any:
    """A stored value as the REST API writes it in JSON."""
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def text_value(value: Any) -> str:
    """A stored value as SOAP and Bulk CSV write it (``true``, ``...000Z``); null is empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_datetime(value).removesuffix("+0000") + "Z"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _parser_error(type_name: str, raw: Any) -> SalesforceError:
    return SalesforceError(
        400,
        ApiError(
            "JSON_PARSER_ERROR",
            f"Cannot deserialize instance of {type_name} from VALUE_STRING value {raw} "
            "or request may be missing a required field",
        ),
    )


def coerce(definition: FieldDef, raw: Any) -> Any:
    """A JSON (or CSV text) value as the stored value of the field; Salesforce's error if not."""
    if raw is None:
        return None
    kind = definition.type
    if kind == "boolean":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        raise _parser_error("boolean", raw)
    if kind == "double":
        number = _finite_number(raw)
        if number is None:
            raise _parser_error("double", raw)
        return number
    if kind in ("datetime", "date"):
        parsed = parse_datetime(raw) if isinstance(raw, str) else None
        if parsed is None:
            raise _parser_error(kind, raw)
        return parsed if kind == "datetime" else parsed.date()
    if kind in ID_TYPES:
        if not isinstance(raw, str):
            raise _parser_error("id", raw)
        return _coerce_id(definition, raw)
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise _parser_error("string", raw)
    return str(raw) or None


def _finite_number(raw: Any) -> float | None:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        return None
    try:
        number = float(raw)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _coerce_id(definition: FieldDef, raw: str) -> str | None:
    if raw == "":
        return None
    normalized = normalize_id(raw)
    if normalized is None:
        raise SalesforceError(
            400,
            ApiError(
                "MALFORMED_ID",
                f"{definition.label}: id value of incorrect type: {raw}",
                (definition.name,),
            ),
        )
    return normalized


def check_value(definition: FieldDef, value: Any) -> ApiError | None:
    """Salesforce's length, email and restricted-picklist checks for one stored value."""
    if not isinstance(value, str) or definition.type not in TEXT_TYPES:
        return None
    fields = (definition.name,)
    if len(value) > definition.length:
        return ApiError(
            "STRING_TOO_LONG",
            f"{definition.label}: data value too large: {value} (max length={definition.length})",
            fields,
        )
    if definition.type == "email" and not _EMAIL.match(value):
        return ApiError(
            "INVALID_EMAIL_ADDRESS", f"{definition.label}: invalid email address: {value}", fields
        )
    if definition.restricted and value not in definition.values:
        return ApiError(
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            f"{definition.label}: bad value for restricted picklist field: {value}",
            fields,
        )
    return None


@dataclass
class Record:
    """One row: its type, id and every field's stored value (system fields included)."""

    sobject: ObjectDef
    id: str
    values: dict[str, Any]
    deleted_at: datetime | None = None

    @property
    def type(self) -> str:
        return self.sobject.name

    def url(self, version: str) -> str:
        return f"/services/data/v{version}/sobjects/{self.type}/{self.id}"

    def attributes(self, version: str) -> dict[str, str]:
        return {"type": self.type, "url": self.url(version)}
