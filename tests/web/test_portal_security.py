"""The privacy portal's security over real HTTP, route by route as the app has them (a page
added later is covered without touching these tests): every page and action refused without
a session, the headers on every answer, hostile input answered with a 4xx page, what a CRM
holds (names that are markup) reaching every page escaped, and no address or name in the
logs or the audit trail, the whole journey long."""

from __future__ import annotations

import io
import json
import re

from fastapi.routing import iter_route_contexts

from bridge import audit
from bridge.web.portal.app import create_portal
from bridge_sandbox.demo_portal import status_link
from bridge_sandbox.emulators.people import Person
from tests.web.conftest import Portal

PAYLOADS = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')
ANN = Person("ann.portal@example.com", PAYLOADS[0], PAYLOADS[1])
SURNAME = "Quillfeather"
PUBLIC = {"/", "/sign-in", "/check", "/verify", "/requests/{token}"}
HEADERS = {
    "content-security-policy": "script-src 'self'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def routes(portal: Portal) -> list[tuple[str, str]]:
    """Every (method, path) the portal answers, as the app has them now."""
    found = [
        (method, route.path)
        for route in iter_route_contexts(create_portal(portal.wiring).routes)
        for method in sorted(route.methods or ())  # a mount (the static files) has none
        if route.path and method != "HEAD"
    ]
    assert ("GET", "/me") in found and ("POST", "/consent") in found, found
    return found


def test_every_page_and_action_but_signing_in_needs_a_session(portal: Portal) -> None:
    portal.seed(Person("ann.portal@example.com", "Ann", SURNAME))
    signed_in = portal.sign_in("ann.portal@example.com")  # a session exists, not this one's
    visitor = portal.visitor()
    visitor.get("/")  # the sign-in forms' token: not a session's
    for method, path in routes(portal):
        if path in PUBLIC:
            continue
        if method == "GET":
            reply = visitor.get(path)
            assert reply.status_code == 303, path
            assert reply.headers["location"] == "/privacy/", path
        else:
            reply = visitor.post(
                path, {"address": "ann.portal@example.com", "csrf": signed_in.csrf}
            )
            assert reply.status_code == 401 and "signed out" in reply.text, path
            assert SURNAME not in reply.text
    assert portal.wiring.erasure().summaries() == []


def test_every_answer_carries_the_security_headers(portal: Portal) -> None:
    visitor = portal.sign_in(ANN.email)
    answers = [
        visitor.get("/"),
        visitor.get("/verify?t=anything"),
        visitor.get("/me"),
        visitor.post("/consent", {"action": "withdraw"}),  # no address named: refused
        visitor.get("/no-such-page"),
        portal.visitor().get("/requests/forged"),
        visitor.get("/download.json"),
    ]
    for reply in answers:
        for name, value in HEADERS.items():
            assert value in reply.headers.get(name, ""), (reply.request.url, name)
    assert [a.status_code for a in answers] == [303, 200, 200, 400, 404, 404, 200]


def test_hostile_input_gets_a_page_saying_so_never_a_500(portal: Portal) -> None:
    visitor = portal.visitor()
    visitor.get("/")
    long_address = "a" * 400 + "@example.com"
    for path, form in (
        ("/sign-in", {"email": long_address}),
        ("/sign-in", {"email": "not an address"}),
        ("/sign-in", {"email": PAYLOADS[1]}),
        ("/check", {"code": "1" * 50}),
        ("/verify", {"t": "t" * 500}),
    ):
        reply = visitor.post(path, form)
        assert 400 <= reply.status_code < 500, (path, reply.status_code)
        assert PAYLOADS[1] not in reply.text and long_address not in reply.text
    for query in ("?lang=" + PAYLOADS[0], "?lang=xx", "?t=" + "x" * 200):
        reply = visitor.get("/verify" + query)
        assert reply.status_code in (200, 400) and PAYLOADS[0] not in reply.text
    assert visitor.get("/requests/" + "x" * 300).status_code == 404
    headers = {"accept-language": "xx;q=abc, ;q=1, " + "de," * 100}
    assert visitor.get("/", headers=headers).status_code == 200


def test_markup_a_crm_holds_reaches_every_page_escaped_and_nothing_personal_is_logged(
    portal: Portal, log_output: io.StringIO
) -> None:
    portal.seed(ANN)
    ann = portal.sign_in(ANN.email)
    shown = [path for method, path in routes(portal) if method == "GET" and "{" not in path]
    pages = {path: ann.get(path) for path in shown if not path.startswith("/download")}
    pages["/consent"] = ann.post(
        "/consent", {"action": "withdraw", "purpose": "marketing_email", "address": ANN.email}
    )
    pages["/correct (refused)"] = ann.post(
        "/correct", {"first_name": PAYLOADS[1] * 3, "address": ANN.email}
    )
    pages["/download.json"] = ann.get("/download.json")
    asked = ann.post("/erase", {"address": ANN.email})
    link = status_link(portal.mailbox.wait_for(ANN.email))
    assert link is not None and asked.headers["location"] in link
    pages["/requests/{token}"] = portal.visitor().client.get(link)
    for path, reply in pages.items():
        assert reply.status_code < 500, (path, reply.status_code)
        if path != "/download.json":
            assert not any(p in reply.text for p in PAYLOADS), path
            assert not re.search(r"<script(?![^>]*\bsrc=)", reply.text), path
    me = pages["/me"].text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in me
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in me
    assert PAYLOADS[0] in json.dumps(json.loads(pages["/download.json"].text))  # theirs, as held

    recorded = json.dumps(list(audit.events(portal.wiring.store())))
    logged = log_output.getvalue()
    assert '"event": "held.read"' in logged  # the server's own lines are captured
    for secret in (ANN.email, "ann.portal", *PAYLOADS):
        assert secret not in logged, secret
        assert secret not in recorded, secret
