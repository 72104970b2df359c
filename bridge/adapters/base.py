"""What every CRM adapter owes the rest of the bridge, and the machinery they share.

Above this line nothing knows a vendor. The four adapter errors, the error table
(``ErrorRule``) and ``retrying`` are described in ARCHITECTURE.md ("The pieces"); pacing is
in ``bridge.adapters.pacing``.
"""

from __future__ import annotations

import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, TypeVar, runtime_checkable

from bridge.logs import get_logger
from bridge.model import (
    Channel,
    ConsentStatus,
    CrmRecord,
    Evidence,
    LawfulBasis,
    RelatedRecords,
    System,
)

if TYPE_CHECKING:  # tenacity (and asyncio with it) loads on the first retried call
    from tenacity import RetryCallState

# --- errors -------------------------------------------------------------------------------


class Failure(StrEnum):
    """What a failed vendor call asks of a person. Whoever reports it (the CLI's exit code,
    ``bridge check --crm``) decides by this, never by the vendor."""

    CREDENTIALS = "credentials"  # the CRM refused the login or the token
    PERMISSION = "permission"  # the integration user or token may not do this
    CONFIGURATION = "configuration"  # a setting names an object or field the CRM lacks
    UNAVAILABLE = "unavailable"  # no answer, or still failing when the retries gave up
    FAILED = "failed"  # the CRM refused this operation


class AdapterError(Exception):
    """A vendor call failed. The message is the vendor's, never personal data.

    ``code`` is the vendor's own error code; ``failure`` what kind of problem it is;
    ``summary`` and ``fix``, where the vendor's adapter gives them, what a person reads
    (``line``): the CRM and what happened, and what to do, in the vendor's setting names.
    ``tries`` and ``seconds``: how often and how long ``retrying`` tried.
    """

    failure = Failure.FAILED

    def __init__(self, system: System, message: str, *, failure: Failure | None = None) -> None:
        super().__init__(f"{system}: {message}")
        self.system = system
        self.code: str | None = None
        self.failure = failure or type(self).failure
        self.summary = ""
        self.fix = ""
        self.context = ""
        self.tries = 1
        self.seconds = 0.0

    def during(self, context: str) -> Self:
        """The same failure, said as part of ``context`` (what the caller was doing)."""
        self.context = context
        return self

    def line(self) -> str:
        """One line for a person (a command's stderr, the daemon's warning): the CRM and what
        happened with the vendor's code, how long it was tried, and the fix."""
        text = self.summary or str(self)
        if self.tries > 1:
            text += f" after {self.tries} tries in {self.seconds:.0f} s"
        if self.fix:
            text += f": {self.fix}"
        return f"{self.context}: {text}" if self.context else text


class RateLimited(AdapterError):
    """Over a vendor limit; retry after ``retry_after`` seconds (None: the vendor did not say)."""

    failure = Failure.UNAVAILABLE

    def __init__(
        self,
        system: System,
        message: str,
        retry_after: float | None = None,
        *,
        failure: Failure | None = None,
    ) -> None:
        super().__init__(system, message, failure=failure)
        self.retry_after = retry_after


class Transient(AdapterError):
    """A failure that may pass: 5xx, dropped connection, timeout, lock."""

    failure = Failure.UNAVAILABLE


class NotFound(AdapterError):
    """The record is not there. For an erasure this is success."""


class Permanent(AdapterError):
    """The vendor refused for good (validation, permission, quota for the day)."""


class TokenExpired(Permanent):
    """A change-tracking token the vendor no longer honours: read everything again."""


ErrorKind = type[AdapterError]


@dataclass(frozen=True)
class ErrorRule:
    """One row of an adapter's error table: what a vendor answer means to the bridge.

    ``status`` and ``code`` (the vendor's error code or category) are matched when set; the
    first matching row of the table wins, so specific rows go before general ones.
    """

    error: ErrorKind
    status: int | range | None = None
    code: str | None = None
    failure: Failure | None = None
    """What it asks of a person, when not what ``error`` says by default."""

    def means(self) -> Failure:
        return self.failure or self.error.failure

    def matches(self, status: int | None, code: str | None) -> bool:
        if self.code is not None and self.code != code:
            return False
        if self.status is None:
            return True
        if status is None:
            return False
        return status in self.status if isinstance(self.status, range) else status == self.status


