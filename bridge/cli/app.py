"""The ``bridge`` command: its options, ``db``, ``audit``, ``check``, and the entry point.
Every command is thin: parse, call, render.

Failures are one line on stderr and an exit code (0 ok, 1 failed operation, 2 bad usage or
configuration), never a traceback.
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from bridge import audit
from bridge.cli.common import app, out, print_json
from bridge.config import Settings
from bridge.errors import BridgeError, ConfigError
from bridge.identity import subject_ref
from bridge.logs import configure as configure_logging
from bridge.logs import get_logger
from bridge.model import AuditEvent
from bridge.runtime.wiring import Wiring
from bridge.store.db import Store, safe_url

if TYPE_CHECKING:
    pass

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
log = get_logger("bridge.cli")


def _version(value: bool) -> None:
    if value:
        print(f"consent-bridge {version('consent-bridge')}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="TOML settings file [env: BRIDGE_CONFIG]", show_default=False
        ),
    ] = None,
    _show_version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    ctx.obj = Wiring(config)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Create or migrate the database schema to this version's."""
    store = ctx.obj.store(current_schema=False)
    before, after = store.upgrade()
    if before == after:
        out.print(f"database {safe_url(store.url)} already at schema {after}")
        return
    audit.record(
        store,
        AuditEvent(
            actor="cli",
            action="db.upgrade",
            outcome="done",
            details={"from": before, "to": after},
        ),
    )
    out.print(f"database {safe_url(store.url)} upgraded from {before or 'nothing'} to {after}")


@app.command("audit")
def audit_command(
    ctx: typer.Context,
    subject: Annotated[
        str | None, typer.Option(help="Only events about this email (looked up by pseudonym).")
    ] = None,
    verify: Annotated[bool, typer.Option("--verify", help="Recompute the hash chain.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """List audit events, or verify that the chain is intact."""
    store: Store = ctx.obj.store()
    if verify:
        result = audit.verify(store)
        if as_json:
            print_json({"ok": result.ok, "checked": result.checked, "broken_at": result.broken_at})
        if not result.ok:
            raise BridgeError(f"audit log broken at row {result.broken_at}: {result.problem}")
        if not as_json:
            out.print(f"audit log intact: {result.checked} events verified")
        return
    ref = subject_ref(ctx.obj.settings.require_pseudonym_key(), subject) if subject else None
    events = list(audit.events(store, ref))
    if as_json:
        print_json({"events": events})
        return
    table = Table("seq", "time", "actor", "action", "outcome", "system", "record", "subject")
    for event in events:
        table.add_row(
            str(event["seq"]),
            event["occurred_at"][:19],
            event["actor"],
            event["action"],
            event["outcome"],
            event["system"] or "",
            event["record_id"] or "",
            (event["subject_ref"] or "")[:12],
        )
    out.print(table)


@app.command("check")
def check(ctx: typer.Context) -> None:
    """Check settings, database and schema; one line per check, exit 1 if any fails."""
    context: Wiring = ctx.obj
    try:
        settings = context.settings
    except ConfigError as error:
        for problem in error.problems:
            _check_line(False, f"settings: {problem}")
        raise typer.Exit(2) from None
    _check_line(True, "settings: valid")
    results = [_run_check("pseudonym key", lambda: _pseudonym_key_set(settings))]
    reachable = _run_check("database", lambda: _database_reachable(context))
    results.append(reachable)
    if reachable:
        results.append(_run_check("schema", lambda: _schema_current(context)))
    if not all(results):
        raise typer.Exit(1)


def _check_line(ok: bool, text: str) -> None:
    out.print(f"{'ok  ' if ok else 'FAIL'}  {text}", markup=False, highlight=False)


def _run_check(name: str, check: Any) -> bool:
    try:
        detail = check()
    except BridgeError as error:
        _check_line(False, f"{name}: {error}")
        return False
    _check_line(True, f"{name}: {detail}")
    return True


def _pseudonym_key_set(settings: Settings) -> str:
    settings.require_pseudonym_key()
    return "set"


def _database_reachable(context: Wiring) -> str:
    store = context.store(current_schema=False)
    return f"reachable ({safe_url(store.url)})"


def _schema_current(context: Wiring) -> str:
    store = context.store()
    return f"current ({store.current_revision()})"


SANDBOX_COMMANDS = ("demo", "emulate")


def _add_plugin_commands() -> None:
    """Commands other installed packages add (the sandbox: ``demo``, ``emulate``). Without
    the sandbox its commands still answer, with one line saying how to install it."""
    from importlib.metadata import entry_points

    found = {point.name: point for point in entry_points(group="bridge.commands")}
    for name, point in found.items():
        app.command(name)(point.load())
    for name in SANDBOX_COMMANDS:
        if name not in found:
            app.command(name, help="Needs the sandbox (emulators and demo).")(_needs_sandbox)


def _needs_sandbox() -> None:
    raise ConfigError(
        [
            "this command comes with the sandbox (emulators and demo), which is not installed; "
            "from a checkout run `make demo`, or `pip install -e ./sandbox`"
        ]
    )


def _add_commands() -> None:
    """Each module adds its commands to ``app`` as it is imported."""
    from bridge.cli import retention, rights, serve, sync  # noqa: F401

    _add_plugin_commands()


def main() -> None:
    """Console-script entry point: one line and an exit code for every failure."""
    configure_logging()  # until settings are loaded and name the level
    try:
        _add_commands()
        app(prog_name="bridge")
    except BridgeError as error:
        problems = error.problems if isinstance(error, ConfigError) else [str(error)]
        for problem in problems:
            print(f"bridge: {problem}", file=sys.stderr)
        sys.exit(error.exit_code)
    except Exception as error:
        log.debug("unexpected failure", exc_info=True)
        print(
            f"bridge: unexpected {type(error).__name__}; "
            "rerun with BRIDGE_LOG_LEVEL=debug for the details (personal data is redacted)",
            file=sys.stderr,
        )
        sys.exit(1)
