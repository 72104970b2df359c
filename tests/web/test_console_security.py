"""The console's security over real HTTP, route by route as the app has them: a page added
later is covered without touching these tests.

Every page and action refused without a session, a viewer refused every action, a missing or
wrong CSRF token refused, the lockout, session expiry (idle, absolute, and the account
changed), the cookie's flags, the headers, no open redirect after sign-in; and what a CRM
holds (a contact named ``<script>``) reaching every page escaped, with no address on any page
nor in the logs."""

from __future__ import annotations

import html
import io
import json
import re
import tomllib
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from itsdangerous import URLSafeSerializer
from markupsafe import escape

from bridge import audit
from bridge.audit import derive
from bridge.config import RetentionSettings
from bridge.web.console.app import create_console
from bridge.web.console.auth import COOKIE
from tests.conftest import PSEUDONYM_KEY, Crms
from tests.web.conftest import CSRF, Console

pytestmark = pytest.mark.usefixtures("cheap_hashing")
EXAMPLE = Path(__file__).parents[2] / "config" / "bridge.example.toml"
PAYLOADS = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')
OPEN, DONE, SYNCED = "xss.open@example.com", "xss.done@example.com", "xss.synced@example.com"
ADDRESSES = (OPEN, DONE, SYNCED)
SURNAME = "Quillfeather"  # a plain name: nothing redacts it by its shape
# What an action's form may carry, plausible enough that an action refused for want of a
# session, a role or a token would otherwise have been done.
ACTION_FORM = {
    "months": "1", "reason": "ticket 4711", "within": "60", "addresses": OPEN,
    "action": "erase", "mode": "delete", "name": "intruder", "role": "admin", "full": "",
}  # fmt: skip
# Filters any page might read, each given something hostile.
HOSTILE_QUERY = {
    key: PAYLOADS[0]
    for key in ("status", "kind", "origin", "due_within", "within", "action", "since", "until",
                "subject", "done", "next", "page")
}  # fmt: skip
NOT_A_PAGE = ("application/json", "text/csv")  # downloads: escaping is not theirs to do
# Posts a viewer may make: they change nothing (beyond an audit event saying who looked).
VIEWER_POSTS = {
    "/logout": "signing out",
    "/audit": "a search by a typed address, posted to keep the address out of links",
    "/audit/verify": "checking the audit chain",
}


@pytest.fixture
def crms(crms: Crms) -> Crms:
    """The emulators, the bridge's settings carrying the shipped example's retention rules
    (so the Retention page has a preview to show)."""
    rules = RetentionSettings.model_validate(tomllib.loads(EXAMPLE.read_text())["retention"])
    return replace(crms, settings=crms.settings.model_copy(update={"retention": rules}))


def routes(console: Console) -> list[tuple[str, str]]:
    """Every (method, path) the console answers but the sign-in form: as the app has them
    now, so a page added later is covered without touching these tests."""
    found = [
        (method, route.path)
        for route in iter_route_contexts(create_console(console.wiring).routes)
        for method in sorted(route.methods or ())  # a mount (the static files) has none
        if route.path and route.path != "/login" and method != "HEAD"
    ]
    assert ("GET", "/") in found and ("POST", "/logout") in found, found
    return found


def fill(path: str, ids: dict[str, str]) -> str:
    """A route's path with each parameter given a plausible value (a real request's id
    unless ``ids`` names the parameter)."""
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: ids.get(m.group(1), ids["id"]), path)


def actions_audited(console: Console) -> list[str]:
    return [event["action"] for event in audit.events(console.wiring.store())]


def no_data(reply: httpx.Response) -> None:
    for secret in (*ADDRESSES, SURNAME, "ticket 4711"):
        assert secret not in reply.text, (reply.request.url, secret)


def open_request(console: Console) -> dict[str, str]:
    """An open erasure request and an account to aim the actions at."""
    console.crms.seed_people([OPEN], name=SURNAME)
    console.add("victim", "viewer")
    request_id = console.wiring.erasure().submit([OPEN], "delete", "ticket 4711", "cli")
    return {"id": request_id, "name": "victim", "proposal": "0" * 32}


