"""The console's Requests and New request pages.

The list (filterable, and as CSV) and each request's page show no address: a request is its
id, dates, deadline, steps and audit trail. An operator may retry, extend, cancel one not yet
started, or reveal the addresses an open request holds (audited, shown only in the answer to
that post). New requests are planned first (a dry run, addresses masked), then confirmed;
confirming an erasure stores and plans it and leaves the steps to the daemon, so the page
never waits on a vendor's pace beyond planning.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, cast
from urllib.parse import urlencode

from cryptography.fernet import Fernet, InvalidToken
from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import RedirectResponse

from bridge.adapters.base import AdapterError, ErasureMode
from bridge.audit import derive
from bridge.errors import BridgeError, ConfigError
from bridge.identity import is_email, normalise_email
from bridge.services.erasure import CLOSED, PLANNED, RECEIVED, Erasure, check_reason, days_left
from bridge.services.operators import actor, allows
from bridge.services.rights import export_subject
from bridge.web.console.auth import Session, require
from bridge.web.console.render import page

router = APIRouter()
Viewer = Annotated[Session, Depends(require("viewer"))]
Operator = Annotated[Session, Depends(require("operator"))]

STATUSES = ("received", "planned", "failed", "completed", "cancelled")
KINDS = ("delete", "anonymize")
ORIGINS = ("cli", "webhook", "retention", "portal", "console", "reappeared")
LISTED = 500  # rows on the page; the CSV has them all
MOST_ADDRESSES = 25  # a new request's dry run asks every CRM about each; more: bridge erase
DONE = {
    "retried": "Tried again: planned anew; the daemon runs its steps.",
    "retry_failed": "Tried again, but planning failed (the problem is below); the daemon "
    "tries again later.",
    "extended": "The deadline is extended.",
    "cancelled": "The request is cancelled; the addresses it held are destroyed.",
    "created": "The erasure is stored and planned; the daemon runs it.",
    "unplanned": "The erasure is stored, but the CRMs could not be asked just now; the daemon "
    "plans and runs it when they answer.",
}


def origin(trigger: str) -> str:
    """Who started a request, in the console's words, from its ``trigger``: an operator's
    (``operator:NAME``), the CLI's, a retention rule's, the portal's, the re-appeared watch's
    (``watch``), or a vendor's deletion event (``<system>.<event>``)."""
    if trigger.startswith("operator:"):
        return "console"
    if trigger.startswith("portal"):
        return "portal"
    if trigger == "watch":
        return "reappeared"
    return "webhook" if "." in trigger else trigger


@dataclass(frozen=True)
class Filters:
    status: str = ""
    kind: str = ""
    origin: str = ""
    due_within: str = ""

    def problems(self) -> list[str]:
        problems = [
            f"{name} must be one of {', '.join(allowed)}"
            for name, value, allowed in (
                ("status", self.status, STATUSES),
                ("kind", self.kind, KINDS),
                ("origin", self.origin, ORIGINS),
            )
            if value and value not in allowed
        ]
        days = self.due_within
        if days and not (days.isascii() and days.isdigit() and int(days) <= 3660):
            problems.append("due within must be a number of days, 0 to 3660")
        return problems

    def keep(self, row: dict[str, Any]) -> bool:
        due = self.due_within
        return (
            (not self.status or row["status"] == self.status)
            and (not self.kind or row["mode"] == self.kind)
            and (not self.origin or row["origin"] == self.origin)
            and (not due or (row["days_left"] is not None and row["days_left"] <= int(due)))
        )

    def query(self) -> str:
        return urlencode({k: v for k, v in asdict(self).items() if v})


def _listed(erasure: Erasure, filters: Filters) -> list[dict[str, Any]]:
    """The requests the filters keep, newest first, each with its origin and days left
    (None once closed)."""
    now = erasure.clock()
    rows = [
        {
            **summary,
            "origin": origin(summary["trigger"]),
            "days_left": None if summary["status"] in CLOSED else days_left(summary["due_at"], now),
            "extended": sum(e["months"] for e in summary["extensions"]),
        }
        for summary in reversed(erasure.summaries())
    ]
    return [row for row in rows if filters.keep(row)]


def _filters(status: str = "", kind: str = "", origin: str = "", due_within: str = "") -> Filters:
    """The list's filters, from the query string (the page's and the CSV's alike)."""
    return Filters(status.strip(), kind.strip(), origin.strip(), due_within.strip())


Filtered = Annotated[Filters, Depends(_filters)]


