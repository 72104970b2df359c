"""How the Salesforce adapter talks to Salesforce: one session, one login, one choke point.

:class:`SalesforceSession` adds timeouts and the emulator's base URL; the login is ours, and
:meth:`Transport.call` maps failures (``ERRORS``), retries, renews a session once and keeps
to the daily quota (:class:`DailyQuota`). Why simple-salesforce needs this:
docs/vendors/salesforce.md ("Client and transport", "Limits and ``Sforce-Limit-Info``").
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar, cast
from urllib.parse import quote_plus
from xml.sax.saxutils import escape

import requests
from defusedxml import ElementTree
from simple_salesforce.api import Salesforce
from simple_salesforce.bulk2 import SFBulk2Handler, SFBulk2Type
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceOperationError,
)
from simple_salesforce.format import format_soql
from simple_salesforce.login import SalesforceLogin

from bridge.adapters.base import (
    AdapterError,
    Advice,
    Allowance,
    ErrorRule,
    Failure,
    NotFound,
    Permanent,
    RateLimited,
    Transient,
    chunks,
    classify,
    no_answer,
    retrying,
    rule_for,
)
from bridge.adapters.salesforce import SALESFORCE
from bridge.adapters.salesforce.settings import SalesforceSettings
from bridge.errors import ConfigError
from bridge.logs import get_logger, redact_text
from bridge.metrics import ADAPTER_CALLS, ADAPTER_ERRORS

T = TypeVar("T")

API_VERSION = "59.0"
VENDOR = SALESFORCE
QUERY_PAGE = 2000
COLLECTION = 200  # rows per sObject Collections call, and ids per emptyRecycleBin call
CONNECTION = "CONNECTION"  # the code of a call that got no (readable) HTTP answer
LIMITED = "REQUEST_LIMIT_EXCEEDED"
QUOTA = "REQUEST_LIMIT_EXCEEDED/daily"  # the bridge's code: the same, with the day's quota spent
EXPIRED = "INVALID_SESSION_ID"
DAILY_REQUESTS = "DailyApiRequests"  # the daily quota, as the limits resource names it
MAX_MESSAGE = 300
PARTNER = "{urn:partner.soap.sforce.com}"
# URI plus headers must stay within 16,384 bytes; the headers simple-salesforce and requests
# send (bearer token included) stay well under this allowance.
URI_LIMIT = 16_384 - 2_048

# The one table: what each Salesforce answer means to the bridge. ``code`` is the REST
# ``errorCode``, a collections row's ``statusCode``, a SOAP ``exceptionCode`` or CONNECTION;
# a REQUEST_LIMIT_EXCEEDED becomes QUOTA when ``Sforce-Limit-Info`` shows the day's quota
# spent (Salesforce uses the one code for that and for its concurrent-request limit). The
# first matching row wins.
ERRORS: tuple[ErrorRule, ...] = (
    ErrorRule(Permanent, code=QUOTA),  # the org's rolling 24 h allowance is used up
    ErrorRule(RateLimited, code=LIMITED),  # while it lasts: concurrent long requests, a burst
    ErrorRule(Permanent, code=EXPIRED, failure=Failure.CREDENTIALS),  # even after a fresh login
    ErrorRule(NotFound, code="ENTITY_IS_DELETED"),  # in the recycle bin
    ErrorRule(NotFound, code="NOT_FOUND"),
    ErrorRule(Transient, code="UNABLE_TO_LOCK_ROW"),  # another transaction holds the row
    # A row shared with the integration user without Full Access (sharing, not the profile).
    ErrorRule(Permanent, code="INSUFFICIENT_ACCESS_OR_READONLY", failure=Failure.PERMISSION),
    ErrorRule(Transient, code=CONNECTION),  # refused, dropped, timed out
    ErrorRule(Transient, status=range(500, 600)),
    ErrorRule(NotFound, status=404),
    ErrorRule(Permanent, status=401, failure=Failure.CREDENTIALS),  # a login refused
    ErrorRule(Permanent, status=403, failure=Failure.PERMISSION),  # INSUFFICIENT_ACCESS, ...
    # No such object or field, or one hidden from the integration user: the same answer.
    ErrorRule(Permanent, code="INVALID_TYPE", failure=Failure.CONFIGURATION),
    ErrorRule(Permanent, code="INVALID_FIELD", failure=Failure.CONFIGURATION),
    ErrorRule(Permanent, status=range(400, 500)),  # validation, malformed request
)

# What the bridge says instead of (or before) the vendor's words for a few codes.
PLAIN_WORDS = {
    QUOTA: "daily API quota exhausted; calls resume as Salesforce's 24 h window rolls on",
    LIMITED: "request limit reached while the daily quota lasts; trying again later",
    EXPIRED: "session refused right after a fresh login; check the integration user",
    CONNECTION: "no answer (connection refused, dropped or timed out)",
}

# What a person reads for each kind of failure (``Advice``); the credentials' fix names the
# settings of the login in use (``credentials_fix``).
WORDS: dict[Failure, tuple[str, str]] = {
    Failure.PERMISSION: (
        "Salesforce refused {operation} ({reason}): the integration user lacks a permission",
        'assign it the permission set in config/salesforce/ (README, "Salesforce"); '
        "`bridge check --crm` names what is missing",
    ),
    Failure.CONFIGURATION: (
        "Salesforce lacks an object or field that {operation} uses, or hides it from the "
        "integration user ({reason})",
        "create it, or fix the setting naming it (salesforce.lawful_basis_field, due_field, "
        "retention rules, legal holds), and grant access to it; `bridge check --crm` names it",
    ),
    Failure.UNAVAILABLE: (
        "Salesforce unreachable at {where} ({reason})",
        "check the network and https://status.salesforce.com, or try again later "
        "(BRIDGE_SALESFORCE__GIVE_UP_AFTER_SECONDS sets how long the bridge keeps trying)",
    ),
}
# Salesforce's words for a missing object or field, whose names help (never a value).
_MISSING = (
    re.compile(r"No such column '(?P<field>[^']+)' on entity '(?P<sobject>[^']+)'"),
    re.compile(r"sObject type '(?P<sobject>[^']+)' is not supported"),
)

_NO_ANSWER = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.JSONDecodeError,
)
_FAILURES = (SalesforceError, SalesforceOperationError, requests.RequestException)
_HOST = re.compile(r"^https://[^/]+")
_OPERATION: ContextVar[str] = ContextVar("salesforce_operation", default="other")

log = get_logger(__name__)


# -- messages without personal data ------------------------------------------------------


def sanitise(message: str) -> str:
    """A vendor message with the values it repeats cut out.

    Salesforce quotes offending values after the last ``": "`` (``Email: invalid email
    address: <value>``) or after ``value`` (``from VALUE_STRING value <value>``), and frames
    SOQL errors with the query line itself; only the wording around them is kept.
    """
    lines = [line for line in message.splitlines() if line.strip()]
    text = lines[-1].strip() if lines else ""
    head, separator, _value = text.rpartition(": ")
    text = f"{head}: …" if separator else re.sub(r"\bvalue\s+\S+", "value …", text)
    return redact_text(text)[:MAX_MESSAGE]


@dataclass(frozen=True)
class RowResult:
    """One row of an sObject Collections answer: its id, or why it failed (no message)."""

    id: str | None
    code: str | None = None
    fields: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.code is None

    @property
    def detail(self) -> str:
        """The status code and field names; Salesforce's message would repeat the values."""
        return f"{self.code} ({', '.join(self.fields)})" if self.fields else str(self.code)

    def error(self, operation: str, refused: str) -> AdapterError:
        """This row's failure as the error ``ERRORS`` maps its code to (a lock is Transient:
        the row is sent again), with its code and fields, never a value."""
        rule = rule_for(ERRORS, None, self.code)
        text = f"{operation}: Salesforce refused {refused}: {self.detail}"
        error = rule.error(SALESFORCE, text, failure=rule.means())
        error.code = self.code
        return error

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> RowResult:
        if row.get("success"):
            return cls(str(row.get("id")))
        errors = row.get("errors") or [{}]
        first = errors[0]
        return cls(
            row.get("id"),
            str(first.get("statusCode") or "UNKNOWN_EXCEPTION"),
            tuple(str(f) for f in first.get("fields") or ()),
        )


