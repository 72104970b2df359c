"""Asking for a sign-in email tells nobody whether any CRM holds the address: over real HTTP,
the answer for an address both CRMs hold and for one neither does is the same redirect, body
and cookies, takes the same time (medians over many interleaved tries), and asking never
reaches a CRM at all; both addresses get their email, after the answer."""

from __future__ import annotations

import re
import statistics
import time

import httpx
import pytest

from bridge.config import PortalSettings
from bridge_sandbox.emulators.people import Person
from tests.web.conftest import Portal

TRIES = 20
KNOWN = [Person(f"known{n}@example.com", "Known", f"Person{n}") for n in range(TRIES)]


@pytest.fixture
def portal_settings() -> PortalSettings:
    """Caps wide enough for the tries (the caps' own tests hold the defaults to account)."""
    return PortalSettings(
        per_address_hour=50, per_address_day=50, per_client_hour=500, per_client_day=500
    )


def shape(reply: httpx.Response) -> tuple[object, ...]:
    """What an answer says, less the values of its cookies and its date."""
    cookies = sorted(re.sub(r"=[^;]*", "=", c, count=1)
                     for c in reply.headers.get_list("set-cookie"))  # fmt: skip
    headers = {k: v for k, v in reply.headers.items() if k not in ("date", "set-cookie")}
    return reply.status_code, reply.content, tuple(cookies), tuple(sorted(headers.items()))


def test_a_known_and_an_unknown_address_get_the_same_answer_in_the_same_time(
    portal: Portal,
) -> None:
    portal.seed(*KNOWN)
    visitor = portal.visitor()
    visitor.get("/")
    shapes: dict[str, set[tuple[object, ...]]] = {"known": set(), "unknown": set()}
    took: dict[str, list[float]] = {"known": [], "unknown": []}
    for n in range(TRIES):
        for kind, email in (("known", KNOWN[n].email), ("unknown", f"nobody{n}@example.com")):
            started = time.perf_counter()
            reply = visitor.post("/sign-in", {"email": email})
            took[kind].append(time.perf_counter() - started)
            shapes[kind].add(shape(reply))
    assert len(shapes["known"]) == 1 and shapes["known"] == shapes["unknown"]
    [(status, _, cookies, _)] = shapes["known"]
    assert status == 303 and cookies == ("portal_pending=; HttpOnly; Max-Age=900; Path=/privacy; "
                                         "SameSite=lax",)  # fmt: skip
    known, unknown = (statistics.median(took[kind]) for kind in ("known", "unknown"))
    assert abs(known - unknown) <= max(0.015, 0.5 * min(known, unknown)), (known, unknown)
    assert portal.wiring._adapters is None  # no CRM was even connected to
    for email in (KNOWN[-1].email, f"nobody{TRIES - 1}@example.com"):
        assert "/privacy/verify?t=" in portal.mailbox.wait_for(email).get_content()