def attempt(client: httpx.Client, name: str, password: str, **form: str) -> httpx.Response:
    """One sign-in through the form, as a browser: the form's page first, then the post."""
    token = CSRF.search(client.get("/console/login").text)
    assert token
    data = {"name": name, "password": password, "csrf": token.group(1), **form}
    return client.post("/console/login", data=data)


def cookies_set(reply: httpx.Response) -> list[str]:
    return [header.split("=", 1)[0] for header in reply.headers.get_list("set-cookie")]


def cookie_flags(reply: httpx.Response, name: str) -> dict[str, str]:
    """The attributes of the cookie ``name`` the reply sets, lowercased."""
    for header in reply.headers.get_list("set-cookie"):
        first, *attributes = (part.strip() for part in header.split(";"))
        if first.split("=", 1)[0] == name:
            return {
                key.lower(): value for key, _, value in (a.partition("=") for a in attributes)
            } | {"value": first.split("=", 1)[1]}
    raise AssertionError(f"no {name} cookie set: {reply.headers.get_list('set-cookie')}")


# -- who may do what --------------------------------------------------------------------------


def test_every_page_and_action_is_refused_without_a_session(console: Console) -> None:
    ids = open_request(console)
    before = actions_audited(console)
    elsewhere = URLSafeSerializer(b"another install's key", salt="consent-bridge console session")
    ours = URLSafeSerializer(
        derive(PSEUDONYM_KEY.encode(), "console sessions"), salt="consent-bridge console session"
    )
    forged = {
        "none": None,
        "garbage": "not-a-session",
        "signed elsewhere": elsewhere.dumps({"u": "victim", "e": 0, "b": 9e9, "s": 9e9, "c": "x"}),
        "no such account": ours.dumps({"u": "ghost", "e": 0, "b": 9e9, "s": 9e9, "c": "x"}),
    }
    exercised = routes(console)
    for label, cookie in forged.items():
        client = console.client()
        headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie else {}
        for method, path in exercised:
            url = "/console" + fill(path, ids)
            if method == "GET":
                reply = client.get(url, headers=headers)
                assert reply.status_code == 303, (label, url, reply.status_code)
                assert reply.headers["location"].startswith("/console/login?next=/"), label
                no_data(reply)
                continue
            oversized = {key: "9" * 5000 for key in ACTION_FORM}  # refused before it is read
            for data in ({"csrf": "x", **ACTION_FORM}, oversized):
                reply = client.request(method, url, data=data, headers=headers)
                assert reply.status_code == 401, (label, method, url, reply.status_code)
                assert "Sign in" in reply.text
                no_data(reply)
    assert actions_audited(console) == before  # nothing was done


def test_a_viewer_reads_but_every_action_is_refused(console: Console) -> None:
    ids = open_request(console)
    viewer = console.sign_in("vera", "viewer")
    before = actions_audited(console)
    exercised = routes(console)
    for method, path in exercised:
        if method == "GET" or path in VIEWER_POSTS:
            continue
        reply = viewer.client.request(
            method, "/console" + fill(path, ids), data={"csrf": viewer.csrf, **ACTION_FORM}
        )
        assert reply.status_code == 403, (method, path, reply.status_code, reply.text[:300])
        assert "Your role (viewer) may not do this" in reply.text
    # The pages the contract keeps from a viewer, where they exist.
    for method, path in (("GET", "/users"), ("GET", "/requests/new")):
        if (method, path) in exercised:
            assert viewer.get(path).status_code == 403, path
    assert actions_audited(console) == before
    assert viewer.get("/").status_code == 200  # still signed in


