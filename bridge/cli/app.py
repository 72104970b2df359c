"""The ``bridge`` command: its options, ``db``, ``audit``, ``check``, and the entry point.
Every command is thin: parse, call, render.

Failures are one line on stderr and an exit code (0 ok, 1 failed operation, 2 bad usage or
configuration), never a traceback.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bridge.cli.common import app, out, print_json, print_table
from bridge.errors import BridgeError, ConfigError
from bridge.logs import configure as configure_logging
from bridge.runtime.wiring import Wiring

# Only what --version and --help need is imported here: the rest (the store, SQLAlchemy,
# the settings, the services) when a command runs; tests/e2e/test_cli_startup.py checks.
if TYPE_CHECKING:
    from bridge.config import Settings
    from bridge.store.db import Store

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


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
    # A command that appended to the audit log leaves a signed checkpoint of its head behind.
    ctx.call_on_close(ctx.obj.checkpoint_if_appended)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Create or migrate the database schema to this version's."""
    from bridge import audit
    from bridge.model import AuditEvent
    from bridge.store.db import safe_url

    store = ctx.obj.store(current_schema=False)
    audit.require_key(store.audit)  # before migrating: the migration is audited
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
    since: Annotated[
        str | None,
        typer.Option(
            help="Only events at or after this date or ISO time (2026-01-31, "
            "2026-01-31T09:00:00+01:00; UTC when no offset is given).",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Only the newest N events, listed oldest first; 0 for all "
            "[default: 100, all with --json]",
            show_default=False,
        ),
    ] = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Recompute the keyed hash chain and hold it against the newest signed "
            "checkpoint. Exit 0 intact, 1 tampered (each finding named), 2 configuration.",
        ),
    ] = False,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="With --verify or --rekey: the checkpoints, a file or a directory of files "
            "(a log file will do) [default: audit.checkpoint_path]",
            show_default=False,
        ),
    ] = None,
    rekey: Annotated[
        bool,
        typer.Option(
            "--rekey",
            help="Key the rows written before the chain was keyed (once, after upgrading); "
            "the log must verify first.",
        ),
    ] = False,
    public_key: Annotated[
        bool,
        typer.Option(
            "--public-key",
            help="Print the public key checkpoints are signed with (base64), for verifiers "
            "to pin it.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """List audit events (the newest 100, unless told otherwise), verify the chain, or key
    its rows written before it was keyed."""
    from bridge import audit
    from bridge.identity import subject_ref

    if public_key:
        from bridge.checkpoints import public_key_text

        print(public_key_text(ctx.obj.signing_key()))
        return
    store: Store = ctx.obj.store()
    if verify or rekey:
        _verify(ctx.obj, store, checkpoint, rekey=rekey, as_json=as_json)
        return
    start = _since(since) if since else None
    ref = subject_ref(ctx.obj.settings.require_pseudonym_key(), subject) if subject else None
    if limit is None:
        limit = 0 if as_json else AUDIT_LIMIT
    events, left_out = audit.newest(store, ref, start, limit or None)
    if as_json:
        print_json({"events": events, "left_out": left_out})
        return
    short = out.is_terminal  # a terminal is read by eye; a pipe or a file gets every value
    rows = [
        [
            str(event["seq"]),
            event["occurred_at"][:19] if short else event["occurred_at"],
            event["actor"],
            event["action"],
            event["outcome"],
            event["system"] or "",
            event["record_id"] or "",
            (event["subject_ref"] or "")[:12] if short else event["subject_ref"] or "",
        ]
        for event in events
    ]
    columns = ("seq", "time", "actor", "action", "outcome", "system", "record", "subject")
    about = (" about this person" if subject else "") + (f" since {since}" if since else "")
    print_table(columns, rows, empty=f"no audit events{about}")
    if left_out:
        out.print(
            f"{left_out} earlier event{'s' if left_out != 1 else ''}{about} not shown; "
            "give --limit N (0 for all) or --since DATE",
            markup=False,
            highlight=False,
        )


AUDIT_LIMIT = 100


def _verify(
    context: Wiring, store: Store, path: Path | None, *, rekey: bool, as_json: bool
) -> None:
    """``audit --verify`` and ``--rekey``: tampering is exit 1, naming each finding; rows
    written before the chain was keyed are exit 2 until ``--rekey`` keys them."""
    from bridge import audit, checkpoints

    found, source = checkpoints.Found(), path or context.settings.audit.checkpoint_path
    if path is not None and not path.exists():
        raise ConfigError([f"audit --checkpoint: {path} does not exist; give a checkpoint file"])
    if source is not None and source.exists():
        found = checkpoints.read(source, context.signing_key().public_key())
    result = audit.verify(store, found.newest)
    findings = [*result.findings, *found.invalid]
    rekeyed = audit.rekey(store, found.newest) if rekey and not findings else 0
    if as_json:
        signed = found.newest.fields() if found.newest else None
        print_json(
            {
                "ok": result.ok and not findings,
                "checked": result.checked,
                "broken_at": result.broken_at,
                "findings": findings,
                "unkeyed": result.unkeyed - rekeyed,
                "rekeyed": rekeyed,
                "checkpoint": signed,
            }
        )
    if findings:
        raise BridgeError(f"audit log tampered: {'; '.join(findings)}")
    if result.unkeyed and not rekey:
        raise ConfigError(
            [
                f"audit: rows 1-{result.unkeyed} were written before the chain was keyed and "
                "prove nothing against whoever can write the database; run `bridge audit "
                "--rekey` once to key them"
            ]
        )
    if as_json:
        return
    if rekey:
        out.print(
            f"audit log keyed: {rekeyed} rows written before the chain was keyed now carry "
            "keyed hashes"
            if rekeyed
            else "audit log already keyed: nothing to do",
            markup=False,
            highlight=False,
        )
        return
    if found.newest is None:
        where = f"in {source}" if source else "configured (audit.checkpoint_path)"
        against = (
            f"no checkpoint {where} to check against, so the removal of the newest rows "
            "cannot be ruled out (give --checkpoint PATH, or set BRIDGE_AUDIT__CHECKPOINT_PATH)"
        )
    else:
        newest = found.newest
        against = f"the checkpoint of {newest.time} (row {newest.seq}) matches"
    out.print(
        f"audit log intact: {result.checked} events verified; {against}",
        markup=False,
        highlight=False,
    )


def _since(text: str) -> datetime:
    """A date (its start) or an ISO time; UTC when it names no offset."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            [
                f"audit --since: {text!r} is not a date or ISO time; "
                "give e.g. 2026-01-31 or 2026-01-31T09:00:00+01:00"
            ]
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command("check")
def check(
    ctx: typer.Context,
    crm: Annotated[
        bool,
        typer.Option(
            "--crm",
            help="Also log in to every configured CRM and check, one line each with the fix, "
            "that it holds what the bridge needs (scopes, objects, fields, purposes).",
        ),
    ] = False,
) -> None:
    """Check settings, database and schema, and with --crm every configured CRM; one line per
    check, creating nothing. Exit 2 if a check fails on configuration (a setting, a key, a
    database file that could not be created, no CRM configured), else 1 if any fails."""
    context: Wiring = ctx.obj
    try:
        settings = context.settings
    except ConfigError as error:
        for problem in error.problems:
            _check_line(False, f"settings: {problem}")
        raise typer.Exit(2) from None
    _check_line(True, "settings: valid")
    results = [_run_check("pseudonym key", lambda: _pseudonym_key_set(settings))]
    unreachable = _run_check("database", lambda: _database_reachable(context))
    results.append(unreachable)
    if not unreachable:
        results.append(_run_check("schema", lambda: _schema_current(context)))
    if crm:
        results.append(_check_crms(context))
    if any(results):
        raise typer.Exit(max(results))


def _check_line(ok: bool, text: str) -> None:
    out.print(f"{'ok  ' if ok else 'FAIL'}  {text}", markup=False, highlight=False)


def _run_check(name: str, check: Any) -> int:
    """0 when the check passes; else 2 for configuration, 1 for anything else."""
    try:
        detail = check()
    except BridgeError as error:
        _check_line(False, f"{name}: {error}")
        return 2 if isinstance(error, ConfigError) else 1
    _check_line(True, f"{name}: {detail}")
    return 0


def _pseudonym_key_set(settings: Settings) -> str:
    settings.require_pseudonym_key()
    return "set"


def _database_reachable(context: Wiring) -> str:
    from bridge.store.db import safe_url

    store = context.store(current_schema=False, create=False)
    if store.absent:
        return f"{safe_url(store.url)} not created yet (`bridge db upgrade` creates it)"
    return f"reachable ({safe_url(store.url)})"


def _check_crms(context: Wiring) -> int:
    """Every configured CRM's own checks (its adapter's ``readiness``), one line each: 1 when
    one fails or the CRM cannot be asked, 2 when no CRM is configured."""
    from bridge.adapters.base import AdapterError
    from bridge.model import RelatedRecords

    settings = context.settings
    try:
        adapters = context.adapters()
    except ConfigError as error:
        for problem in error.problems:
            _check_line(False, problem)
        return 2
    # Conditions on related rows the settings name: legal holds, retention rules.
    related: list[RelatedRecords] = [*settings.erasure.legal_holds]
    related += [c for rule in settings.retention.rules for c in rule.kept_while_related]
    failed = False
    for system, adapter in adapters.items():
        try:
            for found in adapter.readiness(related):
                said = ": ".join(part for part in (system, found.name, found.found) if part)
                _check_line(found.ok, said + (f"; {found.fix}" if found.fix else ""))
                failed |= not found.ok
        except AdapterError as error:
            _check_line(False, f"{system}: {error.line()}")
            failed = True
    return int(failed)


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
            app.command(
                name,
                help="Needs the sandbox (emulators and demo).",
                # Whatever the real command would take, the answer is the same line.
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
            )(_needs_sandbox)


def _needs_sandbox() -> None:
    raise ConfigError(
        [
            "this command comes with the sandbox (emulators and demo), which is not installed; "
            "from a checkout run `make demo`, or `pip install -e ./sandbox`"
        ]
    )


def _add_commands() -> None:
    """Each module adds its commands to ``app`` as it is imported."""
    from bridge.cli import keys, retention, rights, serve, sync, users  # noqa: F401

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
        crm = _crm_failure(error)
        if crm is not None:
            line, code = crm
            print(f"bridge: {line}", file=sys.stderr)
            sys.exit(code)
        from bridge.logs import get_logger

        get_logger("bridge.cli").debug("unexpected failure", exc_info=True)
        print(
            f"bridge: unexpected {type(error).__name__}; "
            "rerun with BRIDGE_LOG_LEVEL=debug for the details (personal data is redacted)",
            file=sys.stderr,
        )
        sys.exit(1)


def _crm_failure(error: Exception) -> tuple[str, int] | None:
    """A CRM's failure as one line (its adapter's words: the CRM, its code, the fix) and the
    exit code: 2 for credentials, permissions or configuration to fix, 1 for an operation
    that failed. None for anything else."""
    from bridge.adapters.base import AdapterError, Failure

    if not isinstance(error, AdapterError):
        return None
    to_fix = (Failure.CREDENTIALS, Failure.PERMISSION, Failure.CONFIGURATION)
    return error.line(), 2 if error.failure in to_fix else 1