def _first_error(content: Any) -> tuple[str | None, str, tuple[str, ...]]:
    """Code, message and fields of a REST error body (a JSON array, or text)."""
    if isinstance(content, bytes | str):
        try:
            content = json.loads(content)
        except ValueError:
            return None, "", ()
    if isinstance(content, list) and content and isinstance(content[0], dict):
        first = content[0]
        fields = tuple(str(f) for f in first.get("fields") or ())
        return first.get("errorCode"), str(first.get("message") or ""), fields
    if isinstance(content, dict):
        return content.get("errorCode"), str(content.get("message") or ""), ()
    return None, "", ()


def adapter_error(
    operation: str, failure: Exception, *, quota_spent: bool, advice: Advice | None = None
) -> AdapterError:
    """Map any failure through ``ERRORS``, with ``advice``'s words for a person; the message
    carries no personal data."""
    status: int | None = None
    code: str | None
    fields: tuple[str, ...] = ()
    prefix = ""
    if isinstance(failure, _NO_ANSWER):
        code, message = CONNECTION, type(failure).__name__
    elif isinstance(failure, SalesforceAuthenticationFailed):
        # A login answered with something other than its own format carries the HTTP status
        # and the body: a REST error body still names its code.
        if isinstance(failure.code, int):
            status = failure.code
            code, message, fields = _first_error(failure.auth_message)
            message = message or failure.auth_message
        else:
            status, code, message = failure.status, failure.code, failure.auth_message
        prefix = "login refused: "
    elif isinstance(failure, SalesforceError):
        status = failure.status
        code, message, fields = _first_error(failure.content)
    else:
        code, message = None, str(failure)
    if code == LIMITED and quota_spent:
        code = QUOTA
    rule = rule_for(ERRORS, status, code)
    words = prefix + sanitise(message)
    if code in PLAIN_WORDS:
        words = f"{PLAIN_WORDS[code]} ({words})" if code != CONNECTION else PLAIN_WORDS[code]
    where = f" ({', '.join(fields)})" if fields else ""
    text = f"{operation}: {status or 'no answer'} {code or ''}{where}: {words}"
    error = rule.error(SALESFORCE, text[:MAX_MESSAGE], failure=rule.means())
    error.code = None if code == CONNECTION else code
    if advice is None:
        return error
    if code == CONNECTION:
        reason = no_answer(failure)
    else:
        named = ", ".join(fields) or _missing(message)
        reason = (code or f"HTTP {status}") + (f": {named}" if named else "")
    return advice.apply(error, operation, reason)