@router.get("/requests")
def requests_page(request: Request, session: Viewer, filters: Filtered, done: str = "") -> Response:
    problems = filters.problems()
    rows = [] if problems else _listed(_erasure(request), filters)
    return page(
        request, "requests.html", session, 400 if problems else 200,
        rows=rows[:LISTED], more=max(0, len(rows) - LISTED), filters=filters,
        statuses=STATUSES, kinds=KINDS, origins=ORIGINS, error="; ".join(problems),
        notice=DONE.get(done, ""),
    )  # fmt: skip


@router.get("/requests.csv")
def requests_csv(request: Request, session: Viewer, filters: Filtered) -> Response:
    """The filtered list for records-keeping: no address, no pseudonym."""
    if filters.problems():  # the page says what is wrong
        return requests_page(request, session, filters)
    erasure = _erasure(request)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "received", "kind", "status", "due", "extended", "decided",
                     "operator", "origin"])  # fmt: skip
    for row in _listed(erasure, filters):
        writer.writerow(
            [row["id"], row["received_at"], row["mode"], row["status"], row["due_at"],
             row["extended"], row["completed_at"] or "", _operator(erasure, row), row["origin"]]
        )  # fmt: skip
    stamp = f"{erasure.clock():%Y-%m-%d}"
    return Response(
        out.getvalue(), media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="requests-{stamp}.csv"'},
    )  # fmt: skip


def _operator(erasure: Erasure, row: dict[str, Any]) -> str:
    """The operator who acted on the request last, or started it; empty if none did."""
    actors = [row["trigger"], *(e["actor"] for e in erasure.trail(row["id"]))]
    operators = [a.removeprefix("operator:") for a in actors if a.startswith("operator:")]
    return operators[-1] if operators else ""


# -- a new request (declared before /requests/{request_id}, which would take "new") --------


@dataclass(frozen=True)
class Asked:
    """What the New request form asks for, checked: the addresses normalised, each once."""

    addresses: list[str]
    action: str
    mode: ErasureMode
    reason: str


AddressesForm = Annotated[str, Form(max_length=20_000)]
WordForm = Annotated[str, Form(max_length=20)]
ReasonForm = Annotated[str, Form(max_length=500)]


def _asked(addresses: str, action: str, mode: str, reason: str) -> Asked:
    """The form's values, or a ConfigError naming each problem: a bad line by its number,
    never its text (it may still be someone's address)."""
    lines = [(n, line.strip()) for n, line in enumerate(addresses.splitlines(), 1)]
    given = [(n, line) for n, line in lines if line]
    problems = []
    if bad := [str(n) for n, line in given if not is_email(line)]:
        problems.append(f"not an email address: line{'s' if len(bad) > 1 else ''} "
                        f"{', '.join(bad[:10])}{' and more' if len(bad) > 10 else ''}")  # fmt: skip
    chosen = list(dict.fromkeys(normalise_email(line) for _, line in given))
    if not given:
        problems.append("give at least one email address, one a line")
    elif len(chosen) > MOST_ADDRESSES:
        problems.append(f"at most {MOST_ADDRESSES} addresses at once; for more, use "
                        "bridge erase --from-file")  # fmt: skip
    if action not in ("erase", "export"):
        problems.append("choose erase or export")
    if mode not in KINDS:
        problems.append("the erasure mode is delete or anonymize")
    try:
        check_reason("the reason", reason)
    except ConfigError as error:
        problems += error.problems
    if problems:
        raise ConfigError(problems)
    return Asked(chosen, action, cast(ErasureMode, mode), reason.strip())


def _new_form(
    request: Request, session: Session, error: str = "", action: str = "", mode: str = ""
) -> Response:
    """The form, again after a problem with the choices kept, never what was typed (an
    address, or a reason refused for holding one)."""
    return page(request, "new_request.html", session, 400 if error else 200, error=error,
                kinds=KINDS, action=action, mode=mode)  # fmt: skip


@router.get("/requests/new")
def new_request(request: Request, session: Operator) -> Response:
    return _new_form(request, session)


