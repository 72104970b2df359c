"""The ``bridge`` command. Every command is thin: parse, call, render.

Failures are one line on stderr and an exit code (0 ok, 1 failed operation, 2 bad usage or
configuration), never a traceback.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bridge import audit
from bridge.config import Settings, load_settings
from bridge.errors import BridgeError, ConfigError
from bridge.identity import subject_ref
from bridge.logs import configure as configure_logging
from bridge.logs import get_logger
from bridge.model import AuditEvent, System
from bridge.services.erasure import COMPLETED, Erasure
from bridge.store.db import Store, safe_url

if TYPE_CHECKING:
    from bridge.adapters.base import CrmAdapter
    from bridge.policies.minimisation import UsageReport
    from bridge.runtime.daemon import Job
    from bridge.services.reconcile import Progress, Reconciler, SyncReport
    from bridge.services.retention import Retention, RetentionReport

app = typer.Typer(
    name="bridge",
    help="Keeps Salesforce and HubSpot honest about GDPR.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

out = Console(soft_wrap=True)
log = get_logger("bridge.cli.app")


@dataclass
class Context:
    """What every command may need, loaded on first use so that --help never fails."""

    config: Path | None
    _settings: Settings | None = None
    _store: Store | None = field(default=None, repr=False)
    _adapters: dict[System, CrmAdapter] | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config)
            configure_logging(self._settings.log_level)
        return self._settings

    def adapters(self) -> dict[System, CrmAdapter]:
        """One adapter per configured CRM, shared by every service of this command."""
        from bridge.adapters import connect

        if self._adapters is None:
            self._adapters = connect(self.settings)
        return self._adapters

    def erasure(self, adapters: Mapping[System, CrmAdapter] | None = None) -> Erasure:
        """The erasure service over every configured CRM (through ``adapters``, when a
        thread of its own needs connections of its own)."""
        from cryptography.fernet import Fernet

        settings = self.settings
        return Erasure(
            self.store(),
            adapters or self.adapters(),
            Fernet(settings.require_encryption_key()),
            settings.require_pseudonym_key(),
            holds=settings.erasure.legal_holds,
            lease_seconds=settings.erasure.lease_seconds,
        )

    def reconciler(
        self,
        progress: Progress | None = None,
        adapters: Mapping[System, CrmAdapter] | None = None,
    ) -> Reconciler:
        """The sync over every configured CRM; erased people who re-appear are erased again
        when ``erasure.reerase_reappeared`` says so."""
        from bridge.policies.minimisation import Minimisation
        from bridge.services.reconcile import Reconciler
        from bridge.services.watch import Watch

        settings = self.settings
        key = settings.require_pseudonym_key()
        adapters = adapters or self.adapters()
        again = self.erasure(adapters) if settings.erasure.reerase_reappeared else None
        return Reconciler(
            self.store(),
            adapters,
            key,
            settings.purposes,
            Minimisation(settings.minimisation.allowed),
            watch=Watch(self.store(), key, again),
            progress=progress,
        )

    def retention(self, adapters: Mapping[System, CrmAdapter] | None = None) -> Retention:
        """The retention rules over every configured CRM; none configured is an error."""
        from bridge.services.retention import Retention

        settings = self.settings
        if not settings.retention.rules:
            raise ConfigError(
                [
                    "retention.rules: none configured; add [[retention.rules]] tables to "
                    "config/bridge.toml (see config/bridge.example.toml)"
                ]
            )
        return Retention(
            self.store(),
            adapters or self.adapters(),
            settings.require_pseudonym_key(),
            settings.purposes,
            settings.retention.rules,
            settings.erasure.legal_holds,
        )

    def store(self, *, current_schema: bool = True) -> Store:
        if self._store is None:
            self._store = Store(self.settings.database_url)
            self._store.ping()
        if current_schema:
            self._store.require_current_schema()
        return self._store


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
    ctx.obj = Context(config)


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, default=str))


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
            _print_json({"ok": result.ok, "checked": result.checked, "broken_at": result.broken_at})
        if not result.ok:
            raise BridgeError(f"audit log broken at row {result.broken_at}: {result.problem}")
        if not as_json:
            out.print(f"audit log intact: {result.checked} events verified")
        return
    ref = subject_ref(ctx.obj.settings.require_pseudonym_key(), subject) if subject else None
    events = list(audit.events(store, ref))
    if as_json:
        _print_json({"events": events})
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


class Mode(StrEnum):
    DELETE = "delete"
    ANONYMIZE = "anonymize"


@app.command("erase")
def erase(
    ctx: typer.Context,
    emails: Annotated[list[str] | None, typer.Argument(help="One request per address.")] = None,
    mode: Annotated[Mode, typer.Option(help="Delete records, or anonymise them.")] = Mode.DELETE,
    reason: Annotated[str | None, typer.Option(help="Why (no personal data).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be erased.")] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Store and plan; run later.")] = False,
    receipt: Annotated[str | None, typer.Option(help="Print a request's receipt.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Erase people everywhere (GDPR Art. 17), verify, and keep them erased."""
    service = ctx.obj.erasure()
    if receipt:
        _print_json(service.receipt(receipt))
        return
    if not emails:
        raise ConfigError(["erase: give at least one EMAIL, or --receipt ID"])
    if dry_run:
        planned = [p for email in emails for p in service.dry_run([email])]
        listed = [
            {
                "system": t.system.value,
                "object_type": t.object_type,
                "record_id": t.id,
                "legal_hold": hold.name if hold else None,
                "action": hold.action if hold else mode.value,
            }
            for t, hold in planned
        ]
        if as_json:
            _print_json({"targets": listed})
        else:
            for target in listed:
                what = target["record_id"] or "(address, blocklisted)"
                line = f"would erase {target['system']} {target['object_type']} {what}"
                if target["legal_hold"]:
                    line += f": held by {target['legal_hold']}, {target['action']} instead"
                out.print(line, markup=False)
        return
    views = []
    for email in emails:
        request_id = service.submit([email], mode.value, reason, "cli")
        if no_wait:
            service.plan(request_id)
            views.append(service.view(request_id))
        else:
            views.append(service.run(request_id))
    _render_requests(views, as_json)
    if not no_wait and any(view["status"] != COMPLETED for view in views):
        raise typer.Exit(1)