def _missing(message: str) -> str:
    """The object (``Individual``) or field (``Contact.Foo__c``) Salesforce says it does not
    know, if its message names one."""
    for pattern in _MISSING:
        if found := pattern.search(message):
            parts = found.groupdict()
            return ".".join(p for p in (parts.get("sobject"), parts.get("field")) if p)
    return ""


# -- pacing ----------------------------------------------------------------------------------


RECHECK_SECONDS = 300.0
"""Once stopped at the quota's ceiling, how often one call goes through to learn whether the
rolling 24 h window has moved on (its answer reports the count); every other call waits."""


class DailyQuota:
    """The org's rolling 24 h API allowance, as the ``Sforce-Limit-Info`` header reports it.

    Not a ``RateLimiter``: Salesforce has no short window to pace against (only the day),
    and reports its own count on every answer, so one counter follows it exactly where a
    sliding window of timestamps would hold up to millions of entries. Calls made since the
    last answer are counted here, so a burst cannot overshoot the reserve.
    """

    def __init__(self, reserve: float) -> None:
        self.reserve = reserve
        self.used: int | None = None
        self.total: int | None = None
        self._reported_at = 0.0  # when an answer last said how many calls the day has seen

    @property
    def spent(self) -> bool:
        """Whether the last answer said the day's quota is used up."""
        return self.used is not None and self.total is not None and self.used >= self.total

    @property
    def ceiling(self) -> int | None:
        """How many of the day's calls the bridge may use, leaving the reserve."""
        if self.total is None:
            return None
        return math.floor(self.total * (1 - self.reserve))

    def admit(self) -> None:
        """Count one call, or refuse it once the ceiling is reached."""
        ceiling = self.ceiling
        if self.used is None or ceiling is None:
            return
        if self.used >= ceiling:
            if time.monotonic() - self._reported_at >= RECHECK_SECONDS:
                # The day rolls on: one call (the one asking) learns today's count from its
                # answer, which the next calls go by; the daemon's adapters live for days.
                self._reported_at = time.monotonic()
                return
            raise Permanent(
                SALESFORCE,
                f"daily API quota nearly exhausted: {self.used} of {self.total} calls used in "
                f"the last 24 h; the bridge stops at {ceiling} to leave "
                f"{self.reserve:.0%} to the org's other integrations "
                "(salesforce.api_quota_reserve) and resumes as the window rolls on",
            )
        self.used += 1

    def allowances(self) -> list[Allowance]:
        """The day's calls as the last answer counted them, with the calls made since; none
        before the first answer."""
        if self.used is None or self.total is None:
            return []
        return [Allowance(DAILY_REQUESTS, self.used, self.total)]

    def observe(self, response: requests.Response) -> None:
        header = response.headers.get("Sforce-Limit-Info")
        usage = Salesforce.parse_api_usage(header).get("api-usage") if header else None
        if usage is not None:
            self.used, self.total = usage.used, usage.total
            self._reported_at = time.monotonic()


