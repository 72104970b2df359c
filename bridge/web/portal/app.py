"""The data subject's own privacy page, served under /privacy by ``bridge run`` and ``bridge
serve`` (or on a listener of its own: ``[web] portal_host``/``portal_port``).

Server-rendered pages (Jinja2, autoescaped) in English, Dutch or Swedish, every action a plain
form post that works without JavaScript (htmx, shipped in the package, only boosts links and
forms). The routes live in ``sign_in``, ``me`` and ``erase``; this module wires them, the
answers to what goes wrong, and the headers.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from bridge.adapters.base import AdapterError
from bridge.errors import BridgeError, ConfigError
from bridge.logs import get_logger
from bridge.runtime.wiring import Wiring
from bridge.services.mail import MailNotConfigured
from bridge.services.proofs import CapReached
from bridge.web import security
from bridge.web.portal import erase, i18n, me, sign_in
from bridge.web.portal.render import page, redirect
from bridge.web.portal.session import (
    SESSION,
    NotSignedIn,
    Portal,
    Refused,
    keep_form_token,
    portal_of,
)
from bridge.web.templating import STATIC

log = get_logger("bridge.portal")
# A sign-in link's page must not pass its address on to anything it loads or links to.
HEADERS = {**security.HEADERS, "Referrer-Policy": "no-referrer"}
LANGUAGE_COOKIE_SECONDS = 365 * 24 * 3600


def create_portal(wiring: Wiring, clock: Callable[[], float] = time.time) -> FastAPI:
    """The portal app, to be mounted at :data:`~bridge.web.portal.session.PATH`; ``clock``
    dates its signed cookies and links (injectable: expiry tests need no sleeping)."""
    app = FastAPI(title="consent-bridge privacy", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.portal = Portal(wiring, clock)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for module in (sign_in, me, erase):
        app.include_router(module.router)
    _answers(app)
    security.guard(app, HEADERS, after=_cookies)
    return app


def _cookies(request: Request, response: Response) -> None:
    """The language a ``?lang=`` link chose, kept; the sign-in forms' token, handed out."""
    asked = request.query_params.get("lang", "")
    if asked in i18n.LANGUAGES and request.cookies.get(i18n.COOKIE) != asked:
        portal_of(request).set(request, response, i18n.COOKIE, asked, LANGUAGE_COOKIE_SECONDS)
    keep_form_token(request, response)


def _answers(app: FastAPI) -> None:
    @app.exception_handler(NotSignedIn)
    async def _not_signed_in(request: Request, error: NotSignedIn) -> Response:
        if request.method in security.SAFE_METHODS:
            response: Response = redirect(request, "/")
        else:
            response = page(request, "refused.html", 401, why="signed_out")
        if request.cookies.get(SESSION):
            portal_of(request).forget(request, response, SESSION)
        return response

    @app.exception_handler(Refused)
    async def _refused(request: Request, error: Refused) -> Response:
        return page(request, "refused.html", error.status, why=error.why, **error.context)

    @app.exception_handler(CapReached)
    async def _capped(request: Request, error: CapReached) -> Response:
        return page(request, "refused.html", 429, why="capped", scope=error.scope,
                    window=error.window)  # fmt: skip

    @app.exception_handler(MailNotConfigured)
    @app.exception_handler(ConfigError)
    async def _not_set_up(request: Request, error: BridgeError) -> Response:
        """The operator's to fix: the log says which setting; the person, to come back."""
        log.error("portal.not_set_up", problem=str(error))
        return page(request, "refused.html", 503, why="not_set_up")

    @app.exception_handler(AdapterError)
    async def _crm_down(request: Request, error: AdapterError) -> Response:
        log.warning("portal.crm_failed", system=str(error.system), error=type(error).__name__,
                    code=error.code, path=request.url.path)  # fmt: skip
        return page(request, "refused.html", 503, why="crm")

    @app.exception_handler(BridgeError)
    async def _failed(request: Request, error: BridgeError) -> Response:
        log.warning("portal.failed", problem=str(error), path=request.url.path)
        return page(request, "refused.html", 503, why="failed")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> Response:
        why = "missing" if error.status_code == 404 else "cannot"
        return page(request, "refused.html", error.status_code, why=why)

    @app.exception_handler(RequestValidationError)
    async def _unusable(request: Request, error: RequestValidationError) -> Response:
        """A value the route's types refuse: named by its field, never echoed."""
        fields = security.refused_fields(error)
        return page(request, "refused.html", 400, why="unusable", fields=fields)
