"""One way every portal page is rendered: in the request's language, in the base layout, with
the CSRF token its forms carry."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse

from bridge.web import security
from bridge.web.portal import i18n
from bridge.web.portal.i18n import Language
from bridge.web.portal.session import form_token, portal_of


def language(request: Request) -> Language:
    return portal_of(request).languages[i18n.chosen(request)]


def page(
    request: Request, template: str, status: int = 200, *, signing_in: bool = False,
    **context: Any,
) -> HTMLResponse:  # fmt: skip
    """``template`` rendered in the layout, autoescaped; its forms carry the session's CSRF
    token, or (``signing_in``: the forms that sign in) the form cookie's."""
    session = getattr(request.state, "session", None)
    base = security.root(request)
    csrf = session.csrf if session and not signing_in else form_token(request)
    shown = language(request)
    html = shown.env.get_template(template).render(
        base=base,
        lang=shown.code,
        languages={code: (name, _in(request, code)) for code, name in i18n.LANGUAGES.items()},
        session=session,
        csrf=csrf,
        **context,
    )
    return HTMLResponse(html, status)


def _in(request: Request, code: str) -> str:
    """This page in language ``code``; home, for a page a post answered."""
    if request.method not in security.SAFE_METHODS:
        return f"{security.root(request)}/?lang={code}"
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "lang"]
    return f"{request.url.path}?{urlencode([*kept, ('lang', code)])}"


def redirect(request: Request, path: str) -> RedirectResponse:
    """303 to ``path`` below the portal: a post's answer, to be reloaded safely."""
    return RedirectResponse(security.root(request) + path, 303)