def rule_for(table: Sequence[ErrorRule], status: int | None, code: str | None) -> ErrorRule:
    """The first row a vendor answer matches; unknown answers are ``Permanent``."""
    return next((rule for rule in table if rule.matches(status, code)), ErrorRule(Permanent))


def classify(table: Sequence[ErrorRule], status: int | None, code: str | None) -> ErrorKind:
    """The adapter error a vendor answer maps to; unknown answers are ``Permanent``."""
    return rule_for(table, status, code).error


@dataclass(frozen=True)
class Advice:
    """What a vendor's adapter tells a person about each kind of failure: per ``Failure``, the
    words read first and the fix, in its own setting names. The words may name ``{operation}``,
    ``{where}`` (the address calls go to) and ``{reason}`` (the vendor's code, or why nothing
    answered). A failure without words here is said in the vendor's message alone."""

    where: str
    words: Mapping[Failure, tuple[str, str]]

    def apply(self, error: AdapterError, operation: str, reason: str) -> AdapterError:
        """``error`` with its summary and fix set; returned, for ``raise advice.apply(...)``."""
        said = self.words.get(error.failure)
        if said is not None:
            fields = {"operation": operation, "where": self.where, "reason": reason}
            error.summary, error.fix = (text.format(**fields) for text in said)
        return error


def no_answer(failure: BaseException) -> str:
    """Why a call got no answer, in a few words ("connection refused", "timed out"): the
    operating system's reason found down the exception's chain (causes, and urllib3's
    ``reason``), else the exception's name."""
    seen: list[BaseException] = []
    current: BaseException | None = failure
    while current is not None and current not in seen:
        seen.append(current)
        if isinstance(current, TimeoutError) or "timeout" in type(current).__name__.lower():
            return "timed out"
        if isinstance(current, OSError) and current.strerror:
            return current.strerror.lower()
        reason = getattr(current, "reason", None)
        following = reason if isinstance(reason, BaseException) else None
        current = following or current.__cause__ or current.__context__
    return type(failure).__name__


# --- retries ------------------------------------------------------------------------------

T = TypeVar("T")
R = TypeVar("R", bound=RelatedRecords)


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in slices of ``size``: one vendor batch call each."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _wait(state: RetryCallState) -> float:
    """Full jitter, but never sooner than a vendor's own retry-after."""
    from tenacity import wait_random_exponential

    jitter = float(wait_random_exponential(multiplier=0.5, max=30)(state))
    error = state.outcome.exception() if state.outcome else None
    if isinstance(error, RateLimited) and error.retry_after:
        return error.retry_after + random.uniform(0, 1)
    return jitter


def _log_retry(state: RetryCallState) -> None:
    """A failed attempt that will be tried again: worth a line, not an alarm."""
    error = state.outcome.exception() if state.outcome else None
    get_logger(__name__).info(
        "adapter.call_retrying",
        system=getattr(error, "system", None),
        error=str(error),
        attempt=state.attempt_number,
        wait_seconds=round(state.upcoming_sleep, 1),
    )


def retrying(call: Callable[[], T], *, attempts: int = 8, give_up_after: float = 300) -> T:
    """Run ``call``, retrying ``RateLimited`` and ``Transient`` only, at most ``attempts``
    times and never starting a wait that would end ``give_up_after`` seconds or more after
    the first try (a call in flight is bounded by its own timeout).

    Use it for idempotent operations, or ones made idempotent by reading first: a retried
    create that had in fact landed would otherwise land twice. Each failure that will be
    retried is logged at info (``adapter.call_retrying``); one that fails for good (refused,
    or still failing when the retries give up) at warning (``adapter.call_failed``), and
    carries how often and how long it was tried. A ``NotFound`` is an answer, not a
    failure: info.
    """
    from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, stop_before_delay

    retryer = Retrying(
        retry=retry_if_exception_type((RateLimited, Transient)),
        wait=_wait,
        stop=stop_after_attempt(attempts) | stop_before_delay(give_up_after),
        before_sleep=_log_retry,
        reraise=True,
    )
    started = time.monotonic()
    try:
        return retryer(call)
    except NotFound as missing:
        get_logger(__name__).info("adapter.not_found", system=missing.system, error=str(missing))
        raise
    except AdapterError as error:
        error.tries = retryer.statistics.get("attempt_number", 1)
        error.seconds = time.monotonic() - started
        get_logger(__name__).warning(
            "adapter.call_failed", system=error.system, error=str(error), attempts=error.tries
        )
        raise


