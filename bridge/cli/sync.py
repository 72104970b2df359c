"""``bridge sync``: reconcile consent, opt-outs and lawful basis across the CRMs."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bridge.errors import ConfigError
from bridge.runtime.wiring import Wiring

if TYPE_CHECKING:
    from bridge.services.reconcile import Progress, SyncReport

from bridge.cli.common import app, out, print_json, print_table

KEEP = "20"  # bridge.services.reconcile.KEEP, not imported: --help must not load the services


@app.command("sync")
def sync(
    ctx: typer.Context,
    full: Annotated[
        bool, typer.Option("--full", help="Read every record, not the changes.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; write nothing.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object on stdout: counts and changes.")
    ] = False,
    as_jsonl: Annotated[
        bool,
        typer.Option(
            "--jsonl",
            help="One JSON object a line on stdout: each change as it is settled (a dry run: "
            'as planned), then the counts ({"type": "summary"}).',
        ),
    ] = False,
    shown: Annotated[
        str,
        typer.Option(
            "--changes",
            metavar="all|N|none",
            help="How many changes the report lists; the counts are always whole.",
        ),
    ] = KEEP,
) -> None:
    """Reconcile consent, opt-outs and lawful basis across the CRMs (exit 1 if a write failed)."""
    keep = _keep(shown)
    if as_json and as_jsonl:
        raise ConfigError(["sync: give --json (one object) or --jsonl (a line a change), not both"])
    context: Wiring = ctx.obj
    context.settings  # noqa: B018  settings first: a configuration problem is exit 2
    with _progress(enabled=out.is_terminal and not as_json and not as_jsonl) as progress:
        reconciler = context.reconciler(progress)
        stream = _print_change if as_jsonl else None
        report = reconciler.sync(full=full, dry_run=dry_run, keep=keep, on_change=stream)
    if as_json:
        print_json(report.as_dict())
    elif as_jsonl:
        listed = report.as_dict().items()
        print_json({"type": "summary"} | {k: v for k, v in listed if not k.startswith("changes")})
    else:
        _render_sync(report)
    if report.failed:
        raise typer.Exit(1)


def _keep(shown: str) -> int | None:
    """``--changes``: all (None), none (0) or how many."""
    if shown in ("all", "none"):
        return None if shown == "all" else 0
    if shown.isascii() and shown.isdigit():
        return int(shown)
    raise ConfigError([f"sync --changes: give all, none or a number of changes, not {shown!r}"])


def _print_change(change: dict[str, Any]) -> None:
    """A line of ``--jsonl``, out at once: a reader follows the run as it goes."""
    print_json({"type": "change"} | change)
    sys.stdout.flush()


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
        columns = ["system", "object", "record", "change", "purpose", "value", "reason"]
        rows = [
            [
                change["system"],
                change["object_type"],
                change["record_id"],
                change["change"],
                change["purpose"] or "",
                str(change["value"]),
                change["reason"],
                *([] if report.dry_run else [change["outcome"]]),
            ]
            for change in report.changes
        ]
        print_table([*columns, *([] if report.dry_run else ["outcome"])], rows, empty="")
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
    hidden = counts["planned"] - len(report.changes)
    _not_shown(hidden, "changes", bool(report.changes), "--changes all or --jsonl")
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
    hidden = counts["not_allowed"] - len(report.not_allowed)
    _not_shown(hidden, "not copied (minimisation)", bool(report.not_allowed), "--changes all")
    if counts["suppressed"]:
        out.print(f"{counts['suppressed']} erased people skipped (suppressed)", markup=False)
    if counts["recovered"]:
        out.print(
            f"{counts['recovered']} changes of a run cut short audited first (sync.recovered)",
            markup=False,
        )
    if not report.dry_run and not report.cursors_moved:
        out.print("cursors not moved: the next run reads these changes again", markup=False)


def _not_shown(hidden: int, what: str, some_shown: bool, how: str) -> None:
    """The line saying how many entries of a list the report kept back, if any."""
    if hidden > 0:
        more = "more " if some_shown else ""
        out.print(
            f"{hidden} {more}{what} not shown; {how} to see them",
            markup=False,
            highlight=False,
        )
