"""The audit log against whoever can write its database, but holds neither the audit key nor
the checkpoint file: eleven ways to rewrite history, each caught by ``bridge audit --verify``
(the CLI as a subprocess) and named. The chain is written by the CLI (a real sync, which
leaves a signed checkpoint of its head behind); the tampering is plain SQL, the hashes
recomputed as an attacker would: with SHA-256, as before the chain was keyed, or with a key
of their own."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url

from bridge import audit
from bridge.model import AuditEvent, ConsentStatus
from bridge.store.db import Store, engine_url
from bridge_sandbox.emulators.people import Act, Held, Person, seed_hubspot, seed_salesforce
from tests.conftest import AUDIT_KEY, PURPOSES, BridgeCli, Crms, free_port, wait_until_healthy

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
# Opted out in HubSpot, consenting in Salesforce: a sync writes (and audits) several changes each.
PEOPLE = [
    Person(
        f"tamper{n:02d}@example.com",
        hubspot=Held(opted_out_at=T0),
        salesforce=Held(acts=(Act("marketing_email", ConsentStatus.GRANTED, T0 - timedelta(30)),)),
    )
    for n in range(8)
]
FIELDS = (  # what each row's hash covers: the format is public, only the key is secret
    "seq", "occurred_at", "actor", "action", "outcome", "system", "record_id", "subject_ref",
    "reason", "details", "prev_hash",
)  # fmt: skip
ATTACKER_KEY = b"the attacker's own guess at a key"


# -- what an attacker with write access to the database does ----------------------------------


def digest(row: dict[str, Any], key: bytes | None) -> str:
    body = json.dumps(
        {f: row[f] for f in FIELDS}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()
    if key is None:
        return hashlib.sha256(body).hexdigest()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def recompute(conn: Connection, start: int, key: bytes | None) -> None:
    """Every hash from row ``start`` on, each row linked to the one before, the chain whole."""
    query = text("SELECT * FROM audit_log WHERE seq >= :s ORDER BY seq")
    rows = [dict(row) for row in conn.execute(query, {"s": start}).mappings()]
    before = text("SELECT hash FROM audit_log WHERE seq = :s")
    prev = conn.execute(before, {"s": start - 1}).scalar() or "0" * 64
    # The hash column is unique: clear the old values out of the way first.
    conn.execute(text("UPDATE audit_log SET hash = 'old' || seq WHERE seq >= :s"), {"s": start})
    for row in rows:
        row["prev_hash"] = prev
        prev = row["hash"] = digest(row, key)
        conn.execute(
            text("UPDATE audit_log SET prev_hash = :p, hash = :h WHERE seq = :s"),
            {"p": row["prev_hash"], "h": row["hash"], "s": row["seq"]},
        )


def edit(conn: Connection, seq: int) -> None:
    conn.execute(text("UPDATE audit_log SET outcome = 'failed' WHERE seq = :s"), {"s": seq})


def delete(conn: Connection, first: int, last: int) -> None:
    query = text("DELETE FROM audit_log WHERE seq BETWEEN :first AND :last")
    conn.execute(query, {"first": first, "last": last})


def swap(conn: Connection, a: int, b: int) -> None:
    for at, to in ((a, -1), (b, a), (-1, b)):
        conn.execute(text("UPDATE audit_log SET seq = :t WHERE seq = :s"), {"t": to, "s": at})


def renumber_after(conn: Connection, gone: int) -> None:
    last = conn.execute(text("SELECT max(seq) FROM audit_log")).scalar_one()
    for seq in range(gone + 1, last + 1):
        conn.execute(text("UPDATE audit_log SET seq = :t WHERE seq = :s"), {"t": seq - 1, "s": seq})


Tamper = Callable[[Connection, int, int], object]  # (connection, newest row, middle row)
CASES: dict[str, Tamper] = {
    "edit a row": lambda c, n, m: edit(c, m),
    "delete the first row": lambda c, n, m: delete(c, 1, 1),
    "delete a middle row": lambda c, n, m: delete(c, m, m),
    "delete the newest row": lambda c, n, m: delete(c, n, n),
    "delete the newest ten rows": lambda c, n, m: delete(c, n - 9, n),
    "delete every row": lambda c, n, m: delete(c, 1, n),
    "swap two rows": lambda c, n, m: swap(c, m, m + 1),
    "edit, recompute with SHA-256": lambda c, n, m: (edit(c, m), recompute(c, m, None)),
    "edit, recompute with a wrong key": lambda c, n, m: (edit(c, m), recompute(c, m, ATTACKER_KEY)),
    "delete, renumber, recompute with SHA-256": lambda c, n, m: (
        delete(c, m, m), renumber_after(c, m), recompute(c, m, None)
    ),
    "delete, renumber, recompute with a wrong key": lambda c, n, m: (
        delete(c, m, m), renumber_after(c, m), recompute(c, m, ATTACKER_KEY)
    ),
}  # fmt: skip


def expected(n: int, m: int, signed: str) -> dict[str, str]:
    """What ``--verify`` must say to each case (every one exits 1)."""
    covers = f"the checkpoint of {signed} covers {n} rows"
    edited = f"row {m} was edited: its content does not match its keyed hash"
    plain = (
        f"row {m} has a plain SHA-256 hash after keyed rows: it was rewritten by someone without "
        "the audit key (edited, or rows before it removed and the rest renumbered)"
    )
    rewritten = (
        f"row {n} is not the row the checkpoint of {signed} signed: the log was rewritten up to it"
    )
    one_gone = f"row {n} is missing: {covers}, the log has {n - 1}"
    ten_gone = f"rows {n - 9}-{n} are missing: {covers}, the log has {n - 10}"
    return {
        "edit a row": edited,
        "delete the first row": "row 1 is missing (the log starts at row 2)",
        "delete a middle row": f"row {m} is missing (the next row is {m + 1})",
        "delete the newest row": one_gone,
        "delete the newest ten rows": ten_gone,
        "delete every row": f"the log is empty but {covers}",
        "swap two rows": f"rows {m} and {m + 1} are swapped: each holds the other's entry",
        "edit, recompute with SHA-256": f"{plain}; {rewritten}",
        "edit, recompute with a wrong key": f"{edited}; {rewritten}",
        "delete, renumber, recompute with SHA-256": f"{plain}; {one_gone}",
        "delete, renumber, recompute with a wrong key": f"{edited}; {one_gone}",
    }


# -- copies of one seeded database, one per case ----------------------------------------------


@contextmanager
def copies(url: str) -> Iterator[Callable[[str], str]]:
    """A function that makes a copy of the database at ``url`` and returns the copy's URL."""
    made: list[str] = []

    def sqlite_copy(name: str) -> str:
        source = Path(make_url(url).database or "")
        target = source.with_name(f"{name}.db")
        with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
            src.backup(dst)
        return f"sqlite:///{target}"

    def postgres_copy(name: str) -> str:
        database = f"{make_url(url).database}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{database}" TEMPLATE "{make_url(url).database}"')
        made.append(database)
        return make_url(url).set(database=database).render_as_string(hide_password=False)

    try:
        yield sqlite_copy if url.startswith("sqlite") else postgres_copy
    finally:
        for database in made:
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def tampered(url: str, tamper: Tamper, n: int, m: int) -> None:
    engine = create_engine(engine_url(url))
    try:
        with engine.begin() as conn:
            tamper(conn, n, m)
    finally:
        engine.dispose()


