"""Every input a user can get wrong ends in one line on stderr and the README's exit code
(2: bad usage or configuration), never "unexpected <Exception>" or a traceback, and before
any CRM is asked anything."""

from __future__ import annotations

import os

import pytest

from tests.conftest import BridgeCli, Crms

# The CLI keeps its own SQLite database: one run per case, not one per database.
on_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

as_root = pytest.mark.skipif(
    os.geteuid() == 0, reason="root writes everywhere: permissions cannot be denied to it"
)

# (command line, BRIDGE_DATABASE_URL or None, the text stderr names); {cwd} is the work folder
CASES = {
    "unknown backend": (["audit"], "nonsense://x", "database_url: nonsense is not supported"),
    "mysql": (
        ["audit"],
        "mysql://admin:secretpw@db.example.com/bridge",
        "database_url: mysql is not supported; use sqlite:///",
    ),
    "not a url": (["audit"], "notaurl", "database_url: not a database URL; use sqlite:///"),
    "empty url": (["sync"], "", "database_url: not a database URL"),
    "driver not installed": (
        ["audit"],
        "sqlite+pysqlcipher://:secretpw@/bridge.db",
        "database_url: the sqlite driver pysqlcipher is not installed",
    ),
    "unknown driver": (["audit"], "sqlite+nosuch:///x.db", "sqlite has no driver 'nosuch'"),
    "asynchronous driver": (["audit"], "postgresql+asyncpg://h/x", "is asynchronous"),
    "sqlite: no such directory": (
        ["audit"],
        "sqlite:///{cwd}/missing/bridge.db",
        "SQLite database {cwd}/missing/bridge.db: no such directory {cwd}/missing; create it",
    ),
    "sqlite: parent is a file": (
        ["db", "upgrade"],
        "sqlite:///{cwd}/a-file/bridge.db",
        "{cwd}/a-file is not a directory",
    ),
    "sqlite: a directory": (["audit"], "sqlite:///{cwd}", "it is a directory, not a file"),
    "sqlite: cannot be created": (
        ["audit"],
        "sqlite:////proc/bridge.db",
        "SQLite database /proc/bridge.db: ",
    ),
    "sqlite: permission denied": pytest.param(
        ["audit"],
        "sqlite:///{cwd}/read-only/bridge.db",
        "SQLite database {cwd}/read-only/bridge.db: permission denied",
        marks=as_root,
    ),
    "export: no such directory": (
        ["export", "ada@example.com", "--out", "/nonexistent/ada.json"],
        None,
        "export --out: no such directory /nonexistent; give a file in a writable directory",
    ),
    "export: a directory": (
        ["export", "ada@example.com", "--out", "{cwd}"],
        None,
        "export --out: {cwd} is a directory",
    ),
    "export: parent is a file": (
        ["export", "ada@example.com", "--out", "{cwd}/a-file/ada.json"],
        None,
        "export --out: {cwd}/a-file is not a directory",
    ),
    "export: read-only file system": (
        ["export", "ada@example.com", "--out", "/proc/ada.json"],
        None,
        "export --out: cannot write in /proc",
    ),
    "export: permission denied": pytest.param(
        ["export", "ada@example.com", "--out", "{cwd}/read-only/ada.json"],
        None,
        "export --out: cannot write in {cwd}/read-only (Permission denied)",
        marks=as_root,
    ),
    "audit --since": (["audit", "--since", "last tuesday"], None, "audit --since: 'last tuesday'"),
}


@on_sqlite
@pytest.mark.parametrize(("args", "url", "named"), CASES.values(), ids=CASES.keys())
def test_bad_input_is_one_line_exit_2_before_any_crm_call(
    cli: BridgeCli, crms: Crms, args: list[str], url: str | None, named: str
) -> None:
    (cli.cwd / "a-file").write_text("")
    (cli.cwd / "read-only").mkdir(mode=0o555)
    for admin in (crms.hubspot, crms.salesforce):
        admin.delete("/__emulator/counters").raise_for_status()
    env = {} if url is None else {"BRIDGE_DATABASE_URL": url.format(cwd=cli.cwd)}

    result = cli(*(arg.format(cwd=cli.cwd) for arg in args), **env)

    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("bridge: ") and named.format(cwd=cli.cwd) in line, line
    assert "unexpected" not in line and "Traceback" not in result.stdout + result.stderr
    assert "secretpw" not in line and result.stdout == ""
    for admin in (crms.hubspot, crms.salesforce):
        assert admin.get("/__emulator/counters").json()["calls"] == {}


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("mysql://u@h/db", "FAIL  settings: database_url: mysql is not supported"),
        ("notaurl", "FAIL  settings: database_url: not a database URL"),
        ("sqlite:///{cwd}/missing/bridge.db", "FAIL  database: database_url: SQLite database"),
    ],
)
def test_check_names_a_bad_database_url_and_exits_2(
    bridge: BridgeCli, url: str, named: str
) -> None:
    result = bridge("check", BRIDGE_DATABASE_URL=url.format(cwd=bridge.cwd))
    assert result.returncode == 2, result.stdout
    [failure] = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert failure.startswith(named) and "unexpected" not in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@on_sqlite
