"""The console's Retention page: who the rules purge (``bridge purge --preview``), and the
purge itself, applied only when two operators agree: one proposes what the preview shows,
another approves it, and it is applied only if that is still who is due."""

from __future__ import annotations

import re
from collections import Counter
from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import RedirectResponse

from bridge.adapters.base import AdapterError
from bridge.adapters.registry import VENDORS
from bridge.errors import ConfigError
from bridge.runtime.wiring import Wiring
from bridge.services.erasure import COMPLETED
from bridge.services.operators import allows
from bridge.services.retention import PurgeRefused, Retention, RetentionReport, digest
from bridge.web.console.auth import Session, require
from bridge.web.console.render import page

router = APIRouter()
MAX_DAYS = 3650
PROPOSAL = re.compile(r"[0-9a-f]{32}")
DIGEST = re.compile(r"[0-9a-f]{64}")
NOTICES = {
    "proposed": "Purge proposed. Another operator must approve it before anyone is erased.",
    "applied": "Purge approved and applied: its erasure requests are listed with the proposal.",
    "unfinished": "Purge approved and applied, but some erasure requests did not finish; "
    "the daemon tries them again (see Requests).",
    "withdrawn": "Proposal withdrawn.",
}
Viewer = Annotated[Session, Depends(require("viewer"))]
Operator = Annotated[Session, Depends(require("operator"))]


@router.get("/retention")
def retention_page(
    request: Request, session: Viewer, within: str = "60", done: str = ""
) -> Response:
    days = _days(within)
    if days is None:
        return _page(request, session, 60, 400, error=_BAD_DAYS)
    return _page(request, session, days, notice=NOTICES.get(done, ""))


@router.post("/retention/propose")
def propose(
    request: Request,
    session: Operator,
    within: Annotated[str, Form(max_length=10)] = "",
    seen: Annotated[str, Form(alias="digest", max_length=64)] = "",
) -> Response:
    days = _days(within)
    if days is None or not DIGEST.fullmatch(seen):
        why = "The form did not say what the preview showed; reload the page."
        return _page(request, session, 60 if days is None else days, 400,
                     error=_BAD_DAYS if days is None else why)  # fmt: skip
    try:
        _retention(request).propose(timedelta(days=days), seen, session.account.name)
    except PurgeRefused as refused:
        return _page(request, session, days, 409, error=_sentence(refused))
    except AdapterError as error:
        return _page(request, session, days, 502, error=error.line())
    return _back(request, days, "proposed")


@router.post("/retention/proposals/{proposal}/approve")
def approve(request: Request, session: Operator, proposal: str) -> Response:
    if not PROPOSAL.fullmatch(proposal):
        return _page(request, session, 60, 404, error="There is no such proposal.")
    wiring: Wiring = request.app.state.wiring
    erasure = wiring.erasure()
    try:
        report = _retention(request).approve(proposal, session.account.name, erasure)
    except PurgeRefused as refused:
        return _page(request, session, 60, 409, error=_sentence(refused))
    except AdapterError as error:
        return _page(request, session, 60, 502, error=error.line())
    try:  # as `bridge purge --apply` does; what does not finish now, the daemon finishes
        erasure.run_many(report.requests, wait_seconds=0)
    except AdapterError:
        return _back(request, 60, "unfinished")
    views = [erasure.view(request_id) for request_id in report.requests]
    finished = all(view["status"] == COMPLETED for view in views)
    return _back(request, 60, "applied" if finished else "unfinished")


@router.post("/retention/proposals/{proposal}/withdraw")
def withdraw(request: Request, session: Operator, proposal: str) -> Response:
    if not PROPOSAL.fullmatch(proposal):
        return _page(request, session, 60, 404, error="There is no such proposal.")
    try:
        _retention(request).withdraw(proposal, session.account.name)
    except PurgeRefused as refused:
        return _page(request, session, 60, 409, error=_sentence(refused))
    return _back(request, 60, "withdrawn")


_BAD_DAYS = f"“Within” is a number of days from 0 to {MAX_DAYS}."


def _days(text: str) -> int | None:
    text = text.strip()
    if not text.isdigit() or int(text) > MAX_DAYS:
        return None
    return int(text)


def _retention(request: Request) -> Retention:
    wiring: Wiring = request.app.state.wiring
    return wiring.retention()


def _page(
    request: Request,
    session: Session,
    within: int,
    status: int = 200,
    *,
    error: str = "",
    notice: str = "",
) -> Response:
    """The preview for ``within`` days, the proposals, and ``error`` or ``notice``."""
    context: dict[str, Any] = {
        "within": within, "error": error, "notice": notice, "rules": "", "proposals": [],
        "preview": None, "can_act": allows(session.account.role, "operator"),
    }  # fmt: skip
    try:
        retention = _retention(request)
        context["proposals"] = retention.proposals()
        context["preview"] = _preview(retention.preview(timedelta(days=within)))
    except ConfigError as unset:
        context["rules"] = str(unset)
    except AdapterError as failed:
        context["error"] = " ".join(filter(None, (error, failed.line())))
        status = max(status, 502)
    return page(request, "retention.html", session, status, **context)


def _preview(report: RetentionReport) -> dict[str, Any]:
    """The preview as the page shows it: those due now (what a purge erases, and the digest
    a proposal names them by), those falling due later in the window, and the counts."""
    due_now = {c.ref for c in report.due_now}
    warning = {c.ref: c.verdict.rule.warning_days for c in report.candidates}
    people = []
    for item in report.as_dict()["due"]:
        due_on = date.fromisoformat(item["due_on"])
        warned_from = due_on - timedelta(days=warning[item["subject_ref"]])
        now, warned = item["subject_ref"] in due_now, warned_from <= report.today
        people.append(item | {"now": now, "warned_from": warned_from, "warned": warned})
    unlinked = {r["system"] for item in people for r in item["records"] if not r["url"]}
    return {
        "today": report.today,
        "horizon": report.today + timedelta(days=report.within_days),
        "due": [item for item in people if item["now"]],
        "coming": [item for item in people if not item["now"]],
        "by_rule": sorted(Counter(item["rule"] for item in people if item["now"]).items()),
        "digest": digest(report.due_now),
        "titles": {name: vendor.title for name, vendor in VENDORS.items()},
        "hints": [VENDORS[s].link_hint for s in sorted(unlinked) if s in VENDORS],
    }


def _back(request: Request, within: int, done: str) -> Response:
    base = request.scope.get("root_path", "")
    return RedirectResponse(f"{base}/retention?within={within}&done={done}", 303)


def _sentence(error: Exception) -> str:
    text = str(error)
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")