# --- what adapters read and write ---------------------------------------------------------


@dataclass(frozen=True)
class RecordRef:
    """A record in a vendor system (``object_type`` as the adapter names it, e.g. ``lead``)."""

    system: System
    object_type: str
    id: str


class WriteStatus(StrEnum):
    DONE = "done"
    ALREADY = "already"  # the vendor already held this state: an idempotent success
    NEEDS_SELF_SERVICE = "needs_self_service"  # the vendor refuses; only the person can do it
    # This account cannot hold it (a feature the plan or the org lacks): written nowhere, and
    # not a failure; the adapter's ``field_for`` says None for it, so a sync never asks.
    NOT_HOLDABLE = "not_holdable"
    FAILED = "failed"


@dataclass(frozen=True)
class ConsentWrite:
    """Set one purpose's consent, or (``purpose`` None) the global opt-out of ``channel``:
    all email, or (``Channel.PHONE``) do not call."""

    record: RecordRef
    email: str = field(metadata={"personal": True})
    purpose: str | None
    status: ConsentStatus
    lawful_basis: LawfulBasis | None = None
    explanation: str | None = None
    evidence: Evidence = field(default_factory=Evidence)
    channel: Channel = Channel.EMAIL


@dataclass(frozen=True)
class LawfulBasisWrite:
    record: RecordRef
    lawful_basis: LawfulBasis


@dataclass(frozen=True)
class DueMark:
    """The day a retention rule will purge the record (``due``), or None to clear it."""

    record: RecordRef
    due: date | None


@dataclass(frozen=True)
class WriteOutcome:
    record: RecordRef
    status: WriteStatus
    detail: str = ""


ErasureMode = Literal["delete", "anonymize"]


@dataclass(frozen=True)
class ErasureTarget:
    """One thing to erase: a record, or (``id`` None) an address to blocklist by email."""

    system: System
    object_type: str
    id: str | None
    email: str | None = field(default=None, metadata={"personal": True})


class ErasureStatus(StrEnum):
    ERASED = "erased"
    ANONYMIZED = "anonymized"
    ALREADY_GONE = "already_gone"
    IN_RECYCLE_BIN = "in_recycle_bin"  # deleted, but recoverable for 15 days


@dataclass(frozen=True)
class ErasureResult:
    target: ErasureTarget
    status: ErasureStatus
    detail: str = ""


@dataclass(frozen=True)
class RectifyProblem:
    """Why a system cannot take one correction, found before anything is written: the common
    field (``first_name``), where the vendor keeps it (``Contact.FirstName``; None when the
    adapter maps no field for it) and the most characters that place holds. Never the value."""

    system: System
    field: str
    where: str | None
    limit: int | None = None

    def __str__(self) -> str:
        if self.where is None:
            return f"{self.system} has no field for {self.field}"
        if self.limit is None:
            return f"{self.field}: {self.system} {self.where} cannot be written"
        return f"{self.field}: {self.system} {self.where} holds at most {self.limit:,} characters"


@dataclass(frozen=True)
class FieldUsage:
    """How many records of an object fill one field (``bridge minimise --report``): a name
    and a count, never a value. ``free_text`` marks a multi-line text field, which can hold
    anything a user types and so is the hardest to keep minimal."""

    name: str
    filled: int
    free_text: bool = False


@dataclass(frozen=True)
class ObjectUsage:
    """The fields people and integrations can fill on one object (``sobject`` as the
    allow-list names it: ``contact``, ``Lead``), each with how many of ``records`` fill it."""

    sobject: str
    records: int
    fields: tuple[FieldUsage, ...]


