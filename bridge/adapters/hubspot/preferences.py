"""HubSpot communication preferences: each address's subscription statuses, read and written.

Reads and withdrawals use v4 batches; grants go one by one through v3 on purpose, because v3
refuses to resubscribe a person who opted out (``NEEDS_SELF_SERVICE``). Why, and what HubSpot
guarantees: docs/vendors/hubspot.md ("Consent model").
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

from hubspot.communication_preferences import PublicUpdateSubscriptionStatusRequest

from bridge.adapters.base import ConsentWrite, NotFound, Permanent, WriteOutcome, WriteStatus
from bridge.adapters.hubspot import HUBSPOT
from bridge.adapters.hubspot.settings import purpose_keys
from bridge.adapters.hubspot.transport import (
    BATCH,
    Transport,
    chunks,
    failures,
    parse_time,
    unique_addresses,
)
from bridge.adapters.vocabulary import Unmappable, Vocabulary
from bridge.identity import normalise_email
from bridge.logs import get_logger
from bridge.model import Consent, ConsentStatus, GlobalOptOut, LawfulBasis, Purpose

STATUSES = "/communication-preferences/v4/statuses"
STATES = {"SUBSCRIBED": ConsentStatus.GRANTED, "UNSUBSCRIBED": ConsentStatus.WITHDRAWN}
UNCHANGED = "NO_STATUS_CHANGE"
OPTED_OUT = (WriteStatus.NEEDS_SELF_SERVICE, "opted out; HubSpot lets only the person resubscribe")

Status = dict[str, Any]
"""A v4 ``PublicStatus`` (or wide status) as HubSpot sends it."""
Key = tuple[str, str | None]
"""A status change: normalised address and subscription id (None: all email)."""

log = get_logger(__name__)


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


class Preferences:
    """Subscription statuses for the configured purposes, in common terms."""

    def __init__(
        self, transport: Transport, purposes: Sequence[Purpose], vocabulary: Vocabulary
    ) -> None:
        self._t = transport
        self._purposes = {sub: p for p in purposes if (sub := purpose_keys(p).subscription_id)}
        self._vocabulary = vocabulary

    @property
    def subscriptions(self) -> dict[str, str]:
        """The subscription id of each configured purpose that has one."""
        return {purpose.id: sub for sub, purpose in self._purposes.items()}

    @property
    def tracked(self) -> bool:
        """Whether any configured purpose maps to a HubSpot subscription."""
        return bool(self._purposes)

    # -- reading --------------------------------------------------------------------------

    def statuses(self, emails: Collection[str]) -> dict[str, list[Status]]:
        """Every subscription status of each address, by normalised address."""
        found: dict[str, list[Status]] = {}
        for result in self._read("read_statuses", f"{STATUSES}/batch/read", emails):
            found[normalise_email(result["subscriberIdString"])] = result.get("statuses") or []
        return found

    def opted_out(self, emails: Collection[str]) -> dict[str, Status]:
        """The portal-wide opt-out of each address that has one (absent: not opted out)."""
        found: dict[str, Status] = {}
        path = f"{STATUSES}/batch/unsubscribe-all/read"
        for result in self._read("read_unsubscribe_all", path, emails):
            for wide in result.get("wideStatuses") or []:
                if wide.get("wideStatusType") == "PORTAL_WIDE" and wide.get("status") == (
                    "UNSUBSCRIBED"
                ):
                    found[normalise_email(result["subscriberIdString"])] = wide
        return found

    def _read(self, operation: str, path: str, emails: Collection[str]) -> Iterator[Status]:
        for chunk in chunks(unique_addresses(emails), BATCH):
            body = self._t.v4(operation, path, list(chunk), channel="EMAIL")
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
        """Grants, after reading the addresses' statuses 100 at a time: one already held is
        ``ALREADY`` and one HubSpot would refuse (opted out) is left to the person, both
        without a call; the rest are subscribed one by one."""
        addresses = [write.email for write, _ in grants.values()]
        held = self.statuses(addresses)
        left_all = self.opted_out(addresses)
        outcomes: dict[int, WriteOutcome] = {}
        for index, (write, subscription_id) in grants.items():
            email = normalise_email(write.email)
            state = {str(s.get("subscriptionId")): s.get("status") for s in held.get(email, [])}
            if state.get(subscription_id) == "SUBSCRIBED":
                outcomes[index] = WriteOutcome(write.record, WriteStatus.ALREADY)
            elif state.get(subscription_id) == "UNSUBSCRIBED" or email in left_all:
                outcomes[index] = WriteOutcome(write.record, *OPTED_OUT)
            else:
                outcomes[index] = self._subscribe(write, subscription_id)
        return outcomes

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
        """Per-subscription withdrawals, then unsubscribe-all, each 100 per v4 call."""
        per_subscription = [
            (key, self._unsubscribe_input(key[0], subscription_id, write))
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

    def _unsubscribe_input(
        self, email: str, subscription_id: str, write: ConsentWrite
    ) -> dict[str, Any]:
        """A v4 batch input; a withdrawal never fails for want of a mappable basis."""
        return {
            "subscriberIdString": email,
            "channel": "EMAIL",
            "statusState": "UNSUBSCRIBED",
            "subscriptionId": int(subscription_id),
            **self._basis_fields(write, strict=False),
        }

    @staticmethod
    def _changed(body: dict[str, Any]) -> dict[Key, WriteStatus]:
        return {
            (normalise_email(s["subscriberIdString"]), str(s["subscriptionId"])): (
                WriteStatus.ALREADY
                if s.get("setStatusSuccessReason") == UNCHANGED
                else WriteStatus.DONE
            )
            for s in body.get("results") or []
        }

    @staticmethod
    def _left_all(body: dict[str, Any]) -> dict[Key, WriteStatus]:
        results: dict[Key, WriteStatus] = {}
        for result in body.get("results") or []:
            reasons = {s.get("setStatusSuccessReason") for s in result.get("statuses") or []}
            unchanged = reasons == {UNCHANGED}
            key = (normalise_email(result["subscriberIdString"]), None)
            results[key] = WriteStatus.ALREADY if unchanged else WriteStatus.DONE
        return results

    def _batch_write(
        self,
        operation: str,
        path: str,
        inputs: Sequence[tuple[Key, Any]],
        read: Callable[[dict[str, Any]], dict[Key, WriteStatus]],
        **params: str,
    ) -> dict[Key, tuple[WriteStatus, str]]:
        """Send 100 per call; inputs a 207 names, or a refused call, become ``FAILED``."""
        results: dict[Key, tuple[WriteStatus, str]] = {}
        for chunk in chunks(inputs, BATCH):
            try:
                body = self._t.v4(operation, path, [i for _, i in chunk], **params)
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
