"""Key rotation: every held value's data key wrapped anew by the newest configured key, and
values stored before data keys given one, so that an older key can be taken out of
``BRIDGE_ENCRYPTION_KEY`` (ARCHITECTURE.md, "Held personal data").

Safe beside running daemons: every write is conditional on the row being as it was read, so
a value finished, destroyed or sealed anew meanwhile is left as it now is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge import audit
from bridge.model import AuditEvent
from bridge.sealing import KeyNotConfigured, Keyring, Sealed
from bridge.store import data_keys
from bridge.store.db import Store

BATCH = 500  # rows read, then written in one transaction


@dataclass(frozen=True)
class Rotation:
    rewrapped: int  # data keys now wrapped by the newest key
    converted: int  # values stored before data keys, now sealed under one
    unreadable: list[str]  # held values no configured key opens, by kind and id

    def counts(self) -> dict[str, int]:
        return {
            "rewrapped": self.rewrapped,
            "converted": self.converted,
            "unreadable": len(self.unreadable),
        }


def rotate(store: Store, keyring: Keyring, actor: str, batch: int = BATCH) -> Rotation:
    """Re-wrap and convert everything held, audit the counts, and scrub the database's files
    of the copies wrapped by older keys."""
    unreadable: list[str] = []
    rewrapped = _rewrap(store, keyring, batch, unreadable)
    converted = sum(
        _convert(store, keyring, holder, batch, unreadable) for holder in data_keys.HOLDERS.values()
    )
    rotation = Rotation(rewrapped, converted, unreadable)
    audit.record(
        store,
        AuditEvent(
            actor=actor,
            action="keys.rotated",
            outcome="incomplete" if unreadable else "done",
            details=rotation.counts(),
        ),
    )
    data_keys.scrub(store)  # if busy, the daemon's scrub job does it
    return rotation


def _rewrap(store: Store, keyring: Keyring, batch: int, unreadable: list[str]) -> int:
    done, after = 0, None
    while keys := data_keys.keys_after(store, after, batch):
        wrapped = []
        for key in keys:
            what = f"{key.holder.noun} {key.holder_id}"
            try:
                wrapped.append((key, keyring.rewrap(what, key.wrapped)))
            except KeyNotConfigured:
                unreadable.append(what)
        with store.transaction() as conn:
            done += sum(data_keys.rewrap(conn, key, new) for key, new in wrapped)
        after = (keys[-1].holder.name, keys[-1].holder_id)
    return done


def _convert(
    store: Store, keyring: Keyring, holder: data_keys.Holder, batch: int, unreadable: list[str]
) -> int:
    done, after = 0, None
    while values := data_keys.unkeyed_after(store, holder, after, batch):
        sealed: list[tuple[Any, bytes, Sealed]] = []
        for row_id, value in values:
            what = f"{holder.noun} {row_id}"
            try:
                sealed.append((row_id, value, keyring.seal(keyring.open(what, value, None))))
            except KeyNotConfigured:
                unreadable.append(what)
        with store.transaction() as conn:
            done += sum(data_keys.give_key(conn, holder, *row) for row in sealed)
        after = values[-1][0]
    return done
