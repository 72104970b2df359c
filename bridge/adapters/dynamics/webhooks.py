"""Dataverse webhooks: a service endpoint's key, and its ``RemoteExecutionContext`` bodies.

A webhook step posts one execution context per operation (docs/vendors/dynamics.md,
"Webhooks"). The key arrives in a header (``HttpHeader`` authentication) or as ``?code=``
(``WebhookKey``); Dataverse leaves checking it to the endpoint, so it is compared here in
constant time. Only the names of the changed columns are kept, never their values: the event
is a hint, and propagation and erasure re-read the record through the adapter.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import unquote_plus

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from bridge.adapters.dynamics.settings import DynamicsSettings
from bridge.adapters.spec import (
    CONSENT,
    OTHER,
    Accepted,
    IncomingEvent,
    Rejected,
    WebhookRequest,
)

PEOPLE = frozenset({"contact", "lead"})
# The consent columns of contact and lead (docs/vendors/dynamics.md, "Consent fields"); the
# configured lawful basis column joins them.
CONSENT_COLUMNS = frozenset(
    {
        "donotbulkemail",
        "donotemail",
        "donotphone",
        "donotpostalmail",
        "donotfax",
        "followemail",
        "msdyn_gdproptout",
    }
)
# Bounds on what a genuine context holds, so that what is stored stays small: far more
# columns than a contact or lead has, and more input parameters than any message takes.
MAX_ATTRIBUTES = 4096
MAX_PARAMETERS = 100
# .NET's DataContractJsonSerializer writes a DateTime as "/Date(ms)/" or "/Date(ms+hhmm)/":
# the milliseconds since 1970 are UTC either way, the offset only says the writer's zone
# (learn.microsoft.com/dotnet/framework/wcf/feature-details/stand-alone-json-serialization).
# At most 15 digits: beyond that no datetime holds it.
_DATE = re.compile(r"/Date\((-?[0-9]{1,15})(?:[+-][0-9]{4})?\)/")

# Logical names are lower-case letters, digits and underscores; the bounds keep an event's
# type ("<entity>.<message>") within the inbox's 100 characters and its object type within 50.
_Guid = Annotated[
    str,
    StringConstraints(
        pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ),
    AfterValidator(str.lower),
]
_Entity = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,49}$"), AfterValidator(str.lower)
]
_Message = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,48}$")]
_Column = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"), AfterValidator(str.lower)
]


class _Attribute(BaseModel):
    """One ``{"key", "value"}`` of an entity's attributes; the value is not even read."""

    model_config = ConfigDict(extra="ignore")

    key: _Column


class _Parameter(BaseModel):
    model_config = ConfigDict(extra="ignore")

    key: str
    value: Any = None


class _Target(BaseModel):
    """The ``Target`` input parameter: an entity with ``Attributes``, or (for Delete, by
    analogy with plug-ins: "Not verified" in the vendor doc) an ``EntityReference`` without."""

    model_config = ConfigDict(extra="ignore")

    attributes: list[_Attribute] | None = Field(None, alias="Attributes", max_length=MAX_ATTRIBUTES)


class ExecutionContext(BaseModel):
    """The parts of a ``RemoteExecutionContext`` the bridge uses. ``InputParameters`` is
    absent when the payload was over 256 KB (or the message has none)."""

    model_config = ConfigDict(extra="ignore")

    message: _Message = Field(alias="MessageName")
    entity: _Entity = Field(alias="PrimaryEntityName")
    entity_id: _Guid = Field(alias="PrimaryEntityId")
    operation_id: _Guid = Field(alias="OperationId")
    created_on: str | None = Field(None, alias="OperationCreatedOn")
    parameters: list[_Parameter] | None = Field(
        None, alias="InputParameters", max_length=MAX_PARAMETERS
    )

    def changed_columns(self) -> list[str] | None:
        """The Target's attribute names, or None when the context does not say (no input
        parameters, no Target, or a Target without attributes)."""
        target = next((p.value for p in self.parameters or () if p.key == "Target"), None)
        if target is None:
            return None
        attributes = _Target.model_validate(target).attributes
        return None if attributes is None else [a.key for a in attributes]

    def kind(self, changed: list[str] | None, lawful_basis_field: str | None) -> str:
        """A Create, or an Update that touches a consent column (or whose columns are
        unknown), is re-read and propagated; the rest is recorded. A Delete too: Dataverse
        has no request to be forgotten, and a delete is a user's housekeeping (a duplicate, a
        row restorable from the recycle bin), no erasure of the person everywhere, as
        HubSpot's ``contact.deletion`` is none."""
        if self.entity not in PEOPLE:
            return OTHER
        message = self.message.lower()
        if message == "create":
            return CONSENT
        if message == "update":
            if changed is None:
                return CONSENT
            basis = {lawful_basis_field.lower()} if lawful_basis_field else set()
            return CONSENT if (CONSENT_COLUMNS | basis).intersection(changed) else OTHER
        return OTHER