def test_an_action_without_the_sessions_csrf_token_is_refused(console: Console) -> None:
    ids = open_request(console)
    admin = console.sign_in("ada", "admin")
    other = console.sign_in("otto", "operator")  # a valid token, of another session
    assert other.csrf and other.csrf != admin.csrf
    before = actions_audited(console)
    posts = [(m, p) for m, p in routes(console) if m != "GET"]
    for method, path in posts:
        url = "/console" + fill(path, ids)
        for label, data, headers in (
            ("missing", ACTION_FORM, {}),
            ("wrong", {**ACTION_FORM, "csrf": "wrong"}, {}),
            ("another session's", {**ACTION_FORM, "csrf": other.csrf}, {}),
            ("wrong header", ACTION_FORM, {"X-CSRF-Token": admin.csrf[:-1]}),
        ):
            reply = admin.client.request(method, url, data=data, headers=headers)
            assert reply.status_code == 403, (label, method, path, reply.status_code)
            assert "The form was stale or did not come from this console" in reply.text
    assert actions_audited(console) == before
    # The right token is taken, by form or header: signing out works, then the session is over.
    assert admin.post("/logout").status_code == 303
    reply = other.client.post("/console/logout", headers={"X-CSRF-Token": other.csrf})
    assert reply.status_code == 303 and actions_audited(console)[-2:] == ["console.signed_out"] * 2


def test_the_sign_in_form_needs_its_own_token(console: Console) -> None:
    password = console.add("alice", "operator")
    client = console.client()
    form = {"name": "alice", "password": password}
    for token in ({}, {"csrf": "forged"}):
        reply = client.post("/console/login", data={**form, **token})
        assert reply.status_code == 403 and "The sign-in form was stale" in reply.text
        assert COOKIE not in cookies_set(reply)
    stranger = console.client()  # a token from another browser's form does not do either
    token = CSRF.search(stranger.get("/console/login").text)
    assert token
    reply = client.post("/console/login", data={**form, "csrf": token.group(1)})
    assert reply.status_code == 403
    assert "console.signed_in" not in actions_audited(console)
    assert attempt(client, "alice", password).status_code == 303


def test_sign_in_locks_an_account_and_a_client_after_too_many_failures(console: Console) -> None:
    password = console.add("alice", "operator")
    bob = console.add("bob", "viewer")
    client = console.client()
    web = console.wiring.settings.web
    for name in ("alice", "mallory"):  # an account, and a name that is none: alike
        for _ in range(web.login_max_failures):
            reply = attempt(client, name, "guess")
            assert reply.status_code == 401
            assert '<p class="error" role="alert">The name or the password is wrong.</p>' in (
                reply.text
            )
        reply = attempt(client, name, password if name == "alice" else "guess")
        assert reply.status_code == 403, reply.text
        assert re.search(
            r'<p class="error" role="alert">Too many failed sign-ins to this account: it is '
            r"locked until \d\d:\d\d UTC\. An admin can unlock it now with `bridge users "
            r"reset`\.</p>",
            reply.text,
        ), reply.text
        assert COOKIE not in reply.cookies
    # This client failed each limit's worth and was refused twice; more bring it to its cap.
    failed = 2 * (web.login_max_failures + 1)
    for n in range(web.login_max_failures_per_client - failed):
        assert attempt(client, f"guess{n}", "guess").status_code == 401
    reply = attempt(client, "bob", bob)
    assert reply.status_code == 403
    assert "Too many failed sign-ins from this address: try again after" in reply.text

    new = console.wiring.operators().reset("alice", "operator:root")  # lifts her lockout
    assert attempt(client, "alice", new).status_code == 303
    recorded = json.dumps(list(audit.events(console.wiring.store())))
    assert "mallory" not in recorded and "guess0" not in recorded


# -- the session ------------------------------------------------------------------------------


