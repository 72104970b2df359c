"""The console's operator accounts over a real store: adding, resetting and disabling them,
signing in without telling which names are accounts, the lockouts, and their audit trail."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bridge import audit
from bridge.config import WebSettings
from bridge.errors import ConfigError
from bridge.services import operators as service
from bridge.services.operators import Account, Operators, SignInRefused
from bridge.store.db import Store
from bridge.store.tables import login_failures

WRONG = "The name or the password is wrong."
CLIENT = "192.0.2.7"


class Clock:
    """A settable clock, so a lockout's expiry needs no sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def operators(store: Store, clock: Clock) -> Operators:
    web = WebSettings(
        login_max_failures=3, login_lockout_minutes=15, login_max_failures_per_client=5
    )
    return Operators(store, web, b"client key for tests, 32 bytes!!", clock)


def refused(operators: Operators, name: str, password: str, client: str = CLIENT) -> str:
    with pytest.raises(SignInRefused) as raised:
        operators.sign_in(name, password, client)
    return str(raised.value)


def events(store: Store) -> list[dict[str, Any]]:
    return list(audit.events(store))


def test_accounts_are_added_reset_and_disabled_each_once_audited(
    operators: Operators, store: Store
) -> None:
    first = operators.add("alice", "operator", "cli")
    assert len(first) >= 20 and first != operators.add("bob", "viewer", "cli")
    assert operators.sign_in("alice", first, CLIENT) == Account("alice", "operator", 0)

    [alice, bob] = operators.accounts()
    assert (alice["name"], alice["role"], alice["disabled_at"]) == ("alice", "operator", None)
    assert bob["role"] == "viewer"
    assert set(alice) == {"name", "role", "created_at", "password_set_at", "disabled_at"}
    assert first not in json.dumps(operators.accounts())  # neither the password nor its hash
    assert "$argon2" not in json.dumps(operators.accounts())

    second = operators.reset("alice", "operator:root")
    assert refused(operators, "alice", first) == WRONG
    assert operators.sign_in("alice", second, CLIENT).epoch == 1  # earlier sessions ended
    assert operators.current("alice", 0) is None
    assert operators.current("alice", 1) == Account("alice", "operator", 1)

    operators.disable("alice", "cli")
    assert refused(operators, "alice", second) == WRONG  # as for any wrong password
    assert operators.current("alice", 1) is None and operators.current("alice", 2) is None
    assert operators.accounts()[0]["disabled_at"]

    third = operators.reset("alice", "cli")  # enables it again
    assert operators.sign_in("alice", third, CLIENT) == Account("alice", "operator", 3)

    done = [(e["actor"], e["action"], e["details"]) for e in events(store)]
    assert done == [
        ("cli", "console.user_added", {"account": "alice", "role": "operator"}),
        ("cli", "console.user_added", {"account": "bob", "role": "viewer"}),
        ("operator:alice", "console.signed_in", {}),
        ("operator:root", "console.password_reset", {"account": "alice"}),
        ("console", "console.sign_in_failed", {"account": "alice"}),
        ("operator:alice", "console.signed_in", {}),
        ("cli", "console.user_disabled", {"account": "alice"}),
        ("console", "console.sign_in_failed", {"account": "alice"}),
        ("cli", "console.password_reset", {"account": "alice"}),
        ("operator:alice", "console.signed_in", {}),
    ]
    assert all(second not in json.dumps(e) and third not in json.dumps(e) for e in events(store))


def test_signing_out_ends_every_session_of_the_account(operators: Operators, store: Store) -> None:
    password = operators.add("alice", "viewer", "cli")
    account = operators.sign_in("alice", password, CLIENT)
    operators.signed_out(account)
    assert operators.current("alice", account.epoch) is None  # a copied cookie is refused
    assert operators.sign_in("alice", password, CLIENT).epoch == account.epoch + 1
    assert [e["action"] for e in events(store)][-2:] == ["console.signed_out", "console.signed_in"]


