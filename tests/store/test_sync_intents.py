"""A batch's intents are locked while its process lives: another process sees them as cut
short only once that process is gone (SIGKILL too), and one recoverer at a time gets them."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from bridge.store import sync as sync_rows
from bridge.store.db import Store

WRITER = """
import sys, time
from bridge.store import sync
from bridge.store.db import Store

row = {
    "system": "salesforce", "object_type": "contact", "record_id": "003A", "field": "opt_out",
    "kind": "opt_out", "purpose": None, "value": "withdrawn", "implied": "[]",
    "act_system": "hubspot", "act_record": "1", "act_at": None, "subject_ref": "ab" * 32,
    "reason": "opted out", "actor": "sync", "created_at": "2026-12-05T00:00:00.000000+00:00",
}
with sync.intending(Store(sys.argv[1]), [row]):
    print("writing", flush=True)
    time.sleep(120)
"""


def lock_files(store: Store) -> list[Path]:
    database = store.engine.url.database
    return sorted(Path(database).parent.glob("*.intents-*.lock")) if database else []


def test_a_killed_writers_intents_are_recovered_once_and_a_live_writers_never(
    store: Store,
) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, store.url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
        with sync_rows.orphaned_intents(store) as rows:
            assert rows == []  # its writer lives: not cut short
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
    assert len(lock_files(store)) == (1 if store.is_sqlite else 0)  # left as it was, unlocked

    with sync_rows.orphaned_intents(store) as rows:
        assert [(r["record_id"], r["field"], r["value"]) for r in rows] == [
            ("003A", "opt_out", "withdrawn")
        ]
        with sync_rows.orphaned_intents(store) as again:
            assert again == []  # another recoverer meanwhile: this one holds them
        with store.transaction() as conn:
            sync_rows.forget_intents(conn, {rows[0]["batch"]})
    with sync_rows.orphaned_intents(store) as rows:
        assert rows == []
    assert lock_files(store) == []  # on SQLite, the dead writer's lock file went with it
