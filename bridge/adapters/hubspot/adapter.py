"""The HubSpot adapter: contacts, consent, lawful basis and erasure on hubspot-api-client 12.

Contacts through CRM v3 (keyset-paged search for reads since a cursor), consent through
``preferences``, erasure by ``gdpr-delete`` or anonymisation. The API choices and the facts
behind them are in docs/vendors/hubspot.md ("Contacts", "Search", "Erasure").
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

from hubspot.crm.contacts import (
    BatchInputSimplePublicObjectBatchInput,
    BatchReadInputSimplePublicObjectId,
    Filter,
    FilterGroup,
    PublicGdprDeleteInput,
    PublicObjectSearchRequest,
    SimplePublicObjectBatchInput,
    SimplePublicObjectId,
    SimplePublicObjectInput,
)
from hubspot.crm.properties import PropertyCreate

from bridge.adapters.base import (
    AdapterError,
    Allowance,
    Check,
    ClosesOnExit,
    ConsentWrite,
    DueMark,
    ErasureMode,
    ErasureResult,
    ErasureStatus,
    ErasureTarget,
    Failure,
    LawfulBasisWrite,
    NotFound,
    ObjectUsage,
    Permanent,
    R,
    RecordRef,
    RectifyProblem,
    WriteOutcome,
    WriteStatus,
    chunks,
)
from bridge.adapters.hubspot import HUBSPOT, readiness
from bridge.adapters.hubspot.capabilities import Capabilities, ConsentPaths
from bridge.adapters.hubspot.preferences import (
    OPTOUT,
    Preferences,
    Properties,
    Status,
    mirror,
    portal_wide,
    reported,
)
from bridge.adapters.hubspot.settings import DUE_PROPERTY, KEEP_ON_ANONYMIZE, HubSpotSettings
from bridge.adapters.hubspot.transport import (
    BATCH,
    DAILY,
    HubSpotLimits,
    MissingScopes,
    Transport,
    failures,
    parse_time,
    unique_addresses,
)
from bridge.adapters.hubspot.vocabulary import DEFAULT_HUBSPOT, HubSpotLawfulBases
from bridge.adapters.usage import measure
from bridge.adapters.vocabulary import Unmappable
from bridge.identity import normalise_email
from bridge.model import CrmRecord, LawfulBasis, ObjectType, Purpose, RelatedRecords

OBJECT_TYPE = ObjectType.CONTACT.value
SEARCH_PAGE = 200
SEARCH_GROUPS = 5  # filter groups per search: additional addresses looked up per call
ERASE_SECONDS = 10  # how long one erase call should take at HubSpot's pace (``erase_batch``)
EMAIL = "email"
ADDITIONAL = "hs_additional_emails"
LEGAL_BASIS = "hs_legal_basis"
MODIFIED = "lastmodifieddate"
CREATED = "createdate"
ACTIVITY = "notes_last_updated"  # "Last Activity Date": calls, emails, meetings, notes
DUE = DUE_PROPERTY
PERSONAL_FIELDS = ("firstname", "lastname", "phone")
BY_ID = {"propertyName": "hs_object_id", "direction": "ASCENDING"}
ANONYMISED = "Anonymised"
PLACEHOLDER_DOMAIN = "invalid.example"
CHECKBOX = "booleancheckbox"
FREE_TEXT = frozenset({"textarea", "html"})  # multi-line and rich text: anything typed in
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# What `rectify` writes: each common field name and the contact property that holds it.
RECTIFIABLE = {
    "first_name": "firstname",
    "last_name": "lastname",
    "phone": "phone",
    "mobile_phone": "mobilephone",
}
# The common name of each personal property a record carries (``CrmRecord.personal_fields``).
COMMON_NAMES = {prop: name for name, prop in RECTIFIABLE.items()}
MAX_VALUE = 65_536  # HubSpot's limit on a text property value, in characters
UNDATED_OPT_OUT: Status = {"wideStatusType": "PORTAL_WIDE", "status": "UNSUBSCRIBED"}
DEFINITIONS = "/communication-preferences/v3/definitions"
# Failures no other target of a batch would escape (with a 429 ``DAILY``): ``_stops_all``.
_ACCOUNT_WIDE = frozenset({Failure.CREDENTIALS, Failure.PERMISSION, Failure.UNAVAILABLE})


def _next_page(page: Any) -> str | None:
    """The cursor of the page after this one, if any."""
    return page.paging.next.after if page.paging and page.paging.next else None


def _moment(value: str | None) -> datetime | None:
    """A datetime or date property as an aware UTC datetime (a date: its start)."""
    moment = parse_time(value)
    if moment is None and value and value.isdigit():
        moment = EPOCH + timedelta(milliseconds=int(value))
    if moment is None:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _day(value: str | None) -> date | None:
    moment = _moment(value)
    return moment.date() if moment else None


def _epoch_ms(moment: datetime) -> int:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return (aware - EPOCH) // timedelta(milliseconds=1)


def anonymised(
    contact_id: str,
    values: Mapping[str, str | None],
    writable: Mapping[str, str],
    keep: Collection[str] = (),
) -> dict[str, str]:
    """What anonymising a contact writes, from its current ``values`` and the properties
    HubSpot lets a client set (``writable``: name to field type).

    Every writable property that holds a value is emptied (free text, a custom ``notes``,
    holds personal data as often as not), except:

    - properties in ``keep``: non-personal ones kept for statistics (``lifecyclestage``);
    - checkboxes: their emptied value is a statement too, and for an objection (a custom
      "do not call") it would undo the person's choice;
    - ``email`` gets an address-shaped, unique, undeliverable placeholder, which HubSpot's
      validation accepts (it hashes the record id, so it says nothing about the person);
      the names get "Anonymised".

    Read-only and calculated properties are not writable: HubSpot computes them. The opt-out
    mirrors (``hs_email_optout*``) are among them: they follow the address's subscription
    statuses, which anonymising a contact leaves as they are.
    """
    digest = hashlib.sha256(f"hubspot:contact:{contact_id}".encode()).hexdigest()[:8]
    placeholders = {
        EMAIL: f"anon-{digest}@{PLACEHOLDER_DOMAIN}",
        "firstname": ANONYMISED,
        "lastname": ANONYMISED,
    }
    return {
        name: placeholders.get(name, "")
        for name, value in values.items()
        if value not in (None, "")
        and name in writable
        and name not in keep
        and writable[name] != CHECKBOX
    }


def rectify_problems(changes: Mapping[str, str]) -> list[RectifyProblem]:
    """Why HubSpot cannot take these corrections, naming fields and limits, never values: a
    field no contact property is mapped for, or a value longer than a text property holds."""
    return [
        RectifyProblem(HUBSPOT, name, None)
        if name not in RECTIFIABLE
        else RectifyProblem(HUBSPOT, name, f"{OBJECT_TYPE}.{RECTIFIABLE[name]}", MAX_VALUE)
        for name, value in sorted(changes.items())
        if name not in RECTIFIABLE or len(value) > MAX_VALUE
    ]


def _rectify_problem(changes: Mapping[str, str]) -> str | None:
    """The problems of ``rectify_problems`` in one outcome's words, or None."""
    problems = rectify_problems(changes)
    return "; ".join(map(str, problems)) if problems else None