def occurred_at(created_on: str | None) -> str | None:
    """``OperationCreatedOn`` in the bridge's one sortable format, or None if it is not one."""
    match = _DATE.fullmatch(created_on or "")
    if match is None:
        return None
    try:
        moment = datetime.fromtimestamp(int(match.group(1)) / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.isoformat(timespec="microseconds")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """The first value of header ``name``, whatever its case (Starlette's headers ignore
    case; a plain mapping may not)."""
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


def _codes(url: str) -> list[str]:
    """The first ``code`` query parameter, decoded and as sent: whether Dataverse
    percent-encodes the key is not documented, and either form must come from the key."""
    query = url.partition("?")[2].partition("#")[0]
    pairs = (part.partition("=") for part in query.split("&"))
    raw = next((value for name, _, value in pairs if unquote_plus(name) == "code"), None)
    return [] if raw is None else [raw, unquote_plus(raw)]


def _same(given: str, expected: bytes) -> bool:
    """Constant-time equality on bytes (surrogatepass: any ``str`` encodes)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected)


def _bad_payload(error: ValidationError, prefix: str) -> Rejected:
    """Where the body first fails and why; pydantic's message names the field, never
    quotes the value."""
    first = error.errors()[0]
    where = prefix + ".".join(str(part) for part in first["loc"]) or "body"
    return Rejected(400, "bad_payload", f"{where}: {first['msg']}"[:200])


class Intake:
    """``POST /webhooks/dynamics``: a Dataverse service endpoint's execution contexts."""

    path = "/webhooks/dynamics"

    def admit(self, section: DynamicsSettings, path_params: Mapping[str, str]) -> None:
        if section.webhook_key is None or not section.webhook_key.get_secret_value():
            raise Rejected(404, "not_configured")

    def accept(self, section: DynamicsSettings, request: WebhookRequest, now_ms: int) -> Accepted:
        assert section.webhook_key is not None  # admitted
        key = section.webhook_key.get_secret_value().encode("utf-8", "surrogatepass")
        offered = [_header(request.headers, section.webhook_header), *_codes(request.url)]
        # Every offered value is compared, so the time taken does not say which one matched.
        matches = [_same(value, key) for value in offered if value is not None]
        if not any(matches):
            raise Rejected(401, "bad_key")
        try:
            context = ExecutionContext.model_validate_json(request.body)
        except ValidationError as error:
            raise _bad_payload(error, "") from None
        try:
            # A Delete's Target is not read: its shape is "Not verified", and no column of a
            # deleted record matters, so no shape of it may refuse the event.
            delete = context.message.lower() == "delete"
            changed = None if delete else context.changed_columns()
        except ValidationError as error:
            raise _bad_payload(error, "InputParameters.Target.") from None
        # The key assumes a redelivery (the one retry after a 502, 503 or 504, or a System
        # Job resumed) keeps its OperationId: Microsoft's pages do not say so.
        event = IncomingEvent(
            key=f"{context.operation_id}:{context.entity_id}",
            event_type=f"{context.entity}.{context.message}".lower(),
            kind=context.kind(changed, section.lawful_basis_field),
            object_type=context.entity,
            object_id=context.entity_id,
            occurred_at=occurred_at(context.created_on),
            payload={
                "message": context.message,
                "entity": context.entity,
                "id": context.entity_id,
                "attributes": changed,
            },
        )
        return Accepted(
            [event],
            lambda stored, duplicates: (
                json.dumps({"stored": stored, "duplicates": duplicates}).encode(),
                "application/json",
            ),
        )
