"""The CLI as a user meets it: a subprocess, one line per failure, never a traceback."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.conftest import BridgeCli


def no_traceback(result: object) -> None:
    assert "Traceback" not in getattr(result, "stderr", "")
    assert "Traceback" not in getattr(result, "stdout", "")


def test_version(bridge: BridgeCli) -> None:
    result = bridge("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("consent-bridge ")


def test_check_with_a_broken_setting_prints_one_line_naming_the_key_and_exits_2(
    bridge: BridgeCli,
) -> None:
    result = bridge("check", BRIDGE_LOG_LEVEL="loud")
    assert result.returncode == 2
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failures) == 1
    assert "log_level" in failures[0] and "BRIDGE_LOG_LEVEL" in failures[0]
    no_traceback(result)


def test_a_secret_in_the_config_file_is_refused(bridge: BridgeCli) -> None:
    config = bridge.cwd / "bridge.toml"
    config.write_text('[hubspot]\naccess_token = "pat-leaked"\n')
    result = bridge("--config", str(config), "audit")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"bridge: hubspot.access_token: secrets may not be written in {config}; remove it there "
        "and set BRIDGE_HUBSPOT__ACCESS_TOKEN in the environment or in BRIDGE_SECRETS_DIR"
    ]
    assert "pat-leaked" not in result.stderr + result.stdout


def test_check_reports_each_problem_then_passes_after_upgrade(bridge: BridgeCli) -> None:
    before = bridge("check")
    assert before.returncode == 1
    assert "FAIL  schema:" in before.stdout and "run `bridge db upgrade`" in before.stdout
    assert bridge("db", "upgrade").returncode == 0
    after = bridge("check")
    assert after.returncode == 0, after.stdout
    assert [line.split()[0] for line in after.stdout.splitlines()] == ["ok"] * 4


def test_commands_refuse_an_old_schema_with_one_line(bridge: BridgeCli) -> None:
    result = bridge("audit")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "bridge db upgrade" in result.stderr
    no_traceback(result)


def test_audit_verify_passes_then_names_an_edited_row(bridge: BridgeCli) -> None:
    assert bridge("db", "upgrade").returncode == 0
    listed = json.loads(bridge("audit", "--json").stdout)
    assert [e["action"] for e in listed["events"]] == ["db.upgrade"]
    ok = bridge("audit", "--verify")
    assert ok.returncode == 0
    assert ok.stdout.startswith("audit log intact: 1 events verified; no checkpoint configured")

    with sqlite3.connect(bridge.cwd / "bridge.db") as db:
        db.execute("UPDATE audit_log SET outcome = 'failed' WHERE seq = 1")
    broken = bridge("audit", "--verify")
    assert broken.returncode == 1
    assert broken.stderr.startswith("bridge: audit log tampered: row 1 was edited:")
    no_traceback(broken)


def test_audit_subject_needs_the_pseudonym_key(bridge: BridgeCli) -> None:
    assert bridge("db", "upgrade").returncode == 0
    result = bridge("audit", "--subject", "ann@example.com", BRIDGE_PSEUDONYM_KEY="")
    assert result.returncode == 2
    assert "BRIDGE_PSEUDONYM_KEY" in result.stderr
    assert "ann@example.com" not in result.stderr + result.stdout


def test_unknown_command_is_a_usage_error(bridge: BridgeCli) -> None:
    result = bridge("frobnicate")
    assert result.returncode == 2
    no_traceback(result)


def test_unreachable_database_is_one_line(bridge: BridgeCli, tmp_path: Path) -> None:
    result = bridge("audit", BRIDGE_DATABASE_URL="postgresql://u:secretpw@127.0.0.1:1/x")
    assert result.returncode == 1
    assert result.stderr.startswith("bridge: database ") and "unreachable" in result.stderr
    assert "secretpw" not in result.stderr
    no_traceback(result)


def test_the_database_and_its_wal_are_for_the_owner_only(bridge: BridgeCli) -> None:
    fresh = bridge("db", "upgrade")
    assert fresh.returncode == 0, fresh.stderr
    database = bridge.cwd / "bridge.db"
    assert database.stat().st_mode & 0o777 == 0o600
    # A database an earlier version left 0644, open in another process (the daemon, say):
    # SQLite gives its WAL and shared-memory files the database's mode.
    database.unlink()
    database.touch(mode=0o644)
    database.chmod(0o644)
    files = [database, bridge.cwd / "bridge.db-wal", bridge.cwd / "bridge.db-shm"]
    holder = sqlite3.connect(database)
    try:
        holder.execute("PRAGMA journal_mode=WAL")
        holder.execute("CREATE TABLE held (x)")
        holder.commit()
        assert [f.stat().st_mode & 0o777 for f in files] == [0o644] * 3
        upgraded = bridge("db", "upgrade")  # writes: the schema and its version
        assert upgraded.returncode == 0, upgraded.stderr
        assert [f.stat().st_mode & 0o777 for f in files] == [0o600] * 3
    finally:
        holder.close()
