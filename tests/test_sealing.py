"""The keyring: the newest key seals, any configured key opens, a missing key is named."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet, InvalidToken

from bridge.errors import BridgeError
from bridge.sealing import KeyNotConfigured, Keyring

OLD, NEW, OTHER = Fernet.generate_key(), Fernet.generate_key(), Fernet.generate_key()
FIX = (
    "inbox event 7 is encrypted under a key that is no longer configured; add the old key "
    "after the new one in BRIDGE_ENCRYPTION_KEY, then run `bridge keys rotate`"
)


def test_each_value_gets_a_data_key_of_its_own_wrapped_by_the_newest_key() -> None:
    first, second = Keyring([NEW, OLD]).seal(b"ada@example.com"), Keyring([NEW]).seal(b"x")
    assert first.wrapped_key != second.wrapped_key
    data_key = Fernet(NEW).decrypt(first.wrapped_key)  # the newest key wrapped it
    assert Fernet(data_key).decrypt(first.token) == b"ada@example.com"
    with pytest.raises(InvalidToken):  # the value itself is not under a configured key
        Fernet(NEW).decrypt(first.token)
    assert Keyring([NEW]).open("inbox event 7", first.token, first.wrapped_key) == (
        b"ada@example.com"
    )


def test_a_value_sealed_under_the_old_key_opens_while_the_old_key_is_listed_second() -> None:
    sealed = Keyring([OLD]).seal(b"ada@example.com")
    legacy = Fernet(OLD).encrypt(b"bo@example.com")  # stored before data keys
    keyring = Keyring([NEW, OLD])
    assert keyring.open("inbox event 7", sealed.token, sealed.wrapped_key) == b"ada@example.com"
    assert keyring.open("inbox event 8", legacy, None) == b"bo@example.com"


def test_without_the_old_key_the_problem_and_its_fix_are_named() -> None:
    sealed = Keyring([OLD]).seal(b"ada@example.com")
    legacy = Fernet(OLD).encrypt(b"bo@example.com")
    for token, wrapped in ((sealed.token, sealed.wrapped_key), (legacy, None)):
        with pytest.raises(KeyNotConfigured) as caught:
            Keyring([NEW]).open("inbox event 7", token, wrapped)
        assert str(caught.value) == FIX
        assert caught.value.exit_code == 2


def test_rewrapping_moves_a_data_key_to_the_newest_key_and_keeps_the_value() -> None:
    sealed = Keyring([OLD]).seal(b"ada@example.com")
    rewrapped = Keyring([NEW, OLD]).rewrap("inbox event 7", sealed.wrapped_key)
    assert Keyring([NEW]).open("x", sealed.token, rewrapped) == b"ada@example.com"
    with pytest.raises(KeyNotConfigured):
        Keyring([NEW]).rewrap("inbox event 7", sealed.wrapped_key)


def test_a_value_that_does_not_match_its_data_key_is_damaged_not_a_key_problem() -> None:
    sealed, other = Keyring([NEW]).seal(b"ada@example.com"), Keyring([NEW]).seal(b"x")
    with pytest.raises(BridgeError, match="erasure request r1 is damaged") as caught:
        Keyring([NEW, OTHER]).open("erasure request r1", sealed.token, other.wrapped_key)
    assert not isinstance(caught.value, KeyNotConfigured)
    assert "ada" not in str(caught.value)
