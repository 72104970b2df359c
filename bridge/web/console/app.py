"""The privacy officer's console, served under /console by ``bridge run`` and ``bridge
serve`` (or on a listener of its own: ``[web] console_host``/``console_port``).

Server-rendered pages (Jinja2, autoescaped), every action a plain form post that works
without JavaScript; htmx, shipped in the package, only boosts navigation and partial
updates. Each page lives in ``pages/``; this module wires them, the sign-in and the headers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, FastAPI, Form, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from bridge.audit import derive
from bridge.runtime.wiring import Wiring
from bridge.services.operators import SignInRefused
from bridge.web import security
from bridge.web.console import auth
from bridge.web.console.auth import COOKIE, LOGIN_COOKIE, PATH, Forbidden, NotSignedIn, Sessions
from bridge.web.console.pages import (
    audit,
    minimisation,
    reappeared,
    requests,
    retention,
    sync,
    today,
    users,
)
from bridge.web.console.render import page
from bridge.web.templating import STATIC, environment

TEMPLATES = Path(__file__).parent / "templates"


def create_console(wiring: Wiring, clock: Callable[[], float] = time.time) -> FastAPI:
    """The console app, to be mounted at :data:`PATH`; ``clock`` is injectable so session
    expiry tests need no sleeping."""
    settings = wiring.settings
    operators = wiring.operators()
    app = FastAPI(title="consent-bridge console", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.wiring = wiring
    app.state.operators = operators
    secret = derive(settings.require_pseudonym_key(), "console sessions")
    app.state.sessions = Sessions(secret, settings.web, operators, clock)
    app.state.templates = environment(TEMPLATES)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for module in (today, requests, retention, reappeared, audit, minimisation, sync, users):
        app.include_router(module.router)
    _sign_in(app)
    _answers(app)
    return app


def _sign_in(app: FastAPI) -> None:
    @app.get("/login")
    def login_form(request: Request, next: str = "/") -> Response:
        sessions = auth.sessions_of(request)
        token, cookie = sessions.login_token(request.cookies.get(LOGIN_COOKIE))
        response = page(request, "login.html", None, next=_local(next), token=token, error="")
        _set(response, request, LOGIN_COOKIE, cookie, 3600)
        return response

    @app.post("/login")
    def login(
        request: Request,
        name: Annotated[str, Form(max_length=200)] = "",
        password: Annotated[str, Form(max_length=1000)] = "",
        csrf: Annotated[str, Form(max_length=100)] = "",
        next: Annotated[str, Form(max_length=2000)] = "/",
    ) -> Response:
        sessions = auth.sessions_of(request)
        token, cookie = sessions.login_token(request.cookies.get(LOGIN_COOKIE))
        error = ""
        if not request.cookies.get(LOGIN_COOKIE) or not security.same_token(csrf, token):
            error = "The sign-in form was stale; it has been reloaded, try again."
        else:
            client = request.client.host if request.client else "unknown"
            try:
                account = app.state.operators.sign_in(name.strip().lower(), password, client)
            except SignInRefused as refused:
                error = str(refused)
        if error:
            response = page(
                request, "login.html", None, 401 if "wrong" in error else 403,
                next=_local(next), token=token, error=error,
            )  # fmt: skip
            _set(response, request, LOGIN_COOKIE, cookie, 3600)
            return response
        _, session_cookie = sessions.begin(account)
        signed_in = RedirectResponse(security.root(request) + _local(next), 303)
        _set(signed_in, request, COOKIE, session_cookie, None)
        signed_in.delete_cookie(LOGIN_COOKIE, path=PATH)
        return signed_in

    @app.post("/logout")
    def logout(
        request: Request, session: Annotated[auth.Session, Depends(auth.require("viewer"))]
    ) -> Response:
        app.state.operators.signed_out(session.account)
        response = RedirectResponse(security.root(request) + "/login", 303)
        response.delete_cookie(COOKIE, path=PATH)
        request.state.renewed_cookie = None
        return response


def _answers(app: FastAPI) -> None:
    @app.exception_handler(NotSignedIn)
    async def _not_signed_in(request: Request, error: NotSignedIn) -> Response:
        if request.method in security.SAFE_METHODS:
            target = (
                security.root(request) + "/login?next=" + quote(_local(_within(request)), safe="/")
            )
            response: Response = RedirectResponse(target, 303)
        else:
            response = page(request, "refused.html", None, 401, why=error.why or "Sign in first.")
        if error.why:
            response.delete_cookie(COOKIE, path=PATH)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> Response:
        missing = error.status_code == 404
        why = "There is no such page in the console." if missing else "The console cannot do that."
        session = getattr(request.state, "session", None)
        return page(request, "refused.html", session, error.status_code, why=why)

    @app.exception_handler(RequestValidationError)
    async def _unusable(request: Request, error: RequestValidationError) -> Response:
        """A value a form or link sent that the route's types refuse: the page names the
        field, never echoing the value."""
        fields = security.refused_fields(error)
        why = (
            f"The console cannot use what was sent for: {', '.join(fields) or 'the form'} "
            "(missing, too long or not a value it knows). Go back, correct it and try again."
        )
        session = getattr(request.state, "session", None)
        return page(request, "refused.html", session, 400, why=why)

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, error: Forbidden) -> Response:
        return page(request, "refused.html", getattr(request.state, "session", None), 403,
                    why=str(error))  # fmt: skip

    def _renewed(request: Request, response: Response) -> None:
        renewed = getattr(request.state, "renewed_cookie", None)
        if renewed and COOKIE not in response.headers.get("set-cookie", ""):
            _set(response, request, COOKIE, renewed, None)

    security.guard(app, after=_renewed)


def _set(response: Response, request: Request, name: str, value: str, max_age: int | None) -> None:
    secure = auth.sessions_of(request).secure(request)
    security.set_cookie(response, name, value, path=PATH, secure=secure, max_age=max_age)


def _within(request: Request) -> str:
    """The path asked for, below /console, to come back to after signing in."""
    path = request.url.path.removeprefix(security.root(request)) or "/"
    return path + (f"?{request.url.query}" if request.url.query else "")


def _local(target: str) -> str:
    """Only a path within the console: never an open redirect to another site."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
