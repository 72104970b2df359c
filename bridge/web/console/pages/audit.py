"""The console's Audit page: the log, newest first, filtered by event kind, time and subject,
and "Verify chain" (``bridge audit --verify``) with its result.

A subject is looked up by the address an operator types, turned into its pseudonym here and
then forgotten: typed into a form that is posted (an address in a link would land in access
logs and the browser's history), never stored, logged, or shown back; links and the next
pages carry the pseudonym only.
"""

from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request, Response

from bridge import audit, checkpoints
from bridge.errors import BridgeError
from bridge.identity import normalise_email, subject_ref
from bridge.model import AuditEvent
from bridge.runtime.wiring import Wiring
from bridge.services.operators import actor
from bridge.web.console.auth import Session, require
from bridge.web.console.render import page

router = APIRouter()
PAGE = 100
ACTION = re.compile(r"[a-z0-9_.-]{1,100}")
REF = re.compile(r"[0-9a-f]{64}")
ADDRESS = re.compile(r"[^\s@]+@[^\s@]+")
Viewer = Annotated[Session, Depends(require("viewer"))]


class BadFilter(ValueError):
    """A filter value that is not one; the message says what is expected, never echoing it."""


@dataclass(frozen=True)
class Filters:
    action: str = ""
    since: date | None = None
    until: date | None = None
    subject: str = ""
    """A pseudonym (``subject_ref``), never an address."""
    before: int | None = None

    @classmethod
    def parse(cls, action: str, since: str, until: str, subject: str, before: str) -> Filters:
        action = action.strip().lower()
        if action and not ACTION.fullmatch(action):
            raise BadFilter("An event kind is lowercase letters, digits, dots and underscores.")
        if "@" in subject:
            raise BadFilter(
                "Type an address into the “Subject” box: it is posted, never put in a link."
            )
        if subject and not REF.fullmatch(subject):
            raise BadFilter("A subject in a link is its pseudonym: 64 hexadecimal digits.")
        if before and (not before.isdigit() or len(before) > 18):
            raise BadFilter("“before” is an event's number.")
        found = cls(action, _date(since, "since"), _date(until, "until"), subject,
                    int(before) if before else None)  # fmt: skip
        if found.since and found.until and found.since > found.until:
            raise BadFilter("“Since” is after “until”: nothing can match.")
        return found

    def matches(self, event: dict[str, Any]) -> bool:
        kind, at = event["action"], event["occurred_at"]
        return (
            (not self.action or kind == self.action or kind.startswith(self.action + "."))
            and (self.since is None or at >= self.since.isoformat())
            and (self.until is None or at < (self.until + timedelta(days=1)).isoformat())
            and (self.before is None or event["seq"] < self.before)
        )

    def query(self, **changes: Any) -> str:
        """These filters (with ``changes``) as a link's query string."""
        chosen = replace(self, **changes)
        values = {"action": chosen.action, "since": chosen.since, "until": chosen.until,
                  "subject": chosen.subject, "before": chosen.before}  # fmt: skip
        return urlencode({k: str(v) for k, v in values.items() if v})


@router.get("/audit")
def audit_page(
    request: Request,
    session: Viewer,
    action: str = "",
    since: str = "",
    until: str = "",
    subject: str = "",
    before: str = "",
) -> Response:
    try:
        filters = Filters.parse(action[:200], since[:40], until[:40], subject[:400], before[:40])
    except BadFilter as bad:
        return _page(request, session, Filters(), status=400, error=str(bad))
    return _page(request, session, filters)


@router.post("/audit")
def audit_by_subject(
    request: Request,
    session: Viewer,
    subject: Annotated[str, Form()] = "",  # its length checked below: an error never echoes it
    action: Annotated[str, Form(max_length=200)] = "",
    since: Annotated[str, Form(max_length=40)] = "",
    until: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    """The events about the person whose address was typed: looked up by its pseudonym."""
    try:
        filters = Filters.parse(action, since, until, "", "")
        if len(subject) > 320 or not ADDRESS.fullmatch(subject.strip()):
            raise BadFilter("The subject is an email address, such as name@example.com.")
    except BadFilter as bad:
        return _page(request, session, Filters(), status=400, error=str(bad))
    wiring: Wiring = request.app.state.wiring
    ref = subject_ref(wiring.settings.require_pseudonym_key(), normalise_email(subject))
    return _page(request, session, replace(filters, subject=ref), typed=True)


@router.post("/audit/verify")
def verify(request: Request, session: Viewer) -> Response:
    """Recompute the chain and hold it against the newest signed checkpoint, as ``bridge
    audit --verify`` does. Audited (who checked, what they found): a verification is
    evidence too."""
    wiring: Wiring = request.app.state.wiring
    store = wiring.store()
    try:
        found = checkpoints.Found()
        source = wiring.settings.audit.checkpoint_path
        if source is not None and source.exists():
            found = checkpoints.read(source, wiring.signing_key().public_key())
        result = audit.verify(store, found.newest)
    except BridgeError as failed:  # no audit key, an unreadable checkpoint file
        return _page(
            request, session, Filters(), error=f"The chain could not be verified: {failed}"
        )
    findings = [*result.findings, *found.invalid]
    outcome = "tampered" if findings else "unkeyed" if result.unkeyed else "intact"
    checked = {
        "outcome": outcome,
        "checked": result.checked,
        "findings": findings,
        "unkeyed": result.unkeyed,
        "checkpoint": found.newest,
        "checkpoint_path": str(source) if source else "",
    }
    audit.record(
        store,
        AuditEvent(
            actor=actor(session.account.name),
            action="audit.verified",
            outcome=outcome,
            details={"checked": result.checked, "broken_at": result.broken_at,
                     "findings": len(findings)},
        ),
    )  # fmt: skip
    return _page(request, session, Filters(), verification=checked)


def _date(text: str, name: str) -> date | None:
    text = text.strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BadFilter(f"“{name.capitalize()}” is a date, such as 2026-01-31.") from None


def _page(
    request: Request,
    session: Session,
    filters: Filters,
    *,
    status: int = 200,
    error: str = "",
    typed: bool = False,
    verification: dict[str, Any] | None = None,
) -> Response:
    """The newest :data:`PAGE` events the filters match (older than ``before``), newest
    first, and the event kinds there are to choose from."""
    wiring: Wiring = request.app.state.wiring
    shown: deque[dict[str, Any]] = deque(maxlen=PAGE)
    older, kinds = False, set()
    for event in audit.events(wiring.store(), filters.subject or None):
        kinds.add(event["action"])
        if filters.matches(event):
            older |= len(shown) == PAGE
            shown.append(event | {"said": _details(event["details"])})
    events = list(reversed(shown))
    return page(
        request, "audit.html", session, status, error=error, filters=filters, typed=typed,
        events=events, kinds=sorted(kinds), verification=verification,
        older=filters.query(before=events[-1]["seq"]) if older and events else None,
        newest=filters.query(before=None) if filters.before else None,
    )  # fmt: skip


def _details(details: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in details.items()
    )
