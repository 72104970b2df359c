"""Personal data held while work is in flight (an erasure request's addresses, a webhook
event's payload), sealed so that destroying it is real.

Each held value is encrypted with a data key of its own, stored apart (``store.data_keys``)
and wrapped by the configured keys. Finishing the work deletes the data key: copies of the
value a database still holds (SQLite's WAL, PostgreSQL's dead rows) can then be opened by no
one, whatever key they have (ARCHITECTURE.md, "Held personal data"). The configured keys are
a keyring, newest first: the newest wraps, any of them opens, and ``bridge keys rotate``
re-wraps everything under the newest, so that an old key can be retired.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from bridge.errors import BridgeError


@dataclass(frozen=True)
class Sealed:
    """A value encrypted with its own data key, and that key wrapped by the keyring."""

    token: bytes = field(repr=False)
    wrapped_key: bytes = field(repr=False)


class KeyNotConfigured(BridgeError):
    """A held value no configured key opens: the key it was sealed under was removed from the
    settings. Configuration, not the value's fault: nothing is given up on because of it."""

    exit_code = 2

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} is encrypted under a key that is no longer configured; add the old key "
            "after the new one in BRIDGE_ENCRYPTION_KEY, then run `bridge keys rotate`"
        )


class Keyring:
    """The configured encryption keys, newest first."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        self._keys = MultiFernet([Fernet(key) for key in keys])

    def seal(self, value: bytes) -> Sealed:
        """``value`` under a new data key, wrapped by the newest key."""
        data_key = Fernet.generate_key()
        return Sealed(Fernet(data_key).encrypt(value), self._keys.encrypt(data_key))

    def open(self, what: str, token: bytes, wrapped_key: bytes | None) -> bytes:
        """The value ``what`` (e.g. "inbox event 7") names; ``wrapped_key`` None for one stored
        before data keys, sealed with a configured key itself."""
        try:
            data_key = self._keys.decrypt(wrapped_key) if wrapped_key is not None else None
        except InvalidToken:
            raise KeyNotConfigured(what) from None
        try:
            if data_key is None:
                return self._keys.decrypt(token)
            return Fernet(data_key).decrypt(token)
        except InvalidToken:
            if data_key is None:
                raise KeyNotConfigured(what) from None
            raise BridgeError(f"{what} is damaged: it does not match its own data key") from None

    def rewrap(self, what: str, wrapped_key: bytes) -> bytes:
        """A data key wrapped anew by the newest key (the data key itself unchanged)."""
        try:
            return self._keys.rotate(wrapped_key)
        except InvalidToken:
            raise KeyNotConfigured(what) from None