@app.command("export")
def export(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="Any email of the person.")],
    out_file: Annotated[Path | None, typer.Option("--out", help="Write here, not stdout.")] = None,
) -> None:
    """Everything held about a person, in every system, as one JSON document (Art. 15/20)."""
    from bridge.services.rights import export_subject

    context: Context = ctx.obj
    document = export_subject(
        context.store(), context.adapters(), context.settings.require_pseudonym_key(), [email]
    )
    text = json.dumps(document, ensure_ascii=False, indent=2, default=str)
    if out_file is None:
        print(text)
    else:
        out_file.write_text(text + "\n", encoding="utf-8")
        out_file.chmod(0o600)  # personal data: readable by its owner only


@app.command("rectify")
def rectify(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="Any email of the person.")],
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="FIELD=VALUE, repeatable; FIELD from rectify.fields.", show_default=False
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Correct a person's data in every record of every system (Art. 16); audited."""
    from bridge.services.rights import rectify_subject

    changes = _parse_sets(sets)
    context: Context = ctx.obj
    settings = context.settings
    records = rectify_subject(
        context.store(),
        context.adapters(),
        settings.require_pseudonym_key(),
        [email],
        changes,
        settings.rectify.fields,
    )["records"]
    if as_json:
        _print_json({"records": records})
    elif not records:
        out.print("no record of this person in any system: nothing corrected", markup=False)
    else:
        for record in records:
            where = (record["system"], record["object_type"], record["record_id"])
            detail = f": {record['detail']}" if record["detail"] else ""
            line = f"{' '.join(w for w in where if w)}: {record['status']}{detail}"
            out.print(line, markup=False, highlight=False)
    if not records or any(r["status"] not in ("done", "already") for r in records):
        raise typer.Exit(1)


def _parse_sets(sets: list[str] | None) -> dict[str, str]:
    """``--set FIELD=VALUE`` options as a mapping; a problem never repeats a value."""
    if not sets:
        raise ConfigError(["rectify: nothing to correct; give --set FIELD=VALUE"])
    changes: dict[str, str] = {}
    for number, item in enumerate(sets, 1):
        name, separator, value = item.partition("=")
        name = name.strip()
        if not separator or not name:
            raise ConfigError([f"rectify: --set number {number} is not FIELD=VALUE"])
        if name in changes:
            raise ConfigError([f"rectify: {name} is set more than once"])
        changes[name] = value.strip()
    return changes