def test_a_session_ends_when_idle_when_old_and_when_its_account_changes(
    console: Console,
) -> None:
    web = console.wiring.settings.web
    idle = web.session_idle_minutes * 60
    olga = console.sign_in("olga", "operator")
    cookie = olga.client.cookies[COOKIE]
    console.clock.ahead += idle - 60
    assert olga.get("/").status_code == 200  # used in time: the idle clock starts again
    console.clock.ahead += idle - 60
    assert olga.get("/").status_code == 200
    renewed = olga.client.cookies[COOKIE]
    assert renewed != cookie
    console.clock.ahead += idle + 1
    reply = olga.get("/")
    assert reply.status_code == 303 and reply.headers["location"] == "/console/login?next=/"
    assert cookie_flags(reply, COOKIE)["value"] in ("", '""')  # the browser forgets it
    stale = olga.client.post(
        "/console/logout", data={"csrf": olga.csrf}, headers={"Cookie": f"{COOKIE}={renewed}"}
    )
    assert stale.status_code == 401 and "Your session ended; sign in again." in stale.text

    # Used without a pause, a session still ends session_hours after signing in.
    olga = console.sign_in("olga")
    used = 0.0
    while used + idle - 60 < web.session_hours * 3600:
        console.clock.ahead += idle - 60
        used += idle - 60
        assert olga.get("/").status_code == 200, used
    console.clock.ahead += idle - 60
    assert olga.get("/").status_code == 303

    # A reset or a disable ends the account's sessions at their next request.
    operators = console.wiring.operators()
    olga = console.sign_in("olga")
    console.passwords["olga"] = operators.reset("olga", "operator:root")
    reply = olga.post("/logout")
    assert reply.status_code == 401 and "Your account was changed or disabled" in reply.text
    olga = console.sign_in("olga")
    operators.disable("olga", "operator:root")
    assert olga.get("/").status_code == 303


def test_signing_out_ends_the_session_not_only_the_browsers_cookie(console: Console) -> None:
    olga = console.sign_in("olga", "operator")
    cookie = olga.client.cookies[COOKIE]
    assert olga.post("/logout").status_code == 303
    replayed = console.client().get("/console/", headers={"Cookie": f"{COOKIE}={cookie}"})
    assert replayed.status_code == 303  # a copy of the cookie taken earlier is refused too


