"""``bridge users`` as an admin runs it: the first password printed once and never again,
listing that shows no secret, disabling and resetting that the sign-in obeys, and mistakes
answered with one clear line."""

from __future__ import annotations

import json
import re

import pytest

from bridge.config import WebSettings
from bridge.services.operators import Operators, SignInRefused
from bridge.store.db import Store
from tests.conftest import AUDIT_KEY, BridgeCli, said

PRINTED = re.compile(
    r"^account (\S+) (added|reset); its password \(shown once, not stored\): (\S+)$"
)


def password_of(printed: str, name: str, done: str) -> str:
    [line] = printed.splitlines()
    found = PRINTED.match(line)
    assert found and found.group(1, 2) == (name, done), printed
    return found.group(3)


def signs_in(bridge: BridgeCli, name: str, password: str) -> bool:
    """Whether the console would let this name and password in (through the service)."""
    store = Store(bridge.env["BRIDGE_DATABASE_URL"], AUDIT_KEY)
    try:
        Operators(store, WebSettings(), b"test client key").sign_in(name, password, "192.0.2.1")
    except SignInRefused:
        return False
    finally:
        store.dispose()
    return True


@pytest.fixture
def admin_cli(bridge: BridgeCli) -> BridgeCli:
    assert bridge("db", "upgrade").returncode == 0
    return bridge


def test_users_are_added_listed_disabled_and_reset_without_a_secret_shown_twice(
    admin_cli: BridgeCli,
) -> None:
    bridge = admin_cli
    added = bridge("users", "add", "alice", "--role", "operator")
    assert added.returncode == 0, added.stderr
    first = password_of(added.stdout, "alice", "added")
    assert first not in added.stderr
    assert bridge("users", "add", "bob", "--role", "viewer").returncode == 0

    listed = bridge("users", "list")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert rows[0] == ["name", "role", "created", "state"]
    assert [(r[0], r[1], r[3]) for r in rows[1:]] == [
        ("alice", "operator", "active"),
        ("bob", "viewer", "active"),
    ]
    as_json = bridge("users", "list", "--json")
    users = json.loads(as_json.stdout)["users"]
    assert [(u["name"], u["role"], u["disabled_at"]) for u in users] == [
        ("alice", "operator", None),
        ("bob", "viewer", None),
    ]
    for shown in (listed, as_json):
        assert first not in shown.stdout + shown.stderr
        assert "$argon2" not in shown.stdout + shown.stderr
    assert all(set(u) == {"name", "role", "created_at", "password_set_at", "disabled_at"}
               for u in users)  # fmt: skip
    assert signs_in(bridge, "alice", first)

    disabled = bridge("users", "disable", "alice")
    assert disabled.returncode == 0 and disabled.stdout.strip() == "account alice disabled"
    assert not signs_in(bridge, "alice", first)
    [alice, _] = json.loads(bridge("users", "list", "--json").stdout)["users"]
    assert alice["disabled_at"]

    reset = bridge("users", "reset", "alice")
    assert reset.returncode == 0, reset.stderr
    second = password_of(reset.stdout, "alice", "reset")
    assert second != first
    assert not signs_in(bridge, "alice", first)
    assert signs_in(bridge, "alice", second)  # enabled again by the reset

    again = bridge("users", "reset", "bob", "--json")
    assert set(json.loads(again.stdout)) == {"name", "password"}
    assert signs_in(bridge, "bob", json.loads(again.stdout)["password"])


MISTAKES = [
    (("add", "carol", "--role", "root"),
     "bridge: users: role 'root' is not one of viewer, operator, admin"),
    (("add", "alice", "--role", "viewer"),
     "bridge: users add: an account alice exists; choose another name"),
    (("add", "Carol@example.com", "--role", "viewer"),
     "bridge: users: a name is 1-63 lowercase letters, digits, '.', '_' or '-' (no '@')"),
    (("disable", "zed"), "bridge: users: no account zed; `bridge users list` shows them"),
    (("reset", "zed"), "bridge: users: no account zed; `bridge users list` shows them"),
]  # fmt: skip


def test_a_mistake_exits_2_with_one_clear_line_and_changes_nothing(admin_cli: BridgeCli) -> None:
    password = password_of(admin_cli("users", "add", "alice", "--role", "admin").stdout,
                           "alice", "added")  # fmt: skip
    for args, line in MISTAKES:
        refused = admin_cli("users", *args)
        assert (refused.returncode, said(refused), refused.stdout) == (2, [line], ""), args
    users = json.loads(admin_cli("users", "list", "--json").stdout)["users"]
    assert [(u["name"], u["role"], u["disabled_at"]) for u in users] == [("alice", "admin", None)]
    assert signs_in(admin_cli, "alice", password)
