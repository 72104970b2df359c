"""How the Dynamics adapter talks to Dataverse: one httpx client, one MSAL app, one choke point.

:meth:`Transport.call` gets the token, paces against the service protection limit, maps
every answer through ``ERRORS`` and retries what may pass; :meth:`Transport.batch` sends many
requests as ``$batch`` parts with ``odata.continue-on-error`` and sends again only the parts
that failed for a passing reason. The facts behind each choice: docs/vendors/dynamics.md.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import requests

from bridge.adapters.base import (
    AdapterError,
    Advice,
    Allowance,
    ErrorRule,
    Failure,
    NotFound,
    Permanent,
    RateLimited,
    TokenExpired,
    Transient,
    chunks,
    no_answer,
    retrying,
    rule_for,
)
from bridge.adapters.dynamics import DYNAMICS
from bridge.adapters.dynamics.settings import DynamicsSettings
from bridge.adapters.pacing import fingerprint, limiter
from bridge.errors import ConfigError
from bridge.logs import redact_text
from bridge.metrics import ADAPTER_CALLS, ADAPTER_ERRORS

API_ROOT = "/api/data/v9.2/"
WINDOW_SECONDS = 300.0  # the service protection limits' sliding window
PAGE_SIZE = 5000  # the most ``odata.maxpagesize`` may ask for
BATCH_SIZE = 1000  # the most requests one ``$batch`` may carry
CONNECTION = "CONNECTION"  # the code of a call that got no (readable) HTTP answer
DOES_NOT_EXIST = "0x80040217"
EXPIRED_VERSION_STAMP = "0x80044352"
NOT_A_MEMBER = "0x80072560"
LIMIT_CODES = ("0x80072322", "0x80072321", "0x80072326")  # requests, execution time, concurrency
MAX_MESSAGE = 300
QUERY_SAFE = "(),'=/:*"  # OData's own punctuation, left readable in the URL
HEADERS = {
    "Accept": "application/json",
    "OData-MaxVersion": "4.0",
    "OData-Version": "4.0",
    "If-None-Match": "null",
}

# The one table: what each Dataverse answer means to the bridge. The code is often empty and
# unrelated to the status (docs/vendors/dynamics.md, "Web API basics"): status first, a few
# codes where they say more. The first matching row wins.
ERRORS: tuple[ErrorRule, ...] = (
    ErrorRule(RateLimited, status=429),  # any of the three service protection limits
    ErrorRule(Transient, code=CONNECTION),
    ErrorRule(Transient, status=range(500, 600)),
    ErrorRule(NotFound, code=DOES_NOT_EXIST),
    # A delta link past its expiry; the Web API's answer is not documented, this is the SDK's
    # code (docs/vendors/dynamics.md, "Change tracking", and "Not verified").
    ErrorRule(TokenExpired, code=EXPIRED_VERSION_STAMP),
    ErrorRule(NotFound, status=404),  # If-Match: * on a missing row answers 404 with code ""
    ErrorRule(Permanent, code=NOT_A_MEMBER, failure=Failure.CREDENTIALS),
    ErrorRule(Permanent, status=401, failure=Failure.CREDENTIALS),
    ErrorRule(Permanent, status=403, failure=Failure.PERMISSION),
    ErrorRule(Permanent, code="0x80060888", failure=Failure.CONFIGURATION),  # unknown property
    ErrorRule(Permanent, code="0x80048d19", failure=Failure.CONFIGURATION),  # unknown column
    ErrorRule(Permanent, status=range(400, 500)),  # validation, malformed request, 412
)

WORDS: dict[Failure, tuple[str, str]] = {
    Failure.CREDENTIALS: (
        "Dynamics 365 refused the app's credentials for {operation} ({reason})",
        "check BRIDGE_DYNAMICS__TENANT_ID, __CLIENT_ID and __CLIENT_SECRET, and that the app "
        'registration is an application user of the environment (README, "Dynamics 365")',
    ),
    Failure.PERMISSION: (
        "Dynamics 365 refused {operation} ({reason}): the application user's security role "
        "lacks a privilege",
        'give its role the privileges in README, "Dynamics 365"; `bridge check --crm` names '
        "what is missing",
    ),
    Failure.CONFIGURATION: (
        "Dynamics 365 lacks a table or column that {operation} uses ({reason})",
        "create it, or fix the setting naming it (dynamics.lawful_basis_field, due_field, "
        "retention rules, legal holds); `bridge check --crm` names it",
    ),
    Failure.UNAVAILABLE: (
        "Dynamics 365 unreachable at {where} ({reason})",
        "check the network and the environment's state in the Power Platform admin center, "
        "or try again later (BRIDGE_DYNAMICS__GIVE_UP_AFTER_SECONDS sets how long the bridge "
        "keeps trying)",
    ),
}
_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_QUOTED = re.compile(r"'[^']*'")


def sanitise(message: str) -> str:
    """A Dataverse message without the values it may quote (in single quotes); names of
    tables and columns come unquoted or in the ``Microsoft.Dynamics.CRM.<name>`` form, and
    record ids are kept (they are no personal data and help find the row)."""

    def keep_names(match: re.Match[str]) -> str:
        text = match.group(0)
        return text if re.fullmatch(r"'[A-Za-z_][\w.]*'", text) else "'…'"

    first = message.strip().splitlines()[0] if message.strip() else ""
    return redact_text(_QUOTED.sub(keep_names, first))[:MAX_MESSAGE]


def failure(status: int | None, body: Any, operation: str) -> AdapterError:
    """The adapter error an answer maps to, with Dataverse's code and its words (no values)."""
    error_body = body.get("error") if isinstance(body, dict) else None
    code = str(error_body.get("code") or "") if isinstance(error_body, dict) else ""
    message = str(error_body.get("message") or "") if isinstance(error_body, dict) else ""
    rule = rule_for(ERRORS, status, code or None)
    said = sanitise(message) or f"HTTP {status}"
    error = rule.error(DYNAMICS, f"{operation}: {said}", failure=rule.means())
    error.code = code or (f"HTTP {status}" if status else CONNECTION)
    return error