def test_the_cookies_are_httponly_lax_within_the_console_and_secure_over_https(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = console.add("alice", "viewer")

    def signed_in(**headers: str) -> list[dict[str, str]]:
        """The flags of the sign-in form's cookie, of the session's, and of the session's
        renewed by a page; cookies sent by hand, as a Secure one is not sent over http."""
        url = f"{console.url}/console"
        form = httpx.get(f"{url}/login", headers=headers)
        login = cookie_flags(form, "bridge_console_login")
        token = CSRF.search(form.text)
        assert token
        reply = httpx.post(
            f"{url}/login",
            data={"name": "alice", "password": password, "csrf": token.group(1)},
            headers=headers | {"Cookie": f"bridge_console_login={login['value']}"},
        )
        assert reply.status_code == 303, reply.text
        session = cookie_flags(reply, COOKIE)
        page = httpx.get(f"{url}/", headers=headers | {"Cookie": f"{COOKIE}={session['value']}"})
        assert page.status_code == 200
        return [login, session, cookie_flags(page, COOKIE)]

    for flags in signed_in():
        assert "httponly" in flags and flags["samesite"].lower() == "lax"
        assert flags["path"] == "/console" and "secure" not in flags and "domain" not in flags
    # Over https (as a proxy on this host that ends TLS says), and when settings say so.
    assert all("secure" in flags for flags in signed_in(**{"X-Forwarded-Proto": "https"}))
    monkeypatch.setattr(console.wiring.settings.web, "secure_cookies", True)
    assert all("secure" in flags for flags in signed_in())
    monkeypatch.setattr(console.wiring.settings.web, "secure_cookies", False)
    assert not any("secure" in f for f in signed_in(**{"X-Forwarded-Proto": "https"}))


def test_every_answer_carries_the_security_headers(console: Console) -> None:
    viewer = console.sign_in("vera", "viewer")
    anonymous = console.client()
    answers = {
        "sign-in page": anonymous.get("/console/login"),
        "page": viewer.get("/"),
        "redirect to sign in": anonymous.get("/console/"),
        "refused without a session": anonymous.post("/console/logout"),
        "refused without a token": viewer.client.post("/console/logout"),
        "stylesheet": anonymous.get("/console/static/console.css"),
    }
    for label, reply in answers.items():
        headers = reply.headers
        policy = dict(
            [*directive.strip().split(" ", 1), ""][:2]
            for directive in headers["content-security-policy"].split(";")
        )
        assert policy["default-src"] == "'self'", label
        assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'", label
        assert policy["frame-ancestors"] == "'none'" and policy["form-action"] == "'self'"
        assert policy["base-uri"] == "'none'"
        assert "unsafe" not in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff", label
        assert headers["x-frame-options"] == "DENY", label
        assert headers["referrer-policy"] in ("same-origin", "no-referrer"), label
        assert headers["cache-control"] == "no-store", label
    assert answers["stylesheet"].status_code == 200


OFF_SITE = (
    "//evil.example", "https://evil.example", "/\\evil.example", "\\\\evil.example",
    "/\t/evil.example", "javascript:alert(1)", "http:evil.example", "evil.example",
)  # fmt: skip


def test_signing_in_returns_to_the_page_asked_for_and_never_off_the_console(
    console: Console,
) -> None:
    password = console.add("alice", "viewer")
    reply = attempt(console.client(), "alice", password, next="/audit?action=console.signed_in")
    assert reply.headers["location"] == "/console/audit?action=console.signed_in"
    for target in OFF_SITE:
        client = console.client()
        form = client.get("/console/login", params={"next": target})
        kept = re.search(r'name="next" value="([^"]*)"', form.text)
        assert kept and on_the_console("/console" + html.unescape(kept.group(1))), target
        reply = attempt(client, "alice", password, next=target)
        assert reply.status_code == 303
        assert on_the_console(reply.headers["location"]), (target, reply.headers["location"])


def on_the_console(location: str) -> bool:
    """Whether a browser following ``location`` stays on the console (it drops tabs and
    newlines from a URL and reads a backslash as a slash)."""
    seen = re.sub(r"[\t\r\n]", "", location).replace("\\", "/")
    return seen.startswith("/console/") and not urlsplit(seen).netloc


# -- what a CRM holds, on every page and in the logs ------------------------------------------


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))


def inline_code(page: str) -> list[str]:
    """What in a page the CSP would refuse to run, or an injected tag would: inline scripts,
    style attributes, event handlers (htmx's too)."""
    tags = _Tags()
    tags.feed(page)
    found = [tag for tag, attrs in tags.found if tag == "script" and "src" not in attrs]
    return found + [
        f"{tag} {name}"
        for tag, attrs in tags.found
        for name in attrs
        if name == "style" or name.startswith(("on", "hx-on"))
    ]


def seed_hostile(crms: Crms) -> None:
    """The people of this test, in both CRMs, their names and fields what an attacker would
    type."""
    xss, img = PAYLOADS
    for email in ADDRESSES:
        crms.seed_hubspot(
            email=email, firstname=xss, lastname=SURNAME,
            properties={"company": img, "jobtitle": xss, "city": img},
        )  # fmt: skip
        crms.seed_salesforce(
            "Contact", FirstName=img, LastName=SURNAME, Email=email, Title=xss, Department=img,
            Description=xss,
        )  # fmt: skip


