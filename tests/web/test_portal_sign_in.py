"""Signing in to the privacy portal over real HTTP, the emails read from a real SMTP sink: by
the link (whose page a mail scanner may fetch without using it up) and by the code; a link
or a code used, wrong or dead refused; five wrong codes kill the proof; the caps; a portal
whose mail is not set up says so; the sign-in forms' CSRF token; the session cookie's flags;
another address proved into the session; signing out."""

from __future__ import annotations

import io
import re
from email.message import EmailMessage

import httpx
import pytest

from bridge import audit
from bridge.runtime.receiver import create_app
from bridge.runtime.wiring import Wiring
from bridge.web.portal.app import create_portal
from bridge_sandbox.demo_portal import sign_in_link, text_of
from bridge_sandbox.emulators.common import serve_in_thread
from bridge_sandbox.emulators.people import Person
from tests.conftest import Crms
from tests.web.conftest import Portal, Visitor

ANN = Person("ann.portal@example.com", "Ann", "Quillfeather")
BOB = Person("bob.portal@example.com", "Bob", "Inkwell")
CODE = re.compile(r"\b(\d{6})\b")


def code_in(message: EmailMessage) -> str:
    found = CODE.search(text_of(message))
    assert found, text_of(message)
    return found.group(1)


def token_in(message: EmailMessage) -> str:
    link = sign_in_link(message)
    assert link is not None
    return link.partition("?t=")[2]


