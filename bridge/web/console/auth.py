"""Who is asking: the console's signed session cookie, its CSRF token and the roles.

The cookie holds only the operator's name, the account's epoch (a reset or disable moves it,
ending every session), when the session began and was last used, and the CSRF token; it is
signed with a key derived from the pseudonym key, HttpOnly, SameSite=Lax, restricted to
/console, and Secure over https (or when ``[web] secure_cookies`` says so). It ends after
``session_idle_minutes`` unused or ``session_hours`` after sign-in, whichever comes first.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from itsdangerous import BadSignature, URLSafeSerializer

from bridge.config import WebSettings
from bridge.services.operators import Account, Operators, Role, allows
from bridge.web import security
from bridge.web.security import SAFE_METHODS, same_token

COOKIE = "bridge_console"
LOGIN_COOKIE = "bridge_console_login"  # carries the sign-in form's CSRF token
PATH = "/console"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class Session:
    account: Account
    csrf: str
    began: float


class NotSignedIn(Exception):
    """No valid session: a page sends the browser to sign in, an action is refused."""

    def __init__(self, why: str = "") -> None:
        super().__init__(why)
        self.why = why


class Forbidden(Exception):
    """Signed in, but the role may not do this, or the form's CSRF token is missing/wrong."""


class Sessions:
    def __init__(
        self,
        secret: bytes,
        web: WebSettings,
        operators: Operators,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.signer = URLSafeSerializer(secret, salt="consent-bridge console session")
        self.web = web
        self.operators = operators
        self.clock = clock

    def begin(self, account: Account) -> tuple[Session, str]:
        now = self.clock()
        session = Session(account, secrets.token_urlsafe(32), now)
        return session, self._cookie(session, now)

    def read(self, cookie: str | None) -> tuple[Session, str]:
        """The session the cookie holds, and the cookie renewed (its idle clock restarted)."""
        if not cookie:
            raise NotSignedIn()
        try:
            data: Any = self.signer.loads(cookie)
            name, epoch, began, seen, csrf = (data[k] for k in ("u", "e", "b", "s", "c"))
        except (BadSignature, KeyError, TypeError, ValueError):
            raise NotSignedIn() from None
        now = self.clock()
        if now - began > self.web.session_hours * 3600 or now - seen > self.idle_seconds:
            raise NotSignedIn("Your session ended; sign in again.")
        account = self.operators.current(str(name), int(epoch))
        if account is None:
            raise NotSignedIn("Your account was changed or disabled; sign in again.")
        session = Session(account, str(csrf), float(began))
        return session, self._cookie(session, now)

    @property
    def idle_seconds(self) -> float:
        return self.web.session_idle_minutes * 60

    def _cookie(self, session: Session, now: float) -> str:
        account = session.account
        return self.signer.dumps(
            {"u": account.name, "e": account.epoch, "b": session.began, "s": now,
             "c": session.csrf}
        )  # fmt: skip

    def login_token(self, cookie: str | None) -> tuple[str, str]:
        """The sign-in form's CSRF token (kept if the browser has one) and its cookie."""
        try:
            token = str(self.signer.loads(cookie or "", salt="consent-bridge console login"))
        except BadSignature:
            token = secrets.token_urlsafe(32)
        return token, self.signer.dumps(token, salt="consent-bridge console login")

    def secure(self, request: Request) -> bool:
        return security.secure(self.web, request)


def sessions_of(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


async def _form_token(request: Request) -> str:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    form = await request.form()
    value = form.get(CSRF_FIELD)
    return value if isinstance(value, str) else ""


def require(role: Role) -> Callable[[Request], Awaitable[Session]]:
    """A route's dependency: a signed-in operator of ``role`` or above; for anything but
    GET and HEAD, the session's CSRF token in the form (``csrf``) or the X-CSRF-Token header."""

    async def dependency(request: Request) -> Session:
        session, renewed = sessions_of(request).read(request.cookies.get(COOKIE))
        request.state.renewed_cookie = renewed
        request.state.session = session  # a refusal's page shows who is signed in
        if request.method not in SAFE_METHODS and not same_token(
            await _form_token(request), session.csrf
        ):
            raise Forbidden("The form was stale or did not come from this console; reload it.")
        if not allows(session.account.role, role):
            raise Forbidden(f"Your role ({session.account.role}) may not do this; it needs {role}.")
        return session

    return dependency
