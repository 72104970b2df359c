"""Destroyed means destroyed: once the daemon has finished an event whose payload held an
address and completed an erasure, nothing in the database's files decrypts, with the
configured key or any data key found in them: SQLite's file, WAL and shared memory, or
every page of PostgreSQL's tables (dead rows included)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable

import httpx
import psycopg
import pytest
from cryptography.fernet import Fernet, InvalidToken

from bridge.store import inbox
from bridge.store.db import Store
from tests.conftest import BridgeCli, Crms, free_port, wait_until_healthy
from tests.runtime.conftest import (
    CLIENT_SECRET,
    ORG_ID,
    OUTBOUND_TOKEN,
    Receiver,
    hubspot_event,
    outbound_message,
)

EVE = "eve.shred@example.com"
TOKEN = re.compile(rb"gAAAAA[A-Za-z0-9_-]{40,}={0,2}")  # a Fernet token (version byte 0x80)


@pytest.fixture
def daemon_cli(bridge: BridgeCli, crms: Crms, database_url: str) -> BridgeCli:
    """The CLI aimed at both emulators, on a migrated database of either kind."""
    bridge.env |= crms.env() | {"BRIDGE_DATABASE_URL": database_url}
    assert bridge("db", "upgrade").returncode == 0
    return bridge


def test_a_finished_event_and_a_completed_erasure_leave_nothing_that_decrypts(
    daemon_cli: BridgeCli, crms: Crms, database_url: str
) -> None:
    contact = crms.seed_salesforce("Contact", LastName="Shred", Email=EVE)
    person = crms.seed_hubspot(email=EVE, firstname="Eve")
    files = database_files(daemon_cli, database_url)
    key = daemon_cli.env["BRIDGE_ENCRYPTION_KEY"].encode()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = daemon_cli.start(
        "run", "--port", str(port),
        BRIDGE_HUBSPOT__CLIENT_SECRET=CLIENT_SECRET,
        BRIDGE_SALESFORCE__ORGANIZATION_ID=ORG_ID,
        BRIDGE_SALESFORCE__OUTBOUND_TOKEN=OUTBOUND_TOKEN,
        BRIDGE_SCHEDULE__INBOX_SECONDS="0.5",
        BRIDGE_SCHEDULE__ERASURE_SECONDS="1",  # also the scrub's interval
        BRIDGE_SCHEDULE__INCREMENTAL_SYNC_MINUTES="600",
    )  # fmt: skip
    store = Store(database_url)
    try:
        wait_until_healthy(url, process)
        with httpx.Client(timeout=10) as http:
            receiver = Receiver(url, store, crms.settings, http)
            # An event whose payload holds the address, processed and finished...
            fields = {"Id": contact, "Email": EVE, "HasOptedOutOfEmail": "true"}
            message = outbound_message([("04l000000000001AAA", "Contact", fields)])
            assert receiver.post_salesforce(message).status_code == 200
            until(lambda: statuses(store) == ["done"], "the consent event was not processed")
            # ...then a privacy deletion: an erasure request, run to completion.
            deletion = hubspot_event(1, "contact.privacyDeletion", objectId=int(person))
            assert receiver.post_hubspot([deletion]).status_code == 200
            until(lambda: statuses(store) == ["done", "done"], "the deletion was not processed")
        listed = daemon_cli("requests", "--json")
        assert [r["status"] for r in listed_requests(listed.stdout)] == ["completed"]

        # While the daemon still runs (a copy taken now: a backup, a disk snapshot), after its
        # scrub: nothing decrypts, and the address is nowhere in clear.
        deadline = time.monotonic() + 60
        while found := decrypted(files(), [key]):
            assert time.monotonic() < deadline, f"still decrypts after the scrub: {found}"
            time.sleep(0.25)
        assert_nothing_recoverable(files(), key)
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0
        store.dispose()
    assert_nothing_recoverable(files(), key)


def statuses(store: Store) -> list[str]:
    return [row["status"] for row in inbox.all_rows(store)]


def listed_requests(stdout: str) -> list[dict[str, object]]:
    requests: list[dict[str, object]] = json.loads(stdout)["requests"]
    return requests


def until(condition: Callable[[], bool], failure: str, seconds: float = 60) -> None:
    """Poll, with a margin a busy machine cannot exhaust; the daemon's jobs run every second."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.25)


def assert_nothing_recoverable(contents: dict[str, bytes], key: bytes) -> None:
    found = decrypted(contents, [key])
    assert found == [], found
    for name, data in contents.items():
        assert EVE.encode() not in data.lower(), name


def decrypted(contents: dict[str, bytes], keys: Iterable[bytes]) -> list[str]:
    """What every Fernet token in ``contents`` decrypts to, with ``keys`` and with every data
    key recovered that way (a token decrypting to a Fernet key), until nothing more opens."""
    tokens = {token for data in contents.values() for token in TOKEN.findall(data)}
    known, found, opened = list(keys), [], set()
    while True:
        more = False
        for token in tokens - opened:
            for key in known:
                try:
                    plain = Fernet(key).decrypt(token)
                except (InvalidToken, ValueError):
                    continue
                opened.add(token)
                found.append(plain.decode(errors="replace"))
                if re.fullmatch(rb"[A-Za-z0-9_-]{43}=", plain):  # a data key
                    known.append(plain)
                    more = True
                break
        if not more:
            return found


def database_files(cli: BridgeCli, database_url: str) -> Callable[[], dict[str, bytes]]:
    """A reader of the database's files as they are on disk: SQLite's file, WAL and shared
    memory; or, on PostgreSQL (after a checkpoint writes its buffers out), every file of the
    bridge's tables, their TOAST and their indexes."""
    if database_url.startswith("sqlite"):
        return lambda: {
            path.name: path.read_bytes() for path in cli.cwd.glob("bridge.db*") if path.is_file()
        }
    relations = (
        "SELECT c.relname, pg_relation_filepath(c.oid) FROM pg_class c "
        "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'i', 't') "
        "OR c.oid IN (SELECT reltoastrelid FROM pg_class "
        "WHERE relnamespace = 'public'::regnamespace)"
    )

    def read() -> dict[str, bytes]:
        with psycopg.connect(database_url, autocommit=True) as conn:  # a superuser in tests
            conn.execute("CHECKPOINT")
            paths = conn.execute(relations).fetchall()
            return {
                name: bytes(conn.execute("SELECT pg_read_binary_file(%s)", [path]).fetchone()[0])
                for name, path in paths
            }

    return read
