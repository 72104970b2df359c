"""The portal's sign-in proofs and sessions over a real store (SQLite, and PostgreSQL when
BRIDGE_TEST_POSTGRES_URL is set): single use, expiry, code attempts, caps, what is kept (only
hashes and sealed values), and the audit trail (pseudonyms only)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from bridge import audit
from bridge.config import PortalSettings
from bridge.identity import subject_ref
from bridge.sealing import Keyring
from bridge.services.keys import rotate
from bridge.services.proofs import (
    CapReached,
    PortalSession,
    ProofRefused,
    Proofs,
    Proved,
)
from bridge.store.db import Store
from bridge.store.tables import data_keys, portal_proofs, portal_sessions
from tests.conftest import PSEUDONYM_KEY

KEY = PSEUDONYM_KEY.encode()
ADA, BO = "ada.lovelace@example.com", "bo@example.org"
CLIENT = "203.0.113.7"
KEYS = [Fernet.generate_key()]


class Clock:
    """A settable clock: expiry and cap windows without sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 4, 9, 0, 0, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make(store: Store, clock: Clock) -> Callable[..., Proofs]:
    def make(keys: list[bytes] = KEYS, **settings: Any) -> Proofs:
        return Proofs(store, Keyring(keys), KEY, PortalSettings(**settings), clock)

    return make


@pytest.fixture
def proofs(make: Callable[..., Proofs]) -> Proofs:
    return make()


def refused(call: Callable[[], object]) -> ProofRefused:
    with pytest.raises(ProofRefused) as caught:
        call()
    return caught.value


def capped(proofs: Proofs, email: str = ADA, client: str = CLIENT) -> tuple[str, str]:
    with pytest.raises(CapReached) as caught:
        proofs.issue(email, client)
    assert email not in str(caught.value) and client not in str(caught.value)
    return caught.value.scope, caught.value.window


def events(store: Store) -> list[dict[str, Any]]:
    return [
        {k: e[k] for k in ("actor", "action", "outcome", "subject_ref", "details")}
        for e in audit.events(store)
    ]


# -- single use ------------------------------------------------------------------------------


def test_a_link_proves_its_address_once_and_its_code_dies_with_it(proofs: Proofs) -> None:
    issued = proofs.issue("  Ada.Lovelace@Example.COM ", CLIENT)
    assert len(issued.link_token) >= 43 and re.fullmatch(r"\d{6}", issued.code)
    assert re.fullmatch(r"[0-9a-f]{32}", issued.proof_id)
    assert proofs.redeem_link(issued.link_token) == Proved(ADA, None)
    assert refused(lambda: proofs.redeem_link(issued.link_token)).why == "used"
    assert refused(lambda: proofs.redeem_code(issued.proof_id, issued.code)).why == "used"


def test_a_code_proves_its_address_once_and_its_link_dies_with_it(proofs: Proofs) -> None:
    issued = proofs.issue(ADA, CLIENT)
    spaced = f"{issued.code[:3]} {issued.code[3:]}"  # as people copy it
    assert proofs.redeem_code(issued.proof_id, spaced) == Proved(ADA, None)
    assert refused(lambda: proofs.redeem_code(issued.proof_id, issued.code)).why == "used"
    assert refused(lambda: proofs.redeem_link(issued.link_token)).why == "used"


def test_tokens_and_proofs_that_never_existed_are_unknown(proofs: Proofs) -> None:
    issued = proofs.issue(ADA, CLIENT)
    assert refused(lambda: proofs.redeem_link(issued.link_token[:-1] + "x")).why == "unknown"
    assert refused(lambda: proofs.redeem_link("")).why == "unknown"
    assert refused(lambda: proofs.redeem_code("0" * 32, issued.code)).why == "unknown"
    assert refused(lambda: proofs.redeem_code("' OR 1=1 --" * 9, "1")).why == "unknown"
    assert proofs.redeem_link(issued.link_token).email == ADA  # none of that harmed it


