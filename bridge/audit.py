"""The audit log: append-only, hash-chained under a key, and free of personal data.

Each row stores the previous row's hash and its own: an HMAC-SHA256 of its canonical JSON
(which includes that previous hash and its sequence number) under a key that never enters the
database. Whoever can write the database but does not hold the key cannot recompute the hashes
after an edit, so ``verify`` names the first row edited, deleted or reordered. Removing the
newest rows leaves a shorter chain that is whole: signed checkpoints of the head, kept outside
the database (:mod:`bridge.checkpoints`), catch that.

Rows written before the chain was keyed carry a plain SHA-256. ``verify`` tells them apart
from edited ones, and ``rekey`` keys them, once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from itertools import chain, pairwise
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, RowMapping

from bridge.errors import BridgeError, ConfigError
from bridge.logs import looks_personal
from bridge.model import AuditEvent
from bridge.store import audit_log
from bridge.store.db import AUDIT_CHAIN, AuditChain, Store

if TYPE_CHECKING:
    from bridge.checkpoints import Checkpoint

GENESIS = "0" * 64
CHAINED_FIELDS = (
    "seq",
    "occurred_at",
    "actor",
    "action",
    "outcome",
    "system",
    "record_id",
    "subject_ref",
    "reason",
    "details",
    "prev_hash",
)
NO_KEY = (
    "audit.key: not set, nor the pseudonym key it is otherwise derived from; set "
    "BRIDGE_PSEUDONYM_KEY (or BRIDGE_AUDIT__KEY) to a random secret of at least 32 characters"
)
KEY_HINT = (
    "or the audit key is not the one the log was written with (BRIDGE_AUDIT__KEY, else "
    "derived from BRIDGE_PSEUDONYM_KEY)"
)


def derive(secret: bytes, purpose: str) -> bytes:
    """A 32-byte key for one ``purpose`` of the audit log (HKDF-SHA256 with a label of its
    own): the chain and the checkpoints never use the configured secret itself, nor each
    other's key."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    label = f"consent-bridge audit {purpose}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(secret)


def chain_key(secret: bytes) -> bytes:
    """The chain's HMAC key, from ``[audit] key`` or else the pseudonym key."""
    return derive(secret, "chain")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def row_hash(row: Mapping[str, Any] | RowMapping, key: bytes | None) -> str:
    """The row's HMAC-SHA256 under ``key``; with None, the plain SHA-256 of the rows written
    before the chain was keyed."""
    body = canonical_json({f: row[f] for f in CHAINED_FIELDS}).encode()
    if key is None:
        return hashlib.sha256(body).hexdigest()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def require_key(state: AuditChain) -> bytes:
    """The store's chain key; nothing appends or verifies without one."""
    if state.key is None:
        raise ConfigError([NO_KEY])
    return state.key


def _refuse_personal_data(event: AuditEvent) -> None:
    """An audit row is kept for years: a programming error that leaks an email must fail."""
    for name, value in asdict(event).items():
        text = canonical_json(value) if not isinstance(value, str) else value
        if looks_personal(text):
            raise ValueError(f"audit event field {name!r} looks like personal data")


def append(conn: Connection, event: AuditEvent) -> int:
    """Append inside a transaction opened with ``store.transaction(serialize=audit_log.LOCK)``.

    Callers that change state pass their own transaction, so the change and its audit row
    commit together or not at all.
    """
    _refuse_personal_data(event)
    state: AuditChain = conn.get_execution_options()[AUDIT_CHAIN]
    key = require_key(state)
    last = audit_log.last_link(conn)
    seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS)
    row: dict[str, Any] = {
        **asdict(event),
        "details": canonical_json(event.details),
        "seq": seq,
        "occurred_at": datetime.now(UTC).isoformat(timespec="microseconds"),
        "prev_hash": prev_hash,
    }
    row["hash"] = row_hash(row, key)
    audit_log.insert_row(conn, row)
    state.appended = True
    return seq


def record(store: Store, event: AuditEvent) -> int:
    """Append one event in a transaction of its own."""
    with store.transaction(serialize=audit_log.LOCK) as conn:
        return append(conn, event)


def head(store: Store) -> tuple[int, str] | None:
    """The newest row's sequence number and hash, which a checkpoint signs."""
    with store.engine.connect() as conn:
        return audit_log.last_link(conn)


def events(store: Store, subject_ref: str | None = None) -> Iterator[dict[str, Any]]:
    """Events in order, as plain dicts with ``details`` decoded."""
    for row in audit_log.rows(store, subject_ref):
        yield {**row, "details": json.loads(row["details"])}


