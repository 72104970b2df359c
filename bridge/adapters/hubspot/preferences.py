"""HubSpot communication preferences: each address's subscription statuses, read and written.

Reads and withdrawals use v4 batches where the token may (Marketing Hub Enterprise), and
otherwise the contacts' opt-out properties and single-address v4 calls (``capabilities``);
grants go one by one through v3 on purpose, because v3 refuses to resubscribe a person who
opted out (``NEEDS_SELF_SERVICE``). Why, and what HubSpot guarantees: docs/vendors/hubspot.md
("Consent model", "Tiers and scopes").
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from hubspot.communication_preferences import PublicUpdateSubscriptionStatusRequest

from bridge.adapters.base import (
    ConsentWrite,
    NotFound,
    Permanent,
    WriteOutcome,
    WriteStatus,
    chunks,
)
from bridge.adapters.hubspot import HUBSPOT
from bridge.adapters.hubspot.capabilities import ConsentPaths, Path
from bridge.adapters.hubspot.settings import purpose_keys
from bridge.adapters.hubspot.transport import (
    BATCH,
    MissingScopes,
    Transport,
    failures,
    parse_time,
    unique_addresses,
)
from bridge.adapters.vocabulary import Unmappable, Vocabulary
from bridge.identity import normalise_email
from bridge.logs import get_logger
from bridge.model import Consent, ConsentStatus, GlobalOptOut, LawfulBasis, Purpose

STATUSES = "/communication-preferences/v4/statuses"
LINKS = "/communication-preferences/v4/links/generate"
STATES = {"SUBSCRIBED": ConsentStatus.GRANTED, "UNSUBSCRIBED": ConsentStatus.WITHDRAWN}
EMAIL = "email"
OPTOUT = "hs_email_optout"  # read-only: "true" once the address left all email
UNCHANGED = "NO_STATUS_CHANGE"
PORTAL_WIDE_OUT = ("PORTAL_WIDE", "UNSUBSCRIBED")
OPTED_OUT = (WriteStatus.NEEDS_SELF_SERVICE, "opted out; HubSpot lets only the person resubscribe")

Status = dict[str, Any]
"""A v4 ``PublicStatus`` (or wide status) as HubSpot sends it."""
Key = tuple[str, str | None]
"""A status change: normalised address and subscription id (None: all email)."""
Properties = Mapping[str, str | None]
ContactReader = Callable[[Sequence[str], Sequence[str]], Mapping[str, Properties]]
"""Given contact ids and property names: the properties of each contact found, by id."""

log = get_logger(__name__)


def portal_wide(wides: Sequence[Status]) -> Status | None:
    """The portal-wide opt-out among an address's wide statuses, if it has one."""
    left = (w for w in wides if (w.get("wideStatusType"), w.get("status")) == PORTAL_WIDE_OUT)
    return next(left, None)


def mirror(subscription_id: str) -> str:
    """The read-only contact property HubSpot computes from the primary address's status
    for a subscription: ``true`` once it unsubscribed (docs/vendors/hubspot.md)."""
    return f"{OPTOUT}_{subscription_id}"


def report_unmappable(record_id: str, field: str, unmappable: Unmappable) -> None:
    """Name the record and the vendor value (an option label, never personal data)."""
    log.warning(
        "hubspot.unmappable_lawful_basis", record_id=record_id, field=field, value=unmappable.value
    )


def reported(
    record_id: str, field: str, read: Callable[[str], LawfulBasis | None], value: str
) -> LawfulBasis | None:
    """A vendor value in common terms; an unmappable one is reported, never guessed."""
    try:
        return read(value)
    except Unmappable as unmappable:
        report_unmappable(record_id, field, unmappable)
        return None


def _outcome(write: ConsentWrite, result: tuple[WriteStatus, str]) -> WriteOutcome:
    return WriteOutcome(write.record, *result)


def _settled(statuses: Sequence[Status]) -> WriteStatus:
    """``ALREADY`` when HubSpot says no status changed, else ``DONE``."""
    reasons = {s.get("setStatusSuccessReason") for s in statuses}
    return WriteStatus.ALREADY if reasons == {UNCHANGED} else WriteStatus.DONE


