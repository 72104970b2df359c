"""Signed checkpoints of the audit chain's head: published to the log stream and to an
append-only file, read back from either, forgeries named."""

from __future__ import annotations

import base64
import io
import json
import stat
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge import audit, checkpoints
from bridge.errors import ConfigError
from bridge.logs import configure
from bridge.model import AuditEvent
from bridge.store.db import Store

KEY = checkpoints.signing_key(None, b"a secret of thirty-two characters or more")


@pytest.fixture
def log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure("info", stream)
    yield stream
    configure("info")


def append(store: Store, count: int) -> None:
    for n in range(count):
        audit.record(store, AuditEvent("test", "test.append", "done", record_id=str(n)))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_moved_head_is_signed_to_the_log_and_an_owner_only_file(
    store: Store, tmp_path: Path, log: io.StringIO
) -> None:
    path = tmp_path / "checkpoints.jsonl"
    publisher = checkpoints.Checkpointer(store, KEY, path)
    assert publisher.publish_if_moved() is None  # an empty log: nothing to sign
    append(store, 3)
    first = publisher.publish_if_moved()
    assert first is not None and (first.seq, first.hash) == audit.head(store)
    assert publisher.publish_if_moved() is None  # the head has not moved
    append(store, 2)
    second = publisher.publish_if_moved()
    assert second is not None and second.seq == 5

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [first.fields(), second.fields()]
    logged = [json.loads(line) for line in log.getvalue().splitlines()]
    assert [entry["event"] for entry in logged] == ["audit.checkpoint"] * 2
    assert [{k: e[k] for k in lines[0]} for e in logged] == lines  # not redacted, whole

    public = KEY.public_key()
    assert checkpoints.read(path, public) == checkpoints.Found(second)
    log_file = tmp_path / "bridge.log"
    log_file.write_text("not json\n" + log.getvalue() + '{"event": "daemon.started"}\n')
    assert checkpoints.read(log_file, public) == checkpoints.Found(second)


def test_a_directory_holds_the_checkpoints_in_a_file_of_their_own(tmp_path: Path) -> None:
    first, second = checkpoints.sign((7, "a" * 64), KEY), checkpoints.sign((9, "b" * 64), KEY)
    checkpoints.publish(first, tmp_path)
    checkpoints.publish(second, tmp_path)
    assert (tmp_path / checkpoints.FILE_NAME).read_text().count("\n") == 2
    assert checkpoints.read(tmp_path, KEY.public_key()) == checkpoints.Found(second)


def test_forged_altered_and_malformed_checkpoints_are_named(tmp_path: Path) -> None:
    genuine = checkpoints.sign((10, "a" * 64), KEY)
    forged = checkpoints.sign((50, "b" * 64), Ed25519PrivateKey.generate())
    altered = replace(genuine, seq=40)
    path = tmp_path / "checkpoints.jsonl"
    lines = [genuine.fields(), forged.fields(), altered.fields(), {"seq": "x", "signature": 1}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    found = checkpoints.read(path, KEY.public_key())
    assert found.newest == genuine
    assert found.invalid == (
        f"the checkpoint of {forged.time} (row 50) at {path}:2 has an invalid signature: "
        "forged, altered, or signed with another key",
        f"the checkpoint of {genuine.time} (row 40) at {path}:3 has an invalid signature: "
        "forged, altered, or signed with another key",
        f"{path}:4 is a malformed checkpoint",
    )


def test_an_unwritable_checkpoint_path_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="BRIDGE_AUDIT__CHECKPOINT_PATH"):
        checkpoints.publish(checkpoints.sign((1, "a" * 64), KEY), tmp_path / "no" / "such")


def test_the_signing_key_is_configured_or_derived_and_never_the_secret_itself() -> None:
    raw = bytes(range(32))
    configured = checkpoints.signing_key(base64.b64encode(raw).decode(), None)
    assert configured.private_bytes_raw() == raw
    derived = checkpoints.signing_key(None, b"a secret of thirty-two characters or more")
    assert derived.private_bytes_raw() == KEY.private_bytes_raw()
    assert derived.private_bytes_raw() != audit.chain_key(
        b"a secret of thirty-two characters or more"
    )
    assert len(base64.b64decode(checkpoints.public_key_text(derived))) == 32
    with pytest.raises(ConfigError, match="BRIDGE_PSEUDONYM_KEY"):
        checkpoints.signing_key(None, None)