def cookie(reply: httpx.Response, name: str) -> str:
    """The Set-Cookie header for ``name`` (its attributes lower-cased), or ""."""
    found = [h for h in reply.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    return found[0].lower() if found else ""


def actions(portal: Portal) -> list[tuple[str, str, str]]:
    return [(e["actor"], e["action"], e["outcome"]) for e in audit.events(portal.wiring.store())]


def test_the_link_signs_in_once_and_looking_at_its_page_uses_nothing_up(portal: Portal) -> None:
    portal.seed(ANN)
    visitor = portal.visitor()
    asked = portal.ask(visitor, ANN.email)
    assert asked.status_code == 303 and asked.headers["location"] == "/privacy/check"
    assert "max-age=900" in cookie(asked, "portal_pending")
    assert "Check your email" in visitor.get("/check").text

    message = portal.mailbox.wait_for(ANN.email)
    link = sign_in_link(message)
    assert link is not None and link.startswith(f"{portal.url}/privacy/verify?t=")
    assert "15 minutes" in text_of(message) and CODE.search(text_of(message))
    assert message["Content-Language"] == "en"
    for _ in range(2):  # a mail scanner's fetch, then the person's: both see the button
        landing = httpx.get(link)
        assert landing.status_code == 200 and landing.headers["referrer-policy"] == "no-referrer"
        assert 'name="t"' in landing.text
    assert visitor.client.get(link).status_code == 200

    signed_in = visitor.post("/verify", {"t": token_in(message)})
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/privacy/me"
    session = cookie(signed_in, "portal_session")
    for flag in ("path=/privacy", "httponly", "samesite=lax", "max-age=1800"):
        assert flag in session, session
    assert "secure" not in session  # plain http here; [web] secure_cookies forces it
    me = visitor.get("/me")
    assert me.status_code == 200 and ANN.last_name in me.text

    again = portal.visitor()
    again.get(link.removeprefix(portal.url).removeprefix("/privacy"))
    used = again.post("/verify", {"t": token_in(message)})
    assert used.status_code == 400 and "used already" in used.text
    assert "portal_session" not in used.headers.get("set-cookie", "")
    assert ("portal", "portal.sign_in", "proved") in actions(portal)
    assert ("portal", "portal.session", "began") in actions(portal)


def test_the_code_signs_in_in_the_browser_that_asked_and_five_wrong_ones_kill_it(
    portal: Portal,
) -> None:
    portal.seed(ANN)
    visitor = portal.visitor()
    portal.ask(visitor, ANN.email)
    code = code_in(portal.mailbox.wait_for(ANN.email))
    visitor.get("/check")
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    first = visitor.post("/check", {"code": wrong})
    assert first.status_code == 400 and "4 more times" in first.text
    signed_in = visitor.post("/check", {"code": f" {code[:3]} {code[3:]} "})  # as typed
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/privacy/me"
    assert visitor.get("/me").status_code == 200

    other = portal.visitor()  # a code alone, without the browser that asked, names nothing
    assert "No sign-in email is waiting" in other.get("/check").text
    other.get("/")
    assert other.post("/check", {"code": code}).status_code == 400

    dying = portal.visitor()
    portal.ask(dying, ANN.email)
    code = code_in(portal.mailbox.wait_for(ANN.email))
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    answers = [dying.post("/check", {"code": wrong}) for _ in range(5)]
    assert [a.status_code for a in answers] == [400] * 5
    assert "1 more time." in answers[3].text
    assert "Too many wrong codes" in answers[4].text
    late = dying.post("/check", {"code": code})  # the right one, too late
    assert late.status_code == 400 and "portal_session" not in late.headers.get("set-cookie", "")


def test_wrong_and_unknown_links_are_refused(portal: Portal) -> None:
    visitor = portal.visitor()
    page = visitor.get("/verify?t=made-up")
    assert page.status_code == 200  # looking says nothing about the token
    refused = visitor.post("/verify", {"t": "made-up"})
    assert refused.status_code == 400 and "not valid" in refused.text
    assert visitor.get("/verify").status_code == 200  # no token at all: a page saying so
    assert visitor.get("/me").headers["location"] == "/privacy/"


def test_a_sign_in_address_is_capped_per_hour_and_so_is_a_client(portal: Portal) -> None:
    visitor = portal.visitor()
    answers = [portal.ask(visitor, ANN.email).status_code for _ in range(4)]
    assert answers == [303, 303, 303, 429]
    capped = portal.ask(visitor, ANN.email)
    assert capped.status_code == 429
    assert "too many sign-in emails in the last hour" in capped.text
    for n in range(7):  # ten issued to this client in all: the eleventh is refused
        assert portal.ask(visitor, f"someone{n}@example.com").status_code == 303
    refused = portal.ask(visitor, "someone.else@example.com")
    assert refused.status_code == 429 and "from your network" in refused.text
    assert ("portal", "portal.sign_in", "capped") in actions(portal)


def test_the_sign_in_forms_need_their_own_token(portal: Portal) -> None:
    visitor = portal.visitor()
    visitor.get("/")
    for path, form in (("/sign-in", {"email": ANN.email}), ("/check", {"code": "123456"}),
                       ("/verify", {"t": "x" * 43})):  # fmt: skip
        refused = visitor.client.post(f"/privacy{path}", data={**form, "csrf": "forged"})
        assert refused.status_code == 403, path
        assert "out of date" in refused.text
    stranger = portal.visitor()  # a token, but not this browser's cookie
    assert (
        stranger.client.post(
            "/privacy/sign-in", data={"email": ANN.email, "csrf": visitor.csrf}
        ).status_code
        == 403
    )
    with pytest.raises(TimeoutError):
        portal.mailbox.wait_for(ANN.email, timeout=0.5)


def test_another_address_joins_the_session_only_once_proved(portal: Portal) -> None:
    portal.seed(ANN, BOB)
    ann = portal.sign_in(ANN.email)
    assert BOB.last_name not in ann.get("/me").text
    asked = ann.post("/addresses", {"email": BOB.email})
    assert asked.status_code == 303 and asked.headers["location"] == "/privacy/check"
    message = portal.mailbox.wait_for(BOB.email)
    ann.get(f"/verify?t={token_in(message)}")
    assert ann.post("/verify", {"t": token_in(message)}).headers["location"] == "/privacy/me"
    both = ann.get("/me")
    assert ANN.last_name in both.text and BOB.last_name in both.text
    assert ("portal", "portal.session", "added") in actions(portal)

    # Asked for from Ann's session, but opened in another browser: that browser is signed
    # in with Bob's address alone; Ann's session gains nothing.
    ann.post("/sign-out")
    ann = portal.sign_in(ANN.email)
    ann.post("/addresses", {"email": BOB.email})
    message = portal.mailbox.wait_for(BOB.email)
    elsewhere = portal.visitor()
    elsewhere.get(f"/verify?t={token_in(message)}")
    assert elsewhere.post("/verify", {"t": token_in(message)}).status_code == 303
    assert BOB.last_name in elsewhere.get("/me").text
    assert ANN.last_name not in elsewhere.get("/me").text
    assert BOB.last_name not in ann.get("/me").text


def test_signing_out_ends_the_session_not_only_the_browsers_cookie(portal: Portal) -> None:
    visitor = portal.sign_in(ANN.email)
    kept = dict(visitor.client.cookies)
    visitor.get("/me")
    out = visitor.post("/sign-out")
    assert out.status_code == 303 and 'portal_session=""' in out.headers["set-cookie"]
    replayed = httpx.get(f"{portal.url}/privacy/me", cookies=kept)
    assert replayed.status_code == 303 and replayed.headers["location"] == "/privacy/"
    assert ("portal", "portal.session", "ended") in actions(portal)


def test_a_portal_that_cannot_send_email_says_so_and_logs_what_to_set(
    crms: Crms, log_output: io.StringIO
) -> None:
    wiring = Wiring(config=None, _settings=crms.settings)  # no [smtp] host, no public_url
    store = wiring.store(current_schema=False)
    store.upgrade()
    app = create_app(crms.settings, store)
    app.mount("/privacy", create_portal(wiring))
    with serve_in_thread(app) as server, httpx.Client(base_url=server.url) as client:
        visitor = Visitor(client)
        visitor.get("/")
        answer = visitor.post("/sign-in", {"email": ANN.email})
    store.dispose()
    assert answer.status_code == 503 and "not set up yet" in answer.text
    logged = log_output.getvalue()
    assert "portal.not_set_up" in logged
    assert "[smtp] host (BRIDGE_SMTP__HOST)" in logged and "[web] public_url" in logged
    assert ANN.email not in logged
