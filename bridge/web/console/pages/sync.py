"""The console's Sync page: the last runs with their counts, the changes left to the person
(``needs_self_service``), and "Plan now": a dry run, recorded and audited in the operator's
name, whose planned changes are shown and none applied."""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, Response

from bridge.adapters.base import AdapterError
from bridge.errors import BridgeError
from bridge.runtime.wiring import Wiring
from bridge.services.operators import actor, allows
from bridge.services.plan import NEEDS_SELF_SERVICE
from bridge.services.reconcile import SyncReport, crm_error
from bridge.store import sync as sync_rows
from bridge.web.console.auth import Session, require
from bridge.web.console.render import page

router = APIRouter()
RUNS = 20
AWAITING = 200  # the newest shown; the page says how many there are in all
Viewer = Annotated[Session, Depends(require("viewer"))]
Operator = Annotated[Session, Depends(require("operator"))]
# One plan at a time per process: it reads every CRM through the console's own adapters.
_planning = threading.Lock()


@router.get("/sync")
def sync_page(request: Request, session: Viewer) -> Response:
    return _page(request, session)


@router.post("/sync/plan")
def plan_now(
    request: Request, session: Operator, full: Annotated[str, Form(max_length=10)] = ""
) -> Response:
    if full not in ("", "on"):
        return _page(request, session, 400, error="Full is a checkbox: ticked or not.")
    if not _planning.acquire(blocking=False):
        return _page(request, session, 409, error="A plan is being made; try again shortly.")
    wiring: Wiring = request.app.state.wiring
    trigger = actor(session.account.name)
    try:
        report = wiring.reconciler().sync(full=full == "on", dry_run=True, trigger=trigger)
    except AdapterError as error:
        return _page(request, session, 502, error=_failure(error))
    except BridgeError as error:  # no CRM configured, a key missing: the message says which
        return _page(request, session, 409, error=str(error))
    finally:
        _planning.release()
    return _page(request, session, report=report)


def _page(
    request: Request,
    session: Session,
    status: int = 200,
    error: str = "",
    report: SyncReport | None = None,
) -> Response:
    wiring: Wiring = request.app.state.wiring
    store = wiring.store()
    waiting, awaiting = sync_rows.writes_with_outcome(store, NEEDS_SELF_SERVICE, AWAITING)
    return page(
        request, "sync.html", session, status,
        runs=sync_rows.runs(store, RUNS), waiting=waiting, awaiting=awaiting, error=error,
        report=report, can_plan=allows(session.account.role, "operator"),
    )  # fmt: skip


def _failure(error: AdapterError) -> str:
    """What the operator reads: the adapter's own words and fix, or the error's class and
    vendor code; never the vendor's message, which may quote a value."""
    said: dict[str, Any] = crm_error(error)
    code = f" (vendor code {said['code']})" if said["code"] else ""
    what = said["summary"] or f"{error.system}: {said['error']}, {said['failure']}"
    fix = f"; {error.fix}" if error.fix else ""
    return f"The plan failed: {what}{code}{fix}. The run is listed below."
