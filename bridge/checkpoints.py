"""Signed checkpoints of the audit chain's head, kept where the database's writers cannot reach.

The keyed chain (:mod:`bridge.audit`) catches every edit but not the removal of the newest
rows: what remains is a shorter chain, whole. A checkpoint says how long the chain was and
what its newest row's hash was, at a time, signed with Ed25519. It goes to the log stream
(one ``audit.checkpoint`` line, no personal data) and is appended to ``[audit]
checkpoint_path``; ``bridge audit --verify`` holds the log against the newest one it finds
there, or in any file it is given (a log file too: it picks out the checkpoint lines).
"""

from __future__ import annotations

import base64
import json
import os
import threading
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge import audit
from bridge.errors import ConfigError
from bridge.logs import get_logger

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from bridge.store.db import Store

FILE_NAME = "audit-checkpoints.jsonl"
"""The file a configured directory holds the checkpoints in."""
SIGNED = b"consent-bridge audit checkpoint v1\n"
"""Put before what is signed, so that the signature means this and nothing else."""


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    """The newest row then, and so how many rows the chain had (they are numbered from 1)."""
    hash: str
    time: str
    signature: str = ""
    """Ed25519, hex (base64 holds '+' and '/', which the log's phone-number filter may take
    for a number)."""

    def message(self) -> bytes:
        return SIGNED + audit.canonical_json([self.seq, self.hash, self.time]).encode()

    def fields(self) -> dict[str, Any]:
        return asdict(self)

    def signed_by(self, key: Ed25519PublicKey) -> bool:
        from cryptography.exceptions import InvalidSignature

        try:
            key.verify(bytes.fromhex(self.signature), self.message())
        except (InvalidSignature, ValueError):
            return False
        return True


def signing_key(configured: str | None, secret: bytes | None) -> Ed25519PrivateKey:
    """The key checkpoints are signed with: ``[audit] signing_key`` (base64 of the 32 raw
    bytes), else derived from the audit log's secret."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if configured:
        return Ed25519PrivateKey.from_private_bytes(base64.b64decode(configured))
    if secret is None:
        raise ConfigError([audit.NO_KEY])
    return Ed25519PrivateKey.from_private_bytes(audit.derive(secret, "checkpoint"))


def public_key_text(key: Ed25519PrivateKey) -> str:
    """The public half, base64 of its 32 raw bytes, for verifiers to pin."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def sign(head: tuple[int, str], key: Ed25519PrivateKey) -> Checkpoint:
    seq, newest = head
    unsigned = Checkpoint(seq, newest, datetime.now(UTC).isoformat(timespec="seconds"))
    return replace(unsigned, signature=key.sign(unsigned.message()).hex())


def publish(checkpoint: Checkpoint, path: Path | None) -> None:
    """To the log stream, and appended to ``path`` (a file, or a directory for
    :data:`FILE_NAME`): created 0600, opened to append only, synced to disk."""
    get_logger("bridge.audit").info("audit.checkpoint", **checkpoint.fields())
    if path is None:
        return
    target = path / FILE_NAME if path.is_dir() else path
    line = json.dumps(checkpoint.fields()) + "\n"
    try:
        with open(target, "a", encoding="utf-8", opener=_owner_only) as file:
            file.write(line)
            file.flush()
            os.fsync(file.fileno())
    except OSError as error:
        raise ConfigError(
            [
                f"audit.checkpoint_path: cannot append to {target} "
                f"({error.strerror or type(error).__name__}); point BRIDGE_AUDIT__CHECKPOINT_PATH "
                "at a file or directory the bridge may write"
            ]
        ) from None


def _owner_only(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


@dataclass
class Checkpointer:
    """Signs and publishes the chain's head whenever it moved since this process last did."""

    store: Store
    key: Ed25519PrivateKey = field(repr=False)
    path: Path | None
    _last: tuple[int, str] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def publish_if_moved(self) -> Checkpoint | None:
        with self._lock:
            head = audit.head(self.store)
            if head is None or head == self._last:
                return None
            checkpoint = sign(head, self.key)
            publish(checkpoint, self.path)
            self._last = head
            return checkpoint


@dataclass(frozen=True)
class Found:
    newest: Checkpoint | None = None
    """The checkpoint with the highest row among those this bridge signed."""
    invalid: tuple[str, ...] = ()
    """Each line that claims to be a checkpoint but is not one this bridge signed, named."""


def read(path: Path, key: Ed25519PublicKey) -> Found:
    """The checkpoints in ``path`` (a file, or every file of a directory): lines holding one
    JSON object with a signature, whatever else the file holds (log lines)."""
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    valid: list[Checkpoint] = []
    invalid: list[str] = []
    for file in files:
        try:
            lines = file.read_bytes().splitlines()
        except OSError as error:
            raise ConfigError(
                [
                    f"audit --checkpoint: cannot read {file} "
                    f"({error.strerror or type(error).__name__}); give a readable file or "
                    "directory of checkpoints"
                ]
            ) from None
        for number, line in enumerate(lines, 1):
            try:
                checkpoint = _parse(line)
            except ValueError:
                invalid.append(f"{file}:{number} is a malformed checkpoint")
                continue
            if checkpoint is None:
                continue
            if checkpoint.signed_by(key):
                valid.append(checkpoint)
            else:
                invalid.append(
                    f"the checkpoint of {checkpoint.time} (row {checkpoint.seq}) at "
                    f"{file}:{number} has an invalid signature: forged, altered, or signed "
                    "with another key"
                )
    newest = max(valid, key=lambda c: (c.seq, c.time), default=None)
    return Found(newest, tuple(invalid))


def _parse(line: bytes) -> Checkpoint | None:
    """The checkpoint ``line`` holds; None for any other line. ValueError for a line that
    claims to be one (it holds a signature) but is not well formed."""
    try:
        value = json.loads(line)
    except ValueError:  # UnicodeDecodeError too
        return None
    if not isinstance(value, dict) or "signature" not in value:
        return None
    seq, newest, time, signature = (value.get(k) for k in ("seq", "hash", "time", "signature"))
    if not (
        isinstance(seq, int)
        and isinstance(newest, str)
        and isinstance(time, str)
        and isinstance(signature, str)
    ):
        raise ValueError("not a checkpoint")
    return Checkpoint(seq, newest, time, signature)
