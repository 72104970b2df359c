"""The emulated portal: contacts, subscription statuses by address, and the GDPR blocklist.

All domain rules live here, behind one lock, so route handlers stay thin and every path
(public API, admin seeding, imports) obeys the same rules. Values come back already in
HubSpot's JSON shapes.
"""

from __future__ import annotations

import itertools
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Literal

from pydantic import BaseModel, Field

from bridge_sandbox.emulators.hubspot_http import (
    HubSpotError,
    bad_request,
    compact,
    epoch_ms,
    iso,
    not_found,
    now,
)
from bridge_sandbox.emulators.hubspot_properties import (
    ADDITIONAL_EMAILS,
    ALWAYS_RETURNED,
    DEFAULT_PROPERTIES,
    OPTOUT,
    OPTOUT_PREFIX,
    PropertyCatalog,
    normalise_email,
    to_property_value,
    valid_email,
    validation_error,
)
from bridge_sandbox.emulators.hubspot_search import RESULT_CAP, Matcher, SearchRequest, offset_of
from bridge_sandbox.emulators.hubspot_webhooks import Event, SubscriptionType, WebhookDispatcher

StatusState = Literal["SUBSCRIBED", "UNSUBSCRIBED", "NOT_SPECIFIED"]
LegalBasis = Literal[
    "CONSENT_WITH_NOTICE",
    "LEGITIMATE_INTEREST_CLIENT",
    "LEGITIMATE_INTEREST_OTHER",
    "LEGITIMATE_INTEREST_PQL",
    "NON_GDPR",
    "PERFORMANCE_OF_CONTRACT",
    "PROCESS_AND_STORE",
]
# What HubSpot's subscription history calls a change the recipient made themselves (the
# legacy subscriptions timeline's ``source``): the preference page records its changes so.
RECIPIENT = "SOURCE_RECIPIENT"
NOT_FOUND_IN_BATCH = (
    "Could not get some CONTACT objects, they may be deleted or not exist. "
    "Check that ids are valid."
)


class SubscriptionDefinition(BaseModel):
    """A subscription type of the portal; ids are numeric strings, as v4 needs them as ints."""

    id: str = Field(pattern=r"^\d+$")
    name: str
    description: str = ""
    purpose: str = "Marketing"
    communication_method: str = "Email"
    is_default: bool = False
    is_internal: bool = False


class SeedStatus(BaseModel):
    """A subscription status to seed; no ``subscription_id`` means the portal-wide opt-out."""

    subscription_id: str | None = None
    status: StatusState
    legal_basis: LegalBasis | None = None
    legal_basis_explanation: str | None = None
    timestamp: datetime | None = None


class SeedAddressStatus(SeedStatus):
    """A status for an address that may have no contact (yet)."""

    email: str


class SeedContact(BaseModel):
    """One person to seed, with the fields the bridge cares about spelled out."""

    email: str
    additional_emails: list[str] = Field(default_factory=list)
    firstname: str | None = None
    lastname: str | None = None
    phone: str | None = None
    hs_legal_basis: str | None = None
    lifecyclestage: str | None = None
    properties: dict[str, str] = Field(default_factory=dict)
    createdate: datetime | None = None
    lastmodifieddate: datetime | None = None
    notes_last_updated: datetime | None = Field(
        None, description="Last Activity Date: HubSpot derives it from engagements"
    )
    subscriptions: list[SeedStatus] = Field(default_factory=list)

    def writable(self) -> dict[str, str]:
        named = {
            "email": self.email,
            "firstname": self.firstname,
            "lastname": self.lastname,
            "phone": self.phone,
            "hs_legal_basis": self.hs_legal_basis,
            "lifecyclestage": self.lifecyclestage,
            ADDITIONAL_EMAILS: ";".join(self.additional_emails) or None,
        }
        return self.properties | compact(named)


@dataclass
class _Change:
    value: str
    timestamp: datetime
    source: str