# -- the session -----------------------------------------------------------------------------


class SalesforceSession(requests.Session):
    """What simple-salesforce sends through: a timeout on every call, an optional base URL.

    ``before`` runs ahead of every request (pacing, counting) and may refuse it; ``after``
    sees every answer, bulk and SOAP calls included.
    """

    def __init__(
        self,
        base_url: str | None,
        timeout: float | tuple[float, float],
        before: Callable[[], None],
        after: Callable[[requests.Response], None],
    ) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/") if base_url else None
        if self.base_url:
            # Proxy and CA-bundle variables would otherwise redirect or override the emulator.
            self.trust_env = False
        self.timeout = timeout
        self._before = before
        self._after = after

    def address(self, url: str) -> str:
        """Where a URL simple-salesforce builds (always ``https://<host>``) really goes: the
        base URL's scheme and host instead, when one is set."""
        return _HOST.sub(self.base_url, url, count=1) if self.base_url else url

    def request(  # type: ignore[override]
        self, method: str, url: str, *args: Any, **kwargs: Any
    ) -> requests.Response:
        url = self.address(url)
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        self._before()
        response = super().request(method, url, *args, **kwargs)
        self._after(response)
        return response


# -- logins ----------------------------------------------------------------------------------


def login_arguments(settings: SalesforceSettings) -> dict[str, Any] | None:
    """``SalesforceLogin`` arguments for the configured auth mode; None for a given session.

    Precedence: an existing session (``session_id`` + ``instance_url``), JWT bearer
    (``username`` + ``consumer_key`` + ``private_key_file``), OAuth username-password
    (with ``consumer_key`` + ``consumer_secret``), SOAP username-password(-token), client
    credentials (``consumer_key`` + ``consumer_secret`` on a My Domain).
    """

    def secret(value: Any) -> str | None:
        return None if value is None else str(value.get_secret_value())

    password, token = secret(settings.password), secret(settings.security_token)
    consumer_secret = secret(settings.consumer_secret)
    base = {"domain": settings.domain, "sf_version": API_VERSION}
    if settings.session_id is not None and settings.instance_url:
        return None
    if settings.username and settings.consumer_key and settings.private_key_file:
        return base | {
            "username": settings.username,
            "consumer_key": settings.consumer_key,
            "privatekey_file": str(settings.private_key_file),
        }
    if settings.username and password is not None:
        if settings.consumer_key and consumer_secret is not None:
            return base | {
                "username": settings.username,
                "password": password + (token or ""),
                "consumer_key": settings.consumer_key,
                "consumer_secret": consumer_secret,
            }
        return base | {
            "username": settings.username,
            "password": password,
            "security_token": token or "",
        }
    if settings.consumer_key and consumer_secret is not None:
        if settings.domain in ("login", "test"):
            raise ConfigError(
                [
                    "salesforce.domain: client credentials need the org's My Domain; set "
                    'it, e.g. domain = "acme.my"'
                ]
            )
        return base | {"consumer_key": settings.consumer_key, "consumer_secret": consumer_secret}
    raise ConfigError(
        [
            "salesforce: no credentials; set username with BRIDGE_SALESFORCE__PASSWORD "
            "(and __SECURITY_TOKEN), or consumer_key with private_key_file (JWT) or with "
            "BRIDGE_SALESFORCE__CONSUMER_SECRET (client credentials), or instance_url with "
            "BRIDGE_SALESFORCE__SESSION_ID"
        ]
    )


