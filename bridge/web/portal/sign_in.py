"""Signing in: an address, then the emailed link (its landing page's button) or the code.

The answer to an address is the same redirect to the code form whatever the address, and
the email goes after it, so neither its words nor its timing say whether anyone holds the
address. A link's landing page (GET) never uses the link up (mail scanners fetch links); its
button does. A proof asked by a signed-in session to add an address adds it to that
session when redeemed in its browser; redeemed elsewhere, it signs that browser in afresh.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Query, Request, Response

from bridge.identity import is_email, normalise_email
from bridge.services.proofs import PortalSession, ProofRefused, Proved
from bridge.web.portal import emails
from bridge.web.portal.render import language, page, redirect
from bridge.web.portal.session import (
    PENDING,
    SESSION,
    Refused,
    current,
    portal_of,
    sign_in_form,
    signed_in,
)

router = APIRouter()
SigningIn = Depends(sign_in_form)
SignedIn = Annotated[PortalSession, Depends(signed_in)]
Address = Annotated[str, Form(max_length=320)]
LinkToken = Annotated[str, Form(max_length=100)]


@router.get("/")
def start(request: Request) -> Response:
    if current(request) is not None:
        return redirect(request, "/me")
    return page(request, "start.html", signing_in=True, error="")


@router.post("/sign-in", dependencies=[SigningIn])
def ask(request: Request, tasks: BackgroundTasks, email: Address = "") -> Response:
    """The code form, and the sign-in email on its way, whatever the address."""
    if not is_email(email):
        return page(request, "start.html", 400, signing_in=True, error="address")
    return _emailed(request, tasks, email, None)


@router.post("/addresses")
def add(
    request: Request, session: SignedIn, tasks: BackgroundTasks, email: Address = ""
) -> Response:
    """Prove another address of the person's: the same email, the same code form."""
    if not is_email(email):
        raise Refused("address", 400)
    if normalise_email(email) in session.emails:
        return redirect(request, "/me")
    return _emailed(request, tasks, email, session.id)


def _emailed(
    request: Request, tasks: BackgroundTasks, email: str, session_id: str | None
) -> Response:
    portal = portal_of(request)
    settings = portal.settings
    mailer = portal.wiring.mailer()
    emails.ready(settings, mailer)
    client = request.client.host if request.client else "unknown"
    issued = portal.proofs.issue(email, client, session_id)
    message = emails.sign_in(settings, language(request), email, issued)
    tasks.add_task(emails.send, mailer, message, portal.key)
    response = redirect(request, "/check")
    pending = portal.seal(issued.proof_id, PENDING, portal.link_seconds)
    portal.set(request, response, PENDING, pending, round(portal.link_seconds))
    return response


@router.get("/check")
def code_form(request: Request) -> Response:
    pending = portal_of(request).unseal(request.cookies.get(PENDING), PENDING)
    return page(request, "check.html", signing_in=True, pending=pending is not None, why="")


@router.post("/check", dependencies=[SigningIn])
def check(request: Request, code: Annotated[str, Form(max_length=20)] = "") -> Response:
    portal = portal_of(request)
    proof = portal.unseal(request.cookies.get(PENDING), PENDING)
    if not isinstance(proof, str):
        return page(request, "check.html", 400, signing_in=True, pending=False, why="")
    try:
        proved = portal.proofs.redeem_code(proof, code)
    except ProofRefused as refused:
        alive = refused.why == "wrong_code"
        answer = page(request, "check.html", 400, signing_in=True, pending=alive,
                      why=refused.why, left=refused.left)  # fmt: skip
        if not alive:
            portal.forget(request, answer, PENDING)
        return answer
    return _proved(request, proved)


@router.get("/verify")
def landing(request: Request, t: Annotated[str, Query(max_length=100)] = "") -> Response:
    """The link's page: a button that signs in. Nothing is used up by looking."""
    return page(request, "verify.html", signing_in=True, token=t, why="")


@router.post("/verify", dependencies=[SigningIn])
def verify(request: Request, t: LinkToken = "") -> Response:
    try:
        proved = portal_of(request).proofs.redeem_link(t)
    except ProofRefused as refused:
        return page(request, "verify.html", 400, signing_in=True, token="", why=refused.why)
    return _proved(request, proved)


def _proved(request: Request, proved: Proved) -> Response:
    """Signed in with the proved address: added to the session that asked for it, when it
    is this browser's; else a session of its own, in place of any this browser had."""
    portal = portal_of(request)
    proofs = portal.proofs
    here = current(request)
    response = redirect(request, "/me")
    portal.forget(request, response, PENDING)
    if here is not None and proved.session_id == here.id:
        proofs.add_address(here.id, proved.email)
        return response
    if token := request.cookies.get(SESSION):
        proofs.end(token)
    token, session = proofs.begin(proved.email)
    seconds = round((session.expires_at - session.began_at).total_seconds())
    portal.set(request, response, SESSION, token, seconds)
    return response


@router.post("/sign-out", dependencies=[Depends(signed_in)])
def sign_out(request: Request) -> Response:
    portal = portal_of(request)
    portal.proofs.end(request.cookies.get(SESSION, ""))
    response = redirect(request, "/")
    portal.forget(request, response, SESSION)
    return response
