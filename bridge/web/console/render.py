"""One way every console page is rendered: the base layout, the navigation, the session's
CSRF token, and the security headers."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment

from bridge.services.operators import allows
from bridge.web.console.auth import Session

# (path under /console, label, the role that sees it)
NAV = (
    ("/", "Today", "viewer"),
    ("/requests", "Requests", "viewer"),
    ("/requests/new", "New request", "operator"),
    ("/retention", "Retention", "viewer"),
    ("/reappeared", "Re-appeared", "viewer"),
    ("/audit", "Audit", "viewer"),
    ("/minimisation", "Minimisation", "viewer"),
    ("/sync", "Sync", "viewer"),
    ("/users", "Users", "admin"),
)


def page(
    request: Request,
    template: str,
    session: Session | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    """``template`` rendered in the layout; ``context`` is autoescaped like everything else."""
    env: Environment = request.app.state.templates
    role = session.account.role if session else None
    nav = [(path, label) for path, label, needed in NAV if role and allows(role, needed)]  # type: ignore[arg-type]
    html = env.get_template(template).render(
        base=request.scope.get("root_path", "") or "",
        path=request.url.path,
        session=session,
        csrf=session.csrf if session else "",
        nav=nav,
        **context,
    )
    return HTMLResponse(html, status)
