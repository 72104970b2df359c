"""The signed-in person's own page: what every CRM holds on the addresses they proved, read
live (never stored); their consent per purpose, withdrawn or given again through the sync's
own plan and apply (``Reconciler.carry``); corrections, checked against every CRM's limits
before anything is written; and everything held, as JSON or CSV, made on request.

Each post names the addresses it acts on; one the session did not prove is refused (403).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, Response
from starlette.concurrency import run_in_threadpool

from bridge.services.held import BASIS_MEANING, LABELS, export_csv, held
from bridge.services.proofs import ACTOR, PortalSession
from bridge.services.reconcile import ACT_KINDS, PersonAct
from bridge.services.rights import RectifyRefused, export_subject, rectify_subject
from bridge.web.portal.render import page
from bridge.web.portal.session import Refused, acting_on, portal_of, signed_in

router = APIRouter()
SignedIn = Annotated[PortalSession, Depends(signed_in)]
Addresses = Annotated[list[str], Form(max_length=320)]
Word = Annotated[str, Form(max_length=100)]
MOST_CHARACTERS = 255  # a corrected value longer than any CRM's name or phone field


@router.get("/me")
def me(request: Request, session: SignedIn) -> Response:
    portal = portal_of(request)
    settings = portal.settings
    wiring = portal.wiring
    found = held(wiring.adapters(), session.emails, settings.purposes, portal.key)
    return page(request, "me.html", held=found, meaning=BASIS_MEANING)


@router.post("/consent")
def consent(
    request: Request,
    session: SignedIn,
    action: Word = "",
    purpose: Word = "",
    address: Addresses = [],  # noqa: B006 (FastAPI copies a default)
) -> Response:
    """Withdraw or give one purpose, or leave all email, in every CRM at once: the page
    lists each CRM's answer."""
    emails = acting_on(session, address)
    portal = portal_of(request)
    named = next((p for p in portal.settings.purposes if p.id == purpose), None)
    if action not in ACT_KINDS or (action != "unsubscribe_all" and named is None):
        raise Refused("stale_form", 400)
    act = PersonAct(action, named.id if named and action != "unsubscribe_all" else None)
    report = portal.wiring.reconciler().carry(emails, act, actor=ACTOR)
    label = (named.description or named.id) if named else ""
    return page(request, "answers.html", act=act, label=label, answers=report.answers)


@router.get("/correct")
def correct_form(request: Request, session: SignedIn) -> Response:
    return _correct(request, session)


@router.post("/correct")
async def correct(request: Request, session: SignedIn) -> Response:
    """The fields typed in (an empty one is left as it is) written to every record holding a
    proved address, or to none if any CRM could not take one of them."""
    form = await request.form()
    emails = acting_on(session, [str(a) for a in form.getlist("address")])
    allowed = portal_of(request).settings.rectify.fields
    changes = {
        name: str(form.get(name, "")).strip() for name in allowed if str(form.get(name, "")).strip()
    }
    unusable = [
        name for name, value in changes.items()
        if len(value) > MOST_CHARACTERS or not value.isprintable()
    ]  # fmt: skip
    if not changes or unusable:
        return _correct(request, session, 400, problem="unusable", fields=unusable)
    return await run_in_threadpool(_rectify, request, session, emails, changes)


def _rectify(
    request: Request, session: PortalSession, emails: list[str], changes: dict[str, str]
) -> Response:
    portal = portal_of(request)
    wiring = portal.wiring
    allowed = portal.settings.rectify.fields
    try:
        done = rectify_subject(
            wiring.store(), wiring.adapters(), portal.key, emails, changes, allowed,
            actor=ACTOR, linked=False,
        )  # fmt: skip
    except RectifyRefused as refused:
        said = str(refused)
        fields = [name for name in changes if re.search(rf"\b{re.escape(name)}\b", said)]
        return _correct(request, session, 400, problem="refused", fields=fields, said=said)
    return _correct(request, session, records=done["records"], fields=sorted(changes))


def _correct(
    request: Request, session: PortalSession, status: int = 200, **context: Any
) -> Response:
    fields = portal_of(request).settings.rectify.fields
    context = {"problem": "", "fields": [], "said": "", "records": None} | context
    return page(request, "correct.html", status, names=fields, labels=LABELS, **context)


@router.get("/download.json")
def download_json(request: Request, session: SignedIn) -> Response:
    return _download(request, session, "json")


@router.get("/download.csv")
def download_csv(request: Request, session: SignedIn) -> Response:
    return _download(request, session, "csv")


def _download(request: Request, session: PortalSession, kind: str) -> Response:
    """Everything held on the proved addresses (Art. 15, 20), made now, never kept."""
    portal = portal_of(request)
    wiring = portal.wiring
    document = export_subject(
        wiring.store(), wiring.adapters(), portal.key, session.emails, ACTOR, linked=False
    )
    if kind == "json":
        body = json.dumps(document, ensure_ascii=False, indent=2, default=str)
        media = "application/json"
    else:
        body, media = export_csv(document), "text/csv; charset=utf-8"
    stamp = f"{datetime.now(UTC):%Y%m%d-%H%M%S}"
    headers = {
        "Content-Disposition": f'attachment; filename="my-data-{stamp}.{kind}"',
        "Cache-Control": "no-store",
    }
    return Response(body, media_type=media, headers=headers)
