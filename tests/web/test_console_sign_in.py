"""Signing in to the console over HTTP: the form, a wrong password, the session."""

from __future__ import annotations

import json

import httpx
import pytest

from bridge import audit
from bridge.web.console.auth import COOKIE
from tests.web.conftest import CSRF, Console

pytestmark = pytest.mark.usefixtures("cheap_hashing")


def test_a_page_asks_for_sign_in_then_shows_today(console: Console) -> None:
    client = console.client()
    reply = client.get("/console/?from=mail")
    assert reply.status_code == 303
    assert reply.headers["location"] == "/console/login?next=/%3Ffrom%3Dmail"
    operator = console.sign_in("alice", "viewer")
    page = operator.get("/")
    assert "<h1>Today</h1>" in page.text
    assert "alice (viewer)" in page.text


def sign_in_page(console: Console, name: str, password: str) -> httpx.Response:
    client = console.client()
    token = CSRF.search(client.get("/console/login").text)
    assert token
    return client.post(
        "/console/login", data={"name": name, "password": password, "csrf": token.group(1)}
    )


def test_a_wrong_password_an_unknown_name_and_a_disabled_account_read_alike(
    console: Console,
) -> None:
    password = console.add("alice", "operator")
    console.add("dora", "operator")
    console.wiring.operators().disable("dora", "test")
    answers = [
        sign_in_page(console, "alice", "guess"),
        sign_in_page(console, "nobody", "guess"),
        sign_in_page(console, "dora", console.passwords["dora"]),
        sign_in_page(console, "ann@example.com", password),
    ]
    pages = {CSRF.sub("", reply.text) for reply in answers}  # each form has its own token
    assert len(pages) == 1 and {reply.status_code for reply in answers} == {401}
    assert '<p class="error" role="alert">The name or the password is wrong.</p>' in pages.pop()
    assert all(COOKIE not in reply.cookies for reply in answers)
    recorded = json.dumps(list(audit.events(console.wiring.store())))
    assert "nobody" not in recorded and "ann@example.com" not in recorded


def test_a_name_is_read_trimmed_and_in_lowercase(console: Console) -> None:
    password = console.add("alice", "viewer")
    assert sign_in_page(console, "  Alice ", password).status_code == 303


def test_signing_in_and_out_are_audited_in_the_operators_name(console: Console) -> None:
    alice = console.sign_in("alice", "operator")
    reply = alice.post("/logout")
    assert reply.status_code == 303 and reply.headers["location"] == "/console/login"
    assert alice.get("/").status_code == 303  # signed out
    events = [(e["actor"], e["action"]) for e in audit.events(console.wiring.store())]
    assert events[-2:] == [
        ("operator:alice", "console.signed_in"),
        ("operator:alice", "console.signed_out"),
    ]


def test_a_refusal_says_why_and_who_is_signed_in(console: Console) -> None:
    vera = console.sign_in("vera", "viewer")
    reply = vera.post("/logout", {"csrf": "stale"})
    assert reply.status_code == 403
    assert "The form was stale or did not come from this console; reload it." in reply.text
    assert "vera (viewer)" in reply.text and "Back to Today" in reply.text


def test_a_value_the_console_cannot_use_is_named_never_echoed(console: Console) -> None:
    client = console.client()
    token = CSRF.search(client.get("/console/login").text)
    assert token
    secret = "s3cret-" * 200  # longer than any password the form takes
    reply = client.post(
        "/console/login", data={"name": "alice", "password": secret, "csrf": token.group(1)}
    )
    assert reply.status_code == 400 and reply.headers["content-type"].startswith("text/html")
    assert "The console cannot use what was sent for: password" in reply.text
    assert "s3cret" not in reply.text