@app.command("minimise")
def minimise(
    ctx: typer.Context,
    report: Annotated[
        bool,
        typer.Option(
            "--report", help="List the fields each CRM fills and those outside the allow-list."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Data minimisation (Art. 5(1)(c)): which fields hold data, which the allow-list
    (minimisation.allowed) does not name, and which are free text. Names and counts only."""
    from bridge.policies.minimisation import Minimisation
    from bridge.services.minimise import usage_report

    if not report:
        raise ConfigError(["minimise: nothing to do; give --report to list the fields in use"])
    context: Context = ctx.obj
    allowed = Minimisation(context.settings.minimisation.allowed)
    found = usage_report(context.adapters(), allowed)
    if as_json:
        _print_json(found.as_dict())
    else:
        _render_usage(found)


def _render_usage(report: UsageReport) -> None:
    """One table per object, in 80 columns; fields outside the allow-list first, flagged."""
    from rich.text import Text

    for found in report.objects:
        plural = "" if found.records == 1 else "s"
        title = f"{found.system}.{found.sobject}: {found.records} record{plural}"
        if not found.fields:
            out.print(f"{title}, no field filled", markup=False, highlight=False)
            continue
        columns = ("field", "filled", "share", "allowed", "free text")
        table = Table(*columns, title=Text(title), title_justify="left")
        for item in found.fields:
            table.add_row(
                Text(item.name),
                str(item.filled),
                f"{item.filled / found.records:.0%}" if found.records else "",
                "yes" if item.allowed else "NO",
                "yes" if item.free_text else "",
                style=None if item.allowed else "bold",
            )
        out.print(table)
    if report.outside:
        many = report.outside != 1
        line = (
            f"{report.outside} field{'s' if many else ''} outside the allow-list "
            f"hold{'' if many else 's'} data ({report.free_text_outside} of them free text): "
            "clear them in the CRM, or add them to [minimisation.allowed] if they are needed"
        )
    else:
        line = "every field in use is on the allow-list"
    note = "(ids, dates, formulas and other fields the CRMs compute are not listed)"
    for text in (line, note):
        out.print(text, markup=False, highlight=False, soft_wrap=False)  # wrapped at words


@app.command("purge")
def purge(
    ctx: typer.Context,
    preview: Annotated[
        bool, typer.Option("--preview", help="List who falls due; change nothing.")
    ] = False,
    apply: Annotated[
        bool, typer.Option("--apply", help="Mark who is warned, erase who is due.")
    ] = False,
    within: Annotated[
        str, typer.Option(help="With --preview: how far ahead, in days or weeks (60d, 8w).")
    ] = "30d",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Retention (GDPR Art. 5(1)(e)): who no longer justifies being kept, by rule."""
    if preview == apply:
        raise ConfigError(["purge: give exactly one of --preview or --apply"])
    window = _days(within)
    context: Context = ctx.obj
    retention = context.retention()
    if preview:
        report = retention.preview(window)
        if as_json:
            _print_json(report.as_dict())
        else:
            _render_due(report)
        return
    erasure = context.erasure()
    report = retention.apply(erasure)
    views = [erasure.run(request_id) for request_id in report.requests]
    if as_json:
        _print_json(report.as_dict() | {"requests": views})
    else:
        out.print(
            f"warning marks: {report.marked} set, {report.unmarked} cleared, "
            f"{report.mark_failures} failed; {_people(len(report.requests))} due today",
            markup=False,
        )
        _render_requests(views, as_json=False)
    if report.mark_failures or any(view["status"] != COMPLETED for view in views):
        raise typer.Exit(1)


def _days(text: str) -> timedelta:
    """``60d`` or ``8w`` as a span of days."""
    number, unit = text[:-1], text[-1:]
    if not number.isdigit() or unit not in ("d", "w"):
        raise ConfigError([f"--within: {text!r} is not a number of days or weeks (60d, 8w)"])
    return timedelta(days=int(number) * (7 if unit == "w" else 1))


def _people(count: int) -> str:
    return f"{count} {'person' if count == 1 else 'people'}"


def _render_due(report: RetentionReport) -> None:
    """One block per person: when, which rule, what happens, why, and their records."""
    data = report.as_dict()
    horizon = report.today + timedelta(days=report.within_days)
    for item in data["due"]:
        out.print(
            f"due {item['due_on']}  {item['rule']}  {item['action']}  "
            f"subject {item['subject_ref'][:12]}",
            markup=False,
            highlight=False,
        )
        out.print(f"  {item['why']}", markup=False, highlight=False)
        for record in item["records"]:
            line = f"  {record['system']} {record['object']} {record['id']}"
            line += f" {record['url']}" if record["url"] else ""
            if record["legal_hold"]:
                line += f" (legal hold {record['legal_hold']}: {record['held_action']})"
            out.print(line, markup=False, highlight=False)
    by_rule = Counter(item["rule"] for item in data["due"])
    rules = ", ".join(f"{rule} {n}" for rule, n in sorted(by_rule.items()))
    people = len(data["due"])
    out.print(
        f"{_people(people)} {'falls' if people == 1 else 'fall'} due by {horizon.isoformat()}"
        + (f" ({rules})" if rules else ""),
        markup=False,
        highlight=False,
    )
    if any(not r["url"] for item in data["due"] for r in item["records"]):
        out.print(
            "records without a link: set hubspot.portal_id (your Hub ID) to link HubSpot contacts",
            markup=False,
        )


@app.command("requests")
def requests_command(
    ctx: typer.Context,
    overdue: Annotated[bool, typer.Option("--overdue", help="Only overdue requests.")] = False,
    failed: Annotated[bool, typer.Option("--failed", help="Only failed requests.")] = False,
    retry: Annotated[str | None, typer.Option(help="Retry a request's failed steps.")] = None,
    reappeared: Annotated[
        bool,
        typer.Option("--reappeared", help="Scan the CRMs for erased people back again."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """List erasure requests and their state, retry one, or list erased people who re-appeared."""
    service = ctx.obj.erasure()
    if reappeared:
        _reappeared(ctx.obj, service, as_json)
        return
    if retry:
        view = service.retry(retry)
        _render_requests([view], as_json)
        if view["status"] != COMPLETED:
            raise typer.Exit(1)
        return
    _render_requests(service.requests(overdue=overdue, failed=failed), as_json)


def _reappeared(context: Context, service: Erasure, as_json: bool) -> None:
    """Scan what changed since the last scan, then list every re-appearance ever flagged."""
    from bridge.services.watch import Watch
    from bridge.store.records import all_reappearances

    settings = context.settings
    again = service if settings.erasure.reerase_reappeared else None
    Watch(service.store, service.key, again).scan(service.adapters)
    found = all_reappearances(service.store)
    if as_json:
        _print_json({"reappeared": found})
        return
    for row in found:
        then = f", erased again by request {row['request_id']}" if row["request_id"] else ""
        line = (
            f"{row['detected_at'][:19]} {row['system']} {row['object_type']} {row['record_id']}"
            f" holds erased subject {row['subject_ref'][:12]}{then}"
        )
        out.print(line, markup=False)


def _render_requests(views: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        _print_json({"requests": views})
        return
    for view in views:
        flag = " OVERDUE" if view["overdue"] else ""
        out.print(f"request {view['id']}: {view['status']}{flag} (due {view['due_at'][:10]})")
        for system, entry in sorted(view["systems"].items()):
            objects = ", ".join(
                f"{kind} " + "/".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
                for kind, counts in sorted(entry["objects"].items())
            )
            out.print(f"  {system}: {objects}", markup=False)
        for held in view["legal_holds"]:
            line = (
                f"  kept {held['system']} {held['object_type']} {held['record_id']} "
                f"({held['outcome']}) under legal hold {held['hold']}: {held['reason']}"
            )
            out.print(line, markup=False)
        for failure in view["failures"]:
            line = f"  failed {failure['system']} {failure['object_type']}: {failure['reason']}"
            out.print(line, markup=False)


@app.command("sync")
def sync(
    ctx: typer.Context,
    full: Annotated[
        bool, typer.Option("--full", help="Read every record, not the changes.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; write nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Reconcile consent, opt-outs and lawful basis across the CRMs (exit 1 if a write failed)."""
    context: Context = ctx.obj
    context.settings  # noqa: B018  settings first: a configuration problem is exit 2
    with _progress(enabled=out.is_terminal and not as_json) as progress:
        report = context.reconciler(progress).sync(full=full, dry_run=dry_run)
    if as_json:
        _print_json(report.as_dict())
    else:
        _render_sync(report)
    if report.failed:
        raise typer.Exit(1)


@contextmanager
def _progress(enabled: bool) -> Iterator[Progress | None]:
    """A progress bar per phase on a terminal; nothing otherwise."""
    if not enabled:
        yield None
        return
    from rich.progress import Progress as Bar

    with Bar(console=out, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def advance(phase: str, done: int, total: int | None) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        yield advance


def _render_sync(report: SyncReport) -> None:
    counts = report.counts()
    if report.changes:
        table = Table("system", "object", "record", "change", "purpose", "value", "reason")
        if not report.dry_run:
            table.add_column("outcome")
        for change in report.changes:
            row = [
                change["system"],
                change["object_type"],
                change["record_id"],
                change["change"],
                change["purpose"] or "",
                change["value"],
                change["reason"],
            ]
            table.add_row(*row, *([] if report.dry_run else [change["outcome"]]))
        out.print(table)
    verb = "would apply" if report.dry_run else "planned"
    summary = (
        f"{counts['subjects']} people in {counts['records']} records: {verb} "
        f"{counts['planned']} changes"
    )
    if not report.dry_run:
        summary += (
            f" ({counts['done']} done, {counts['already']} already so, "
            f"{counts['needs_self_service']} left to the person, {counts['failed']} failed)"
        )
    out.print(summary, markup=False, highlight=False)
    if counts["awaiting_person"]:
        out.print(
            f"{counts['awaiting_person']} changes wait for the person (the vendor lets only "
            "them make it); not retried until they act again",
            markup=False,
        )
    for change in report.not_allowed:
        out.print(
            f"not copied (minimisation): {change['change']} to {change['system']} "
            f"{change['object_type']} {change['record_id']}; allow the field in "
            "[minimisation.allowed] to sync it",
            markup=False,
        )
    if counts["suppressed"]:
        out.print(f"{counts['suppressed']} erased people skipped (suppressed)", markup=False)
    if not report.dry_run and not report.cursors_moved:
        out.print("cursors not moved: the next run reads these changes again", markup=False)


HostOption = Annotated[
    str | None, typer.Option(help="Interface (default: web.host, 127.0.0.1)", show_default=False)
]
PortOption = Annotated[
    int | None, typer.Option(help="Port (default: web.port, 8080)", show_default=False)
]


@app.command("run")
def run(
    ctx: typer.Context,
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """The daemon: scheduled work (inbox, erasure, sync) beside the webhook receiver.

    SIGTERM: the items under way finish, exit 0 within 30 s. Instances may share PostgreSQL.
    """
    from bridge.runtime.daemon import Daemon
    from bridge.runtime.daemon import serve as serve_daemon
    from bridge.runtime.receiver import create_app
    from bridge.store.leader import LeaderLock

    context: Context = ctx.obj
    settings = context.settings
    store = context.store()  # refuses an old schema
    daemon = Daemon(
        _daemon_jobs(context), LeaderLock(store), settings.schedule.leader_check_seconds
    )
    receiver = create_app(settings, store)
    serve_daemon(daemon, receiver, host or settings.web.host, port or settings.web.port)


def _daemon_jobs(context: Context) -> list[Job]:
    """The daemon's jobs, from the settings. Every instance drains the inbox and runs open
    erasure requests (the work items are leased, so instances share them); the leader alone
    runs the leader-only jobs."""
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger
    from cryptography.fernet import Fernet

    from bridge.adapters import connect
    from bridge.events.inbox import Handler, InboxWorker
    from bridge.events.propagate import Propagation
    from bridge.events.triggers import ErasureTriggers
    from bridge.runtime.daemon import Job

    settings = context.settings
    schedule = settings.schedule
    # Jobs run in threads of their own, side by side: each gets its own vendor connections.
    inbox_erasure = context.erasure(connect(settings))
    handlers: dict[str, Handler] = {
        "deletion": ErasureTriggers(inbox_erasure, inbox_erasure.adapters),
        "consent": Propagation(context.reconciler(adapters=inbox_erasure.adapters)),
    }
    inbox = InboxWorker(context.store(), Fernet(settings.require_encryption_key()), handlers)
    erasure = context.erasure()
    reconciler = context.reconciler(adapters=connect(settings))
    one_sync_at_a_time = threading.Lock()

    def sync(full: bool) -> Callable[[threading.Event], object]:
        def run(stop: threading.Event) -> object:
            with one_sync_at_a_time:
                return reconciler.sync(full=full, stop=stop)

        return run

    return [
        Job(
            "inbox",
            lambda stop: inbox.drain(batch=1, stop=stop),
            IntervalTrigger(seconds=schedule.inbox_seconds),
        ),
        Job("erasure", erasure.drain, IntervalTrigger(seconds=schedule.erasure_seconds)),
        Job(
            "incremental_sync",
            sync(full=False),
            IntervalTrigger(minutes=schedule.incremental_sync_minutes),
            leader_only=True,
        ),
        Job(
            "full_sync",
            sync(full=True),
            CronTrigger.from_crontab(schedule.full_sync_cron),
            leader_only=True,
        ),
        *_retention_job(context, erasure, CronTrigger.from_crontab(schedule.retention_cron)),
    ]


def _retention_job(context: Context, erasure: Erasure, trigger: Any) -> list[Job]:
    """Daily: mark who enters a warning period, and hand who is due to the erasure job
    (leader only; none without rules)."""
    from bridge.adapters import connect
    from bridge.runtime.daemon import Job

    if not context.settings.retention.rules:
        return []
    retention = context.retention(connect(context.settings))
    return [Job("retention", lambda stop: retention.apply(erasure), trigger, leader_only=True)]


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """Run the webhook receiver alone (the daemon runs it beside the scheduler)."""
    import uvicorn  # imported here: the server stack is slow to load for other commands

    from bridge.runtime.receiver import create_app

    context: Context = ctx.obj
    settings = context.settings
    receiver = create_app(settings, context.store())
    _stop_quietly_on_signals()
    # No access log: the Salesforce path carries a secret token.
    uvicorn.run(
        receiver,
        host=host or settings.web.host,
        port=port or settings.web.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=20,
    )


class Vendor(StrEnum):
    HUBSPOT = "hubspot"
    SALESFORCE = "salesforce"


@app.command("demo")
def demo(
    people: Annotated[
        int, typer.Option("--people", min=10, max=20_000, help="How many people to seed.")
    ] = 300,
    keep_running: Annotated[
        bool,
        typer.Option(
            "--keep-running",
            help="Leave the emulators and receiver up and print their URLs; Ctrl-C stops them.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """The whole story against both emulators on loopback, every claim checked by reading
    both CRMs back (exit 1 if a check fails). Nothing to configure; nothing left running."""
    from bridge_sandbox.demo import run as run_demo

    code = run_demo(people, keep_running=keep_running, as_json=as_json)
    if code:
        raise typer.Exit(code)


@app.command("emulate")
def emulate(
    vendor: Annotated[Vendor, typer.Argument(help="Which vendor API to emulate.")],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8765,
) -> None:
    """Serve a faithful vendor API emulator on loopback: no account needed to try the bridge."""
    import uvicorn
    from bridge_sandbox.emulators import hubspot, salesforce

    factory = hubspot.create_app if vendor is Vendor.HUBSPOT else salesforce.create_app
    _stop_quietly_on_signals()
    uvicorn.run(factory(), host="127.0.0.1", port=port, log_config=None, access_log=False)


def _stop_quietly_on_signals() -> None:
    """After a graceful shutdown uvicorn re-raises SIGTERM/SIGINT to the previous handlers;
    with these no-op handlers in place the process then exits 0, as an orderly stop should."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frame: None)


@app.command("check")
def check(ctx: typer.Context) -> None:
    """Check settings, database and schema; one line per check, exit 1 if any fails."""
    context: Context = ctx.obj
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


def _database_reachable(context: Context) -> str:
    store = context.store(current_schema=False)
    return f"reachable ({safe_url(store.url)})"


def _schema_current(context: Context) -> str:
    store = context.store()
    return f"current ({store.current_revision()})"


def main() -> None:
    """Console-script entry point: one line and an exit code for every failure."""
    configure_logging()  # until settings are loaded and name the level
    try:
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