class Preferences:
    """Subscription statuses for the configured purposes, in common terms, on the path
    ``paths`` says the token allows; ``contacts`` reads contacts' opt-out properties."""

    def __init__(
        self,
        transport: Transport,
        purposes: Sequence[Purpose],
        vocabulary: Vocabulary,
        paths: ConsentPaths,
        contacts: ContactReader,
    ) -> None:
        self._t = transport
        self._purposes = {sub: p for p in purposes if (sub := purpose_keys(p).subscription_id)}
        self._vocabulary = vocabulary
        self._paths = paths
        self._contacts = contacts

    @property
    def subscriptions(self) -> dict[str, str]:
        """The subscription id of each configured purpose that has one."""
        return {purpose.id: sub for sub, purpose in self._purposes.items()}

    @property
    def properties(self) -> list[str]:
        """The contact properties that say which addresses have a status to read."""
        return [OPTOUT, *map(mirror, self._purposes)]

    # -- reading --------------------------------------------------------------------------

    def needs_reading(self, properties: Properties) -> bool:
        """Whether a contact's statuses must be read. In batch, always: 100 per call. One
        address per call, only when an opt-out property shows a status: HubSpot fills
        them from the statuses, so a contact whose properties are all empty has none; and
        ``false`` cannot tell subscribed from not specified, nor ``true`` say when or on
        what basis, which the merge needs (docs/vendors/hubspot.md, "Tiers and scopes")."""
        if not self._purposes:
            return False
        return self._paths.reads is Path.BATCH or any(
            properties.get(mirror(sub)) for sub in self._purposes
        )

    def mirrored(self, properties: Properties) -> list[Status]:
        """What a contact's opt-out properties alone say, for an address whose statuses
        HubSpot did not answer: an undated withdrawal where one reads ``true``."""
        return [
            {"subscriptionId": sub, "status": "UNSUBSCRIBED"}
            for sub in self._purposes
            if properties.get(mirror(sub)) == "true"
        ]

    def statuses(self, emails: Collection[str]) -> dict[str, list[Status]]:
        """Every subscription status of each address that HubSpot answered for, by
        normalised address."""
        return self._read("read_statuses", "statuses", "", emails)

    def opted_out(self, emails: Collection[str]) -> dict[str, Status]:
        """The portal-wide opt-out of each address that has one (absent: not opted out, or
        not answered)."""
        answered = self.wide_statuses(emails).items()
        return {address: wide for address, wides in answered if (wide := portal_wide(wides))}

    def wide_statuses(self, emails: Collection[str]) -> dict[str, list[Status]]:
        """The wide statuses of each address HubSpot answered for (none: not opted out)."""
        return self._read("read_unsubscribe_all", "wideStatuses", "/unsubscribe-all", emails)

    def _read(
        self, operation: str, kind: str, suffix: str, emails: Collection[str]
    ) -> dict[str, list[Status]]:
        """Each address's ``kind`` of status: 100 addresses per batch call, or one call each
        where the token may not batch (learnt from the first refusal, if not before)."""
        addresses = unique_addresses(emails)
        if self._paths.reads is Path.BATCH:
            path = f"{STATUSES}/batch{suffix}/read"
            try:
                return {
                    normalise_email(result["subscriberIdString"]): result.get(kind) or []
                    for result in self._batches(operation, path, addresses)
                }
            except MissingScopes:
                self._paths.refused("reads")
        found: dict[str, list[Status]] = {}
        for address in addresses:
            path = f"{STATUSES}/{quote(address, safe='')}{suffix}"
            try:
                body = self._t.request(f"{operation}_single", "GET", path, channel="EMAIL")
            except MissingScopes:
                raise
            except (Permanent, NotFound) as refused:
                log.warning("hubspot.status_unread", operation=operation, error=str(refused))
                continue
            found[address] = body.get("results") or []
        return found

    def _batches(self, operation: str, path: str, addresses: Sequence[str]) -> Iterator[Status]:
        for chunk in chunks(addresses, BATCH):
            body = self._t.request(
                operation, "POST", path, {"inputs": list(chunk)}, channel="EMAIL"
            )
            if body.get("errors"):
                log.warning(
                    "hubspot.partial_batch", operation=operation, errors=len(body["errors"])
                )
            yield from body.get("results") or []

    def consents(self, record_id: str, statuses: Sequence[Status]) -> tuple[Consent, ...]:
        """One consent per configured purpose; ``unknown`` where HubSpot holds no status."""
        by_subscription = {str(s.get("subscriptionId")): s for s in statuses}
        return tuple(
            self._consent(record_id, purpose, by_subscription.get(subscription_id))
            for subscription_id, purpose in self._purposes.items()
        )

    def _consent(self, record_id: str, purpose: Purpose, status: Status | None) -> Consent:
        state = STATES.get(str((status or {}).get("status")), ConsentStatus.UNKNOWN)
        if status is None or state is ConsentStatus.UNKNOWN:
            return Consent(purpose.id, state, None, HUBSPOT, record_id)
        basis = status.get("legalBasis")
        return Consent(
            purpose=purpose.id,
            status=state,
            changed_at=parse_time(status.get("timestamp")),
            source_system=HUBSPOT,
            source_record=record_id,
            lawful_basis=(
                reported(record_id, "legalBasis", self._vocabulary.from_vendor, str(basis))
                if basis
                else None
            ),
            explanation=status.get("legalBasisExplanation"),
        )

    @staticmethod
    def opt_out(record_id: str, wide: Status | None) -> GlobalOptOut:
        return GlobalOptOut(
            email=wide is not None,
            do_not_call=False,
            changed_at=parse_time(wide.get("timestamp")) if wide else None,
            source_system=HUBSPOT,
            source_record=record_id,
        )

    def link(self, email: str) -> str | None:
        """The preference page HubSpot makes for one address (a beta endpoint: one it refuses,
        or an answer without the page, is logged and gives None)."""
        body = {"subscriberIdString": normalise_email(email)}
        try:
            answer = self._t.request("preference_link", "POST", LINKS, body, channel="EMAIL")
        except (Permanent, NotFound) as refused:
            log.warning("hubspot.preference_link_refused", error=str(refused))
            return None
        url = answer.get("managePreferencesUrl") if isinstance(answer, dict) else None
        return url if isinstance(url, str) and url else None

    # -- writing --------------------------------------------------------------------------

    def write(self, writes: Sequence[ConsentWrite]) -> list[WriteOutcome]:
        """One outcome per write: withdrawals batched, then grants one by one."""
        outcomes: dict[int, WriteOutcome] = {}
        withdrawals: dict[int, Key] = {}
        grants: list[tuple[int, str]] = []
        subscriptions = self.subscriptions
        for index, write in enumerate(writes):
            granted = write.status is ConsentStatus.GRANTED
            problem = self._unwritable(write, subscriptions)
            if problem is not None:
                outcomes[index] = WriteOutcome(write.record, *problem)
            elif granted and write.purpose is not None:
                grants.append((index, subscriptions[write.purpose]))
            else:
                subscription = subscriptions[write.purpose] if write.purpose else None
                withdrawals[index] = (normalise_email(write.email), subscription)
        done = self._withdraw({key: writes[i] for i, key in withdrawals.items()})
        outcomes |= {
            index: _outcome(writes[index], done[key]) for index, key in withdrawals.items()
        }
        outcomes |= self._grant({index: (writes[index], sub) for index, sub in grants})
        return [outcomes[index] for index in range(len(writes))]

    def _grant(self, grants: dict[int, tuple[ConsentWrite, str]]) -> dict[int, WriteOutcome]:
        """Grants, after learning without a write what HubSpot holds: one already held is
        ``ALREADY`` and one HubSpot would refuse (opted out) is left to the person, both
        without a call; the rest are subscribed one by one."""
        if not grants:
            return {}
        batch = self._paths.reads is Path.BATCH
        known = self._held(grants) if batch else self._opted_out_by_properties(grants)
        outcomes: dict[int, WriteOutcome] = {}
        for index, (write, subscription_id) in grants.items():
            if known.get(index) == "SUBSCRIBED":
                outcomes[index] = WriteOutcome(write.record, WriteStatus.ALREADY)
            elif known.get(index) == "UNSUBSCRIBED":
                outcomes[index] = WriteOutcome(write.record, *OPTED_OUT)
            else:
                outcomes[index] = self._subscribe(write, subscription_id)
        return outcomes

    def _held(self, grants: dict[int, tuple[ConsentWrite, str]]) -> dict[int, str | None]:
        """Each grant's subscription status, from the addresses' statuses read 100 at a time;
        an address out of all email reads as unsubscribed."""
        addresses = [write.email for write, _ in grants.values()]
        held = self.statuses(addresses)
        left_all = self.opted_out(addresses)
        known: dict[int, str | None] = {}
        for index, (write, subscription_id) in grants.items():
            email = normalise_email(write.email)
            state = {str(s.get("subscriptionId")): s.get("status") for s in held.get(email, [])}
            status = state.get(subscription_id)
            out = status != "SUBSCRIBED" and email in left_all
            known[index] = "UNSUBSCRIBED" if out else status
        return known

    def _opted_out_by_properties(
        self, grants: dict[int, tuple[ConsentWrite, str]]
    ) -> dict[int, str | None]:
        """The grants whose contact's opt-out properties (100 contacts per call) show that
        its address left the subscription or all email; they show no subscription, so the
        rest stay unknown and v3 decides."""
        ids = list(dict.fromkeys(write.record.id for write, _ in grants.values()))
        found = self._contacts(ids, [EMAIL, *self.properties])
        known: dict[int, str | None] = {}
        for index, (write, subscription_id) in grants.items():
            held = found.get(write.record.id, {})
            same = normalise_email(held.get(EMAIL) or "") == normalise_email(write.email)
            if same and "true" in (held.get(OPTOUT), held.get(mirror(subscription_id))):
                known[index] = "UNSUBSCRIBED"
        return known

    @staticmethod
    def _unwritable(
        write: ConsentWrite, subscriptions: dict[str, str]
    ) -> tuple[WriteStatus, str] | None:
        if write.status is ConsentStatus.UNKNOWN:
            return WriteStatus.FAILED, "unknown is not a state to write"
        if write.purpose is None and write.status is ConsentStatus.GRANTED:
            return (
                WriteStatus.NEEDS_SELF_SERVICE,
                "only the person can undo an unsubscribe from all email",
            )
        if write.purpose is not None and write.purpose not in subscriptions:
            return WriteStatus.FAILED, f"purpose {write.purpose} has no HubSpot subscription"
        return None

    def _withdraw(self, changes: dict[Key, ConsentWrite]) -> dict[Key, tuple[WriteStatus, str]]:
        """Per-subscription withdrawals, then unsubscribe-all: 100 per v4 batch call, or one
        v4 call per address where the token may not batch (learnt from the first refusal,
        if not before)."""
        if not changes:
            return {}
        if self._paths.writes is Path.BATCH:
            try:
                return self._batch_withdraw(changes)
            except MissingScopes:
                self._paths.refused("writes")
        ordered = sorted(changes, key=lambda key: key[1] is None)
        return {key: self._withdraw_one(key, changes[key]) for key in ordered}

    def _withdraw_one(self, key: Key, write: ConsentWrite) -> tuple[WriteStatus, str]:
        """One address: one subscription's status, or unsubscribe-all (verbose, so that an
        address already out says ``NO_STATUS_CHANGE``)."""
        email, subscription_id = key
        path = f"{STATUSES}/{quote(email, safe='')}"
        try:
            if subscription_id is None:
                body = self._t.request(
                    "unsubscribe_all_single",
                    "POST",
                    f"{path}/unsubscribe-all",
                    channel="EMAIL",
                    verbose="true",
                )
            else:
                change = self._status_change(subscription_id, write)
                body = self._t.request("unsubscribe_single", "POST", path, change)
        except (Permanent, NotFound) as refused:
            return WriteStatus.FAILED, str(refused)
        return _settled(body.get("results") or []), ""

    def _batch_withdraw(
        self, changes: dict[Key, ConsentWrite]
    ) -> dict[Key, tuple[WriteStatus, str]]:
        per_subscription = [
            (key, {"subscriberIdString": key[0], **self._status_change(subscription_id, write)})
            for key, write in changes.items()
            if (subscription_id := key[1]) is not None
        ]
        every_email = [(key, key[0]) for key in changes if key[1] is None]
        return self._batch_write(
            "unsubscribe", f"{STATUSES}/batch/write", per_subscription, self._changed
        ) | self._batch_write(
            "unsubscribe_all",
            f"{STATUSES}/batch/unsubscribe-all",
            every_email,
            self._left_all,
            channel="EMAIL",
            verbose="true",
        )

    def _status_change(self, subscription_id: str, write: ConsentWrite) -> dict[str, Any]:
        """A v4 unsubscribe; a withdrawal never fails for want of a mappable basis."""
        return {
            "channel": "EMAIL",
            "statusState": "UNSUBSCRIBED",
            "subscriptionId": int(subscription_id),
            **self._basis_fields(write, strict=False),
        }

    @staticmethod
    def _changed(body: dict[str, Any]) -> dict[Key, WriteStatus]:
        return {
            (normalise_email(s["subscriberIdString"]), str(s["subscriptionId"])): _settled([s])
            for s in body.get("results") or []
        }

    @staticmethod
    def _left_all(body: dict[str, Any]) -> dict[Key, WriteStatus]:
        return {
            (normalise_email(result["subscriberIdString"]), None): _settled(
                result.get("statuses") or []
            )
            for result in body.get("results") or []
        }

    def _batch_write(
        self,
        operation: str,
        path: str,
        inputs: Sequence[tuple[Key, Any]],
        read: Callable[[dict[str, Any]], dict[Key, WriteStatus]],
        **params: str,
    ) -> dict[Key, tuple[WriteStatus, str]]:
        """Send 100 per call; inputs a 207 names, or a refused call, become ``FAILED``; a
        token without the batch scopes raises ``MissingScopes``."""
        results: dict[Key, tuple[WriteStatus, str]] = {}
        for chunk in chunks(inputs, BATCH):
            try:
                body = self._t.request(
                    operation, "POST", path, {"inputs": [i for _, i in chunk]}, **params
                )
            except MissingScopes:
                raise
            except (Permanent, NotFound) as refused:
                results |= {key: (WriteStatus.FAILED, str(refused)) for key, _ in chunk}
                continue
            results |= {key: (status, "") for key, status in read(body).items()}
            failed = failures(body.get("errors"), "subscriberIdString")
            for key, _ in chunk:
                results.setdefault(key, (WriteStatus.FAILED, failed.get(key[0], "no result")))
        return results

    def _subscribe(self, write: ConsentWrite, subscription_id: str) -> WriteOutcome:
        """One v3 subscribe; a refusal is explained by reading the address's status."""
        try:
            fields = self._basis_fields(write, strict=True)
        except Unmappable as unmappable:
            return WriteOutcome(write.record, WriteStatus.FAILED, str(unmappable))
        email = normalise_email(write.email)
        request = PublicUpdateSubscriptionStatusRequest(
            email_address=email,
            subscription_id=subscription_id,
            legal_basis=fields.get("legalBasis"),
            legal_basis_explanation=fields.get("legalBasisExplanation"),
        )
        try:
            self._t.sdk("subscribe", self._t.status.subscribe_with_http_info, request)
        except Permanent as refused:
            return _outcome(write, self._why_refused(email, subscription_id, str(refused)))
        except NotFound as missing:
            return WriteOutcome(write.record, WriteStatus.FAILED, str(missing))
        return WriteOutcome(write.record, WriteStatus.DONE)

    def _why_refused(
        self, email: str, subscription_id: str, refusal: str
    ) -> tuple[WriteStatus, str]:
        """Already subscribed is success; opted out is for the person to undo; else failed."""
        current = {
            str(s.get("subscriptionId")): s.get("status")
            for s in self.statuses([email]).get(email, [])
        }
        if current.get(subscription_id) == "SUBSCRIBED":
            return WriteStatus.ALREADY, ""
        if current.get(subscription_id) == "UNSUBSCRIBED" or self.opted_out([email]):
            return OPTED_OUT
        return WriteStatus.FAILED, refusal

    def _basis_fields(self, write: ConsentWrite, strict: bool) -> dict[str, str]:
        """``legalBasis`` and ``legalBasisExplanation`` for a status change.

        ``strict`` (grants) raises ``Unmappable``; otherwise the basis is reported and left out.
        """
        fields = {"legalBasisExplanation": write.explanation} if write.explanation else {}
        if write.lawful_basis is None:
            return fields
        try:
            return fields | {"legalBasis": self._vocabulary.to_vendor(write.lawful_basis)}
        except Unmappable as unmappable:
            if strict:
                raise
            report_unmappable(write.record.id, "legalBasis", unmappable)
            return fields
