"""Storage limitation and minimisation (Art. 5(1)(c), (e)): ``purge`` and ``minimise``."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from bridge.errors import ConfigError
from bridge.runtime.wiring import Wiring

if TYPE_CHECKING:
    from bridge.policies.minimisation import UsageReport
    from bridge.services.retention import RetentionReport

from bridge.cli.common import app, out, print_json, print_table
from bridge.cli.rights import render_requests


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
    context: Wiring = ctx.obj
    allowed = Minimisation(context.settings.minimisation.allowed)
    found = usage_report(context.adapters(), allowed)
    if as_json:
        print_json(found.as_dict())
    else:
        _render_usage(found)


def _render_usage(report: UsageReport) -> None:
    """One table per object; fields outside the allow-list first, flagged."""
    for found in report.objects:
        plural = "" if found.records == 1 else "s"
        title = f"{found.system}.{found.sobject}: {found.records} record{plural}"
        if not found.fields:
            out.print(f"{title}, no field filled", markup=False, highlight=False)
            continue
        rows = [
            [
                item.name,
                str(item.filled),
                f"{item.filled / found.records:.0%}" if found.records else "",
                "yes" if item.allowed else "NO",
                "yes" if item.free_text else "",
            ]
            for item in found.fields
        ]
        columns = ("field", "filled", "share", "allowed", "free text")
        print_table(
            columns, rows, title=title, empty="no field filled", bold=lambda row: row[3] == "NO"
        )
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
    from bridge.services.erasure import COMPLETED

    if preview == apply:
        raise ConfigError(["purge: give exactly one of --preview or --apply"])
    window = _days(within)
    context: Wiring = ctx.obj
    retention = context.retention()
    if preview:
        report = retention.preview(window)
        if as_json:
            print_json(report.as_dict())
        else:
            _render_due(report)
        return
    erasure = context.erasure()
    report = retention.apply(erasure)
    erasure.run_many(report.requests)
    views = [erasure.view(request_id) for request_id in report.requests]
    if as_json:
        print_json(report.as_dict() | {"requests": views})
    else:
        out.print(
            f"warning marks: {report.marked} set, {report.unmarked} cleared, "
            f"{report.mark_failures} failed; {_people(len(report.requests))} due today",
            markup=False,
        )
        render_requests(views, as_json=False)
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
    from bridge.adapters.registry import VENDORS

    data = report.as_dict()
    horizon = report.today + timedelta(days=report.within_days)
    for item in data["due"]:
        late = " OVERDUE" if item["overdue"] else ""
        out.print(
            f"due {item['due_on']}{late}  {item['rule']}  {item['action']}  "
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
    overdue = sum(item["overdue"] for item in data["due"])
    out.print(
        f"{_people(people)} {'falls' if people == 1 else 'fall'} due by {horizon.isoformat()}"
        + (f" ({rules})" if rules else "")
        + (f", {overdue} of them OVERDUE (due before today)" if overdue else ""),
        markup=False,
        highlight=False,
    )
    unlinked = {r["system"] for item in data["due"] for r in item["records"] if not r["url"]}
    for system in sorted(unlinked):
        hint = VENDORS[system].link_hint if system in VENDORS else ""
        out.print(f"{system} records without a link{': ' + hint if hint else ''}", markup=False)