@dataclass
class Seeded:
    cli: BridgeCli
    url: str
    checkpoints: Path
    rows: int
    log: str
    """What the sync logged (its checkpoint among it)."""


@pytest.fixture
def seeded(configured_cli: BridgeCli, crms: Crms, database_url: str) -> Seeded:
    """A chain the CLI wrote (schema, then a sync), checkpointed by the CLI to a directory."""
    folder = configured_cli.cwd / "checkpoints"
    folder.mkdir()
    configured_cli.env |= {
        "BRIDGE_DATABASE_URL": database_url,
        "BRIDGE_AUDIT__CHECKPOINT_PATH": str(folder),
    }
    if not database_url.startswith("sqlite"):
        assert configured_cli("db", "upgrade").returncode == 0
    seed_hubspot(crms.hubspot, PEOPLE, PURPOSES)
    seed_salesforce(crms.salesforce, PEOPLE, PURPOSES)
    synced = configured_cli("sync")
    assert synced.returncode == 0, synced.stderr
    rows = len(json.loads(configured_cli("audit", "--json").stdout)["events"])
    assert rows >= 30  # enough for ten to go and a middle to edit
    return Seeded(configured_cli, database_url, folder, rows, synced.stderr)


def newest_checkpoint(folder: Path) -> dict[str, Any]:
    lines = (folder / "audit-checkpoints.jsonl").read_text().splitlines()
    newest: dict[str, Any] = json.loads(lines[-1])
    return newest


