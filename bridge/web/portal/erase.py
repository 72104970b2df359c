"""Asking to be forgotten: what an erasure would take and what a legal hold keeps (and why),
the request once confirmed (origin ``portal:<uuid>``, trigger ``portal``), and its status
page, reached by the signed link the confirmation email holds: while the request is open,
its dates and each CRM's progress; once closed, only its receipt.

An erasure follows a record's other addresses to the records holding them; so a person whose
records hold an address they have not proved proves it first, or the erasure would reach
further than what they proved.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Request, Response

from bridge.adapters.base import AdapterError, ErasureMode
from bridge.errors import BridgeError
from bridge.logs import get_logger
from bridge.services.erasure import CLOSED, COMPLETED, Erasure
from bridge.services.held import Held, held
from bridge.services.proofs import ACTOR, PortalSession
from bridge.web.portal import emails
from bridge.web.portal.render import language, page, redirect
from bridge.web.portal.session import Portal, Refused, acting_on, portal_of, signed_in

router = APIRouter()
log = get_logger("bridge.portal")
SignedIn = Annotated[PortalSession, Depends(signed_in)]
Addresses = Annotated[list[str], Form(max_length=320)]
TRIGGER = ACTOR  # a request's trigger, as the console's origin() reads it
MODE: ErasureMode = "delete"  # as `bridge erase`: a legal hold turns it into anonymising or keeping
REQUEST = "erasure request"  # what a status link's signature is for


@router.get("/erase")
def erase_form(request: Request, session: SignedIn) -> Response:
    portal = portal_of(request)
    found = _held(portal, session.emails)
    planned: list[dict[str, Any]] = []
    if not found.unproved:
        planned = [
            {"system": str(target.system), "object_type": target.object_type,
             "record_id": target.id, "hold": hold}
            for target, hold in portal.wiring.erasure().dry_run(list(session.emails))
        ]  # fmt: skip
    return page(request, "erase.html", held=found, planned=planned)


@router.post("/erase")
def erase(
    request: Request,
    session: SignedIn,
    tasks: BackgroundTasks,
    address: Addresses = [],  # noqa: B006 (FastAPI copies a default)
) -> Response:
    """The request stored and planned (its steps are the daemon's), the confirmation on its
    way to every proved address, and the browser on the status page."""
    asked = acting_on(session, address)
    portal = portal_of(request)
    mailer = portal.wiring.mailer()
    emails.ready(portal.settings, mailer)
    if _held(portal, asked).unproved:
        raise Refused("unproved_linked", 403)
    erasure = portal.wiring.erasure()
    origin = f"{TRIGGER}:{uuid.uuid4().hex}"
    request_id = erasure.submit(asked, MODE, None, trigger=TRIGGER, origin=origin)
    try:
        erasure.plan([request_id])
    except (AdapterError, BridgeError) as error:  # stored: the daemon plans it on its next try
        log.warning(
            "portal.erasure_not_planned_yet", request=request_id, error=type(error).__name__
        )
    token = portal.seal(request_id, REQUEST)
    due = datetime.fromisoformat(erasure.view(request_id)["due_at"])
    for to in session.emails:
        message = emails.erasure_received(portal.settings, language(request), to, token, due)
        tasks.add_task(emails.send, mailer, message, portal.key)
    return redirect(request, f"/requests/{token}")


@router.get("/requests/{token}")
def status(request: Request, token: str) -> Response:
    """No session needed: the link is the key. Open, the request's progress; closed, its
    receipt alone."""
    portal = portal_of(request)
    request_id = portal.unseal(token, REQUEST) if len(token) <= 200 else None
    erasure = portal.wiring.erasure()
    view = _view(erasure, request_id)
    if view is None:
        raise Refused("no_request", 404)
    receipt = erasure.receipt(view["id"]) if view["status"] == COMPLETED else None
    closed = view["status"] in CLOSED
    return page(request, "status.html", view=None if closed else view, receipt=receipt,
                request_id=view["id"], state=view["status"], when=_moments(view))  # fmt: skip


def _view(erasure: Erasure, request_id: object) -> dict[str, Any] | None:
    if not isinstance(request_id, str):
        return None
    try:
        return erasure.view(request_id)
    except BridgeError:
        return None


def _moments(view: dict[str, Any]) -> dict[str, datetime | None]:
    return {
        name: datetime.fromisoformat(view[key]) if view[key] else None
        for name, key in (("received", "received_at"), ("due", "due_at"),
                          ("completed", "completed_at"))
    }  # fmt: skip


def _held(portal: Portal, addresses: Sequence[str]) -> Held:
    settings = portal.settings
    return held(portal.wiring.adapters(), addresses, settings.purposes, portal.key)
