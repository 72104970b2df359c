"""Key rotation on both databases: data keys re-wrapped by the newest key, values stored before
data keys converted, and what no configured key opens named by kind and id."""

from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import insert

from bridge import audit
from bridge.sealing import KeyNotConfigured, Keyring
from bridge.services.keys import rotate
from bridge.store import erasure as erasure_rows
from bridge.store import inbox, tables
from bridge.store.db import Store

OLD, NEW = Fernet.generate_key(), Fernet.generate_key()


def event(key: str) -> dict[str, object]:
    return {
        "source": "hubspot", "event_key": key, "event_type": "contact.privacyDeletion",
        "kind": "deletion", "received_at": "2026-12-04T10:00:00.000000+00:00",
    }  # fmt: skip


def request(request_id: str) -> dict[str, object]:
    return {
        "id": request_id, "subject_ref": "f" * 64, "mode": "delete", "trigger": "cli",
        "status": "planned", "received_at": "2026-12-04T10:00", "due_at": "2027-01-03T10:00",
    }  # fmt: skip


def hold_under_the_old_key(store: Store) -> None:
    """An event and a request under data keys wrapped by the old key, and one of each stored
    before data keys, sealed with the old key itself."""
    old = Keyring([OLD])
    with store.transaction() as conn:
        inbox.add(conn, [event("e1") | {"payload": old.seal(b'{"n": 1}')}])
        erasure_rows.add_request(conn, request("r1"), old.seal(b'["ada@example.com"]'))
        legacy = Fernet(OLD)
        conn.execute(
            insert(tables.inbox).values(
                **event("e2"), payload=legacy.encrypt(b'{"n": 2}'), status="pending", attempts=0
            )
        )
        conn.execute(
            insert(tables.erasure_requests).values(
                **request("r2"), emails_encrypted=legacy.encrypt(b'["bo@example.com"]')
            )
        )


def opened(store: Store, keyring: Keyring) -> list[object]:
    """Every held value, opened with ``keyring``."""
    events = inbox.claim(store, {"deletion"}, "2026-12-04T11:00", "2026-12-04T11:05", 10)
    requests = erasure_rows.requests(store)
    return [
        *(json.loads(keyring.open("e", e.payload or b"", e.wrapped_key)) for e in events),
        *(
            json.loads(keyring.open("r", r["emails_encrypted"], r["emails_wrapped_key"]))
            for r in requests
        ),
    ]


def test_rotation_leaves_everything_opening_with_the_newest_key_alone(store: Store) -> None:
    hold_under_the_old_key(store)
    rotation = rotate(store, Keyring([NEW, OLD]), actor="cli")
    assert (rotation.rewrapped, rotation.converted, rotation.unreadable) == (2, 2, [])
    assert opened(store, Keyring([NEW])) == [
        {"n": 1}, {"n": 2}, ["ada@example.com"], ["bo@example.com"],
    ]  # fmt: skip
    [rotated] = [e for e in audit.events(store) if e["action"] == "keys.rotated"]
    assert (rotated["outcome"], rotated["details"]) == (
        "done",
        {"rewrapped": 2, "converted": 2, "unreadable": 0},
    )
    again = rotate(store, Keyring([NEW]), actor="cli")
    assert (again.rewrapped, again.converted, again.unreadable) == (4, 0, [])


def test_what_no_configured_key_opens_is_named_by_kind_and_id_and_left_as_it_is(
    store: Store,
) -> None:
    hold_under_the_old_key(store)
    rotation = rotate(store, Keyring([NEW]), actor="cli")
    assert (rotation.rewrapped, rotation.converted) == (0, 0)
    assert sorted(rotation.unreadable) == [
        "erasure request r1", "erasure request r2", "inbox event 1", "inbox event 2",
    ]  # fmt: skip
    assert "ada@" not in repr(rotation) and "bo@" not in repr(rotation)
    with pytest.raises(KeyNotConfigured, match="is encrypted under a key that is no longer"):
        opened(store, Keyring([NEW]))
    # Nothing was harmed: with the old key listed again, all of it rotates.
    rotation = rotate(store, Keyring([NEW, OLD]), actor="cli")
    assert (rotation.rewrapped, rotation.converted, rotation.unreadable) == (2, 2, [])