def _without_words(refused: AdapterError) -> str:
    """An adapter error's system, operation, status and code: HubSpot's own words may quote
    the value refused."""
    return ": ".join(str(refused).split(": ")[:3])


def _refusals(errors: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    """A 207's per-input errors by record id, as category and property names only."""
    found: dict[str, str] = {}
    for error in errors or []:
        names = sorted(
            {
                str(name)
                for detail in error.get("errors") or []
                for name in (detail.get("context") or {}).get("propertyName") or []
            }
        )
        text = str(error.get("category") or "refused") + (f" ({', '.join(names)})" if names else "")
        context = error.get("context") or {}
        for record_id in (*(context.get("id") or ()), *(context.get("ids") or ())):
            found[str(record_id)] = text
    return found


def _stops_all(error: AdapterError) -> bool:
    """Whether every later call of a batch would fail the same way: a refused token, a
    missing scope, HubSpot unreachable after the retries, or the day's quota used up."""
    return error.failure in _ACCOUNT_WIDE or error.code == DAILY


def _answering(
    answer: ErasureResult | AdapterError, target: ErasureTarget
) -> ErasureResult | AdapterError:
    """The answer already given to an equal target (the same contact or address), as this
    target's own."""
    return replace(answer, target=target) if isinstance(answer, ErasureResult) else answer


@dataclass(frozen=True)
class _Contact:
    """A contact as the CRM API returns it, before consent is attached."""

    id: str
    properties: dict[str, str | None]
    updated_at: datetime | None

    @classmethod
    def of(cls, obj: Any) -> _Contact:
        updated = obj.updated_at.astimezone(UTC) if obj.updated_at else None
        return cls(str(obj.id), dict(obj.properties or {}), updated)

    @property
    def primary(self) -> str | None:
        return (self.properties.get(EMAIL) or "").strip() or None

    @property
    def address(self) -> str:
        """The primary address normalised: the key of its subscription statuses."""
        return normalise_email(self.primary or "")

    @property
    def emails(self) -> tuple[str, ...]:
        """Primary first, then the additional ones, as HubSpot holds them."""
        extra = (self.properties.get(ADDITIONAL) or "").split(";")
        return tuple(e.strip() for e in (self.primary or "", *extra) if e.strip())


# What the field names of one request may take of its URL, in characters. HubSpot repeats
# ``properties=<name>`` in the query string and documents a 414 without a figure, so this
# stays well under the 8 KB most servers accept.
URL_BUDGET = 4_000


def property_cost(name: str) -> int:
    """The characters ``&properties=<name>`` adds to a HubSpot URL."""
    return len("&properties=") + len(quote(name, safe=""))


class HubSpotAdapter(ClosesOnExit):
    """``CrmAdapter`` for HubSpot contacts (see the module docstring for the API choices)."""

    system = HUBSPOT

    def __init__(
        self,
        settings: HubSpotSettings,
        purposes: Sequence[Purpose],
        *,
        lawful_bases: HubSpotLawfulBases = DEFAULT_HUBSPOT,
        limits: HubSpotLimits | None = None,
        attempts: int = 8,
        timeout: float = 30.0,
        personal_fields: Sequence[str] = PERSONAL_FIELDS,
        keep_on_anonymize: Mapping[str, Sequence[str]] | None = None,
        read_fields: Sequence[str] = (),
    ) -> None:
        """``keep_on_anonymize``: ``erasure.keep_on_anonymize`` (its ``hubspot.contact``);
        ``read_fields``: more properties to read (what retention rules look at)."""
        limits = limits or HubSpotLimits(search_max=settings.search_per_second)
        self._t = Transport(settings, limits, attempts, timeout)
        pace = self._t.limits
        # gdpr-delete has no batch form: an erase call carries about ten seconds of calls.
        self.erase_batch = max(1, round(pace.burst_max * ERASE_SECONDS / pace.burst_seconds))
        self._paths = ConsentPaths(self._t.token_scopes)
        self._prefs = Preferences(
            self._t, purposes, lawful_bases.subscription, self._paths, self._properties_by_id
        )
        self._bases = lawful_bases
        self._personal_fields = tuple(personal_fields)
        self._attributes = tuple(read_fields)
        self._properties = list(
            dict.fromkeys(
                (EMAIL, ADDITIONAL, LEGAL_BASIS, MODIFIED, ACTIVITY, DUE, *personal_fields)
            )
            | dict.fromkeys(self._prefs.properties)
            | dict.fromkeys(self._attributes)
        )
        self._portal_id = settings.portal_id
        self._app_url = settings.app_url.rstrip("/")
        keep = KEEP_ON_ANONYMIZE if keep_on_anonymize is None else keep_on_anonymize
        self._keep = frozenset(keep.get(f"hubspot.{OBJECT_TYPE}", ()))
        self._definitions: list[Any] | None = None

    def close(self) -> None:
        self._t.close()

    def allowances(self) -> list[Allowance]:
        """The burst window and the daily quota as HubSpot's headers last said them."""
        return self._t.allowances()

    def preference_link(self, email: str) -> str | None:
        """HubSpot's own preference page for ``email`` (``PreferenceLinks``): where the person
        resubscribes after an opt-out, which HubSpot lets no API do for them."""
        return self._prefs.link(email)

    def capabilities(self) -> Capabilities:
        """The consent paths this portal and token allow (learnt on first use: asking
        HubSpot the token's scopes costs one call), for reports; ``.lines()`` says them."""
        return self._paths.current()

    def readiness(self, related: Sequence[RelatedRecords]) -> Iterator[Check]:
        """The token first (one contacts call, whose refusal raises), then its scopes, the
        consent path they allow, the purposes' subscriptions and the contact properties the
        retention rules read. Related rows are Salesforce's (``related``): none apply here."""
        with suppress(MissingScopes):  # the token was accepted; the scopes line says more
            self._t.sdk("list_contacts", self._t.basic.get_page_with_http_info, limit=1)
        yield Check("credentials", f"HubSpot accepts the access token at {self._t.base_url}")
        known = self.capabilities()
        yield readiness.scopes(known)
        yield from (Check("", line) for line in known.lines())
        answer = self._t.request("list_subscriptions", "GET", DEFINITIONS)
        definitions = answer.get("subscriptionDefinitions") or []
        yield readiness.subscriptions(self._prefs.subscriptions, definitions)
        if self._attributes:
            yield readiness.properties(self._attributes, self._property_names())

    def field_for(self, object_type: str, field: str) -> tuple[str, str] | None:
        """Subscriptions show on the contact as their ``hs_email_optout_<id>`` mirrors."""
        if object_type != OBJECT_TYPE:
            return None
        if field.startswith("consent:"):
            subscription = self._prefs.subscriptions.get(field.removeprefix("consent:"))
            return (OBJECT_TYPE, mirror(subscription)) if subscription else None
        named = {"opt_out": OPTOUT, "lawful_basis": LEGAL_BASIS}.get(field)
        return (OBJECT_TYPE, named) if named else None

    # -- reading --------------------------------------------------------------------------

    def read(self, since: datetime | None = None) -> Iterator[CrmRecord]:
        """Every contact, or those modified at or after ``since``, each exactly once.

        Take the next cursor from before this read starts: a contact edited mid-read behind
        the keyset is then read next time. HubSpot's search index lags writes by seconds,
        so a caller should also let consecutive windows overlap a little.
        """
        pages = self._every_page() if since is None else self._changed_pages(since)
        yield from self._records(pages)

    def find_by_emails(self, emails: Collection[str]) -> list[CrmRecord]:
        return list(self._records([self._contacts_for(emails)]))

    def _every_page(self) -> Iterator[list[_Contact]]:
        for page in self._pages("list_contacts", self._properties):
            yield [_Contact.of(obj) for obj in page]

    def _pages(self, operation: str, properties: Sequence[str]) -> Iterator[list[Any]]:
        """Every contact with ``properties``, one page (100 contacts) per call."""
        after: str | None = None
        while True:
            page = self._t.sdk(
                operation,
                self._t.basic.get_page_with_http_info,
                limit=BATCH,
                after=after,
                properties=list(properties),
                archived=False,
            )
            yield list(page.results)
            after = _next_page(page)
            if after is None:
                return

    def _changed_pages(self, since: datetime) -> Iterator[list[_Contact]]:
        """Keyset pages over the window: each query starts after the last id returned."""
        changed = Filter(property_name=MODIFIED, operator="GTE", value=str(_epoch_ms(since)))
        last_id: str | None = None
        while True:
            after_last = [Filter(property_name="hs_object_id", operator="GT", value=last_id)]
            # The id filter goes first: it is the cheap one to reject a record with.
            page = self._search([[*(after_last if last_id else []), changed]], self._properties)
            contacts = [_Contact.of(obj) for obj in page.results]
            if contacts:
                yield contacts
                last_id = contacts[-1].id
            if not contacts or page.paging is None:
                return

    def _search(
        self, groups: list[list[Any]], properties: Sequence[str], after: str | None = None
    ) -> Any:
        request = PublicObjectSearchRequest(
            filter_groups=[FilterGroup(filters=filters) for filters in groups],
            sorts=[BY_ID],
            properties=list(properties),
            limit=SEARCH_PAGE,
            after=after,
        )
        return self._t.sdk(
            "search_contacts", self._t.search.do_search_with_http_info, request, search=True
        )

    def _batch_read(
        self, ids: Sequence[str], properties: Sequence[str], id_property: str | None = None
    ) -> list[_Contact]:
        """Up to 100 contacts; the ones not found are a 207's errors, and simply absent."""
        request = BatchReadInputSimplePublicObjectId(
            inputs=[SimplePublicObjectId(id=i) for i in ids],
            id_property=id_property,
            properties=list(properties),
            properties_with_history=[],
        )
        reply = self._t.sdk(
            "batch_read_contacts", self._t.batch.read_with_http_info, request, archived=False
        )
        return [_Contact.of(obj) for obj in reply.results]

    def _properties_by_id(
        self, ids: Sequence[str], properties: Sequence[str]
    ) -> dict[str, Properties]:
        """The ``properties`` of each contact found among ``ids``, 100 contacts per call."""
        return {
            c.id: c.properties
            for chunk in chunks(ids, BATCH)
            for c in self._batch_read(chunk, properties)
        }

    def _contacts_for(
        self, emails: Collection[str], properties: Sequence[str] = ()
    ) -> list[_Contact]:
        """Contacts holding any of ``emails``: batch read on the primary address, then a
        search on ``hs_additional_emails`` for the addresses no primary matched."""
        properties = properties or self._properties
        wanted = unique_addresses(emails)
        found: dict[str, _Contact] = {}
        for chunk in chunks(wanted, BATCH):
            found.update((c.id, c) for c in self._batch_read(chunk, properties, EMAIL))
        held = {normalise_email(e) for c in found.values() for e in c.emails}
        rest = [e for e in wanted if e not in held]
        for chunk in chunks(rest, SEARCH_GROUPS):
            groups = [
                [Filter(property_name=ADDITIONAL, operator="CONTAINS_TOKEN", value=e)]
                for e in chunk
            ]
            for contact in self._search_all(groups, properties):
                # A token match is HubSpot's; whether the address is really held is ours.
                if set(chunk) & {normalise_email(e) for e in contact.emails}:
                    found[contact.id] = contact
        return list(found.values())

    def _search_all(self, groups: list[list[Any]], properties: Sequence[str]) -> Iterator[_Contact]:
        after: str | None = None
        while True:
            page = self._search(groups, properties, after)
            yield from (_Contact.of(obj) for obj in page.results)
            after = _next_page(page)
            if after is None:
                return

    # -- consent into the common model ---------------------------------------------------

    def _records(self, pages: Iterable[Sequence[_Contact]]) -> Iterator[CrmRecord]:
        """Attach consent: the statuses of the addresses that need reading (all of them 100
        per v4 batch call; one address per call, only those whose opt-out properties show a
        status), or what the properties say where HubSpot did not answer.

        Contacts whose ``hs_email_optout`` says they left all email wait until 100 of them
        fill one unsubscribe-all read, which tells when they did so; the others need none.
        """
        held: list[tuple[_Contact, list[Status]]] = []
        for page in pages:
            for chunk in chunks(page, BATCH):
                addresses = [
                    c.primary
                    for c in chunk
                    if c.primary and self._prefs.needs_reading(c.properties)
                ]
                statuses = self._prefs.statuses(addresses) if addresses else {}
                for contact in chunk:
                    found = statuses.get(contact.address)
                    if found is None:
                        found = self._prefs.mirrored(contact.properties)
                    if contact.properties.get(OPTOUT) == "true":
                        held.append((contact, found))
                    else:
                        yield self._record(contact, found, None)
                while len(held) >= BATCH:
                    yield from self._opted_out_records(held[:BATCH])
                    del held[:BATCH]
        if held:
            yield from self._opted_out_records(held)

    def _opted_out_records(
        self, items: Sequence[tuple[_Contact, list[Status]]]
    ) -> Iterator[CrmRecord]:
        """Contacts whose ``hs_email_optout`` is ``true``, with when they left all email; one
        HubSpot did not answer for still left it (when is not known)."""
        answered = self._prefs.wide_statuses([c.primary for c, _ in items if c.primary])
        for contact, found in items:
            wides = answered.get(contact.address)
            wide = UNDATED_OPT_OUT if wides is None else portal_wide(wides)
            yield self._record(contact, found, wide)

    def _record(self, contact: _Contact, statuses: list[Status], wide: Status | None) -> CrmRecord:
        return CrmRecord(
            system=HUBSPOT,
            object_type=ObjectType.CONTACT,
            id=contact.id,
            emails=contact.emails,
            personal_fields={
                COMMON_NAMES.get(name, name): value
                for name in self._personal_fields
                if (value := contact.properties.get(name))
            },
            lawful_basis=self._property_basis(contact),
            consents=self._prefs.consents(contact.id, statuses),
            opt_out=self._prefs.opt_out(contact.id, wide) if contact.primary else None,
            modified_at=contact.updated_at,
            created_at=_moment(contact.properties.get(CREATED)),
            active_at=_moment(contact.properties.get(ACTIVITY)),
            purge_due=_day(contact.properties.get(DUE)),
            attributes={
                name: value for name in self._attributes if (value := contact.properties.get(name))
            },
        )

    def _property_basis(self, contact: _Contact) -> LawfulBasis | None:
        value = contact.properties.get(LEGAL_BASIS)
        if not value:
            return None
        return reported(contact.id, LEGAL_BASIS, self._bases.property.from_multi, value)

    def write_consents(self, writes: Sequence[ConsentWrite]) -> list[WriteOutcome]:
        return self._prefs.write(writes)

    # -- lawful basis writes -------------------------------------------------------------

    def write_lawful_bases(self, writes: Sequence[LawfulBasisWrite]) -> list[WriteOutcome]:
        """The last write per record wins; an earlier one asking for another basis fails."""
        outcomes: dict[int, WriteOutcome] = {}
        last: dict[str, int] = {}
        for index, write in enumerate(writes):
            try:
                self._bases.property.to_vendor(write.lawful_basis)
            except Unmappable as unmappable:
                outcomes[index] = WriteOutcome(write.record, WriteStatus.FAILED, str(unmappable))
                continue
            last[write.record.id] = index
        results = self._set_lawful_bases({rid: writes[i].lawful_basis for rid, i in last.items()})
        for index, write in enumerate(writes):
            if index in outcomes:
                continue
            if writes[last[write.record.id]].lawful_basis is write.lawful_basis:
                outcomes[index] = WriteOutcome(write.record, *results[write.record.id])
            else:
                outcomes[index] = WriteOutcome(
                    write.record, WriteStatus.FAILED, "superseded by a later write in this call"
                )
        return [outcomes[index] for index in range(len(writes))]

    def _set_lawful_bases(
        self, wanted: dict[str, LawfulBasis]
    ) -> dict[str, tuple[WriteStatus, str]]:
        """Read first (100 per call), then batch-update only the records that differ.

        Reading first keeps a more specific option HubSpot already holds (e.g. "existing
        customer" for legitimate interests), tells a missing record apart, and makes the
        update safe to retry.
        """
        ids = list(wanted)
        current = {
            c.id: c for chunk in chunks(ids, BATCH) for c in self._batch_read(chunk, [LEGAL_BASIS])
        }
        results: dict[str, tuple[WriteStatus, str]] = {}
        for record_id in ids:
            if record_id not in current:
                results[record_id] = (WriteStatus.FAILED, "record not found")
            elif self._property_basis(current[record_id]) is wanted[record_id]:
                results[record_id] = (WriteStatus.ALREADY, "")
        updates = {
            i: {LEGAL_BASIS: self._bases.property.to_vendor(wanted[i])}
            for i in ids
            if i not in results
        }
        return results | self._batch_update("update_lawful_basis", updates)

    def _batch_update(
        self, operation: str, updates: Mapping[str, Mapping[str, str]]
    ) -> dict[str, tuple[WriteStatus, str]]:
        """Set properties (per contact id), 100 contacts per call; the outcome of each."""
        results: dict[str, tuple[WriteStatus, str]] = {}
        for chunk in chunks(list(updates), BATCH):
            request = BatchInputSimplePublicObjectBatchInput(
                inputs=[
                    SimplePublicObjectBatchInput(id=i, properties=dict(updates[i])) for i in chunk
                ]
            )
            try:
                reply = self._t.sdk(operation, self._t.batch.update_with_http_info, request)
            except (Permanent, NotFound) as refused:
                results |= {i: (WriteStatus.FAILED, str(refused)) for i in chunk}
                continue
            results |= {str(obj.id): (WriteStatus.DONE, "") for obj in reply.results}
            failed = failures(reply.to_dict().get("errors"), "id", "ids")
            for record_id in chunk:
                results.setdefault(
                    record_id, (WriteStatus.FAILED, failed.get(record_id, "no result"))
                )
        return results

    # -- erasure and export -----------------------------------------------------------------

    def erasure_targets(self, people: Sequence[Collection[str]]) -> list[list[ErasureTarget]]:
        """For each person, each contact holding one of their addresses, then every address
        (theirs and their contacts'): a gdpr-delete by address blocklists it even where no
        contact has it, so no sync can bring it back. Everyone's contacts are found together
        (``_contacts_for``: 100 addresses per batch read, then searches for the rest)."""
        contacts = self._contacts_for([email for emails in people for email in emails])
        position = {contact.id: index for index, contact in enumerate(contacts)}
        holders: dict[str, list[_Contact]] = {}
        for contact in contacts:
            for address in unique_addresses(contact.emails):
                holders.setdefault(address, []).append(contact)
        found: list[list[ErasureTarget]] = []
        for emails in people:
            reached = {c.id: c for a in unique_addresses(emails) for c in holders.get(a, ())}
            theirs = sorted(reached.values(), key=lambda contact: position[contact.id])
            addresses = unique_addresses([*emails, *(e for c in theirs for e in c.emails)])
            found.append(
                [
                    *(ErasureTarget(HUBSPOT, OBJECT_TYPE, c.id, c.primary) for c in theirs),
                    *(ErasureTarget(HUBSPOT, OBJECT_TYPE, None, e) for e in addresses),
                ]
            )
        return found

    def erase(
        self, targets: Sequence[ErasureTarget], mode: ErasureMode
    ) -> list[ErasureResult | AdapterError]:
        """Delete (gdpr-delete) or anonymise each target, contacts first: HubSpot has no
        batch form, so one paced call each, and none that would change nothing.

        A contact's gdpr-delete blocklists its address, so an address target whose address
        was the primary of a contact deleted in this call is erased without a call of its
        own (not so for a contact found already gone: an ordinary delete blocklists
        nothing); a target repeated is answered once. A failure every later call would
        share (the token refused or lacking a scope, HubSpot unreachable after the retries,
        the day's quota used up) is not sent again: it raises if no target was answered
        yet, else it is the answer of each target still needing a call.
        """
        if any(target.id is None and target.email is None for target in targets):
            raise ValueError("an erasure target needs a record id or an email address")
        answers: dict[int, ErasureResult | AdapterError] = {}
        done: dict[tuple[str, str], ErasureResult | AdapterError] = {}
        deleted_by: dict[str, str] = {}  # a primary address: the contact deleted with it
        stopped: AdapterError | None = None
        for index in sorted(range(len(targets)), key=lambda i: targets[i].id is None):
            target = targets[index]
            address = normalise_email(target.email or "")
            key = ("contact", target.id) if target.id is not None else ("address", address)
            if key in done:
                answers[index] = _answering(done[key], target)
                continue
            if mode == "delete" and target.id is None and address in deleted_by:
                detail = f"blocklisted by the gdpr-delete of contact {deleted_by[address]}"
                answer: ErasureResult | AdapterError = ErasureResult(
                    target, ErasureStatus.ERASED, detail
                )
            elif stopped is not None:
                answer = stopped
            else:
                try:
                    answer = self._erase_one(target, mode)
                except AdapterError as error:
                    if _stops_all(error):
                        if not any(isinstance(a, ErasureResult) for a in answers.values()):
                            raise
                        stopped = error
                    answer = error
            if (
                mode == "delete"
                and target.id is not None
                and target.email
                and isinstance(answer, ErasureResult)
                and answer.status is ErasureStatus.ERASED
            ):
                deleted_by[address] = target.id
            done[key] = answers[index] = answer
        return [answers[index] for index in range(len(targets))]

    def _erase_one(self, target: ErasureTarget, mode: ErasureMode) -> ErasureResult:
        """Delete or anonymise one target; one already gone is success. Anonymising an
        address target first anonymises every contact still holding it,
        then gdpr-deletes the address: that erases its subscription statuses and blocklists
        it, and can no longer delete a record kept on purpose."""
        try:
            if mode == "anonymize" and target.id is not None:
                self._anonymise(target.id)
                return ErasureResult(target, ErasureStatus.ANONYMIZED)
            if mode == "anonymize" and target.email is not None:
                for contact in self._contacts_for([target.email]):
                    self._anonymise(contact.id)
            self._gdpr_delete(target)
        except NotFound:
            return ErasureResult(target, ErasureStatus.ALREADY_GONE)
        return ErasureResult(target, ErasureStatus.ERASED)

    def _gdpr_delete(self, target: ErasureTarget) -> None:
        by_id = target.id is not None
        request = PublicGdprDeleteInput(
            object_id=target.id if by_id else normalise_email(target.email or ""),
            id_property=None if by_id else EMAIL,
        )
        self._t.sdk("gdpr_delete", self._t.basic.purge_with_http_info, request)

    def _anonymise(self, contact_id: str) -> None:
        """Read the contact's writable properties, then write what ``anonymised`` decides."""
        writable = self._writable()
        found = self._batch_read([contact_id], list(writable))
        if not found:
            raise NotFound(HUBSPOT, "anonymise_contact: no such contact")
        properties = anonymised(contact_id, found[0].properties, writable, self._keep)
        if not properties:
            return
        self._t.sdk(
            "anonymise_contact",
            self._t.basic.update_with_http_info,
            contact_id,
            SimplePublicObjectInput(properties=properties),
        )

    def export(self, emails: Collection[str]) -> dict[str, Any]:
        """Every property of every contact holding the addresses, and each address's
        subscription statuses and unsubscribe-all status, as JSON-able data."""
        contacts = self._contacts_for(emails, self._property_names())
        addresses = unique_addresses([*emails, *(e for c in contacts for e in c.emails)])
        statuses = self._prefs.statuses(addresses)
        wide = self._prefs.opted_out(addresses)
        return {
            "system": HUBSPOT,
            "contacts": [
                {
                    "id": c.id,
                    "updated_at": c.updated_at.isoformat() if c.updated_at else None,
                    "properties": {
                        k: v for k, v in sorted(c.properties.items()) if v not in (None, "")
                    },
                }
                for c in contacts
            ],
            "communication_preferences": [
                {
                    "email": email,
                    "subscriptions": [
                        s for s in statuses.get(email, []) if s.get("status") != "NOT_SPECIFIED"
                    ],
                    "unsubscribed_from_all": wide.get(email),
                }
                for email in addresses
            ],
        }

    def _property_definitions(self, reread: bool = False) -> list[Any]:
        """Every contact property the portal defines, listed once per adapter (again with
        ``reread``)."""
        if self._definitions is None or reread:
            reply = self._t.sdk(
                "list_properties",
                self._t.properties.get_all_with_http_info,
                "contacts",
                archived=False,
            )
            self._definitions = list(reply.results)
        return self._definitions

    def _property_names(self, reread: bool = False) -> list[str]:
        return [prop.name for prop in self._property_definitions(reread)]

    def _writable(self) -> dict[str, str]:
        """The properties a client may set (not read-only, not calculated): their field types."""
        return {
            prop.name: prop.field_type
            for prop in self._property_definitions()
            if not prop.calculated
            and not (prop.modification_metadata and prop.modification_metadata.read_only_value)
        }

    # -- rectification ----------------------------------------------------------------------

    def check_rectify(self, changes: Mapping[str, str]) -> list[RectifyProblem]:
        """The fields no contact property is mapped for, and values longer than a text
        property holds (``MAX_VALUE``); no call to HubSpot."""
        return rectify_problems(changes)

    def rectify(self, emails: Collection[str], changes: Mapping[str, str]) -> list[WriteOutcome]:
        """Write corrections (Art. 16) to every contact holding the addresses.

        Read first, then batch-update (100 per call) only the contacts that differ, so a
        repeat is ``ALREADY`` and a retry is harmless. A field with no property in
        ``RECTIFIABLE``, or a value HubSpot would refuse, fails every contact without a
        write. Outcomes name fields and limits, never a value or an address.
        """
        problem = _rectify_problem(changes)
        wanted = {RECTIFIABLE[name]: value for name, value in changes.items() if not problem}
        contacts = self._contacts_for(emails, [EMAIL, ADDITIONAL, *wanted])
        refs = {c.id: RecordRef(HUBSPOT, OBJECT_TYPE, c.id) for c in contacts}
        if problem:
            return [WriteOutcome(ref, WriteStatus.FAILED, problem) for ref in refs.values()]
        results: dict[str, tuple[WriteStatus, str]] = {
            c.id: (WriteStatus.ALREADY, "")
            for c in contacts
            if all((c.properties.get(name) or "") == value for name, value in wanted.items())
        }
        for chunk in chunks([c.id for c in contacts if c.id not in results], BATCH):
            request = BatchInputSimplePublicObjectBatchInput(
                inputs=[SimplePublicObjectBatchInput(id=i, properties=dict(wanted)) for i in chunk]
            )
            try:
                reply = self._t.sdk("rectify", self._t.batch.update_with_http_info, request)
            except (Permanent, NotFound) as refused:
                results |= {i: (WriteStatus.FAILED, _without_words(refused)) for i in chunk}
                continue
            results |= {str(obj.id): (WriteStatus.DONE, "") for obj in reply.results}
            refusals = _refusals(reply.to_dict().get("errors"))
            for record_id in chunk:
                results.setdefault(
                    record_id, (WriteStatus.FAILED, refusals.get(record_id, "no result"))
                )
        return [WriteOutcome(refs[c.id], *results[c.id]) for c in contacts]

    def related(self, targets: Sequence[ErasureTarget], conditions: Sequence[R]) -> dict[str, R]:
        """Related rows (a won deal, an accepted quote) are Salesforce's: none apply here."""
        return {}

    # -- retention --------------------------------------------------------------------------

    def mark_purge_due(self, marks: Sequence[DueMark]) -> list[WriteOutcome]:
        """Set or clear the date property ``bridge_purge_due`` (created on first use), 100
        contacts per call."""
        if not marks:
            return []
        self._ensure_due_property()
        updates = {m.record.id: {DUE: m.due.isoformat() if m.due else ""} for m in marks}
        results = self._batch_update("mark_purge_due", updates)
        return [WriteOutcome(m.record, *results[m.record.id]) for m in marks]

    def _ensure_due_property(self) -> None:
        """Create ``bridge_purge_due`` unless the portal has it; another instance creating it
        meanwhile (409) is as good."""
        if DUE in self._property_names():
            return
        definition = PropertyCreate(
            name=DUE,
            label="Purge due (consent-bridge)",
            description="The day consent-bridge will erase this contact under a retention "
            "rule unless they re-engage; set during the rule's warning period",
            type="date",
            field_type="date",
            group_name="contactinformation",
        )
        try:
            self._t.sdk(
                "create_property", self._t.properties.create_with_http_info, "contacts", definition
            )
        except Permanent:
            if DUE not in self._property_names(reread=True):
                raise
        self._definitions = None

    def record_url(self, record: RecordRef) -> str | None:
        if self._portal_id is None:
            return None
        return f"{self._app_url}/contacts/{self._portal_id}/record/0-1/{record.id}"

    def emails_of(self, record: RecordRef) -> list[str]:
        """A contact's addresses, primary first; a deleted contact has none."""
        return self.emails_of_each([record])[0]

    def emails_of_each(self, records: Sequence[RecordRef]) -> list[list[str]]:
        """Each contact's addresses, primary first (a deleted contact has none), 100 contacts
        per call."""
        ids = list(dict.fromkeys(record.id for record in records))
        found = {
            contact.id: list(contact.emails)
            for chunk in chunks(ids, BATCH)
            for contact in self._batch_read(chunk, [EMAIL, ADDITIONAL])
        }
        return [found.get(record.id, []) for record in records]

    # -- minimisation -----------------------------------------------------------------------

    def field_usage(self) -> list[ObjectUsage]:
        """The contact properties a person, form or integration can fill, and how many
        contacts fill each. Read-only and calculated properties are left out: HubSpot keeps
        them itself (the record id, create and modified dates, the opt-out mirrors of the
        subscriptions), no one can clear them, and they repeat or describe data reported
        here. Every contact is paged (100 per call) once per chunk of names."""
        fields = {name: kind in FREE_TEXT for name, kind in self._writable().items()}
        usage = measure(OBJECT_TYPE, fields, self._values, URL_BUDGET, property_cost)
        return [usage]

    def _values(self, properties: Sequence[str]) -> Iterator[dict[str, str | None]]:
        """Every contact's values of ``properties``, 100 contacts per call."""
        for page in self._pages("field_usage", properties):
            yield from (dict(obj.properties or {}) for obj in page)