@dataclass(frozen=True)
class Check:
    """One line of ``bridge check --crm``: what was checked in a CRM (``name``; empty for a
    line that says all, such as the path the account allows), what was found, and, when it
    does not hold, the fix. It names objects, fields, scopes and purposes, never a record's
    values."""

    name: str
    found: str
    fix: str = ""
    ok: bool = True


@dataclass(frozen=True)
class Allowance:
    """One of a vendor's API limits as the adapter last knew it: ``used`` of ``limit`` calls,
    in a rolling window of ``window_seconds`` (a burst limit), or per day when None (until
    midnight, or a rolling 24 h). ``name`` is the vendor's own, as its errors and setup pages
    say it."""

    name: str
    used: int
    limit: int
    window_seconds: float | None = None

    @property
    def left(self) -> int:
        return max(self.limit - self.used, 0)


class ClosesOnExit(ABC):
    """``with adapter:`` closes the adapter's connections however the block ends."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --- the contract: one protocol per capability, and CrmAdapter, which has them all --------


class RecordReader(Protocol):
    """Reads a vendor's people: all, those changed since a cursor, by address, one by one."""

    system: System

    def read(self, since: datetime | None = None) -> Iterator[CrmRecord]:
        """Every record (``since`` None) or those modified at or after ``since``, each once."""
        ...

    def find_by_emails(self, emails: Collection[str]) -> list[CrmRecord]:
        """Every record reached by any of ``emails`` (primary or additional), in bulk."""
        ...

    def emails_of(self, record: RecordRef) -> list[str]:
        """Every email a record holds (an Individual: its people's and contact points'); none
        if the record is gone."""
        ...

    def emails_of_each(self, records: Sequence[RecordRef]) -> list[list[str]]:
        """``emails_of`` for many records in the vendor's batches (propagation of a burst of
        events: one call per batch, not per record), in the order given."""
        ...

    def record_url(self, record: RecordRef) -> str | None:
        """Where a user opens the record in the vendor's own UI; None if unknown."""
        ...


class ConsentWriter(Protocol):
    """Writes consent, the global opt-out and the lawful basis, and says where each lives."""

    def field_for(self, object_type: str, field: str) -> tuple[str, str] | None:
        """Where a common field of a record lives: the vendor object and field the sync
        writes for ``opt_out``, ``do_not_call``, ``consent:<purpose>`` or ``lawful_basis``;
        None when this kind of record, or this account, cannot hold it (the sync then plans
        no write to it). Minimisation is judged on these names."""
        ...

    def write_consents(self, writes: Sequence[ConsentWrite]) -> list[WriteOutcome]:
        """Apply consent changes batched at the vendor maximum; one outcome per write."""
        ...

    def write_lawful_bases(self, writes: Sequence[LawfulBasisWrite]) -> list[WriteOutcome]: ...


class Eraser(Protocol):
    """Erases people (Art. 17), and finds the related rows that hold a record back."""

    erase_batch: int
    """How many targets one ``erase`` call should carry: the vendor's batch size, or where
    it has none, about as many calls as its rate limit allows in ten seconds, so a batch ends
    (and a stopping daemon is heard) within seconds."""

    def erasure_targets(self, people: Sequence[Collection[str]]) -> list[list[ErasureTarget]]:
        """Everything to erase for each person (their addresses), in the order given: one
        target per record (and per address). Found for all of them together, in the vendor's
        batch sizes; a record two people reach is in both lists."""
        ...

    def erase(
        self, targets: Sequence[ErasureTarget], mode: ErasureMode
    ) -> list[ErasureResult | AdapterError]:
        """Erase many targets (any people, any order) in as few calls as the vendor allows,
        in the order its references require; one answer per target, in the order given. A
        target already gone is ``ALREADY_GONE``, not an error; a target that fails alone gets
        its error (a retry sends it again); a failure of every target (no login) raises."""
        ...

    def related(self, targets: Sequence[ErasureTarget], conditions: Sequence[R]) -> dict[str, R]:
        """Which targets (by record id) related rows of a condition point at, and the first
        listed condition that does: the legal holds on an erasure, or what keeps a person
        under a retention rule (an open opportunity)."""
        ...


