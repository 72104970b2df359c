"""The console's Minimisation page: ``bridge minimise --report``, the fields each CRM fills,
judged by the allow-list, those outside it first. Names and counts only, never a value."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from bridge.adapters.base import AdapterError
from bridge.adapters.registry import VENDORS
from bridge.policies.minimisation import Minimisation
from bridge.runtime.wiring import Wiring
from bridge.services.minimise import usage_report
from bridge.web.console.auth import Session, require
from bridge.web.console.render import page

router = APIRouter()


@router.get("/minimisation")
def minimisation(
    request: Request, session: Annotated[Session, Depends(require("viewer"))]
) -> Response:
    wiring: Wiring = request.app.state.wiring
    titles = {name: vendor.title for name, vendor in VENDORS.items()}
    try:
        report = usage_report(wiring.adapters(), Minimisation(wiring.settings.minimisation.allowed))
    except AdapterError as error:
        return page(request, "minimisation.html", session, 502, error=error.line(), report=None,
                    objects=[], titles=titles)  # fmt: skip
    # Objects holding fields outside the list first; within each, its outside fields first.
    objects = sorted(report.objects, key=lambda found: not found.outside)
    return page(request, "minimisation.html", session, error="", report=report, objects=objects,
                titles=titles)  # fmt: skip