def test_export_out_writes_the_file_for_its_owner_only(cli: BridgeCli, crms: Crms) -> None:
    crms.seed_hubspot(email="ada@example.com", firstname="Ada")
    target = cli.cwd / "exports" / "ada.json"
    target.parent.mkdir()
    result = cli("export", "ada@example.com", "--out", str(target))
    assert result.returncode == 0, result.stderr
    assert '"Ada"' in target.read_text() and target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["ada.json"]  # the probe is gone


def _no_crm_calls(crms: Crms) -> None:
    for admin in (crms.hubspot, crms.salesforce):
        assert admin.get("/__emulator/counters").json()["calls"] == {}


@on_sqlite
def test_export_out_refuses_an_existing_file_unless_forced(cli: BridgeCli, crms: Crms) -> None:
    crms.seed_hubspot(email="ada@example.com", firstname="Ada")
    target = cli.cwd / "ada.json"
    target.write_text("keep me\n")
    target.chmod(0o644)
    for admin in (crms.hubspot, crms.salesforce):
        admin.delete("/__emulator/counters").raise_for_status()

    refused = cli("export", "ada@example.com", "--out", str(target))
    assert refused.returncode == 2, refused.stderr
    [line] = refused.stderr.splitlines()
    fix = "give a new file, or --force to replace it"
    assert line == f"bridge: export --out: {target} exists; {fix}"
    assert target.read_text() == "keep me\n" and refused.stdout == ""
    _no_crm_calls(crms)  # refused before any CRM is asked

    forced = cli("export", "ada@example.com", "--out", str(target), "--force")
    assert forced.returncode == 0, forced.stderr
    assert '"Ada"' in target.read_text() and target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in cli.cwd.iterdir() if p.name.startswith(".bridge-export")) == []


@on_sqlite
@pytest.mark.parametrize("force", [False, True], ids=["plain", "forced"])
def test_export_out_never_writes_through_a_symbolic_link(
    cli: BridgeCli, crms: Crms, force: bool
) -> None:
    crms.seed_hubspot(email="ada@example.com", firstname="Ada")
    elsewhere = cli.cwd / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "victim.txt"
    victim.write_text("untouched\n")
    victim.chmod(0o644)
    dangling = elsewhere / "not-yet.txt"
    for admin in (crms.hubspot, crms.salesforce):
        admin.delete("/__emulator/counters").raise_for_status()

    for name, pointee in (("ada.json", victim), ("new.json", dangling)):
        link = cli.cwd / name
        link.symlink_to(pointee)
        result = cli(
            "export", "ada@example.com", "--out", str(link), *(["--force"] if force else [])
        )
        assert result.returncode == 2, result.stderr
        [line] = result.stderr.splitlines()
        fix = "give the path of a regular file"
        assert line == f"bridge: export --out: {link} is a symbolic link; {fix}"
        assert link.is_symlink() and link.readlink() == pointee
    assert victim.read_text() == "untouched\n" and victim.stat().st_mode & 0o777 == 0o644
    assert not dangling.exists()
    _no_crm_calls(crms)


def test_an_unreachable_database_names_the_drivers_reason(bridge: BridgeCli) -> None:
    result = bridge("audit", BRIDGE_DATABASE_URL="postgresql://u:secretpw@127.0.0.1:1/x")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(
        "bridge: database postgresql+psycopg://u:***@127.0.0.1:1/x unreachable: "
    )
    assert "refused" in line.lower() and "secretpw" not in line