def test_every_rewrite_of_the_audit_log_is_caught_and_named(seeded: Seeded) -> None:
    n, m = seeded.rows, seeded.rows // 2
    signed = newest_checkpoint(seeded.checkpoints)
    assert signed["seq"] == n  # the sync's own checkpoint covers every row it wrote
    intact = seeded.cli("audit", "--verify")
    assert intact.returncode == 0, intact.stderr
    assert intact.stdout.strip() == (
        f"audit log intact: {n} events verified; the checkpoint of {signed['time']} (row {n}) "
        "matches"
    )

    found: dict[str, tuple[int, str]] = {}
    with copies(seeded.url) as copy:
        for number, (case, tamper) in enumerate(CASES.items()):
            url = copy(f"case{number}")
            tampered(url, tamper, n, m)
            result = seeded.cli("audit", "--verify", BRIDGE_DATABASE_URL=url)
            assert "Traceback" not in result.stderr
            found[case] = (result.returncode, (result.stdout + result.stderr).strip())
    # The tamper table (pytest -s prints it).
    print("\n| case | `bridge audit --verify` printed | exit |\n|---|---|---|")
    for case, (code, said) in found.items():
        print(f"| {case} | {said} | {code} |")
    named = {
        case: f"bridge: audit log tampered: {f}"
        for case, f in expected(n, m, signed["time"]).items()
    }
    assert found == {case: (1, said) for case, said in named.items()}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_forged_checkpoint_is_named_and_the_public_key_verifies_the_genuine_ones(
    seeded: Seeded,
) -> None:
    printed = seeded.cli("audit", "--public-key")
    assert printed.returncode == 0, printed.stderr
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(printed.stdout.strip()))
    genuine = newest_checkpoint(seeded.checkpoints)
    message = (
        b"consent-bridge audit checkpoint v1\n"
        + json.dumps(
            [genuine["seq"], genuine["hash"], genuine["time"]], separators=(",", ":")
        ).encode()
    )
    public.verify(bytes.fromhex(genuine["signature"]), message)  # what an outside verifier does

    # Someone who deleted the newest rows adds a checkpoint that says the log was that short.
    forged = {**genuine, "seq": genuine["seq"] - 10, "time": "2099-01-01T00:00:00+00:00"}
    forged["signature"] = Ed25519PrivateKey.generate().sign(message).hex()
    with (seeded.checkpoints / "audit-checkpoints.jsonl").open("a") as file:
        file.write(json.dumps(forged) + "\n")
    result = seeded.cli("audit", "--verify")
    assert result.returncode == 1
    assert "2099-01-01T00:00:00+00:00" in result.stderr
    assert "has an invalid signature: forged, altered, or signed with another key" in result.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_without_a_checkpoint_truncation_is_said_to_be_undetectable_the_log_stream_catches_it(
    seeded: Seeded,
) -> None:
    n = seeded.rows
    log = seeded.cli.cwd / "bridge.log"  # what the sync logged, its checkpoint among it
    log.write_text(seeded.log)
    tampered(seeded.url, CASES["delete the newest ten rows"], n, n // 2)

    unchecked = seeded.cli("audit", "--verify", BRIDGE_AUDIT__CHECKPOINT_PATH="")
    assert unchecked.returncode == 0, unchecked.stderr
    assert unchecked.stdout.strip() == (
        f"audit log intact: {n - 10} events verified; no checkpoint configured "
        "(audit.checkpoint_path) to check against, so the removal of the newest rows cannot be "
        "ruled out (give --checkpoint PATH, or set BRIDGE_AUDIT__CHECKPOINT_PATH)"
    )
    caught = seeded.cli("audit", "--verify", "--checkpoint", str(log))
    assert caught.returncode == 1
    assert f"rows {n - 9}-{n} are missing: the checkpoint of " in caught.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_rows_from_before_the_keyed_chain_are_told_apart_and_keyed_once(seeded: Seeded) -> None:
    n = seeded.rows
    tampered(seeded.url, lambda c, _n, _m: recompute(c, 1, None), n, 0)  # as an earlier version
    # Passed off as a log an earlier version wrote: the checkpoint of the keyed head says not.
    passed_off = seeded.cli("audit", "--verify")
    assert passed_off.returncode == 1
    assert f"row {n} is not the row the checkpoint of " in passed_off.stderr
    # A log an earlier version did write has no checkpoint: told apart from an edited one.
    (seeded.checkpoints / "audit-checkpoints.jsonl").unlink()
    before = seeded.cli("audit", "--verify")
    assert before.returncode == 2
    assert before.stderr.strip() == (
        f"bridge: audit: rows 1-{n} were written before the chain was keyed and prove nothing "
        "against whoever can write the database; run `bridge audit --rekey` once to key them"
    )

    keyed = seeded.cli("audit", "--rekey")
    assert keyed.returncode == 0, keyed.stderr
    assert keyed.stdout.strip() == (
        f"audit log keyed: {n} rows written before the chain was keyed now carry keyed hashes"
    )
    after = seeded.cli("audit", "--verify")
    assert after.returncode == 0, after.stderr
    assert f"{n + 1} events verified; the checkpoint of " in after.stdout  # rekey's own
    assert f"(row {n + 1}) matches" in after.stdout
    assert seeded.cli("audit", "--rekey").stdout.strip() == "audit log already keyed: nothing to do"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_no_key_or_no_checkpoint_file_is_configuration(seeded: Seeded) -> None:
    keyless = {k: v for k, v in seeded.cli.env.items() if k != "BRIDGE_PSEUDONYM_KEY"}
    result = BridgeCli(seeded.cli.cwd, keyless)("audit", "--verify")
    assert result.returncode == 2
    assert "set BRIDGE_PSEUDONYM_KEY (or BRIDGE_AUDIT__KEY)" in result.stderr
    missing = seeded.cli("audit", "--verify", "--checkpoint", "nowhere.jsonl")
    assert (missing.returncode, missing.stderr.strip()) == (
        2,
        "bridge: audit --checkpoint: nowhere.jsonl does not exist; give a checkpoint file",
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_daemon_checkpoints_a_moved_head_and_on_stop(
    cli: BridgeCli, crms: Crms, tmp_path: Path
) -> None:
    path = tmp_path / "checkpoints.jsonl"
    cli.env |= {"BRIDGE_AUDIT__CHECKPOINT_PATH": str(path)}
    store = Store(cli.env["BRIDGE_DATABASE_URL"], AUDIT_KEY)

    def signed_seqs() -> list[int]:
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(line)["seq"] for line in lines]

    def run(**env: str) -> subprocess.Popen[str]:
        port = free_port()
        daemon = cli.start("run", "--port", str(port), **env)
        wait_until_healthy(f"http://127.0.0.1:{port}", daemon)
        return daemon

    def stop(daemon: subprocess.Popen[str]) -> None:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0

    # Every half second, when the head moved (here, by another process).
    daemon = run(BRIDGE_AUDIT__CHECKPOINT_SECONDS="0.5")
    try:
        within(20, lambda: signed_seqs() == [1], "the head at start (db upgrade's row)")
        for number in range(3):
            audit.record(store, AuditEvent("test", "test.append", "done", record_id=str(number)))
        within(20, lambda: signed_seqs() == [1, 4], "the moved head, once")
    finally:
        stop(daemon)
    assert signed_seqs() == [1, 4]  # it appended nothing itself: nothing more on stop

    # On stop, after work of its own (an erasure), even when the interval has not come round.
    assert cli("erase", "gone@example.com", "--no-wait").returncode == 0
    daemon = run(BRIDGE_AUDIT__CHECKPOINT_SECONDS="3600", BRIDGE_SCHEDULE__ERASURE_SECONDS="0.2")
    try:
        within(30, lambda: requests_completed(cli), "the daemon completes the erasure")
    finally:
        stop(daemon)
    head = audit.head(store)
    store.dispose()
    assert head is not None and signed_seqs()[-1] == head[0] > 5
    assert cli("audit", "--verify").returncode == 0


def within(seconds: float, check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + seconds  # generous: a shared machine may be slow
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.1)


def requests_completed(cli: BridgeCli) -> bool:
    listed = json.loads(cli("requests", "--json").stdout)["requests"]
    return bool(listed) and {r["status"] for r in listed} == {"completed"}