@dataclass(frozen=True)
class Request:
    """One Web API request, sent alone or as a ``$batch`` part; ``path`` is below the API
    root (``contacts(<id>)``) with its query, if any."""

    method: str
    path: str
    body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: Mapping[str, str]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class _Login(requests.Session):
    """MSAL's HTTP client: every call bounded by a timeout (a hung login must end like any
    other call), and with ``base_url`` (the emulator) Entra's URLs keep their path and lose
    their host, since MSAL insists on an https authority it can discover."""

    def __init__(self, base_url: str | None) -> None:
        super().__init__()
        self._base = urlsplit(base_url) if base_url else None

    def request(self, method: str, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        target = url.decode() if isinstance(url, bytes) else url
        if self._base is not None:
            parts = urlsplit(target)
            target = urlunsplit(parts._replace(scheme=self._base.scheme, netloc=self._base.netloc))
        kwargs.setdefault("timeout", 30)
        return super().request(method, target, *args, **kwargs)


class Transport:
    """The connection to one environment, shared by every call the adapter makes."""

    def __init__(self, section: DynamicsSettings, *, attempts: int = 8) -> None:
        missing = [
            name
            for name in ("tenant_id", "client_id", "client_secret", "environment_url")
            if getattr(section, name) is None
        ]
        if missing:
            names = ", ".join(f"BRIDGE_DYNAMICS__{name.upper()}" for name in missing)
            raise ConfigError([f"dynamics: set {names} to connect to Dynamics 365"])
        assert section.environment_url is not None and section.client_id is not None
        self.section = section
        self.environment = section.environment_url.rstrip("/")
        self.api = f"{(section.base_url or self.environment).rstrip('/')}{API_ROOT}"
        self.attempts = attempts
        self.advice = Advice(where=self.environment, words=WORDS)
        self.http = httpx.Client(
            base_url=self.api, headers=HEADERS, timeout=httpx.Timeout(60, connect=10)
        )
        self._msal: Any = None
        self._login = _Login(section.base_url)
        key = f"dynamics:{fingerprint(section.client_id + self.environment)}"
        self.limiter = limiter(key, section.requests_per_window, WINDOW_SECONDS)
        self.calls = 0

    # -- token ------------------------------------------------------------------------------

    def _app(self) -> Any:
        """MSAL's app, made on the first call: making it asks Entra where the token endpoint
        is, a call that may fail like any other. Its HTTP session is ours, to close."""
        if self._msal is None:
            import msal

            section = self.section
            assert section.client_secret is not None
            self._msal = msal.ConfidentialClientApplication(
                section.client_id,
                client_credential=section.client_secret.get_secret_value(),
                authority=f"{section.authority_url.rstrip('/')}/{section.tenant_id}",
                http_client=self._login,
                instance_discovery=False,
            )
        return self._msal

    def _token(self, operation: str) -> str:
        """A bearer token (MSAL serves its cached one until it expires)."""
        from msal.exceptions import MsalServiceError

        try:
            result = self._app().acquire_token_for_client(scopes=[f"{self.environment}/.default"])
        except (requests.RequestException, MsalServiceError, ValueError) as lost:
            # No answer, or one that is no token endpoint's (a 5xx page): it may pass.
            said = str(lost) if isinstance(lost, MsalServiceError) else no_answer(lost)
            error = Transient(DYNAMICS, f"{operation}: no answer from Microsoft Entra ID")
            error.code = CONNECTION
            raise self.advice.apply(error, operation, said) from lost
        if "access_token" in result:
            return str(result["access_token"])
        codes = result.get("error_codes") or []
        code = str(result.get("error") or "refused")
        reason = f"{code}, AADSTS{codes[0]}" if codes else code
        refused = Permanent(
            DYNAMICS,
            f"{operation}: Microsoft Entra ID refused the token ({reason})",
            failure=Failure.CREDENTIALS,
        )
        refused.code = code
        raise self.advice.apply(refused, operation, reason)

    def _forget_token(self) -> None:
        if self._msal is not None:
            self._msal.remove_tokens_for_client()

    # -- one request ------------------------------------------------------------------------

    def _exchange(
        self,
        method: str,
        path: str,
        content: bytes | None,
        headers: Mapping[str, str],
        operation: str,
        places: int = 1,
    ) -> httpx.Response:
        """Send once, a fresh token once if the cached one is refused; ``places`` is how
        many requests it counts for (a ``$batch``: its parts). No mapping of the answer."""
        for fresh in (False, True):
            token = self._token(operation)
            taken = [self.limiter.acquire() for _ in range(places)]
            ADAPTER_CALLS.labels(DYNAMICS, operation).inc()
            self.calls += places
            try:
                response = self.http.request(
                    method,
                    path,
                    content=content,
                    headers={"Authorization": f"Bearer {token}", **headers},
                )
            except httpx.HTTPError as lost:
                ADAPTER_ERRORS.labels(DYNAMICS, "Transient").inc()
                error = Transient(DYNAMICS, f"{operation}: no answer from Dynamics 365")
                error.code = CONNECTION
                raise self.advice.apply(error, operation, no_answer(lost)) from lost
            finally:
                for place in taken:
                    self.limiter.answered(place)
            if response.status_code != 401 or fresh:
                return response
            self._forget_token()  # expired or revoked: one fresh token, then it is an answer
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise_for(self, response: httpx.Response, operation: str) -> None:
        if response.is_success:
            return
        raise self._error(response.status_code, _json(response), response.headers, operation)

    def _error(
        self, status: int, body: Any, headers: Mapping[str, str], operation: str
    ) -> AdapterError:
        error = failure(status, body, operation)
        ADAPTER_ERRORS.labels(DYNAMICS, type(error).__name__).inc()
        if isinstance(error, RateLimited):
            error.retry_after = _seconds(headers.get("Retry-After"))
        return self.advice.apply(error, operation, error.code or "")

    def call(self, request: Request, operation: str) -> Answer:
        """One request, retried while it may pass; its answer, or the error it maps to."""

        headers = dict(request.headers)
        content = None
        if request.body is not None:
            content = json.dumps(request.body).encode()
            headers.setdefault("Content-Type", "application/json")

        def once() -> Answer:
            response = self._exchange(request.method, request.path, content, headers, operation)
            self._raise_for(response, operation)
            return Answer(response.status_code, _json(response), response.headers)

        return retrying(
            once, attempts=self.attempts, give_up_after=self.section.give_up_after_seconds
        )

    def pages(
        self,
        path: str,
        operation: str,
        page_size: int = PAGE_SIZE,
        *,
        delta: list[str] | None = None,
    ) -> Iterator[Any]:
        """Every row of a query, page by page, following ``@odata.nextLink`` unchanged.
        With ``delta`` (a list to fill) the read asks for change tracking, and the list
        gets the ``@odata.deltaLink`` the last page carries: where the next read starts."""
        prefer = f"odata.maxpagesize={page_size}"
        if delta is not None:
            prefer = f"odata.track-changes,{prefer}"
        link: str | None = path
        while link is not None:
            body = self.call(Request("GET", link, headers={"Prefer": prefer}), operation).body
            if not isinstance(body, dict) or not isinstance(body.get("value", []), list):
                raise Permanent(
                    DYNAMICS, f"{operation}: Dynamics 365 answered a query with no rows"
                )
            yield from body.get("value", [])
            link = body.get("@odata.nextLink")
            if delta is not None and link is None and body.get("@odata.deltaLink"):
                delta.append(str(body["@odata.deltaLink"]))

    # -- many requests ----------------------------------------------------------------------

    def batch(self, requests_: Sequence[Request], operation: str) -> list[Answer | AdapterError]:
        """Each request's answer or error, in the order given (:meth:`send`); parts that
        failed for a passing reason (a limit, a 5xx) are sent again, the rest not: only
        idempotent requests belong here (PATCH with ``If-Match: *``, DELETE, GET)."""
        results: list[Answer | AdapterError] = self.send(requests_, operation)
        for _ in range(self.attempts - 1):
            waiting = [i for i, r in enumerate(results) if isinstance(r, RateLimited | Transient)]
            if not waiting:
                break
            self.pause([results[i] for i in waiting])
            again = self.send([requests_[i] for i in waiting], operation)
            for index, answer in zip(waiting, again, strict=True):
                results[index] = answer
        return results

    def send(self, requests_: Sequence[Request], operation: str) -> list[Answer | AdapterError]:
        """Each request's answer or error, in the order given, through ``$batch`` calls of
        up to 1,000 parts that go on past a failed part; a part is sent once."""
        results: list[Answer | AdapterError] = []
        for part in chunks(requests_, BATCH_SIZE):
            results += self._batch_once(part, operation)
        return results

    @staticmethod
    def pause(failed: Sequence[Answer | AdapterError]) -> None:
        """Wait before sending failed parts again: the longest ``Retry-After`` among them,
        else a second."""
        waits = [r.retry_after or 0.0 for r in failed if isinstance(r, RateLimited)]
        time.sleep(max(waits, default=0.0) or 1.0)

    def _batch_once(
        self, requests_: Sequence[Request], operation: str
    ) -> list[Answer | AdapterError]:
        """One ``$batch`` call (retried whole while the call itself fails for a passing
        reason); each part's answer or error."""
        boundary = f"batch_{uuid.uuid4()}"
        body = _batch_body(requests_, boundary, self.api)
        headers = {
            "Content-Type": f'multipart/mixed; boundary="{boundary}"',
            "Prefer": "odata.continue-on-error",
        }

        def once() -> list[Answer]:
            response = self._exchange("POST", "$batch", body, headers, operation, len(requests_))
            self._raise_for(response, operation)
            answers = _batch_answers(response)
            if len(answers) != len(requests_):
                lost = Transient(DYNAMICS, f"{operation}: the batch answered only in part")
                lost.code = CONNECTION
                raise lost
            return answers

        answers = retrying(
            once, attempts=self.attempts, give_up_after=self.section.give_up_after_seconds
        )
        return [a if a.ok else self._error(a.status, a.body, a.headers, operation) for a in answers]

    # -- limits -----------------------------------------------------------------------------

    def allowances(self) -> list[Allowance]:
        """The request limit as this process has spent it (Dataverse's own counters are for
        debugging only: docs/vendors/dynamics.md, "Service protection limits")."""
        if not self.calls:
            return []
        limit = self.limiter.max_calls
        used = min(self.limiter.counted(), limit)
        return [Allowance("Requests per 5 minutes", used, limit, WINDOW_SECONDS)]

    def close(self) -> None:
        self.http.close()
        self._login.close()


def _json(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _seconds(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None


def _batch_body(requests_: Sequence[Request], boundary: str, api: str) -> bytes:
    """A ``$batch`` body: one ``application/http`` part per request, no change sets (each
    request stands alone), absolute URLs."""
    lines: list[str] = []
    for request in requests_:
        lines += [
            f"--{boundary}",
            "Content-Type: application/http",
            "Content-Transfer-Encoding: binary",
            "",
            f"{request.method} {api}{request.path} HTTP/1.1",
        ]
        headers = dict(request.headers)
        if request.body is not None:
            headers["Content-Type"] = "application/json"
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines += ["", json.dumps(request.body) if request.body is not None else ""]
    lines.append(f"--{boundary}--")
    return "\r\n".join(lines).encode()


def _boundary(content_type: str) -> str | None:
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    return match.group(1) if match else None


def _batch_answers(response: httpx.Response) -> list[Answer]:
    """The answers of a ``$batch`` response, in order (change sets flattened)."""
    boundary = _boundary(response.headers.get("content-type", ""))
    if boundary is None:
        return []
    return _parts(response.text.replace("\r\n", "\n"), boundary)


def _parts(text: str, boundary: str) -> list[Answer]:
    end = text.find(f"--{boundary}--")
    pieces = re.split(rf"(?m)^--{re.escape(boundary)}[ \t]*\n", text[: end if end >= 0 else None])
    answers: list[Answer] = []
    for piece in pieces[1:]:
        mime, _, rest = piece.lstrip("\n").partition("\n\n")
        inner = _boundary(mime) if "multipart/mixed" in mime.lower() else None
        if inner is not None:
            answers += _parts(rest, inner)
            continue
        status_line, _, after = rest.lstrip("\n").partition("\n")
        head, _, body = after.partition("\n\n")
        try:
            status = int(status_line.split()[1])
        except (IndexError, ValueError):
            continue
        headers = dict(
            (name.strip(), value.strip())
            for name, _, value in (line.partition(":") for line in head.splitlines())
            if name.strip()
        )
        try:
            parsed = json.loads(body) if body.strip() else None
        except ValueError:
            parsed = None
        answers.append(Answer(status, parsed, headers))
    return answers


def query(path: str, **options: str) -> str:
    """``path`` with OData system query options (``select=`` gives ``$select=``), each value
    percent-encoded: a ``$filter`` may quote an address holding ``+``, ``&`` or ``#``."""
    encoded = "&".join(
        f"${name}={quote(value, safe=QUERY_SAFE)}" for name, value in options.items() if value
    )
    return f"{path}?{encoded}" if encoded else path


def is_guid(value: str) -> bool:
    return _GUID.fullmatch(value) is not None
