"""Who is asking on the privacy portal, and what they may act on.

A person is signed in by the ``portal_session`` cookie: an opaque token of a server-side
session (:class:`~bridge.services.proofs.PortalSession`) holding the addresses they proved,
restricted to /privacy, HttpOnly, SameSite=Lax, Secure as ``[web] secure_cookies`` says, and
no longer-lived than the session. Every post carries a CSRF token: the session's, or before
sign-in the one the ``portal_form`` cookie signs. Between asking for a sign-in email and
using it, the ``portal_pending`` cookie names the proof whose code the code form takes
(signed, and only as long-lived as the proof). A post acts only on addresses the session
proved.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import Request, Response
from itsdangerous import BadSignature, URLSafeSerializer

from bridge.audit import derive
from bridge.identity import normalise_email
from bridge.runtime.wiring import Wiring
from bridge.services.proofs import PortalSession, Proofs
from bridge.web import security
from bridge.web.portal import i18n

PATH = "/privacy"
SESSION = "portal_session"
PENDING = "portal_pending"
FORM = "portal_form"  # carries the CSRF token of the forms shown before sign-in
CSRF_FIELD = "csrf"
_UNREAD = object()


class NotSignedIn(Exception):
    """No session (or it ended): a page sends the browser to sign in, a post is refused."""


class Refused(Exception):
    """A request the portal will not do: ``why`` names the page's explanation (the
    ``refused.html`` template holds the words), ``status`` the HTTP status."""

    def __init__(self, why: str, status: int, **context: Any) -> None:
        super().__init__(why)
        self.why = why
        self.status = status
        self.context = context


class Portal:
    """What the portal's routes share: the wiring, the languages, the cookies' signer. The
    services are built on first use, so that a portal whose keys are not configured yet still
    serves a page saying so."""

    def __init__(self, wiring: Wiring, clock: Callable[[], float] = time.time) -> None:
        self.wiring = wiring
        self.settings = wiring.settings
        self.clock = clock
        self.languages = i18n.languages()

    @functools.cached_property
    def proofs(self) -> Proofs:
        return self.wiring.proofs()

    @functools.cached_property
    def key(self) -> bytes:
        return self.settings.require_pseudonym_key()

    @functools.cached_property
    def _signer(self) -> URLSafeSerializer:
        return URLSafeSerializer(derive(self.key, "portal cookies"), salt="consent-bridge portal")

    def seal(self, value: Any, kind: str, seconds: float | None = None) -> str:
        """``value`` signed for ``kind`` (and, with ``seconds``, for that long only)."""
        until = self.clock() + seconds if seconds is not None else None
        return self._signer.dumps({"v": value, "u": until}, salt=kind)

    def unseal(self, sealed: str | None, kind: str) -> Any:
        """What :meth:`seal` signed for ``kind``; None if forged, of another kind or late."""
        try:
            data = self._signer.loads(sealed or "", salt=kind)
            value, until = data["v"], data["u"]
        except (BadSignature, KeyError, TypeError):
            return None
        return value if until is None or self.clock() < until else None

    @property
    def link_seconds(self) -> float:
        return self.settings.portal.link_minutes * 60

    def set(
        self, request: Request, response: Response, name: str, value: str, max_age: int | None
    ) -> None:
        """A cookie of the portal's, as :func:`bridge.web.security.set_cookie` makes them."""
        secure = security.secure(self.settings.web, request)
        security.set_cookie(response, name, value, path=PATH, secure=secure, max_age=max_age)

    def forget(self, request: Request, response: Response, name: str) -> None:
        secure = security.secure(self.settings.web, request)
        response.delete_cookie(name, path=PATH, secure=secure, httponly=True, samesite="lax")


def portal_of(request: Request) -> Portal:
    portal: Portal = request.app.state.portal
    return portal


def current(request: Request) -> PortalSession | None:
    """The session the browser's cookie names, if it is still on (kept for the page)."""
    found = getattr(request.state, "session", _UNREAD)
    if found is _UNREAD:
        token = request.cookies.get(SESSION)
        found = portal_of(request).proofs.session(token) if token else None
        request.state.session = found
    assert found is None or isinstance(found, PortalSession)
    return found


async def _posted_token(request: Request) -> str:
    form = await request.form()
    value = form.get(CSRF_FIELD)
    return value if isinstance(value, str) else ""


async def signed_in(request: Request) -> PortalSession:
    """A route's dependency: the person's session; for a post, with its CSRF token."""
    session = current(request)
    if session is None:
        raise NotSignedIn()
    if request.method not in security.SAFE_METHODS and not security.same_token(
        await _posted_token(request), session.csrf
    ):
        raise Refused("stale_form", 403)
    return session


def form_token(request: Request) -> str:
    """The CSRF token of the forms shown before sign-in: the browser's, or a new one (its
    cookie set by :func:`keep_form_token`)."""
    token = getattr(request.state, "form_token", None)
    if not isinstance(token, str):
        kept = portal_of(request).unseal(request.cookies.get(FORM), FORM)
        token = kept if isinstance(kept, str) else secrets.token_urlsafe(32)
        request.state.form_token = token
    return token


def keep_form_token(request: Request, response: Response) -> None:
    """The form token's cookie, when a page handed out a token the browser does not hold."""
    token = getattr(request.state, "form_token", None)
    portal = portal_of(request)
    if token and portal.unseal(request.cookies.get(FORM), FORM) != token:
        portal.set(request, response, FORM, portal.seal(token, FORM), None)


async def sign_in_form(request: Request) -> None:
    """A route's dependency: the sign-in forms' CSRF token, from the form cookie."""
    kept = portal_of(request).unseal(request.cookies.get(FORM), FORM)
    if not isinstance(kept, str) or not security.same_token(await _posted_token(request), kept):
        raise Refused("stale_form", 403)


def acting_on(session: PortalSession, addresses: Sequence[str]) -> list[str]:
    """The addresses a post names, each one the session proved; else :class:`Refused` (403).
    A form names none only when it is not the portal's."""
    named = [normalise_email(a) for a in addresses if a.strip()]
    if not named:
        raise Refused("stale_form", 400)
    if any(address not in session.emails for address in named):
        raise Refused("unproved", 403)
    return sorted(set(named))