def newest(
    store: Store,
    subject_ref: str | None = None,
    since: datetime | None = None,
    limit: int | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """The newest ``limit`` events (all without one), at or after ``since`` (an aware time),
    oldest first, as :func:`events` gives them; and how many older ones match but are left
    out."""
    bound = since.astimezone(UTC).isoformat(timespec="microseconds") if since else None
    found, left_out = audit_log.newest(store, subject_ref, bound, limit)
    return [{**row, "details": json.loads(row["details"])} for row in found], left_out


@dataclass(frozen=True)
class Verification:
    checked: int
    """Rows that fit the chain, from the first."""
    broken_at: int | None = None
    findings: tuple[str, ...] = ()
    """What does not fit, each naming it: the chain's first break, then the checkpoint's."""
    unkeyed: int = 0
    """Rows 1 to ``unkeyed`` were hashed before the chain was keyed: they prove nothing
    against someone who can write the database until :func:`rekey` keys them."""

    @property
    def ok(self) -> bool:
        return not self.findings and not self.unkeyed


def verify(store: Store, checkpoint: Checkpoint | None = None) -> Verification:
    """Recompute the keyed chain from the first row, stopping at the first row that does not
    fit; then hold the log against ``checkpoint``: its row must be there, with its hash."""
    key = require_key(store.audit)
    with store.engine.connect() as conn:
        return _verify(conn, key, checkpoint)


def rekey(store: Store, checkpoint: Checkpoint | None = None) -> int:
    """Key the rows written before the chain was keyed, in one transaction, audited; the
    whole log must verify first (only the plain hashes of its oldest rows are allowed).
    Every row's links are rewritten, the keyed rows' too: their chain runs through the
    older ones. Returns how many rows were unkeyed."""
    key = require_key(store.audit)
    with store.transaction(serialize=audit_log.LOCK) as conn:
        result = _verify(conn, key, checkpoint)
        if result.findings:
            raise BridgeError(f"audit --rekey: refused, {'; '.join(result.findings)}")
        if not result.unkeyed:
            return 0
        after, prev = 0, GENESIS
        while rows := audit_log.batch(conn, after):
            links = []
            for row in rows:
                new = row_hash({**row, "prev_hash": prev}, key)
                links.append((int(row["seq"]), prev, new))
                prev = new
            audit_log.relink(conn, links)
            after = int(rows[-1]["seq"])
        append(
            conn,
            AuditEvent("cli", "audit.rekey", "done", details={"rows": result.unkeyed}),
        )
        return result.unkeyed


def _verify(conn: Connection, key: bytes, checkpoint: Checkpoint | None) -> Verification:
    checked, unkeyed, broken_at, finding = _walk(conn, key)
    findings = [finding] if finding else []
    if checkpoint is not None and (beyond := _against(conn, checkpoint)):
        findings.append(beyond)
    return Verification(checked, broken_at, tuple(findings), unkeyed)


def _walk(conn: Connection, key: bytes) -> tuple[int, int, int | None, str | None]:
    """How many rows fit, how many of those are unkeyed, and where and how the chain breaks."""
    expected, prev, unkeyed = 1, GENESIS, 0
    for row, following in pairwise(chain(_rows(conn), [None])):
        assert row is not None  # only the last pair's second is None
        seq = int(row["seq"])
        if seq != expected:
            return expected - 1, unkeyed, expected, _gap(expected, seq)
        keyed = row["hash"] == row_hash(row, key)
        plain = not keyed and row["hash"] == row_hash(row, None)
        problem = None
        if not keyed and not plain:
            problem = _moved_or_edited(row, following, key, no_keyed_row_yet=unkeyed == seq - 1)
        elif plain and unkeyed != seq - 1:
            problem = (
                f"row {seq} has a plain SHA-256 hash after keyed rows: it was rewritten by "
                "someone without the audit key (edited, or rows before it removed and the rest "
                "renumbered)"
            )
        elif row["prev_hash"] != prev:
            problem = (
                f"row {seq} does not link to row {seq - 1}: row {seq - 1} was replaced, or rows "
                f"before {seq} were removed and the rest renumbered"
            )
        if problem:
            return seq - 1, unkeyed, seq, problem
        unkeyed += plain
        expected, prev = seq + 1, row["hash"]
    return expected - 1, unkeyed, None, None


def _rows(conn: Connection) -> Iterator[RowMapping]:
    """Every row in chain order, a batch at a time: little memory, and a connection that may
    write meanwhile (:func:`rekey`)."""
    after = None
    while rows := audit_log.batch(conn, after):
        yield from rows
        after = int(rows[-1]["seq"])


def _gap(expected: int, found: int) -> str:
    if found < expected:  # only a row numbered below 1 sorts before its place
        return f"row {found} is out of place: the chain has no row {found}"
    missing = f"row {expected} is" if found == expected + 1 else f"rows {expected}-{found - 1} are"
    where = f"the log starts at row {found}" if expected == 1 else f"the next row is {found}"
    return f"{missing} missing ({where})"


def _moved_or_edited(
    row: RowMapping, following: RowMapping | None, key: bytes, no_keyed_row_yet: bool
) -> str:
    """Name a row whose hash fits neither its content nor the plain hash: the next row's
    entry moved up (its sequence number is part of what was hashed), else an edit."""
    seq = int(row["seq"])
    if row_hash({**row, "seq": seq + 1}, key) == row["hash"]:
        if following is not None and row_hash({**following, "seq": seq}, key) == following["hash"]:
            return f"rows {seq} and {seq + 1} are swapped: each holds the other's entry"
        return (
            f"row {seq} holds the entry written as row {seq + 1}: a row before it was removed "
            "and the rest renumbered"
        )
    hint = f", {KEY_HINT}" if no_keyed_row_yet else ""
    return f"row {seq} was edited: its content does not match its keyed hash{hint}"


def _against(conn: Connection, checkpoint: Checkpoint) -> str | None:
    """What the log lacks that ``checkpoint`` signed: rows it covered, or its head row."""
    count, last = audit_log.extent(conn)
    signed = f"the checkpoint of {checkpoint.time} covers {checkpoint.seq} rows"
    if count == 0:
        return f"the log is empty but {signed}"
    if last < checkpoint.seq:
        first = last + 1
        missing = (
            f"row {first} is" if first == checkpoint.seq else f"rows {first}-{checkpoint.seq} are"
        )
        return f"{missing} missing: {signed}, the log has {count}"
    if audit_log.hash_at(conn, checkpoint.seq) != checkpoint.hash:
        return (
            f"row {checkpoint.seq} is not the row the checkpoint of {checkpoint.time} signed: "
            "the log was rewritten up to it"
        )
    return None