@router.post("/requests/new/plan")
def new_request_plan(
    request: Request,
    session: Operator,
    addresses: AddressesForm = "",
    action: WordForm = "erase",
    mode: WordForm = "delete",
    reason: ReasonForm = "",
) -> Response:
    """The dry run: per address (masked), what an erasure would touch, and the holds."""
    try:
        asked = _asked(addresses, action, mode, reason)
    except ConfigError as error:
        return _new_form(request, session, str(error), action, mode)
    erasure = _erasure(request)
    plans: list[tuple[str, list[dict[str, Any]]]] = []
    if asked.action == "erase":
        try:
            for address in asked.addresses:
                planned = erasure.dry_run([address])
                plans.append((address, [
                    {"system": t.system, "object_type": t.object_type, "record_id": t.id,
                     "hold": hold.name if hold else None,
                     "action": hold.action if hold else asked.mode}
                    for t, hold in planned
                ]))  # fmt: skip
        except (AdapterError, BridgeError) as error:
            return _new_form(request, session, f"No plan: {_said(error)}", action, mode)
    sealed = _seal(request, session, asked)
    return page(request, "new_request_plan.html", session, asked=asked, plans=plans,
                systems=sorted(erasure.adapters), sealed=sealed)  # fmt: skip


@router.post("/requests/new")
def new_request_confirm(
    request: Request,
    session: Operator,
    plan: Annotated[str, Form(max_length=40_000)] = "",
) -> Response:
    """Erase: one request per address, stored and planned, then the request's page (the
    list, for several). Export: one JSON document per person, as a download."""
    try:
        asked = _open(request, session, plan)
    except ConfigError as error:
        return _new_form(request, session, str(error))
    wiring = request.app.state.wiring
    by = actor(session.account.name)
    if asked.action == "export":
        key = wiring.settings.require_pseudonym_key()
        try:
            exports = [
                export_subject(wiring.store(), wiring.adapters(), key, [address], actor=by)
                for address in asked.addresses
            ]
        except (AdapterError, BridgeError) as error:
            return _new_form(request, session, f"The export failed: {_said(error)}",
                             asked.action, asked.mode)  # fmt: skip
        body = json.dumps({"exports": exports}, ensure_ascii=False, indent=2, default=str)
        stamp = f"{datetime.now(UTC):%Y%m%d-%H%M%S}"
        return Response(
            body, media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="export-{stamp}.json"'},
        )  # fmt: skip
    erasure = _erasure(request)
    ids = [
        erasure.submit([address], asked.mode, asked.reason or None, trigger=by)
        for address in asked.addresses
    ]
    done = "created"
    try:
        erasure.plan(ids)
    except (AdapterError, BridgeError):  # stored: the daemon plans them when the CRMs answer
        done = "unplanned"
    target = f"/requests/{ids[0]}" if len(set(ids)) == 1 else "/requests"
    return _redirect(request, f"{target}?done={done}")


# -- one request ---------------------------------------------------------------------------


def _found(erasure: Erasure, given: str) -> str | None:
    """The id of the request ``given`` names, or None (malformed, unknown, ambiguous)."""
    if len(given) > 64:
        return None
    try:
        return erasure.resolve(given)
    except BridgeError:
        return None


def _detail(
    request: Request,
    session: Session,
    request_id: str,
    status: int = 200,
    *,
    error: str = "",
    notice: str = "",
    revealed: list[str] | None = None,
) -> Response:
    erasure = _erasure(request)
    view = erasure.view(request_id)
    try:
        receipt: dict[str, Any] | None = erasure.receipt(request_id)
    except BridgeError:
        receipt = None
    left = None if view["status"] in CLOSED else days_left(view["due_at"], erasure.clock())
    return page(
        request, "requests_detail.html", session, status,
        view=view, steps=erasure.steps(request_id), trail=erasure.trail(request_id),
        receipt=receipt, days_left=left, origin=origin(view["trigger"]),
        can_act=allows(session.account.role, "operator"), cancellable=(RECEIVED, PLANNED),
        closed=CLOSED, error=error, notice=notice, revealed=revealed,
    )  # fmt: skip


def _missing(request: Request, session: Session) -> Response:
    """Malformed, unknown or ambiguous: one answer, the id never echoed."""
    return page(request, "requests_missing.html", session, 404)


@router.get("/requests/{request_id}")
def request_page(request: Request, session: Viewer, request_id: str, done: str = "") -> Response:
    found = _found(_erasure(request), request_id)
    if found is None:
        return _missing(request, session)
    return _detail(request, session, found, notice=DONE.get(done, ""))


@router.get("/requests/{request_id}/receipt")
def receipt_download(request: Request, session: Viewer, request_id: str) -> Response:
    erasure = _erasure(request)
    found = _found(erasure, request_id)
    if found is None:
        return _missing(request, session)
    try:
        receipt = erasure.receipt(found)
    except BridgeError as error:
        return _detail(request, session, found, 404, error=str(error))
    return Response(
        json.dumps(receipt, indent=2), media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="receipt-{found[:8]}.json"'},
    )  # fmt: skip