@pytest.mark.parametrize(
    ("name", "role", "message"),
    [
        ("Alice", "viewer", "a name is 1-63 lowercase letters"),
        ("ann@example.com", "viewer", "(no '@')"),
        ("", "viewer", "a name is 1-63"),
        ("a" * 64, "viewer", "a name is 1-63"),
        ("alice", "root", "role 'root' is not one of viewer, operator, admin"),
        ("alice", "Admin", "role 'Admin' is not one of"),
    ],
)
def test_a_bad_name_or_role_is_refused_saying_what_is_allowed(
    operators: Operators, store: Store, name: str, role: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        operators.add(name, role, "cli")
    assert message in str(raised.value)
    assert "@example" not in str(raised.value)  # a mistyped address is not echoed
    assert operators.accounts() == [] and events(store) == []


def test_a_name_is_taken_once_and_unknown_accounts_cannot_be_changed(
    operators: Operators, store: Store
) -> None:
    password = operators.add("alice", "admin", "cli")
    with pytest.raises(ConfigError, match="an account alice exists; choose another name"):
        operators.add("alice", "viewer", "cli")
    for change in (operators.reset, operators.disable):
        with pytest.raises(ConfigError, match="no account zed; `bridge users list` shows them"):
            change("zed", "cli")
    assert operators.accounts()[0]["role"] == "admin"  # the first one kept
    assert operators.sign_in("alice", password, CLIENT).role == "admin"
    assert [e["action"] for e in events(store)] == ["console.user_added", "console.signed_in"]


def test_an_unknown_name_is_refused_as_a_wrong_password_and_never_recorded(
    operators: Operators, store: Store
) -> None:
    operators.add("alice", "viewer", "cli")
    typed = ["mallory", "ann@example.com", "ann.smith", "", "x" * 300]
    for n, name in enumerate(typed):  # from as many clients, under the cap of each
        assert refused(operators, name, "guess", client=f"198.51.100.{n}") == WRONG
    assert refused(operators, "alice", "guess") == WRONG

    failed = [e for e in events(store) if e["action"] == "console.sign_in_failed"]
    assert len(failed) == len(typed) + 1
    assert [e["details"] for e in failed] == [{}] * len(typed) + [{"account": "alice"}]
    assert all(e["actor"] == "console" and e["outcome"] == "refused" for e in failed)
    recorded = json.dumps(events(store))
    assert not any(name in recorded for name in typed if name)
    with store.engine.connect() as conn:  # counted for the lockout, as keyed hashes only
        kept = json.dumps([dict(row) for row in conn.execute(select(login_failures)).mappings()])
    assert not any(name in kept for name in [*typed, "alice", CLIENT] if name)


def test_an_unknown_name_costs_one_hash_check_like_a_wrong_password(
    operators: Operators, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No timing tells a name that is an account from one that is not: each attempt checks
    one argon2 hash of the same cost (a decoy's for a name that is no account)."""
    operators.add("alice", "viewer", "cli")
    checked: list[str] = []

    class Spy:
        def verify(self, hashed: str, password: str) -> bool:
            checked.append(hashed.rsplit("$", 2)[0])  # the algorithm and its cost
            return real.verify(hashed, password)

    real = service.HASHER
    monkeypatch.setattr(service, "HASHER", Spy())
    for n, name in enumerate(["alice", "mallory", "ann@example.com", ""]):
        assert refused(operators, name, "guess", client=f"198.51.100.{n}") == WRONG
    assert len(checked) == 4 and len(set(checked)) == 1, checked
    assert checked[0].startswith("$argon2id$")


def test_an_account_locks_after_the_failures_allowed_until_the_window_passes(
    operators: Operators, store: Store, clock: Clock
) -> None:
    password = operators.add("alice", "operator", "cli")
    clients = (f"203.0.113.{n}" for n in range(100))  # wherever the guesses come from
    for _ in range(3):
        assert refused(operators, "alice", "guess", next(clients)) == WRONG
        clock.advance(minutes=1)

    locked = refused(operators, "alice", password, next(clients))  # the right one too
    assert locked == (
        "Too many failed sign-ins to this account: it is locked until 09:15 UTC. "
        "An admin can unlock it now with `bridge users reset`."
    )
    assert refused(operators, "alice", "guess", next(clients)) == locked  # not made longer
    assert refused(operators, "bob", "guess", next(clients)) == WRONG  # other accounts open

    clock.advance(minutes=11, seconds=59)  # 09:14:59: the first failure is still counted
    assert "locked until 09:15 UTC" in refused(operators, "alice", password, next(clients))
    clock.advance(seconds=2)
    assert operators.sign_in("alice", password, next(clients)).name == "alice"
    assert refused(operators, "alice", "guess", next(clients)) == WRONG  # the count cleared
    assert refused(operators, "alice", "guess", next(clients)) == WRONG

    actions = [(e["action"], e["details"].get("account")) for e in events(store)]
    assert actions.count(("console.sign_in_locked", "alice")) == 3
    assert ("console.signed_in", None) in actions


def test_knocking_on_a_locked_account_is_audited_only_up_to_the_clients_cap(
    operators: Operators, store: Store
) -> None:
    for n in range(3):
        refused(operators, "alice", "guess", f"203.0.113.{n}")
    for _ in range(20):  # one client, as fast as it can: no argon2 to slow it down
        refused(operators, "alice", "guess")
    locked = [e for e in events(store) if e["action"] == "console.sign_in_locked"]
    assert len(locked) == 5  # the client's cap: then refused with nothing written
    assert "from this address" in refused(operators, "alice", "guess")


def test_an_unknown_name_locks_like_an_account_so_a_lockout_tells_nothing(
    operators: Operators, store: Store
) -> None:
    for _ in range(3):
        refused(operators, "mallory", "guess")
    assert "Too many failed sign-ins to this account" in refused(operators, "mallory", "x")
    [locked] = [e for e in events(store) if e["action"] == "console.sign_in_locked"]
    assert locked["details"] == {} and "mallory" not in json.dumps(events(store))


def test_a_reset_lifts_the_lockout_at_once(operators: Operators, clock: Clock) -> None:
    operators.add("alice", "operator", "cli")
    for _ in range(3):
        refused(operators, "alice", "guess")
    assert "locked until" in refused(operators, "alice", "guess")
    password = operators.reset("alice", "operator:root")
    assert operators.sign_in("alice", password, CLIENT).epoch == 1


def test_one_client_address_is_capped_whatever_names_it_tries(
    operators: Operators, clock: Clock
) -> None:
    password = operators.add("alice", "operator", "cli")
    for n in range(5):  # five names, two tries each at most: no account lockout
        refused(operators, f"guess{n}", "guess")
        clock.advance(minutes=5)  # 09:00 .. 09:20
    message = refused(operators, "alice", password)
    assert message == "Too many failed sign-ins from this address: try again after 10:00 UTC."
    assert operators.sign_in("alice", password, "192.0.2.8").name == "alice"  # another client

    clock.advance(minutes=35)  # 10:00: the first of the five is still within the hour
    assert "10:00 UTC" in refused(operators, "alice", password)
    clock.advance(seconds=1)
    assert operators.sign_in("alice", password, CLIENT).name == "alice"
