"""The Users page over HTTP: only admins see it; an account added there can sign in with the
password shown once; disabling and resetting end the account's sessions at their next
request; every change is audited with the admin as actor, the password nowhere but in the
answer to the post that made it."""

from __future__ import annotations

import json
import re

import httpx

from bridge import audit
from tests.web.conftest import Console

SHOWN = re.compile(r'<code class="password">([^<]+)</code>')


def shown_password(reply: httpx.Response) -> str:
    found = SHOWN.search(reply.text)
    assert found, reply.text
    return found.group(1)


def refused_sign_in(console: Console, name: str, password: str) -> httpx.Response:
    client = console.client()
    form = client.get("/console/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token
    return client.post(
        "/console/login", data={"name": name, "password": password, "csrf": token.group(1)}
    )


def audited(console: Console, action: str, by: str = "operator:root") -> list[dict[str, object]]:
    """The audit events of ``action`` done from the console by ``by``."""
    events = audit.events(console.wiring.store())
    return [e for e in events if e["action"] == action and e["actor"] == by]


def test_an_admin_adds_a_user_who_signs_in_with_the_password_shown_once(
    console: Console,
) -> None:
    admin = console.sign_in("root", "admin")
    listed = admin.get("/users")
    assert listed.status_code == 200 and "<h1>Users</h1>" in listed.text
    assert "root" in listed.text and "(you)" in listed.text

    added = admin.post("/users", {"name": " Bob ", "role": "operator"})
    assert added.status_code == 200
    assert "Account bob added as operator" in added.text
    password = shown_password(added)
    again = admin.get("/users")
    assert password not in again.text and "bob" in again.text and "operator" in again.text

    console.passwords["bob"] = password
    bob = console.sign_in("bob")
    assert "bob (operator)" in bob.get("/").text
    [event] = audited(console, "console.user_added")
    assert event["details"] == {"account": "bob", "role": "operator"}
    everything = json.dumps(list(audit.events(console.wiring.store())), default=str)
    assert password not in everything


def test_viewers_and_operators_are_refused_the_users_page_and_its_actions(
    console: Console,
) -> None:
    console.add("carol", "viewer")
    for role in ("viewer", "operator"):
        someone = console.sign_in(f"a-{role}", role)
        page = someone.get("/users")
        assert page.status_code == 403 and "it needs admin" in page.text
        assert "/users" not in someone.get("/").text  # not in the navigation either
        for path, form in [("/users", {"name": "mallory", "role": "admin"}),
                           ("/users/carol/disable", {}), ("/users/carol/reset", {})]:  # fmt: skip
            assert someone.post(path, form).status_code == 403, path
    assert [a["name"] for a in console.wiring.operators().accounts()] == [
        "a-operator", "a-viewer", "carol",
    ]  # fmt: skip
    for role in ("viewer", "operator"):
        for action in ("console.user_added", "console.user_disabled", "console.password_reset"):
            assert not audited(console, action, by=f"operator:a-{role}")


def test_disabling_a_user_ends_its_session_at_its_next_request(console: Console) -> None:
    admin = console.sign_in("root", "admin")
    bob = console.sign_in("bob", "operator")
    disabled = admin.post("/users/bob/disable")
    assert disabled.status_code == 303
    assert disabled.headers["location"] == "/console/users?done=disabled&account=bob"
    page = admin.get("/users?done=disabled&account=bob")
    assert "Account bob disabled" in page.text and "disabled 20" in page.text

    ended = bob.get("/")
    assert ended.status_code == 303 and ended.headers["location"].startswith("/console/login")
    assert bob.post("/users/bob/reset").status_code == 401  # an action: refused outright
    assert refused_sign_in(console, "bob", console.passwords["bob"]).status_code == 401
    [event] = audited(console, "console.user_disabled")
    assert event["details"] == {"account": "bob"}


def test_an_admin_cannot_disable_their_own_account(console: Console) -> None:
    admin = console.sign_in("root", "admin")
    assert "/users/root/disable" not in admin.get("/users").text  # no button for it
    refused = admin.post("/users/root/disable")
    assert refused.status_code == 400
    assert '<p class="error" role="alert">You cannot disable your own account' in refused.text
    assert admin.get("/users").status_code == 200  # still signed in, still an admin
    assert not audited(console, "console.user_disabled")


def test_a_reset_ends_the_sessions_and_the_old_password(console: Console) -> None:
    admin = console.sign_in("root", "admin")
    bob = console.sign_in("bob", "viewer")
    old = console.passwords["bob"]
    reset = admin.post("/users/bob/reset")
    assert reset.status_code == 200 and "Password of bob reset" in reset.text
    new = shown_password(reset)
    assert new != old and new not in admin.get("/users").text

    assert bob.get("/").status_code == 303  # the session ended
    assert refused_sign_in(console, "bob", old).status_code == 401
    console.passwords["bob"] = new
    assert "bob (viewer)" in console.sign_in("bob").get("/").text
    [event] = audited(console, "console.password_reset")
    assert event["details"] == {"account": "bob"}


def test_bad_names_roles_and_accounts_are_refused_on_the_page(console: Console) -> None:
    admin = console.sign_in("root", "admin")
    console.add("bob", "viewer")
    cases = [
        ({"name": "<script>alert(1)</script>", "role": "viewer"}, 400, "A name is 1 to 63"),
        ({"name": "ann@example.com", "role": "viewer"}, 400, "(not an address)"),
        ({"name": "ann", "role": "root"}, 400, "Choose a role: viewer, operator, admin."),
        ({"name": "BOB", "role": "admin"}, 409, "An account named bob exists"),
    ]
    for form, status, said in cases:
        reply = admin.post("/users", form)
        assert reply.status_code == status, form
        assert said in reply.text and "<script>alert" not in reply.text
        assert SHOWN.search(reply.text) is None
    for action in ("disable", "reset"):
        missing = admin.post(f"/users/%3Cb%3Enobody/{action}")
        assert missing.status_code == 404 and "No account named &lt;b&gt;nobody." in missing.text
    stale = admin.client.post("/console/users", data={"name": "ann", "role": "viewer"})
    assert stale.status_code == 403  # no CSRF token
    assert [a["name"] for a in console.wiring.operators().accounts()] == ["bob", "root"]
