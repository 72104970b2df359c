"""What runs out on the privacy portal, over real HTTP, with ``[portal]`` set to seconds: a
sign-in link and its code once ``link_minutes`` have passed, a session once
``session_minutes`` have (on the server, whatever cookie a browser keeps sending), and the
code form's signed cookie naming the proof."""

from __future__ import annotations

import time

import httpx
import pytest

from bridge.config import PortalSettings
from bridge_sandbox.demo_portal import sign_in_link, text_of
from bridge_sandbox.emulators.people import Person
from tests.web.conftest import Portal

ANN = Person("ann.portal@example.com", "Ann", "Quillfeather")
LINK_SECONDS, SESSION_SECONDS = 1.2, 2.4


@pytest.fixture
def portal_settings() -> PortalSettings:
    return PortalSettings(link_minutes=LINK_SECONDS / 60, session_minutes=SESSION_SECONDS / 60)


def test_a_link_and_its_code_expire(portal: Portal) -> None:
    visitor = portal.visitor()
    portal.ask(visitor, ANN.email)
    message = portal.mailbox.wait_for(ANN.email)
    assert "1 minute." in text_of(message)  # rounded up: never "0 minutes"
    link = sign_in_link(message)
    assert link is not None
    time.sleep(LINK_SECONDS + 0.3)
    visitor.get(f"/verify?t={link.partition('?t=')[2]}")
    expired = visitor.post("/verify", {"t": link.partition("?t=")[2]})
    assert expired.status_code == 400 and "has expired" in expired.text
    code = portal.visitor()
    portal.ask(code, ANN.email)
    digits = text_of(portal.mailbox.wait_for(ANN.email)).split("email: ")[1][:6]
    time.sleep(LINK_SECONDS + 0.3)
    late = code.post("/check", {"code": digits})
    assert late.status_code == 400 and "portal_session" not in late.headers.get("set-cookie", "")


def test_a_session_ends_on_the_server_whatever_the_browser_keeps(portal: Portal) -> None:
    visitor = portal.sign_in(ANN.email)
    kept = dict(visitor.client.cookies)
    assert visitor.get("/me").status_code == 200
    time.sleep(SESSION_SECONDS + 0.3)
    replayed = httpx.get(f"{portal.url}/privacy/me", cookies=kept)
    assert replayed.status_code == 303 and replayed.headers["location"] == "/privacy/"
    posted = httpx.post(f"{portal.url}/privacy/consent", cookies=kept,
                        data={"csrf": visitor.csrf, "action": "unsubscribe_all",
                              "address": ANN.email})  # fmt: skip
    assert posted.status_code == 401


def test_the_code_forms_cookie_runs_out_with_the_link(portal: Portal) -> None:
    visitor = portal.visitor()
    portal.ask(visitor, ANN.email)
    assert 'name="code"' in visitor.get("/check").text
    portal.clock.ahead = LINK_SECONDS + 1  # the portal's clock: the cookie's signed expiry
    assert 'name="code"' not in visitor.get("/check").text