def test_a_proof_expires_after_link_minutes(proofs: Proofs, clock: Clock) -> None:
    early, late = proofs.issue(ADA, CLIENT), proofs.issue(ADA, CLIENT)
    clock.advance(minutes=14, seconds=59)
    assert proofs.redeem_link(early.link_token).email == ADA
    clock.advance(seconds=1)
    assert refused(lambda: proofs.redeem_link(late.link_token)).why == "expired"
    assert refused(lambda: proofs.redeem_code(late.proof_id, late.code)).why == "expired"


def test_the_same_link_redeemed_at_once_proves_exactly_once(proofs: Proofs) -> None:
    issued = proofs.issue(ADA, CLIENT)
    outcomes: list[object] = []
    start = threading.Barrier(6)

    def redeem() -> None:
        start.wait()
        try:
            outcomes.append(proofs.redeem_link(issued.link_token))
        except ProofRefused as error:
            outcomes.append(error.why)

    threads = [threading.Thread(target=redeem) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(map(str, outcomes)) == sorted([str(Proved(ADA, None))] + ["used"] * 5)


# -- code attempts ---------------------------------------------------------------------------


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def test_wrong_codes_count_down_and_the_last_allowed_kills_the_proof(proofs: Proofs) -> None:
    issued = proofs.issue(ADA, CLIENT)
    bad = wrong(issued.code)
    lefts = [refused(lambda: proofs.redeem_code(issued.proof_id, bad)) for _ in range(4)]
    assert [(r.why, r.left) for r in lefts] == [("wrong_code", n) for n in (4, 3, 2, 1)]
    assert refused(lambda: proofs.redeem_code(issued.proof_id, bad)).why == "attempts"
    assert refused(lambda: proofs.redeem_code(issued.proof_id, issued.code)).why == "attempts"
    assert refused(lambda: proofs.redeem_link(issued.link_token)).why == "attempts"


def test_code_attempts_follow_the_setting(make: Callable[..., Proofs]) -> None:
    proofs = make(code_attempts=2)
    issued = proofs.issue(ADA, CLIENT)
    first = refused(lambda: proofs.redeem_code(issued.proof_id, "abc"))
    assert (first.why, first.left) == ("wrong_code", 1)
    assert refused(lambda: proofs.redeem_code(issued.proof_id, "")).why == "attempts"


def test_a_code_proves_only_its_own_proof(proofs: Proofs) -> None:
    first = proofs.issue(ADA, CLIENT)
    other = proofs.issue(BO, CLIENT)
    while other.code == first.code:  # one chance in a million
        other = proofs.issue(BO, "198.51.100.1")
    assert refused(lambda: proofs.redeem_code(other.proof_id, first.code)).why == "wrong_code"
    assert proofs.redeem_code(first.proof_id, first.code).email == ADA


# -- caps ------------------------------------------------------------------------------------


def test_an_address_gets_per_address_hour_emails_an_hour(
    make: Callable[..., Proofs], clock: Clock, store: Store
) -> None:
    proofs = make(per_address_hour=3, per_address_day=4)
    for n in range(3):
        proofs.issue(ADA, f"198.51.100.{n}")  # from anywhere
    assert capped(proofs, client="192.0.2.99") == ("address", "hour")
    proofs.issue(BO, CLIENT)  # another address is not held back
    clock.advance(hours=1)
    proofs.issue(ADA, CLIENT)  # the fourth of the day
    assert capped(proofs) == ("address", "day")
    clock.advance(hours=23)
    proofs.issue(ADA, CLIENT)
    [event] = [e for e in events(store) if e["outcome"] == "capped"][-1:]
    assert event == {
        "actor": "portal", "action": "portal.sign_in", "outcome": "capped",
        "subject_ref": subject_ref(KEY, ADA), "details": {"scope": "address", "window": "day"},
    }  # fmt: skip


def test_a_client_gets_per_client_hour_emails_an_hour(
    make: Callable[..., Proofs], clock: Clock
) -> None:
    proofs = make(per_client_hour=3, per_client_day=5)
    for n in range(3):
        proofs.issue(f"person{n}@example.com", CLIENT)
    assert capped(proofs, "person9@example.com") == ("client", "hour")
    proofs.issue("person9@example.com", "198.51.100.1")  # another client is not held back
    clock.advance(minutes=61)
    proofs.issue("person3@example.com", CLIENT)
    proofs.issue("person4@example.com", CLIENT)
    assert capped(proofs, "person5@example.com") == ("client", "day")


def test_a_capped_request_issues_nothing(make: Callable[..., Proofs], store: Store) -> None:
    proofs = make(per_address_hour=1)
    proofs.issue(ADA, CLIENT)
    capped(proofs)
    with store.engine.connect() as conn:
        assert len(conn.execute(select(portal_proofs)).all()) == 1


# -- what is kept ----------------------------------------------------------------------------


def every_value(store: Store) -> str:
    """Every column of every portal row, their data keys and the audit log, as text."""
    with store.engine.connect() as conn:
        rows = [
            *conn.execute(select(portal_proofs)),
            *conn.execute(select(portal_sessions)),
            *conn.execute(select(data_keys)),
        ]
    values = [v.decode("latin-1") if isinstance(v, bytes) else str(v) for r in rows for v in r]
    return "\n".join(values + [json.dumps(e) for e in audit.events(store)])


def test_tokens_codes_addresses_and_clients_are_kept_only_as_hashes_or_sealed(
    proofs: Proofs, store: Store
) -> None:
    issued = proofs.issue(ADA, CLIENT)
    other = proofs.issue(BO, CLIENT)
    token, session = proofs.begin(ADA)
    kept = every_value(store)
    assert kept.count(issued.proof_id) >= 1  # the rows are there
    for secret in (issued.link_token, other.link_token, token, session.csrf, ADA, BO, CLIENT):
        assert secret not in kept
    assert "ada.lovelace" not in kept and ADA.encode().hex() not in kept
    for code in (issued.code, other.code):  # digits, but never standing alone
        assert not re.search(rf"(?<![0-9a-f]){code}(?![0-9a-f])", kept)


def test_a_spent_or_expired_proof_loses_its_address_and_old_ones_go(
    proofs: Proofs, store: Store, clock: Clock
) -> None:
    used, expiring = proofs.issue(ADA, CLIENT), proofs.issue(BO, CLIENT)
    proofs.redeem_link(used.link_token)

    def holding() -> list[str]:
        with store.engine.connect() as conn:
            query = select(data_keys.c.holder_id).where(data_keys.c.holder == "portal_proof")
            return sorted(conn.execute(query).scalars())

    assert holding() == [expiring.proof_id]
    clock.advance(minutes=16)
    proofs.issue("carol@example.com", CLIENT)  # prunes on the way
    with store.engine.connect() as conn:
        sealed = dict(conn.execute(select(portal_proofs.c.id, portal_proofs.c.email_sealed)).all())
    assert sealed[used.proof_id] is None and sealed[expiring.proof_id] is None
    assert len(holding()) == 1  # carol's
    clock.advance(days=1)
    proofs.begin(ADA)  # prunes too
    with store.engine.connect() as conn:
        left = set(conn.execute(select(portal_proofs.c.id)).scalars())
    assert used.proof_id not in left and expiring.proof_id not in left and len(left) == 1


# -- sessions --------------------------------------------------------------------------------


def test_a_session_holds_its_address_until_it_expires(
    proofs: Proofs, clock: Clock, store: Store
) -> None:
    token, began = proofs.begin("ADA.Lovelace@example.com")
    assert began.emails == (ADA,)
    assert began.expires_at - began.began_at == timedelta(minutes=30)
    assert proofs.session(token) == began  # the csrf token too: stable for the session
    assert proofs.session(token + "x") is None and proofs.session("") is None
    _, second = proofs.begin(ADA)
    assert second.id != began.id and second.csrf != began.csrf
    clock.advance(minutes=29, seconds=59)
    assert proofs.session(token) == began
    clock.advance(seconds=1)
    assert proofs.session(token) is None
    proofs.begin(BO)  # prunes expired sessions, their addresses with them
    with store.engine.connect() as conn:
        assert began.id not in set(conn.execute(select(portal_sessions.c.id)).scalars())
        assert began.id not in set(conn.execute(select(data_keys.c.holder_id)).scalars())


def test_a_session_ended_is_gone_with_its_addresses(proofs: Proofs, store: Store) -> None:
    token, session = proofs.begin(ADA)
    other, _ = proofs.begin(BO)
    proofs.end(token)
    proofs.end(token)  # twice: nothing more
    assert proofs.session(token) is None
    assert proofs.session(other) is not None
    with store.engine.connect() as conn:
        query = select(data_keys.c.holder_id).where(data_keys.c.holder == "portal_session")
        assert session.id not in set(conn.execute(query).scalars())
    with pytest.raises(ProofRefused) as caught:
        proofs.add_address(session.id, BO)
    assert caught.value.why == "unknown"


def test_another_address_joins_the_session_only_after_its_own_proof(proofs: Proofs) -> None:
    token, session = proofs.begin(ADA)
    issued = proofs.issue("Bo@Example.org", CLIENT, session_id=session.id)
    proved = proofs.redeem_code(issued.proof_id, issued.code)
    assert proved == Proved(BO, session.id)
    added = proofs.add_address(proved.session_id or "", proved.email)
    assert added == PortalSession(
        session.id, (ADA, BO), session.began_at, session.expires_at, session.csrf
    )
    assert proofs.add_address(session.id, "BO@example.org").emails == (ADA, BO)  # once
    assert proofs.session(token) == added


def test_an_expired_session_takes_no_address(proofs: Proofs, clock: Clock) -> None:
    _, session = proofs.begin(ADA)
    clock.advance(minutes=31)
    with pytest.raises(ProofRefused) as caught:
        proofs.add_address(session.id, BO)
    assert caught.value.why == "expired"


def test_rotating_the_keys_covers_the_portals_sealed_addresses(
    make: Callable[..., Proofs], store: Store
) -> None:
    old, new = KEYS[0], Fernet.generate_key()
    issued = make([old]).issue(ADA, CLIENT)
    token, _ = make([old]).begin(BO)
    rotation = rotate(store, Keyring([new, old]), actor="cli")
    assert rotation.rewrapped == 2 and rotation.unreadable == []
    only_new = make([new])
    assert only_new.redeem_link(issued.link_token).email == ADA
    session = only_new.session(token)
    assert session is not None and session.emails == (BO,)


# -- the audit trail -------------------------------------------------------------------------


def test_every_step_is_audited_under_the_pseudonym_never_the_address(
    proofs: Proofs, store: Store
) -> None:
    token, session = proofs.begin(ADA)
    issued = proofs.issue(BO, CLIENT, session_id=session.id)
    refused(lambda: proofs.redeem_code(issued.proof_id, wrong(issued.code)))
    proofs.redeem_link(issued.link_token)
    proofs.add_address(session.id, BO)
    refused(lambda: proofs.redeem_link("forged"))
    proofs.end(token)
    ada, bo = subject_ref(KEY, ADA), subject_ref(KEY, BO)
    sid, pid = session.id, issued.proof_id
    assert events(store) == [
        {"actor": "portal", "action": "portal.session", "outcome": "began", "subject_ref": ada,
         "details": {"session": sid}},
        {"actor": "portal", "action": "portal.sign_in", "outcome": "requested",
         "subject_ref": bo, "details": {"proof": pid, "session": sid}},
        {"actor": "portal", "action": "portal.sign_in", "outcome": "refused", "subject_ref": bo,
         "details": {"why": "wrong_code", "by": "code", "proof": pid, "left": "4"}},
        {"actor": "portal", "action": "portal.sign_in", "outcome": "proved", "subject_ref": bo,
         "details": {"proof": pid, "by": "link"}},
        {"actor": "portal", "action": "portal.session", "outcome": "added", "subject_ref": bo,
         "details": {"session": sid}},
        {"actor": "portal", "action": "portal.sign_in", "outcome": "refused", "subject_ref": None,
         "details": {"why": "unknown", "by": "link"}},
        {"actor": "portal", "action": "portal.session", "outcome": "ended", "subject_ref": ada,
         "details": {"session": sid}},
    ]  # fmt: skip
    trail = json.dumps(events(store))
    assert ADA not in trail and BO not in trail and CLIENT not in trail