@dataclass
class Contact:
    id: int
    properties: dict[str, str]
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None = None
    history: dict[str, list[_Change]] = field(default_factory=dict)

    @property
    def email(self) -> str | None:
        return self.properties.get("email")

    def emails(self) -> list[str]:
        """Primary first, then the ``;``-separated additional addresses."""
        extra = self.properties.get(ADDITIONAL_EMAILS, "")
        return [e for e in [self.email, *extra.split(";")] if e]


@dataclass
class _Status:
    state: StatusState
    legal_basis: str | None
    explanation: str | None
    timestamp: datetime
    source: str


@dataclass
class _Preferences:
    """Everything known about one email address, whether or not a contact has it."""

    statuses: dict[str, _Status] = field(default_factory=dict)
    wide: _Status | None = None

    @property
    def opted_out(self) -> bool:
        return self.wide is not None and self.wide.state == "UNSUBSCRIBED"


class HubSpotState:
    """One portal's data and rules, safe to call from many request threads at once."""

    def __init__(
        self,
        definitions: list[SubscriptionDefinition],
        webhooks: WebhookDispatcher,
        custom_properties: Iterable[str] = (),
    ) -> None:
        self._lock = threading.RLock()
        self._webhooks = webhooks
        self._epoch = now()
        self.definitions = {d.id: d for d in definitions}
        self.catalog = PropertyCatalog({d.id: d.name for d in definitions}, custom_properties)
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._contacts: dict[int, Contact] = {}
            self._ids = itertools.count(1)
            self._by_email: dict[str, int] = {}
            self._prefs: dict[str, _Preferences] = {}
            self._blocklist: dict[str, datetime] = {}
            self._pages: dict[str, str] = {}  # preference-page token -> address

    # -- reading contacts -----------------------------------------------------------------

    def _value(self, contact: Contact, name: str) -> str | None:
        if name == "hs_object_id":
            return str(contact.id)
        if name == OPTOUT or name.startswith(OPTOUT_PREFIX):
            return self._computed(contact).get(name)
        return contact.properties.get(name)

    def _computed(self, contact: Contact) -> dict[str, str | None]:
        """The read-only opt-out mirrors, derived from the primary address's statuses."""
        prefs = self._prefs.get(contact.email or "")
        wide = prefs.wide if prefs else None
        values = {OPTOUT: None if wide is None else str(wide.state == "UNSUBSCRIBED").lower()}
        for sub_id in self.definitions:
            status = prefs.statuses.get(sub_id) if prefs else None
            state = status.state if status else "NOT_SPECIFIED"
            flag = None if state == "NOT_SPECIFIED" else str(state == "UNSUBSCRIBED").lower()
            values[f"{OPTOUT_PREFIX}{sub_id}"] = flag
        return values

    def _view(
        self,
        contact: Contact,
        properties: list[str] | None = None,
        history: list[str] | None = None,
    ) -> dict[str, Any]:
        """``SimplePublicObject``: the named properties (or the defaults) and the always-ones.

        Named properties without a value come back as ``null``; unknown names are left out.
        """
        names = DEFAULT_PROPERTIES if properties is None else [*properties, *ALWAYS_RETURNED]
        known = [name for name in dict.fromkeys(names) if self.catalog.get(name) is not None]
        body: dict[str, Any] = {
            "id": str(contact.id),
            "properties": {name: self._value(contact, name) for name in known},
            "createdAt": iso(contact.created_at),
            "updatedAt": iso(contact.updated_at),
            "archived": contact.archived_at is not None,
        }
        if contact.archived_at is not None:
            body["archivedAt"] = iso(contact.archived_at)
        if history:
            body["propertiesWithHistory"] = {
                name: [
                    {"value": c.value, "timestamp": iso(c.timestamp), "sourceType": c.source}
                    for c in reversed(contact.history.get(name, []))
                ]
                for name in history
            }
        return body

    def _written(self, contact: Contact) -> dict[str, Any]:
        """What a create or update answers: every stored value."""
        return self._view(contact, list(contact.properties))

    def _find(
        self, object_id: str, id_property: str | None, archived: bool = False
    ) -> Contact | None:
        """A contact by id or by primary email; ``archived`` looks among archived ones only."""
        if id_property == "email":
            email = normalise_email(object_id)
            if not archived:
                owner = self._contacts.get(self._by_email.get(email, 0))
                return owner if owner is not None and owner.email == email else None
            return next(
                (c for c in self._contacts.values() if c.archived_at and c.email == email), None
            )
        if id_property not in (None, "hs_object_id"):
            raise bad_request(f"{id_property} is not a unique identifier property")
        contact = self._contacts.get(int(object_id)) if object_id.isdigit() else None
        if contact is None or (contact.archived_at is not None) != archived:
            return None
        return contact

    def get(
        self,
        object_id: str,
        id_property: str | None,
        properties: list[str] | None,
        history: list[str] | None,
        archived: bool,
    ) -> dict[str, Any]:
        with self._lock:
            contact = self._find(object_id, id_property, archived)
            if contact is None:
                raise not_found(object_id)
            return self._view(contact, properties, history)

    def page(
        self,
        after: str | None,
        limit: int,
        properties: list[str] | None,
        history: list[str] | None,
        archived: bool,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page in id order and the cursor of the next (the first id not returned)."""
        if after is not None and not after.isdigit():
            raise bad_request("after must be a paging cursor from a previous page", after=[after])
        start = int(after or 0)
        with self._lock:
            ids = sorted(
                cid
                for cid, c in self._contacts.items()
                if cid >= start and (c.archived_at is not None) == archived
            )
            results = [self._view(self._contacts[cid], properties, history) for cid in ids[:limit]]
        return results, (str(ids[limit]) if len(ids) > limit else None)

    def search(self, request: SearchRequest) -> dict[str, Any]:
        offset = offset_of(request)
        matcher = Matcher(request, self.catalog)
        with self._lock:
            live = [c for c in self._contacts.values() if c.archived_at is None]
            lookups = [(c.id, partial(self._value, c)) for c in live]
            ordered = matcher.order([(cid, look) for cid, look in lookups if matcher.matches(look)])
            window = ordered[:RESULT_CAP][offset : offset + request.limit]
            body: dict[str, Any] = {
                "total": len(ordered),
                "results": [self._view(self._contacts[cid], request.properties) for cid in window],
            }
        following = offset + request.limit
        if request.limit and following < min(len(ordered), RESULT_CAP):
            body["paging"] = {"next": {"after": str(following)}}
        return body

    # -- writing contacts -----------------------------------------------------------------

    def _snapshot(self, contact: Contact) -> dict[str, str | None]:
        return {**contact.properties, **self._computed(contact)}

    def _index(self, contact: Contact, present: bool) -> None:
        for email in contact.emails():
            if present:
                self._by_email[email] = contact.id
            elif self._by_email.get(email) == contact.id:
                del self._by_email[email]

    def _normalised(self, raw: Mapping[str, object]) -> dict[str, str]:
        values = {name: to_property_value(value) for name, value in raw.items()}
        if "email" in values:
            values["email"] = normalise_email(values["email"])
        if ADDITIONAL_EMAILS in values:
            extra = (normalise_email(e) for e in values[ADDITIONAL_EMAILS].split(";"))
            values[ADDITIONAL_EMAILS] = ";".join(e for e in extra if e)
        return values

    def _check_unique(self, values: Mapping[str, str], own_id: int | None) -> None:
        """A second contact may not hold any address (primary or additional) a live one has."""
        wanted = [values.get("email", ""), *values.get(ADDITIONAL_EMAILS, "").split(";")]
        for email in filter(None, wanted):
            owner = self._by_email.get(email)
            if owner is not None and owner != own_id:
                raise HubSpotError(409, f"Contact already exists. Existing ID: {owner}", "CONFLICT")

    def _write(self, contact: Contact | None, raw: Mapping[str, object], source: str) -> Contact:
        """Validate and apply one create (``contact`` None) or update; emit its webhooks."""
        values = self._normalised(raw)
        problems = self.catalog.problems(values)
        if problems:
            raise validation_error(problems)
        self._check_unique(values, contact.id if contact else None)
        moment = now()
        created = contact is None
        if contact is None:
            contact = Contact(next(self._ids), {}, moment, moment)
            contact.properties |= {"createdate": iso(moment), "lastmodifieddate": iso(moment)}
            self._contacts[contact.id] = contact
        before = self._snapshot(contact) if not created else {}
        self._index(contact, present=False)
        for name, value in values.items():
            if contact.properties.get(name, "") == value:
                continue
            if value:
                contact.properties[name] = value
            else:
                contact.properties.pop(name, None)
            contact.history.setdefault(name, []).append(_Change(value, moment, source))
        self._index(contact, present=True)
        self._changed(contact, before, source, created)
        return contact

    def _changed(
        self, contact: Contact, before: Mapping[str, str | None], source: str, created: bool = False
    ) -> None:
        """Bump ``lastmodifieddate`` and send creation and property-change events."""
        after = self._snapshot(contact)
        ignored = ("createdate", "lastmodifieddate")
        changes = {
            name: after.get(name)
            for name in sorted(before.keys() | after.keys())
            if name not in ignored and before.get(name) != after.get(name)
        }
        if not changes and not created:
            return
        moment = contact.created_at if created else now()
        contact.updated_at = moment
        contact.properties["lastmodifieddate"] = iso(moment)
        events = [self._event("contact.creation", contact.id, source)] if created else []
        events += [
            self._event("contact.propertyChange", contact.id, source, name, value or "")
            for name, value in changes.items()
        ]
        self._webhooks.emit(events)

    @staticmethod
    def _event(
        kind: SubscriptionType,
        object_id: int,
        source: str,
        name: str | None = None,
        value: str | None = None,
    ) -> Event:
        return Event(kind, object_id, epoch_ms(now()), source, name, value)

    def create(self, properties: Mapping[str, object], source: str = "API") -> dict[str, Any]:
        with self._lock:
            return self._written(self._write(None, properties, source))

    def update(
        self, object_id: str, id_property: str | None, properties: Mapping[str, object]
    ) -> dict[str, Any]:
        with self._lock:
            contact = self._find(object_id, id_property)
            if contact is None:
                raise not_found(object_id)
            return self._written(self._write(contact, properties, "API"))

    def archive(self, object_ids: Iterable[str]) -> None:
        """Restorable delete: gone from reads and search, address free again; unknown ids pass."""
        with self._lock:
            for object_id in object_ids:
                contact = self._find(object_id, None)
                if contact is None:
                    continue
                contact.archived_at = now()
                self._index(contact, present=False)
                self._webhooks.emit([self._event("contact.deletion", contact.id, "API")])

    def gdpr_delete(self, object_id: str, id_property: str | None) -> None:
        """Permanent delete; every address involved goes on the blocklist, even if unknown."""
        with self._lock:
            if id_property == "email":
                email = normalise_email(object_id)
                doomed = [c for c in self._contacts.values() if c.email == email]
                emails = {email}
            else:
                found = self._find(object_id, id_property) or self._find(
                    object_id, id_property, True
                )
                if found is None:
                    raise not_found(object_id)
                doomed, emails = [found], set()
            moment = now()
            for contact in doomed:
                emails.update(contact.emails())
                self._index(contact, present=False)
                del self._contacts[contact.id]
                self._webhooks.emit(
                    [
                        self._event("contact.privacyDeletion", contact.id, "GDPR"),
                        self._event("contact.deletion", contact.id, "GDPR"),
                    ]
                )
            for email in emails:
                self._blocklist[email] = moment
                self._prefs.pop(email, None)

    # -- batches: per-input outcomes for a 200/201/207 envelope ---------------------------

    def batch_read(
        self,
        object_ids: list[str],
        id_property: str | None,
        properties: list[str],
        history: list[str] | None,
        archived: bool,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with self._lock:
            found = {i: self._find(i, id_property, archived) for i in dict.fromkeys(object_ids)}
            results = [self._view(c, properties, history) for c in found.values() if c]
        missing = [i for i, c in found.items() if c is None]
        error = HubSpotError(404, NOT_FOUND_IN_BATCH, "OBJECT_NOT_FOUND", context={"ids": missing})
        return results, [error.standard_error()] if missing else []

    def batch_write(
        self, inputs: Sequence[Mapping[str, Any]], operation: Literal["create", "update", "upsert"]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Each input is ``{id?, idProperty?, properties, objectWriteTraceId?}``."""
        ids = Counter(str(i["id"]) for i in inputs if i.get("id") is not None)
        duplicates = sorted(i for i, count in ids.items() if count > 1)
        if operation != "create" and duplicates:
            listed = ", ".join(duplicates)
            raise bad_request(f"Duplicate IDs found in batch input: [{listed}]", ids=duplicates)
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        with self._lock:
            for item in inputs:
                try:
                    results.append(self._write_one(item, operation))
                except HubSpotError as exc:
                    trace = item.get("objectWriteTraceId")
                    key = (
                        {"objectWriteTraceId": [trace]} if trace else {"id": [str(item.get("id"))]}
                    )
                    exc.context = (exc.context or {}) | key
                    errors.append(exc.standard_error())
        return results, errors

    def _write_one(
        self, item: Mapping[str, Any], operation: Literal["create", "update", "upsert"]
    ) -> dict[str, Any]:
        properties: Mapping[str, object] = item.get("properties") or {}
        if operation == "create":
            return self._written(self._write(None, properties, "API"))
        object_id, id_property = str(item.get("id")), item.get("idProperty")
        contact = self._find(object_id, id_property)
        if contact is None and operation == "upsert" and id_property == "email":
            created = self._write(None, {**properties, "email": object_id}, "API")
            return self._written(created) | {"new": True}
        if contact is None:
            raise not_found(object_id)
        view = self._written(self._write(contact, properties, "API"))
        return view | {"new": False} if operation == "upsert" else view

    # -- subscriptions ----------------------------------------------------------------------

    def _definition(self, subscription_id: object) -> SubscriptionDefinition:
        definition = self.definitions.get(str(subscription_id))
        if definition is None:
            raise bad_request(
                f"Subscription {subscription_id} does not exist",
                subscriptionId=[str(subscription_id)],
            )
        return definition

    @staticmethod
    def _address(raw: str) -> str:
        email = normalise_email(raw)
        if not valid_email(email):
            raise bad_request(f"Invalid email address: {raw}", emailAddress=[raw])
        return email

    def _mutate(self, email: str, source: str, change: Callable[[_Preferences], None]) -> None:
        """Change an address's statuses; its live contact (if any) sees the mirrors change."""
        contact = self._find(email, "email")
        before = self._snapshot(contact) if contact else {}
        change(self._prefs.setdefault(email, _Preferences()))
        if contact is not None:
            self._changed(contact, before, source)

    def _set(
        self,
        email: str,
        subscription_id: str | None,
        state: StatusState,
        source: str,
        legal_basis: str | None = None,
        explanation: str | None = None,
        timestamp: datetime | None = None,
    ) -> None:
        record = _Status(state, legal_basis, explanation, timestamp or now(), source)

        def apply(prefs: _Preferences) -> None:
            if subscription_id is None:
                prefs.wide = record
            else:
                prefs.statuses[subscription_id] = record

        self._mutate(email, source, apply)

    def _status(self, email: str, subscription_id: str) -> _Status | None:
        prefs = self._prefs.get(email)
        return prefs.statuses.get(subscription_id) if prefs else None

    def _opted_out(self, email: str) -> bool:
        prefs = self._prefs.get(email)
        return prefs is not None and prefs.opted_out

    def definitions_body(self) -> list[dict[str, Any]]:
        return [
            {
                "id": d.id,
                "name": d.name,
                "description": d.description,
                "purpose": d.purpose,
                "communicationMethod": d.communication_method,
                "isActive": True,
                "isDefault": d.is_default,
                "isInternal": d.is_internal,
                "createdAt": iso(self._epoch),
                "updatedAt": iso(self._epoch),
                "businessUnitId": 0,
            }
            for d in self.definitions.values()
        ]

    def _v3_status(self, email: str, definition: SubscriptionDefinition) -> dict[str, Any]:
        """v3 folds the portal-wide opt-out into every subscription's status."""
        status, wide = self._status(email, definition.id), self._opted_out(email)
        subscribed = not wide and status is not None and status.state == "SUBSCRIBED"
        return compact(
            {
                "id": definition.id,
                "name": definition.name,
                "description": definition.description,
                "status": "SUBSCRIBED" if subscribed else "NOT_SUBSCRIBED",
                "sourceOfStatus": "PORTAL_WIDE_STATUS" if wide else "SUBSCRIPTION_STATUS",
                "legalBasis": status.legal_basis if status else None,
                "legalBasisExplanation": status.explanation if status else None,
                "brandId": 0,
            }
        )

    def v3_statuses(self, raw_email: str) -> dict[str, Any]:
        email = self._address(raw_email)
        with self._lock:
            statuses = [self._v3_status(email, d) for d in self.definitions.values()]
        return {"recipient": email, "subscriptionStatuses": statuses}

    def v3_change(
        self,
        raw_email: str,
        subscription_id: str,
        subscribe: bool,
        legal_basis: str | None,
        explanation: str | None,
    ) -> dict[str, Any]:
        """v3 refuses to resubscribe an opted-out address and to repeat a change."""
        email = self._address(raw_email)
        with self._lock:
            definition = self._definition(subscription_id)
            current = self._status(email, definition.id)
            state = current.state if current else "NOT_SPECIFIED"
            if subscribe and (state == "UNSUBSCRIBED" or self._opted_out(email)):
                raise bad_request(
                    f"{email} has opted out and cannot be resubscribed to subscription "
                    f"{definition.id} through the v3 API; only the recipient can opt back in",
                    subscriptionId=[definition.id],
                )
            if subscribe and state == "SUBSCRIBED":
                raise bad_request(f"{email} is already subscribed to subscription {definition.id}")
            if not subscribe and state == "UNSUBSCRIBED":
                raise bad_request(
                    f"{email} is already unsubscribed from subscription {definition.id}"
                )
            target: StatusState = "SUBSCRIBED" if subscribe else "UNSUBSCRIBED"
            self._set(email, definition.id, target, "API", legal_basis, explanation)
            return self._v3_status(email, definition)

    def _public_status(
        self, email: str, definition: SubscriptionDefinition, reason: str | None = None
    ) -> dict[str, Any]:
        """v4 ``PublicStatus``: per subscription, independent of the portal-wide status."""
        status = self._status(email, definition.id)
        return compact(
            {
                "subscriberIdString": email,
                "subscriptionId": int(definition.id),
                "subscriptionName": definition.name,
                "channel": "EMAIL",
                "status": status.state if status else "NOT_SPECIFIED",
                "source": status.source if status else "DEFAULT",
                "legalBasis": status.legal_basis if status else None,
                "legalBasisExplanation": status.explanation if status else None,
                "timestamp": iso(status.timestamp if status else self._epoch),
                "setStatusSuccessReason": reason,
                "businessUnitId": 0,
            }
        )

    def v4_statuses(self, raw_email: str) -> list[dict[str, Any]]:
        email = self._address(raw_email)
        with self._lock:
            return [self._public_status(email, d) for d in self.definitions.values()]

    def v4_set(
        self,
        raw_email: str,
        subscription_id: object,
        state: StatusState,
        legal_basis: str | None,
        explanation: str | None,
    ) -> dict[str, Any]:
        """v4 may resubscribe, which also lifts a portal-wide opt-out."""
        email = self._address(raw_email)
        with self._lock:
            definition = self._definition(subscription_id)
            current = self._status(email, definition.id)
            was = current.state if current else "NOT_SPECIFIED"
            wide = self._opted_out(email)
            if state == "SUBSCRIBED" and (wide or was == "UNSUBSCRIBED"):
                reason = "RESUBSCRIBE_OCCURRED"
                if wide:
                    self._set(email, None, "SUBSCRIBED", "API", legal_basis, explanation)
            else:
                reason = "NO_STATUS_CHANGE" if was == state else "REQUESTED_CHANGE_OCCURRED"
            if reason != "NO_STATUS_CHANGE":
                self._set(email, definition.id, state, "API", legal_basis, explanation)
            return self._public_status(email, definition, reason)

    def v4_wide_statuses(self, raw_email: str) -> list[dict[str, Any]]:
        """The portal-wide status; empty when the address has not opted out of all email."""
        email = self._address(raw_email)
        with self._lock:
            prefs = self._prefs.get(email)
            if prefs is None or prefs.wide is None or not prefs.opted_out:
                return []
            wide = {
                "subscriberIdString": email,
                "wideStatusType": "PORTAL_WIDE",
                "status": prefs.wide.state,
                "channel": "EMAIL",
                "timestamp": iso(prefs.wide.timestamp),
                "businessUnitId": 0,
            }
            return [wide]

    def unsubscribe_all(self, raw_email: str, source: str = "API") -> list[dict[str, Any]]:
        """Portal-wide opt-out: the wide status and every subscription become UNSUBSCRIBED."""
        email = self._address(raw_email)
        with self._lock:
            if self._opted_out(email):
                reason = "NO_STATUS_CHANGE"
            else:
                reason = "UNSUBSCRIBE_FROM_ALL_OCCURRED"
                record = _Status("UNSUBSCRIBED", None, None, now(), source)

                def apply(prefs: _Preferences) -> None:
                    prefs.wide = record
                    for sub_id in self.definitions:
                        prefs.statuses[sub_id] = record

                self._mutate(email, source, apply)
            return [self._public_status(email, d, reason) for d in self.definitions.values()]

    # -- preference pages -------------------------------------------------------------------

    def preference_links(
        self, raw_email: str, subscription_id: str | None, page: str
    ) -> dict[str, Any]:
        """v4 ``links/generate``: the address's own preference page at ``page``, named by an
        opaque token (as HubSpot's ``d`` parameter), and its unsubscribe variants."""
        email = self._address(raw_email)
        with self._lock:
            single = self._definition(subscription_id).id if subscription_id else None
            token = secrets.token_urlsafe(24)
            self._pages[token] = email
        manage = f"{page}?d={token}"
        return compact(
            {
                "managePreferencesUrl": manage,
                "subscriberIdString": email,
                "unsubscribeAllUrl": f"{manage}&all=1",
                "unsubscribeSingleUrl": f"{manage}&unsubscribe={single}" if single else None,
            }
        )

    def preference_page(self, token: str) -> tuple[str, list[tuple[str, str, bool]], bool] | None:
        """What the page shows: the address, each public subscription (id, name, subscribed)
        and whether it left all email; None for a token no link carried."""
        with self._lock:
            email = self._pages.get(token)
            if email is None:
                return None
            wide = self._opted_out(email)
            shown = [
                (d.id, d.name, not wide and (s := self._status(email, d.id)) is not None
                 and s.state == "SUBSCRIBED")
                for d in self.definitions.values()
                if not d.is_internal
            ]  # fmt: skip
            return email, shown, wide

    def save_preferences(self, token: str, subscribed: Collection[str], leave_all: bool) -> bool:
        """The person's own choices on the page, recorded as theirs (``RECIPIENT``): each public
        subscription as ticked (a tick lifts an unsubscribe from all, as HubSpot's page does),
        or out of all email. False for an unknown token."""
        with self._lock:
            email = self._pages.get(token)
            if email is None:
                return False
            if leave_all:
                self.unsubscribe_all(email, RECIPIENT)
                return True
            for definition in self.definitions.values():
                if definition.is_internal:
                    continue
                status = self._status(email, definition.id)
                held = status.state if status else "NOT_SPECIFIED"
                if definition.id in subscribed and (held != "SUBSCRIBED" or self._opted_out(email)):
                    if self._opted_out(email):
                        self._set(email, None, "SUBSCRIBED", RECIPIENT)
                    self._set(email, definition.id, "SUBSCRIBED", RECIPIENT)
                elif definition.id not in subscribed and held == "SUBSCRIBED":
                    self._set(email, definition.id, "UNSUBSCRIBED", RECIPIENT)
            return True

    # -- admin ------------------------------------------------------------------------------

    def seed(
        self, person: SeedContact, source: str, refuse_blocklisted: bool = False
    ) -> dict[str, Any]:
        """Create or update a contact by primary email, then its statuses and dates.

        ``refuse_blocklisted`` is the UI/import path, which the GDPR blocklist stops; the API
        path (``False``) may bring a blocklisted address back, as HubSpot's KB says.
        """
        with self._lock:
            values = self._normalised(person.writable())
            emails = [values["email"], *filter(None, values.get(ADDITIONAL_EMAILS, "").split(";"))]
            blocked = [e for e in emails if e in self._blocklist]
            if refuse_blocklisted and blocked:
                return {
                    "email": values["email"],
                    "id": None,
                    "created": False,
                    "rejected": "BLOCKLISTED",
                }
            existing = self._find(values["email"], "email")
            contact = self._write(existing, values, source)
            for status in person.subscriptions:
                self.seed_status(values["email"], status, source)
            if person.createdate is not None:
                contact.created_at = person.createdate
                contact.properties["createdate"] = iso(person.createdate)
            if person.notes_last_updated is not None:
                contact.properties["notes_last_updated"] = iso(person.notes_last_updated)
            if person.lastmodifieddate is not None:
                contact.updated_at = person.lastmodifieddate
                contact.properties["lastmodifieddate"] = iso(person.lastmodifieddate)
            return {"email": contact.email, "id": str(contact.id), "created": existing is None}

    def seed_status(self, raw_email: str, status: SeedStatus, source: str) -> None:
        email = self._address(raw_email)
        with self._lock:
            sub_id = (
                None
                if status.subscription_id is None
                else self._definition(status.subscription_id).id
            )
            self._set(
                email,
                sub_id,
                status.status,
                source,
                status.legal_basis,
                status.legal_basis_explanation,
                status.timestamp,
            )

    def snapshot(self) -> dict[str, Any]:
        """Everything, for tests and benchmarks: contacts with every value, statuses, blocklist."""
        with self._lock:
            contacts = [self._view(c, list(self._snapshot(c))) for c in self._contacts.values()]
            statuses = [
                {
                    "email": email,
                    "subscriptionId": sub_id,
                    "status": s.state,
                    "legalBasis": s.legal_basis,
                    "legalBasisExplanation": s.explanation,
                    "timestamp": iso(s.timestamp),
                    "source": s.source,
                }
                for email, prefs in self._prefs.items()
                for sub_id, s in [(None, prefs.wide), *prefs.statuses.items()]
                if s is not None
            ]
            blocklist = [{"email": e, "blockedAt": iso(t)} for e, t in self._blocklist.items()]
        return {"contacts": contacts, "subscriptions": statuses, "blocklist": blocklist}