class RightsHandler(Protocol):
    """Answers a person's requests for access and portability (Art. 15, 20) and correction
    (Art. 16)."""

    def export(self, emails: Collection[str]) -> dict[str, Any]:
        """Everything held about these emails, every field the adapter exposes."""
        ...

    def check_rectify(self, changes: Mapping[str, str]) -> list[RectifyProblem]:
        """Why this system could not take these corrections, on any kind of record
        ``rectify`` writes (a field it maps nowhere, a value longer than a field holds);
        empty when it could. Writes nothing, so a caller can refuse a correction whole
        before any system is written."""
        ...

    def rectify(self, emails: Collection[str], changes: Mapping[str, str]) -> list[WriteOutcome]:
        """Write corrections (common field names, e.g. ``last_name``) to every record these
        emails reach (Art. 16); one outcome per record."""
        ...


class RetentionMarker(Protocol):
    """Marks records a retention rule will purge, so the CRM can warn the person first."""

    def mark_purge_due(self, marks: Sequence[DueMark]) -> list[WriteOutcome]:
        """Set or clear the date a retention rule will purge each record (CRM workflows
        send re-activation email from it); one outcome per mark."""
        ...


class UsageCounter(Protocol):
    """Counts which fields hold data, for the minimisation report (Art. 5(1)(c))."""

    def field_usage(self) -> list[ObjectUsage]:
        """Per object the allow-list names, every field a person or integration can fill and
        how many records fill it (minimisation, Art. 5(1)(c)). Values are counted, never
        kept or logged; fields the CRM computes itself (ids, timestamps, formulas) are left
        out."""
        ...


class ReadinessChecker(Protocol):
    """Says, before anything runs, whether the account is set up the way the bridge needs."""

    def readiness(self, related: Sequence[RelatedRecords]) -> Iterator[Check]:
        """Log in, then check one thing per line: what the login may do, the path the account
        allows, and that what the settings name exists there (purposes, fields, and the
        objects and fields of the ``related`` conditions: legal holds, retention rules). A
        call that fails raises (the first one, the login, always does), ending the checks."""
        ...


@runtime_checkable
class AllowanceReporter(Protocol):
    """Says how much of the vendor's API limits is left. Optional, and so outside
    ``CrmAdapter``: the sync records it for the console when an adapter has it."""

    def allowances(self) -> list[Allowance]:
        """Each limit as the vendor's answers last reported it, with the calls made since;
        none the vendor has not reported yet. Reads what the adapter holds: never calls the
        vendor, never raises, so asking costs no quota."""
        ...


@dataclass
class TrackedRead:
    """What :meth:`ChangeTracker.track` read: ``records`` stream lazily; once they are all
    read, ``token`` is where the next read starts and ``deleted`` how many records were
    deleted in the vendor since the last (the bridge holds no records to drop, so a count
    is all it keeps)."""

    records: Iterator[CrmRecord]
    token: str | None = None
    deleted: int = 0


@runtime_checkable
class ChangeTracker(Protocol):
    """Reads changes by the vendor's own change tracking rather than by a clock: each change
    once, deletions too, however the clocks of the vendor and the bridge drift. Optional,
    and so outside ``CrmAdapter``: the sync uses it when an adapter has it."""

    def track(self, token: str | None) -> TrackedRead:
        """Every record and a first token (``token`` None), or what changed since
        ``token``. An expired token raises :class:`TokenExpired` here, before any record is
        read; the caller then reads everything again with ``track(None)``."""
        ...


@runtime_checkable
class PreferenceLinks(Protocol):
    """Hands a person to the vendor's own preference page, where a change only they may make
    (a resubscribe after an opt-out) is theirs to make. Optional, and so outside
    ``CrmAdapter``: the portal offers the link when an adapter has it."""

    def preference_link(self, email: str) -> str | None:
        """The address of the vendor's preference page for ``email``, for that address's
        owner alone; None when the vendor gives none."""
        ...


class CrmAdapter(
    RecordReader,
    ConsentWriter,
    Eraser,
    RightsHandler,
    RetentionMarker,
    UsageCounter,
    ReadinessChecker,
    Protocol,
):
    """What every adapter is: every capability above, and connections to release.
    ``bridge.testing.conformance`` holds each adapter to all of it; code that needs one
    capability may ask for just that protocol."""

    def close(self) -> None:
        """Release the adapter's connections."""
        ...
