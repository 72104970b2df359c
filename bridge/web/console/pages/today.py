"""The console's Today page: what needs attention this morning. Its numbers come from
:mod:`bridge.runtime.status`, the code ``/metrics`` uses, so the two never disagree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from bridge.runtime import status
from bridge.runtime.wiring import Wiring
from bridge.web.console.auth import Session, require
from bridge.web.console.pages.requests import origin
from bridge.web.console.render import page

router = APIRouter()


@router.get("/")
def today(request: Request, session: Annotated[Session, Depends(require("viewer"))]) -> Response:
    wiring: Wiring = request.app.state.wiring
    now = datetime.now(UTC)
    state = status.today(wiring.store(), wiring.settings, now)
    return page(request, "today.html", session, today=state, ago=ago, origin=origin)


def ago(seconds: float | None) -> str:
    """An age in the largest whole unit that fits: "40 s", "12 min", "5 h", "3 days"."""
    if seconds is None:
        return ""
    seconds = max(seconds, 0.0)
    if seconds >= 86400:
        days = int(seconds // 86400)
        return f"{days} day{'s' if days != 1 else ''}"
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"