def test_what_a_crm_holds_reaches_every_page_escaped_and_no_address_reaches_pages_or_logs(
    console: Console, log_output: io.StringIO
) -> None:
    seed_hostile(console.crms)
    wiring = console.wiring
    wiring.reconciler().sync()
    erasure = wiring.erasure()
    done = erasure.submit([DONE], "delete", PAYLOADS[0], "cli")
    assert erasure.run(done, wait_seconds=5)["status"] == "completed"
    opened = erasure.submit([OPEN], "anonymize", PAYLOADS[1], "cli")
    erasure.plan([opened])
    console.add("victim", "viewer")
    # A failed sign-in with an address for a name: not recorded, not logged.
    assert attempt(console.client(), SYNCED, "guess").status_code == 401

    admin = console.sign_in("ada", "admin")
    signed_in = len(actions_audited(console))
    exercised = routes(console)
    # Every action, given hostile values: answered (a 4xx with words, or done), never a 500,
    # never the value echoed unescaped.
    for method, path in exercised:
        if method == "GET" or path == "/logout":
            continue
        hostile = {key: PAYLOADS[1] for key in ACTION_FORM}
        url = fill(path, {"id": opened, "name": "victim", "proposal": "0" * 32})
        reply = admin.post(url, hostile)
        assert reply.status_code < 500, (path, reply.status_code, reply.text[-2000:])
        assert not any(p in reply.text for p in PAYLOADS), path
        if not path.endswith("/reveal"):  # revealing shows an open request's addresses
            assert not any(a in reply.text for a in ADDRESSES), path
    # Every page, for each request, with and without hostile filters.
    pages: dict[str, httpx.Response] = {}
    for method, path in exercised:
        if method != "GET":
            continue
        for request_id in (done, opened):
            url = fill(path, {"id": request_id, "name": "victim", "proposal": "0" * 32})
            for query in ("", "?" + urlencode(HOSTILE_QUERY)):
                pages[url + query] = admin.get(url + query)
    pages["/login?next=/" + PAYLOADS[1]] = console.client().get(
        "/console/login", params={"next": "/" + PAYLOADS[1]}
    )
    for url, reply in pages.items():
        assert reply.status_code < 500, (url, reply.status_code, reply.text[-2000:])
        kind = reply.headers.get("content-type", "")
        assert not any(a in reply.text for a in ADDRESSES), url  # masked, where shown at all
        if kind.startswith(NOT_A_PAGE):
            continue
        assert not any(p in reply.text for p in PAYLOADS), url
        assert inline_code(reply.text) == [], url
    assert pages["/"].status_code == 200
    shown = [url for url, reply in pages.items() if escape(PAYLOADS[1]) in reply.text]
    assert f"/requests/{opened}" in shown  # the hostile reason reached a page, escaped
    acted = list(audit.events(wiring.store()))[signed_in:]
    assert acted and {event["actor"] for event in acted} == {"operator:ada"}  # who did it
    # An address typed to search the audit log: turned into a pseudonym, not shown back.
    if ("POST", "/audit") in exercised:
        searched = admin.post("/audit", {"subject": SYNCED})
        assert searched.status_code == 200 and SYNCED not in searched.text
    assert SYNCED not in admin.get(f"/audit?subject={SYNCED}").text  # nor put in a link
    recorded = json.dumps(list(audit.events(wiring.store())))
    assert not any(a in recorded for a in ADDRESSES) and SURNAME not in recorded
    logged = log_output.getvalue()
    assert '"event": "erasure.completed"' in logged  # the server's own lines are captured
    for secret in (*ADDRESSES, SURNAME, *PAYLOADS, "xss.synced", "xss.open", "xss.done"):
        assert secret not in logged, secret


def test_a_completed_request_holds_no_address_on_any_page(console: Console) -> None:
    """The request's own pages, its receipt and the lists, once it is done: no address,
    masked or revealed, is left to show."""
    console.crms.seed_people([DONE], name=SURNAME)
    erasure = console.wiring.erasure()
    done = erasure.submit([DONE], "delete", "ticket 4711", "cli")
    assert erasure.run(done, wait_seconds=5)["status"] == "completed"
    admin = console.sign_in("ada", "admin")
    exercised = routes(console)
    lists = ("/", "/requests", "/requests.csv", "/audit")
    for method, path in exercised:
        if method == "GET" and ("{" in path or path in lists):
            reply = admin.get(fill(path, {"id": done}))
            assert reply.status_code < 500, (path, reply.status_code)
            assert DONE not in reply.text and "x***@e***.com" not in reply.text, path
        elif path.endswith("/reveal"):
            reply = admin.post(fill(path, {"id": done}))
            assert 400 <= reply.status_code < 500 and DONE not in reply.text, path
