"""The console's Re-appeared page: erased people found in a CRM again (a form fill, a rep
typing them in), where and when; a scan as ``bridge requests --reappeared`` runs it, and
"Re-erase" erasing such a person again in one action, as the sync does when
``erasure.reerase_reappeared`` is on."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse

from bridge import audit
from bridge.adapters.base import AdapterError
from bridge.adapters.registry import VENDORS
from bridge.errors import BridgeError
from bridge.model import AuditEvent
from bridge.runtime.wiring import Wiring
from bridge.services.erasure import Erasure
from bridge.services.operators import actor, allows
from bridge.services.watch import Watch
from bridge.store.records import all_reappearances
from bridge.web.console.auth import Session, require
from bridge.web.console.render import page

router = APIRouter()
NOTICES = {
    "scanned": "Scan done: every CRM read for what changed since the last scan.",
    "reerased": "Erased again: the request is linked in the list.",
    "already": "That person was erased again already: the request is linked in the list.",
}
Viewer = Annotated[Session, Depends(require("viewer"))]
Operator = Annotated[Session, Depends(require("operator"))]


@router.get("/reappeared")
def reappeared(request: Request, session: Viewer, done: str = "", flagged: str = "") -> Response:
    notice = NOTICES.get(done, "")
    if done == "scanned" and flagged.isdigit():
        count = int(flagged)
        notice += f" {count} new re-appearance{'s' if count != 1 else ''} found."
    return _page(request, session, notice=notice)


@router.post("/reappeared/scan")
def scan(request: Request, session: Operator) -> Response:
    """What ``bridge requests --reappeared`` does: read what changed, flag who came back
    (erasing them again if so configured). Audited with the operator and the count."""
    wiring: Wiring = request.app.state.wiring
    erasure = wiring.erasure()
    again = erasure if wiring.settings.erasure.reerase_reappeared else None
    try:
        flagged = Watch(erasure.store, erasure.key, again).scan(erasure.adapters)
    except AdapterError as error:
        return _page(request, session, 502, error=error.line())
    event = AuditEvent(
        actor=actor(session.account.name),
        action="erasure.reappeared_scan",
        outcome="done",
        details={"flagged": len(flagged)},
    )
    audit.record(erasure.store, event)
    return _back(request, f"done=scanned&flagged={len(flagged)}")


@router.post("/reappeared/{reappearance}/reerase")
def reerase(request: Request, session: Operator, reappearance: str) -> Response:
    """Erase the person again, every system: a request whose trigger names the operator
    (audited as its ``erasure.requested``), linked to the re-appearance."""
    if not reappearance.isdigit() or len(reappearance) > 18:
        return _page(request, session, 404, error="There is no such re-appearance.")
    erasure = _erasure(request)
    watch = Watch(erasure.store, erasure.key, erasure)
    try:
        _, new = watch.erase_again(int(reappearance), actor(session.account.name))
    except AdapterError as error:
        return _page(request, session, 502, error=error.line())
    except BridgeError as refused:
        text = str(refused)
        return _page(request, session, 409, error=text[:1].upper() + text[1:] + ".")
    return _back(request, "done=reerased" if new else "done=already")


def _erasure(request: Request) -> Erasure:
    wiring: Wiring = request.app.state.wiring
    return wiring.erasure()


def _page(
    request: Request, session: Session, status: int = 200, *, error: str = "", notice: str = ""
) -> Response:
    """Every re-appearance, newest first."""
    wiring: Wiring = request.app.state.wiring
    found = all_reappearances(wiring.store())[::-1]
    return page(
        request, "reappeared.html", session, status, error=error, notice=notice, found=found,
        automatic=wiring.settings.erasure.reerase_reappeared,
        titles={name: vendor.title for name, vendor in VENDORS.items()},
        can_act=allows(session.account.role, "operator"),
    )  # fmt: skip


def _back(request: Request, query: str) -> Response:
    return RedirectResponse(f"{request.scope.get('root_path', '')}/reappeared?{query}", 303)