@router.post("/requests/{request_id}/retry")
def retry(request: Request, session: Operator, request_id: str) -> Response:
    """Reopened and planned again now; its steps are the daemon's, so the page answers
    promptly whatever the vendors' pace (the CLI's --retry runs them while it waits)."""
    return _act(request, session, request_id, _retry)


def _retry(erasure: Erasure, request_id: str, by: str) -> str:
    try:
        erasure.retry(request_id, actor=by, run=False)
    except AdapterError:  # the request failed again, its problem kept: the page shows it
        return "retry_failed"
    return "retried"


@router.post("/requests/{request_id}/extend")
def extend(
    request: Request,
    session: Operator,
    request_id: str,
    months: WordForm = "",
    reason: ReasonForm = "",
) -> Response:
    def act(erasure: Erasure, found: str, by: str) -> str:
        if months not in ("1", "2"):
            raise ConfigError(["extend by 1 or 2 months"])
        if not reason.strip():
            raise ConfigError(["give the reasons for the delay: Art. 12(3) asks for them"])
        erasure.extend(found, int(months), reason, actor=by)
        return "extended"

    return _act(request, session, request_id, act)


@router.post("/requests/{request_id}/cancel")
def cancel(
    request: Request, session: Operator, request_id: str, reason: ReasonForm = ""
) -> Response:
    def act(erasure: Erasure, found: str, by: str) -> str:
        erasure.cancel(found, reason, by)
        return "cancelled"

    return _act(request, session, request_id, act)


@router.post("/requests/{request_id}/reveal")
def reveal(request: Request, session: Operator, request_id: str) -> Response:
    """The addresses, in this answer only: never on a page a GET shows."""
    erasure = _erasure(request)
    found = _found(erasure, request_id)
    if found is None:
        return _missing(request, session)
    try:
        emails = erasure.reveal(found, actor(session.account.name))
    except BridgeError as error:
        return _detail(request, session, found, 409, error=str(error))
    return _detail(request, session, found, revealed=emails)


Action = Callable[[Erasure, str, str], str]  # (service, request id, actor) -> notice code


def _act(request: Request, session: Session, request_id: str, act: Action) -> Response:
    """Run an action on the request named, as the operator; then its page with a notice, or
    with the reason it was refused (400: the form; 409: the request's state)."""
    erasure = _erasure(request)
    found = _found(erasure, request_id)
    if found is None:
        return _missing(request, session)
    try:
        done = act(erasure, found, actor(session.account.name))
    except ConfigError as error:
        return _detail(request, session, found, 400, error=str(error))
    except BridgeError as error:
        return _detail(request, session, found, 409, error=str(error))
    return _redirect(request, f"/requests/{found}?done={done}")


def _said(error: AdapterError | BridgeError) -> str:
    """A failure in words for the page: a CRM's with its code and the fix."""
    return error.line() if isinstance(error, AdapterError) else str(error)


PLAN_SECONDS = 15 * 60  # a plan shown longer ago is planned again before it is confirmed


def _sealer(request: Request) -> Fernet:
    secret = request.app.state.wiring.settings.require_pseudonym_key()
    return Fernet(base64.urlsafe_b64encode(derive(secret, "console plans")))


def _seal(request: Request, session: Session, asked: Asked) -> str:
    """What the plan page's Confirm carries: the checked choices, encrypted for this session,
    so the page's HTML holds the addresses only masked."""
    payload = {"session": session.csrf, **asdict(asked)}
    return _sealer(request).encrypt(json.dumps(payload).encode()).decode()


def _open(request: Request, session: Session, sealed: str) -> Asked:
    try:
        payload = json.loads(_sealer(request).decrypt(sealed.encode(), ttl=PLAN_SECONDS))
    except (InvalidToken, ValueError):
        payload = None
    if not isinstance(payload, dict) or payload.pop("session", None) != session.csrf:
        raise ConfigError(["the plan expired or was not made in this session; show it again"])
    return Asked(**payload)


def _erasure(request: Request) -> Erasure:
    erasure: Erasure = request.app.state.wiring.erasure()
    return erasure


def _redirect(request: Request, target: str) -> Response:
    return RedirectResponse(str(request.scope.get("root_path", "")) + target, 303)
