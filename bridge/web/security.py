"""What the console and the privacy portal answer alike: the security headers on every
response, cookies restricted to a face's path, CSRF tokens compared in constant time, and a
refused form value named without being echoed back (FastAPI's own answer quotes it)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError

from bridge.config import WebSettings

HEADERS: Mapping[str, str] = {
    # Scripts and styles only from the app's own files: an injected <script> never runs.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
SAFE_METHODS = ("GET", "HEAD")

After = Callable[[Request, Response], None]


def guard(app: FastAPI, headers: Mapping[str, str] = HEADERS, after: After | None = None) -> None:
    """Every answer of ``app`` carries ``headers`` (a route's own value wins), and HSTS over
    https; ``after`` may then touch the response (a renewed cookie)."""

    @app.middleware("http")
    async def _headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        if request.url.scheme == "https":  # browsers then refuse plain http to this host
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        if after is not None:
            after(request, response)
        return response


def refused_fields(error: RequestValidationError) -> list[str]:
    """The names of the fields a request's values were refused for, never the values."""
    named = (str(e["loc"][-1]) for e in error.errors() if e.get("loc"))
    return sorted({name for name in named if name.isidentifier()})


def same_token(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def secure(web: WebSettings, request: Request) -> bool:
    """Whether cookies get the Secure flag: as ``[web] secure_cookies`` says, else over https."""
    chosen = web.secure_cookies
    return chosen if chosen is not None else request.url.scheme == "https"


def set_cookie(
    response: Response, name: str, value: str, *, path: str, secure: bool, max_age: int | None
) -> None:
    """A cookie only the app's own pages see: HttpOnly, SameSite=Lax, within ``path``."""
    response.set_cookie(
        name, value, max_age=max_age, path=path, httponly=True, samesite="lax", secure=secure
    )


def root(request: Request) -> str:
    """Where the app is mounted (``/console``, ``/privacy``): links and redirects start there."""
    return str(request.scope.get("root_path", ""))