def credentials_fix(arguments: Mapping[str, Any] | None) -> str:
    """What to check when Salesforce refuses the login ``login_arguments`` chose: its
    settings, by name."""
    if arguments is None:
        return (
            "set BRIDGE_SALESFORCE__SESSION_ID to a live session of the integration user (and "
            "__INSTANCE_URL to its org), or configure a login instead"
        )
    if "privatekey_file" in arguments:
        return (
            "check BRIDGE_SALESFORCE__USERNAME, __CONSUMER_KEY and __PRIVATE_KEY_FILE, and that "
            "the connected app is pre-authorised for the user"
        )
    domain = "(and __DOMAIN: test for a sandbox)"
    if "security_token" in arguments:
        return f"check BRIDGE_SALESFORCE__USERNAME, __PASSWORD and __SECURITY_TOKEN {domain}"
    if "username" in arguments:
        return (
            "check BRIDGE_SALESFORCE__USERNAME, __PASSWORD (with the security token appended), "
            f"__CONSUMER_KEY and __CONSUMER_SECRET {domain}"
        )
    return "check BRIDGE_SALESFORCE__CONSUMER_KEY, __CONSUMER_SECRET and __DOMAIN (My Domain)"


# -- the transport ---------------------------------------------------------------------------


class Transport:
    """The logged-in client, the session and the quota, shared by every call."""

    def __init__(
        self, settings: SalesforceSettings, *, attempts: int, timeout: float, bulk_wait: int
    ) -> None:
        self._settings = settings
        self._login = login_arguments(settings)
        self.attempts = attempts
        self.give_up_after = settings.give_up_after_seconds
        self.bulk_wait = bulk_wait
        self.quota = DailyQuota(settings.api_quota_reserve)
        where = settings.base_url or settings.instance_url or f"{settings.domain}.salesforce.com"
        credentials = ("Salesforce refused the login ({reason})", credentials_fix(self._login))
        self.advice = Advice(where, {**WORDS, Failure.CREDENTIALS: credentials})
        # A connection that takes longer than the whole retry budget is not worth waiting for.
        connect = min(timeout, self.give_up_after)
        self.session = SalesforceSession(
            settings.base_url, (connect, timeout), self._before, self.quota.observe
        )
        self._client: Salesforce | None = None
        # urllib3 logs every URL at DEBUG, and SOQL in a URL carries addresses percent-encoded
        # past the log redactor.
        logging.getLogger("urllib3.connectionpool").setLevel(logging.INFO)

    def close(self) -> None:
        self.session.close()

    def _before(self) -> None:
        self.quota.admit()
        ADAPTER_CALLS.labels(VENDOR, _OPERATION.get()).inc()

    def _connect(self) -> Salesforce:
        if self._login is None:
            given = self._settings.session_id
            return Salesforce(
                session_id=given.get_secret_value() if given else None,
                instance_url=self._settings.instance_url,
                session=self.session,
                version=API_VERSION,
            )
        session_id, instance = SalesforceLogin(session=self.session, **self._login)
        return Salesforce(
            session_id=session_id, instance=instance, session=self.session, version=API_VERSION
        )

    def _logged_in(self) -> Salesforce:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def instance_url(self) -> str:
        """The org's own address (``https://acme.my.salesforce.com``), for links to records:
        the scheme and host the session really talks to, so with ``base_url`` (an emulator,
        often plain http) the links lead where the calls go."""
        client = self._client or self.call("login", lambda sf: sf)
        return self.session.address(f"https://{client.sf_instance}")

    def call(self, operation: str, send: Callable[[Salesforce], T], *, retry: bool = True) -> T:
        """Send once per attempt, paced and counted; retry only what may be retried.

        Callers pass ``retry=False`` for a create, unless they read first on every attempt,
        which is what ``retrying`` requires.
        """

        def once() -> T:
            token = _OPERATION.set(operation)
            try:
                return self._renewing(send)
            except AdapterError as refused:
                ADAPTER_ERRORS.labels(VENDOR, type(refused).__name__).inc()
                raise
            except _FAILURES as failure:
                error = adapter_error(
                    operation, failure, quota_spent=self.quota.spent, advice=self.advice
                )
                ADAPTER_ERRORS.labels(VENDOR, type(error).__name__).inc()
                log.debug("salesforce.call_failed", operation=operation, error=str(error))
                # Not chained: the vendor's exception carries bodies with personal data.
                raise error from None
            finally:
                _OPERATION.reset(token)

        if not retry:
            return once()
        return retrying(once, attempts=self.attempts, give_up_after=self.give_up_after)

    def _renewing(self, send: Callable[[Salesforce], T]) -> T:
        """Send; on an expired session log in once more and send once more, no further."""
        try:
            return send(self._logged_in())
        except SalesforceExpiredSession:
            if self._login is None:
                raise Permanent(
                    SALESFORCE,
                    "the configured session_id expired and cannot be renewed; configure a "
                    "login (username and password, JWT or client credentials) instead",
                    failure=Failure.CREDENTIALS,
                ) from None
        log.info("salesforce.session_renewed")
        self._client = None
        return send(self._logged_in())

    # -- REST ------------------------------------------------------------------------------

    def query(
        self, operation: str, soql: str, *, deleted: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Every row of a query, 2,000 per page; each page retried on its own."""
        options = {"Sforce-Query-Options": f"batchSize={QUERY_PAGE}"}
        page = self.call(operation, lambda sf: sf.query(soql, deleted, headers=options))
        while True:
            for row in page["records"]:
                row.pop("attributes", None)
                yield row
            if page["done"]:
                return
            page = self.call(operation, partial(_more, page["nextRecordsUrl"], options))

    def query_in(
        self, operation: str, soql: str, values: Collection[str]
    ) -> Iterator[dict[str, Any]]:
        """Rows of ``soql`` + an escaped ``IN`` list of ``values``, in as few calls as the
        URI limit allows (16,384 bytes with the headers)."""
        if not values:
            return
        # The base URL is known after the login, which goes through call() like any call.
        base = self.call(operation, lambda sf: len(sf.base_url)) + len("query/?q=")
        for chunk in in_lists(soql, sorted(set(values)), URI_LIMIT - base):
            yield from self.query(operation, soql + format_soql("{}", chunk))

    def rest(self, operation: str, path: str, *, retry: bool = True, **kwargs: Any) -> Any:
        """One REST call on ``/services/data/vXX.X/<path>``."""
        return self.call(operation, lambda sf: sf.restful(path, **kwargs), retry=retry)

    def save(
        self,
        operation: str,
        method: str,
        rows: Sequence[Mapping[str, Any]],
        *,
        landed: Callable[[Sequence[int]], Mapping[int, str]] | None = None,
    ) -> list[RowResult]:
        """Write ``rows`` through sObject Collections, 200 per call and never all-or-none; a
        result per row.

        Rows failing with a retryable status (``UNABLE_TO_LOCK_ROW``) are sent again; the
        others keep their failure and the rest stand. Updates are idempotent; a create
        passes ``landed`` (which of these row indices exist already, with their ids), asked
        before any repeat of a call that got no answer, so no row is created twice. A call
        refused for good fails its rows; one still failing after the retries raises, and the
        caller repeats the whole change, which reads first.
        """
        results: dict[int, RowResult] = {}
        for start in range(0, len(rows), COLLECTION):
            pending = list(range(start, min(start + COLLECTION, len(rows))))
            unanswered = False

            def attempt() -> None:
                nonlocal pending, unanswered
                if unanswered and landed is not None:
                    found = landed(pending)
                    results.update({i: RowResult(found[i]) for i in pending if i in found})
                    pending = [i for i in pending if i not in found]
                if not pending:
                    return
                unanswered = True
                body = {"allOrNone": False, "records": [rows[i] for i in pending]}
                answer = self.rest(
                    operation, "composite/sobjects", method=method, json=body, retry=False
                )
                unanswered = False
                results.update(zip(pending, map(RowResult.of, answer), strict=True))
                pending = [i for i in pending if _retryable(results[i])]
                if pending:
                    raise _Locked(SALESFORCE, f"{operation}: {len(pending)} rows locked")

            try:
                retrying(attempt, attempts=self.attempts, give_up_after=self.give_up_after)
            except _Locked:
                pass  # the rows still locked keep that failure
            except (Permanent, NotFound) as refused:
                results.update((i, RowResult(None, str(refused))) for i in pending)
        return [results[i] for i in range(len(rows))]

    def delete(self, operation: str, ids: Sequence[str]) -> list[RowResult]:
        """Collections delete, 200 ids per call, a result per id (idempotent: a second delete
        answers ENTITY_IS_DELETED)."""
        results: list[RowResult] = []
        for chunk in chunks(ids, COLLECTION):
            params = {"ids": ",".join(chunk), "allOrNone": "false"}
            answer = self.rest(operation, "composite/sobjects", method="DELETE", params=params)
            results += [RowResult.of(row) for row in answer or []]
        return results

    # -- purging: Bulk API 2.0 hardDelete and SOAP emptyRecycleBin ---------------------------

    def hard_delete(
        self, operation: str, sobject: str, ids: Sequence[str]
    ) -> list[RowResult] | None:
        """Bulk API 2.0 ``hardDelete`` of every id in one job (the library splits only past
        100 MB of CSV), a result per id; None when the job fails as a whole, as without the
        "Bulk API Hard Delete" permission.

        simple-salesforce polls the job first after ``bulk_wait`` seconds, then at that
        interval plus e^n ms (n = 0, 1, ...) until the interval passes 2 s. A repeat after a
        failed call sends a new job: rows the first one erased answer as not found.
        """

        def send(sf: Salesforce) -> list[RowResult] | None:
            job = cast(SFBulk2Type, getattr(cast(SFBulk2Handler, sf.bulk2), sobject))
            try:
                answers = job.hard_delete(records=[{"Id": i} for i in ids], wait=self.bulk_wait)
            except SalesforceOperationError as failure:
                log.warning("salesforce.hard_delete_refused", reason=sanitise(str(failure)))
                return None
            failed: dict[str, str] = {}
            for answer in answers:
                if int(answer["numberRecordsFailed"]):
                    failed |= _failed_rows(job.get_failed_records(str(answer["job_id"])))
            return [RowResult(i, failed.get(i)) for i in ids]

        return self.call(operation, send)

    def empty_recycle_bin(self, operation: str, ids: Sequence[str]) -> list[RowResult]:
        """SOAP ``emptyRecycleBin`` (simple-salesforce has no wrapper): purge deleted rows,
        200 per call, a result per id in the order given."""

        def send(chunk: Sequence[str], sf: Salesforce) -> list[RowResult]:
            url = f"https://{sf.sf_instance}/services/Soap/u/{sf.sf_version}"
            response = sf.session.post(
                url,
                data=_empty_recycle_bin_envelope(sf.session_id, chunk).encode(),
                headers={
                    "Content-Type": "text/xml; charset=UTF-8",
                    "SOAPAction": "emptyRecycleBin",
                },
            )
            if response.status_code != 200:
                raise _soap_fault(url, response)
            root = ElementTree.fromstring(response.content)
            return [_soap_row(result) for result in root.iter(f"{PARTNER}result")]

        return [
            row
            for chunk in chunks(ids, COLLECTION)
            for row in self.call(operation, partial(send, chunk))
        ]


class _Locked(Transient):
    """Rows of an answered call failed with a retryable status; they are sent again."""


def _retryable(result: RowResult) -> bool:
    return not result.ok and classify(ERRORS, None, result.code) in (Transient, RateLimited)


def in_lists(soql: str, values: Sequence[str], budget: int) -> Iterator[list[str]]:
    """``values`` cut into lists whose escaped, URL-encoded query fits within ``budget``."""
    fixed = len(quote_plus(soql + "()"))
    chunk: list[str] = []
    size = fixed
    for value in values:
        cost = len(quote_plus(format_soql("{},", value)))
        if chunk and size + cost > budget:
            yield chunk
            chunk, size = [], fixed
        chunk.append(value)
        size += cost
    if chunk:
        yield chunk


def _failed_rows(text: str) -> dict[str, str]:
    """Id and error code of each row of a job's ``failedResults`` CSV. The request's own Id
    column comes back beside ``sf__Id`` and ``sf__Error`` ("ENTITY_IS_DELETED:entity is
    deleted:--"), whose message may quote values and is dropped."""
    return {
        row.get("Id") or row.get("sf__Id") or "": (row.get("sf__Error") or "").partition(":")[0]
        or "UNKNOWN_EXCEPTION"
        for row in csv.DictReader(io.StringIO(text))
    }


def _more(url: str, headers: Mapping[str, str], sf: Salesforce) -> Any:
    return sf.query_more(url, identifier_is_url=True, headers=headers)


def _empty_recycle_bin_envelope(session_id: str, ids: Sequence[str]) -> str:
    items = "".join(f"<urn:ids>{escape(i)}</urn:ids>" for i in ids)
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:urn="urn:partner.soap.sforce.com"><soapenv:Header><urn:SessionHeader>'
        f"<urn:sessionId>{escape(session_id)}</urn:sessionId></urn:SessionHeader>"
        f"</soapenv:Header><soapenv:Body><urn:emptyRecycleBin>{items}</urn:emptyRecycleBin>"
        "</soapenv:Body></soapenv:Envelope>"
    )


def _soap_row(result: Any) -> RowResult:
    record_id = result.findtext(f"{PARTNER}id")
    if result.findtext(f"{PARTNER}success") == "true":
        return RowResult(record_id)
    code = result.findtext(f"{PARTNER}errors/{PARTNER}statusCode")
    return RowResult(record_id, code or "UNKNOWN_EXCEPTION")


def _soap_fault(url: str, response: requests.Response) -> SalesforceError:
    """A SOAP fault as the REST exception it means, so one table and one renewal serve both."""
    try:
        root = ElementTree.fromstring(response.content)
        code = next((e.text for e in root.iter() if e.tag.endswith("exceptionCode")), None)
        text = next((e.text for e in root.iter() if e.tag.endswith("exceptionMessage")), None)
    except ElementTree.ParseError:
        code, text = None, None
    content = json.dumps([{"errorCode": code, "message": text or ""}]).encode()
    if code == EXPIRED:
        return SalesforceExpiredSession(url, 401, "emptyRecycleBin", content)
    return SalesforceGeneralError(url, response.status_code, "emptyRecycleBin", content)
