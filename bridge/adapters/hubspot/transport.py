"""How the HubSpot adapter talks to HubSpot: one choke point for pacing, errors and retries.

Every call, SDK or v4 over ``httpx``, goes through :meth:`Transport.call`: rate limiter,
error table (``ERRORS``), header feedback and retries; the SDK's own retries are off. Why:
docs/vendors/hubspot.md ("Client and transport", "Rate limits", "Errors and how they are
mapped"). The batching helpers the adapter's parts share live here too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import httpx
import urllib3
from hubspot import HubSpot
from hubspot.communication_preferences.exceptions import ApiException as PrefsApiException
from hubspot.crm.contacts.exceptions import ApiException as ContactsApiException
from hubspot.crm.properties.exceptions import ApiException as PropertiesApiException
from urllib3.util.retry import Retry

from bridge.adapters import pacing
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
    no_answer,
    retrying,
    rule_for,
)
from bridge.adapters.hubspot import HUBSPOT
from bridge.adapters.hubspot.settings import HubSpotSettings
from bridge.errors import ConfigError
from bridge.identity import normalise_email
from bridge.logs import get_logger, redact_text
from bridge.metrics import ADAPTER_CALLS, ADAPTER_ERRORS

VENDOR = HUBSPOT
CONNECTION = "CONNECTION"  # the code of a call that got no HTTP answer at all
DAILY = "DAILY"
BURST = "TEN_SECONDLY_ROLLING"  # the burst window's policy, as a 429 names it
LOCKED_WAIT = 2.0  # HubSpot: after a 423, wait at least 2 s
MAX_MESSAGE = 300
BATCH = 100  # HubSpot's batch maximum (docs/vendors/hubspot.md, "Contacts")
MISSING_SCOPES = "MISSING_SCOPES"
TOKEN_INFO = "/oauth/v2/private-apps/get/access-token-info"  # noqa: S105 (a path, no secret)


class MissingScopes(Permanent):
    """403 ``MISSING_SCOPES``: the token may not call this endpoint (a scope it was not
    granted, or one the portal's tier cannot grant). A ``Permanent`` to everyone else; the
    preferences take it as the sign to use the endpoints every tier has."""


# The one table: what each HubSpot answer means to the bridge. ``code`` is the 429 body's
# ``policyName``, else the error body's ``category``; the first matching row wins.
ERRORS: tuple[ErrorRule, ...] = (
    ErrorRule(Permanent, status=429, code=DAILY),  # the day's quota is gone: stop until midnight
    ErrorRule(RateLimited, status=429),  # TEN_SECONDLY_ROLLING, or SECONDLY for search
    ErrorRule(RateLimited, status=423),  # locked: come back in 2 s
    ErrorRule(RateLimited, status=477),  # migration in progress: come back after Retry-After
    ErrorRule(Permanent, status=401, failure=Failure.CREDENTIALS),  # bad or expired token
    # a scope the token lacks
    ErrorRule(MissingScopes, status=403, code=MISSING_SCOPES, failure=Failure.PERMISSION),
    ErrorRule(Permanent, status=403, failure=Failure.PERMISSION),  # any other refusal
    ErrorRule(NotFound, status=404),
    ErrorRule(Permanent, status=409),  # conflict, e.g. an address another contact holds
    ErrorRule(Transient, status=range(500, 600)),
    ErrorRule(Transient, status=0),  # the SDK's own transport failure (SSL)
    ErrorRule(Transient, code=CONNECTION),  # refused, dropped, timed out
)

# What a person reads for each kind of failure (``Advice``).
WORDS: dict[Failure, tuple[str, str]] = {
    Failure.CREDENTIALS: (
        "HubSpot refused the access token ({reason})",
        "set BRIDGE_HUBSPOT__ACCESS_TOKEN to the private app's current access token",
    ),
    Failure.PERMISSION: (
        "HubSpot refused {operation} ({reason})",
        "grant the private app the scopes config/hubspot-scopes.txt lists for your tier "
        "(`bridge check --crm` compares them)",
    ),
    Failure.UNAVAILABLE: (
        "HubSpot unreachable at {where} ({reason})",
        "check the network and https://status.hubspot.com, or try again later "
        "(BRIDGE_HUBSPOT__GIVE_UP_AFTER_SECONDS sets how long the bridge keeps trying)",
    ),
}

_SDK_FAILURES = (ContactsApiException, PrefsApiException, PropertiesApiException)
_NO_ANSWER = (urllib3.exceptions.HTTPError, httpx.TransportError)

T = TypeVar("T")
Reply = tuple[Any, int, Mapping[str, str]]
"""What an SDK ``*_with_http_info`` method returns: data, status, headers."""

log = get_logger(__name__)


@dataclass(frozen=True)
class HubSpotLimits:
    """Where pacing starts: the published limits of a Free/Starter private app.

    The burst limit then follows HubSpot's headers; search sends none, so its limit stays
    as configured. Both windows are the private app's, shared by every adapter in the
    process that holds its token (``bridge.adapters.pacing``). ``margin`` holds each window
    a little longer than HubSpot does, because our clock starts when a call leaves and
    HubSpot's when it arrives: without it, jitter alone would earn 429s.
    """

    burst_max: int = 100
    burst_seconds: float = 10.0
    search_max: int = 5
    search_seconds: float = 1.0
    margin: float = 0.03
    min_margin_seconds: float = 0.05

    def padded(self, seconds: float) -> float:
        return seconds + max(seconds * self.margin, self.min_margin_seconds)


def unique_addresses(emails: Iterable[str]) -> list[str]:
    """Normalised, blank ones dropped, first occurrence kept: what HubSpot is asked about."""
    return list(dict.fromkeys(normalise_email(e) for e in emails if e.strip()))


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def failures(errors: Iterable[Mapping[str, Any]] | None, *keys: str) -> dict[str, str]:
    """A 207's per-input errors: the redacted message by each input its ``context`` names."""
    found: dict[str, str] = {}
    for error in errors or []:
        context = error.get("context") or {}
        for key in keys:
            for value in context.get(key) or []:
                found[str(value)] = redact_text(str(error.get("message") or ""))
    return found


class _HttpFailure(Exception):
    """A non-2xx answer on the httpx path, in the shape SDK exceptions have."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.status = response.status_code
        self.body = response.text
        self.headers = response.headers


def _number(headers: Mapping[str, str], name: str) -> float | None:
    try:
        return float(headers[name])
    except (KeyError, TypeError, ValueError):
        return None


def _describe(body: str | bytes | None, status: int | None) -> tuple[str | None, str, list[str]]:
    """The error code (429 ``policyName``, else ``category``), message and the scopes a
    ``MISSING_SCOPES`` names (``context.missingScopes``, or as seen in the wild
    ``errors[].context.requiredGranularScopes``) of an error body."""
    try:
        parsed = json.loads(body or "")
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        return None, "", []
    code = parsed.get("policyName") if status == 429 else parsed.get("category")
    contexts = [parsed.get("context")] + [e.get("context") for e in parsed.get("errors") or []]
    scopes = [
        str(scope)
        for context in contexts
        if isinstance(context, dict)
        for key in ("missingScopes", "requiredGranularScopes")
        for scope in context.get(key) or []
    ]
    message = str(parsed.get("message") or "")
    return (str(code) if code else None), message, list(dict.fromkeys(scopes))


class Transport:
    """The SDK API objects and the v4 HTTP client, shared by every call of one adapter, and
    the limiters, shared by every adapter of the same private app in the process."""

    def __init__(
        self, settings: HubSpotSettings, limits: HubSpotLimits, attempts: int, timeout: float
    ) -> None:
        if settings.access_token is None:
            raise ConfigError(
                [
                    "hubspot.access_token: not set; set BRIDGE_HUBSPOT__ACCESS_TOKEN to a private "
                    "app token"
                ]
            )
        self._token = settings.access_token
        token = self._token.get_secret_value()
        base = settings.base_url.rstrip("/")
        self.base_url = base
        self.advice = Advice(base, WORDS)
        self.give_up_after = settings.give_up_after_seconds
        # A connection that takes longer than the whole retry budget is not worth waiting for.
        self.timeout = (min(timeout, self.give_up_after), timeout)
        client = HubSpot(access_token=token, host=base, base_url=base, retry=Retry(total=0))
        # Each attribute access builds a new ApiClient and connection pool: take each once.
        self.basic = client.crm.contacts.basic_api
        self.batch = client.crm.contacts.batch_api
        self.search = client.crm.contacts.search_api
        self.properties = client.crm.properties.core_api
        self.status = client.communication_preferences.status_api
        self._http = httpx.Client(
            base_url=base,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "consent-bridge"},
            timeout=httpx.Timeout(timeout, connect=self.timeout[0]),
        )
        # The SDK logs whole response bodies at DEBUG; names would slip past the redactor.
        logging.getLogger("hubspot").setLevel(logging.INFO)
        self.limits = limits
        self.attempts = attempts
        # HubSpot counts per private app, that is per token (docs/vendors/hubspot.md).
        account = f"{VENDOR} {base} {pacing.fingerprint(token)}"
        self.burst_limiter = pacing.limiter(
            f"{account} burst", limits.burst_max, limits.padded(limits.burst_seconds)
        )
        self.search_limiter = pacing.limiter(
            f"{account} search", limits.search_max, limits.padded(limits.search_seconds)
        )
        # What HubSpot's headers last said: the burst window's length, the day's quota.
        self._burst_seconds = limits.burst_seconds
        self._daily: Allowance | None = None

    def close(self) -> None:
        """Close the v4 client and each SDK API's connections. The SDK's own ``close`` stops
        only its thread pool, and urllib3 2's ``PoolManager.clear`` forgets its pools
        without closing them: each pool is closed here."""
        self._http.close()
        for api in (self.basic, self.batch, self.search, self.properties, self.status):
            manager = api.api_client.rest_client.pool_manager
            for key in manager.pools.keys():  # noqa: SIM118 (the container refuses iteration)
                pool = manager.pools.get(key)
                if pool is not None:
                    pool.close()
            manager.clear()

    def sdk(
        self,
        operation: str,
        method: Callable[..., Reply],
        *args: Any,
        search: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Call an SDK ``*_with_http_info`` method; search paces on its own limiter."""
        send = partial(method, *args, _request_timeout=self.timeout, **kwargs)
        return self.call(operation, send, search=search)

    def request(
        self, operation: str, method: str, path: str, body: Any = None, **params: str
    ) -> Any:
        """Call communication preferences v4 (or another path the SDK does not wrap) over
        ``httpx``; a batch's 207 (partial) is an answer, not an error."""
        return self.call(operation, partial(self._send, method, path, body, params))

    def _send(self, method: str, path: str, body: Any, params: dict[str, str]) -> Reply:
        response = self._http.request(method, path, json=body, params=params)
        if not response.is_success:
            raise _HttpFailure(response)
        return response.json(), response.status_code, response.headers

    def token_scopes(self) -> frozenset[str] | None:
        """The scopes HubSpot says this private-app token holds; None when it will not say
        (another kind of token, or an endpoint that refuses). The token goes in the body, to
        the host its header already reaches."""
        try:
            key = {"tokenKey": self._token.get_secret_value()}
            body = self.request("token_info", "POST", TOKEN_INFO, key)
        except (Permanent, NotFound):
            return None
        scopes = body.get("scopes") if isinstance(body, dict) else None
        return frozenset(map(str, scopes)) if isinstance(scopes, list) else None

    def call(self, operation: str, send: Callable[[], Reply], *, search: bool = False) -> Any:
        """Send once per attempt, paced and counted; retry only what may be retried.

        Every operation sent through here is idempotent or made so by the caller (a repeated
        subscribe is refused, not applied twice), which is what ``retrying`` requires.
        """
        limiter = self.search_limiter if search else self.burst_limiter

        def once() -> Any:
            place = limiter.acquire()
            ADAPTER_CALLS.labels(VENDOR, operation).inc()
            try:
                data, _status, headers = send()
            except (*_SDK_FAILURES, _HttpFailure, *_NO_ANSWER) as failure:
                limiter.answered(place)
                error = self._error(operation, failure, search)
                ADAPTER_ERRORS.labels(VENDOR, type(error).__name__).inc()
                log.debug("hubspot.call_failed", operation=operation, error=str(error))
                # Not chained: the vendor's exception carries bodies with personal data.
                raise error from None
            limiter.answered(place)
            self._observe(headers)
            return data

        return retrying(once, attempts=self.attempts, give_up_after=self.give_up_after)

    def _observe(self, headers: Mapping[str, str]) -> None:
        daily = _number(headers, "X-HubSpot-RateLimit-Daily")
        daily_left = _number(headers, "X-HubSpot-RateLimit-Daily-Remaining")
        if daily and daily_left is not None:  # private apps only: OAuth callers get none
            self._daily = Allowance(DAILY, int(daily - daily_left), int(daily))
        remaining = _number(headers, "X-HubSpot-RateLimit-Remaining")
        if remaining is None:
            return
        limit = _number(headers, "X-HubSpot-RateLimit-Max")
        interval_ms = _number(headers, "X-HubSpot-RateLimit-Interval-Milliseconds")
        if interval_ms:
            self._burst_seconds = interval_ms / 1000
        self.burst_limiter.observe(
            int(remaining),
            int(limit) if limit else None,
            self.limits.padded(interval_ms / 1000) if interval_ms else None,
        )

    def allowances(self) -> list[Allowance]:
        """The app's burst window as pacing counts it (HubSpot's last ``Remaining`` and the
        calls since, from every adapter of the app in this process), and the account's daily
        quota as the last answer carrying it said. Search's window is left out: HubSpot
        reports nothing of it."""
        limiter = self.burst_limiter
        burst = Allowance(BURST, limiter.counted(), limiter.max_calls, self._burst_seconds)
        return [burst] if self._daily is None else [burst, self._daily]

    def _error(self, operation: str, failure: Exception, search: bool) -> AdapterError:
        """Map any failure through ``ERRORS``; the message carries no personal data."""
        status: int | None = None
        code: str | None = CONNECTION
        message = type(failure).__name__
        headers: Mapping[str, str] = {}
        scopes: list[str] = []
        reason = no_answer(failure)
        if not isinstance(failure, _NO_ANSWER):
            status = getattr(failure, "status", None)
            headers = getattr(failure, "headers", None) or {}
            code, message, scopes = _describe(getattr(failure, "body", None), status)
            self._observe(headers)
            reason = (code or f"HTTP {status}") + (f": {', '.join(scopes)}" if scopes else "")
        rule = rule_for(ERRORS, status, code)
        if status == 429 and code == DAILY:
            message = "daily API limit used up; calls resume after midnight, portal time"
        text = f"{operation}: {status or 'no answer'} {code or ''}: {redact_text(message)}"
        text = text[:MAX_MESSAGE]
        if rule.error is RateLimited:
            retry_after = self._retry_after(status, headers, search)
            error: AdapterError = RateLimited(HUBSPOT, text, retry_after, failure=rule.means())
        else:
            error = rule.error(HUBSPOT, text, failure=rule.means())
        error.code = None if code == CONNECTION else code
        return self.advice.apply(error, operation, reason)

    def _retry_after(
        self, status: int | None, headers: Mapping[str, str], search: bool
    ) -> float | None:
        """A burst 429 clears within one window; HubSpot sends no Retry-After for it."""
        if status == 429:
            return (self.search_limiter if search else self.burst_limiter).per_seconds
        stated = _number(headers, "Retry-After")
        if status == 423:
            return max(stated or 0.0, LOCKED_WAIT)
        return stated
