"""The data subject's rights: erase (Art. 17), export (Art. 15, 20), rectify (Art. 16),
and the requests they make."""

from __future__ import annotations

import contextlib
import json
import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bridge.errors import BridgeError, ConfigError
from bridge.runtime.wiring import Wiring

if TYPE_CHECKING:
    from bridge.services.erasure import Erasure

from bridge.cli.common import app, out, print_json


class Mode(StrEnum):
    DELETE = "delete"
    ANONYMIZE = "anonymize"


@app.command("erase")
def erase(
    ctx: typer.Context,
    emails: Annotated[list[str] | None, typer.Argument(help="One request per address.")] = None,
    from_file: Annotated[
        Path | None,
        typer.Option("--from-file", help="Also every address in this file, one a line."),
    ] = None,
    mode: Annotated[Mode, typer.Option(help="Delete records, or anonymise them.")] = Mode.DELETE,
    reason: Annotated[str | None, typer.Option(help="Why (no personal data).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be erased.")] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Store and plan; run later.")] = False,
    receipt: Annotated[
        str | None,
        typer.Option(help="Print a request's receipt: its id, or its first 8 or more characters."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Erase people everywhere (GDPR Art. 17), verify, and keep them erased."""
    from bridge.services.erasure import COMPLETED

    if receipt:
        service = ctx.obj.erasure()
        document = service.receipt(service.resolve(receipt))
        if as_json:
            print_json(document)
        else:
            render_receipt(document)
        return
    addresses = _addresses(emails or [], from_file)  # before anything is stored
    service = ctx.obj.erasure()
    if dry_run:
        planned = [p for email in addresses for p in service.dry_run([email])]
        listed = [
            {
                "system": t.system,
                "object_type": t.object_type,
                "record_id": t.id,
                "legal_hold": hold.name if hold else None,
                "action": hold.action if hold else mode.value,
            }
            for t, hold in planned
        ]
        if as_json:
            print_json({"targets": listed})
        elif not listed:
            out.print("nothing to erase: no record of this person in any system", markup=False)
        else:
            for target in listed:
                what = target["record_id"] or "(address, blocklisted)"
                line = f"would erase {target['system']} {target['object_type']} {what}"
                if target["legal_hold"]:
                    line += f": held by {target['legal_hold']}, {target['action']} instead"
                out.print(line, markup=False)
        return
    request_ids = [service.submit([email], mode.value, reason, "cli") for email in addresses]
    shown: set[str] = set()

    def show(request_id: str) -> None:  # as each ends: a long list shows its progress
        if not as_json:
            render_requests([service.view(request_id)], as_json)
            shown.add(request_id)

    if no_wait:
        service.plan(request_ids)
    else:
        service.run_many(request_ids, ended=show)
    views = [service.view(request_id) for request_id in request_ids]
    render_requests([v for v in views if v["id"] not in shown], as_json)
    if not no_wait and any(view["status"] != COMPLETED for view in views):
        raise typer.Exit(1)


def _addresses(emails: list[str], from_file: Path | None) -> list[str]:
    """The addresses to erase, from the arguments and ``--from-file`` (one a line, blank lines
    skipped), each once. One that is not an email address refuses the command before
    anything is stored, named by its place, never by its text (it may still be someone's)."""
    from bridge.identity import is_email, normalise_email

    given = [("argument", n, email) for n, email in enumerate(emails, 1)]
    if from_file is not None:
        lines = enumerate(_read_lines(from_file), 1)
        given += [(f"{from_file} line", n, line.strip()) for n, line in lines if line.strip()]
    if not given:
        raise ConfigError(["erase: give at least one EMAIL, --from-file PATH, or --receipt ID"])
    bad: dict[str, list[int]] = {}
    for where, number, text in given:
        if not is_email(text):
            bad.setdefault(where, []).append(number)
    if bad:
        places = "; ".join(
            f"{where}{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers[:10]))}"
            + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")
            for where, numbers in bad.items()
        )
        raise ConfigError(
            [f"erase: not an email address: {places}; nothing was stored: correct or remove it"]
        )
    return list(dict.fromkeys(normalise_email(text) for _, _, text in given))


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        problem = f"no such file {path}"
    except UnicodeDecodeError:
        problem = f"{path} is not UTF-8 text"
    except OSError as error:
        problem = f"cannot read {path} ({error.strerror or type(error).__name__})"
    raise ConfigError([f"erase --from-file: {problem}; give a text file, one address a line"])


@app.command("export")
def export(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="Any email of the person.")],
    out_file: Annotated[Path | None, typer.Option("--out", help="Write here, not stdout.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing --out file (never a link).")
    ] = False,
) -> None:
    """Everything held about a person, in every system, as one JSON document (Art. 15/20)."""
    from bridge.services.rights import export_subject

    if out_file is not None:
        _check_writable(out_file, force)  # before any CRM is asked
    context: Wiring = ctx.obj
    document = export_subject(
        context.store(),
        context.adapters(),
        context.settings.require_pseudonym_key(),
        [email],
        actor="cli",
    )
    text = json.dumps(document, ensure_ascii=False, indent=2, default=str)
    if out_file is None:
        print(text)
        return
    _write_private(out_file, text + "\n", force)


def _write_private(path: Path, text: str, force: bool) -> None:
    """Write personal data readable by its owner only, from the moment the file exists, and
    never through a symbolic link: a new file is created exclusively (``O_EXCL``, which also
    refuses a link); ``force`` writes a new file beside it, then renames it over the old one
    (a rename replaces a link itself, never its target)."""
    import errno
    import tempfile

    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    temporary: str | None = None
    try:
        if force:
            descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".bridge-export-")
        else:
            descriptor = os.open(path, flags, 0o600)
        os.fchmod(descriptor, 0o600)  # the umask can only take bits away; make it exact
        with open(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        if temporary is not None:
            if path.is_symlink():  # became a link since the check: refuse, as the check would
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
            os.replace(temporary, path)
            temporary = None
    except FileExistsError:
        raise ConfigError([_exists_problem(path)]) from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ConfigError([_link_problem(path)]) from None
        raise BridgeError(
            f"export: cannot write {path}: {error.strerror or type(error).__name__}"
        ) from None
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)


def _exists_problem(path: Path) -> str:
    return f"export --out: {path} exists; give a new file, or --force to replace it"


def _link_problem(path: Path) -> str:
    return f"export --out: {path} is a symbolic link; give the path of a regular file"


def _check_writable(path: Path, force: bool = False) -> None:
    """``--out`` must name a file in a directory that exists and takes new files (tried with
    a file created and removed at once: permissions alone miss read-only file systems); an
    existing file only with ``force``, and never a symbolic link."""
    import tempfile

    directory = path.parent
    if not directory.is_dir():
        exists = directory.exists()
        problem = f"{directory} is not a directory" if exists else f"no such directory {directory}"
    elif path.is_symlink():
        raise ConfigError([_link_problem(path)])
    elif path.is_dir():
        problem = f"{path} is a directory"
    elif path.exists() and not force:
        raise ConfigError([_exists_problem(path)])
    elif path.exists() and not path.is_file():
        problem = f"{path} is not a regular file"
    else:
        try:
            descriptor, probe = tempfile.mkstemp(dir=directory, prefix=".bridge-export-")
        except OSError as error:
            problem = f"cannot write in {directory} ({error.strerror or type(error).__name__})"
        else:
            os.close(descriptor)
            os.unlink(probe)
            return
    raise ConfigError([f"export --out: {problem}; give a file in a writable directory"])


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
    context: Wiring = ctx.obj
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
        print_json({"records": records})
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


@app.command("requests")
def requests_command(
    ctx: typer.Context,
    overdue: Annotated[bool, typer.Option("--overdue", help="Only overdue requests.")] = False,
    failed: Annotated[
        bool, typer.Option("--failed", help="Only failed or flagged requests.")
    ] = False,
    retry: Annotated[
        str | None,
        typer.Option(help="Try a request again now, planning included (ID or its first 8+)."),
    ] = None,
    extend: Annotated[
        str | None,
        typer.Option(help="Extend a request's deadline (Art. 12(3)), with --months and --reason."),
    ] = None,
    months: Annotated[
        int | None, typer.Option(min=1, max=2, help="--extend by 1 or 2 months (2 in all).")
    ] = None,
    reason: Annotated[
        str | None, typer.Option(help="--extend: the reasons for the delay (no personal data).")
    ] = None,
    reappeared: Annotated[
        bool,
        typer.Option("--reappeared", help="Scan the CRMs for erased people back again."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """List erasure requests and their state, retry or extend one, or list erased people who
    re-appeared."""
    from bridge.services.erasure import COMPLETED

    if (months is not None or reason is not None) and not extend:
        raise ConfigError(["requests: --months and --reason go with --extend ID"])
    if extend and months is None:
        raise ConfigError(["requests --extend: give --months 1 or 2 (2 in all at most)"])
    service = ctx.obj.erasure()
    if reappeared:
        _reappeared(ctx.obj, service, as_json)
        return
    if extend and months is not None:
        render_requests([service.extend(service.resolve(extend), months, reason)], as_json)
        return
    if retry:
        view = service.retry(service.resolve(retry))
        render_requests([view], as_json)
        if view["status"] != COMPLETED:
            raise typer.Exit(1)
        return
    views = service.requests(overdue=overdue, failed=failed)
    render_requests(views, as_json)
    if not views and not as_json:
        kinds = [word for flag, word in ((overdue, "overdue "), (failed, "failed ")) if flag]
        out.print(f"no {'and '.join(kinds)}erasure requests", markup=False)


def _reappeared(context: Wiring, service: Erasure, as_json: bool) -> None:
    """Scan what changed since the last scan, then list every re-appearance ever flagged."""
    from bridge.services.watch import Watch
    from bridge.store.records import all_reappearances

    settings = context.settings
    again = service if settings.erasure.reerase_reappeared else None
    Watch(service.store, service.key, again).scan(service.adapters)
    found = all_reappearances(service.store)
    if as_json:
        print_json({"reappeared": found})
        return
    if not found:
        out.print("no erased person has re-appeared in any CRM", markup=False)
    for row in found:
        then = f", erased again by request {row['request_id']}" if row["request_id"] else ""
        line = (
            f"{row['detected_at'][:19]} {row['system']} {row['object_type']} {row['record_id']}"
            f" holds erased subject {row['subject_ref'][:12]}{then}"
        )
        out.print(line, markup=False)


def render_requests(views: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json({"requests": views})
        return
    for view in views:
        flags = "".join(f" {flag.upper()}" for flag in ("overdue", "flagged") if view[flag])
        due = f"due {view['due_at'][:10]}{_extended(view['extensions'])}"
        lines = [f"request {view['id']}: {view['status']}{flags} ({due})"]
        lines += [f"  {line}" for line in _outcome_lines(view["systems"], view["status"])]
        lines += [f"  {line}" for line in _held_lines(view["legal_holds"])]
        lines += [
            f"  failed {failure['system']} {failure['object_type']}: {failure['reason']}"
            for failure in view["failures"]
        ]
        if view["status"] == "failed":
            if view["problem"]:
                lines.append(f"  problem: {view['problem']}")
            if view["retry_at"]:
                lines.append(f"  the daemon tries it again from {_when(view['retry_at'])}")
            else:
                lines.append(
                    "  the daemon no longer tries it (its due date has come): "
                    f"bridge requests --retry {view['id'][:8]}"
                )
        for line in lines:
            out.print(line, markup=False, highlight=False)


def render_receipt(receipt: dict[str, Any]) -> None:
    """A receipt as text: what was asked, why, by when, and what became of it, by count."""
    verification = receipt["verification"]
    lines = [
        f"erasure request {receipt['request_id']}: receipt",
        f"  received {_when(receipt['received_at'])} ({receipt['trigger']}), mode "
        f"{receipt['mode']}",
        f"  reason: {receipt.get('reason') or 'none given'}",
        f"  due {receipt['due_at'][:10]}{_extended(receipt.get('extensions', []), why=True)}",
        f"  completed {_when(receipt['completed_at'])}",
        *(f"  {line}" for line in _outcome_lines(receipt["systems"], "completed")),
        *(f"  {line}" for line in _held_lines(receipt["legal_holds"])),
    ]
    searched = verification["emails_searched"]
    everywhere = f"{_counted(searched, 'address')} searched again in every system"
    if verification["ok"]:
        lines.append(f"  verified: {everywhere}, no record left")
    else:
        found = ", ".join(f"{s} {n}" for s, n in verification["records_found"].items() if n)
        lines.append(f"  verification FAILED: {everywhere}, records found: {found}")
    for line in lines:
        out.print(line, markup=False, highlight=False)


# How a step's outcome reads, for a record and for an address erased by email alone.
_OUTCOMES = {
    "erased": "erased",
    "anonymized": "anonymised",
    "already_gone": "already gone",
    "in_recycle_bin": "in the recycle bin",
    "refused": "kept under a legal hold",
    "pending": "pending",
    "processing": "in progress",
    "dead": "failed",
}
_ADDRESS_OUTCOMES = {"erased": "blocklisted", "already_gone": "already blocklisted"}


def _outcome_lines(systems: dict[str, dict[str, Any]], status: str) -> list[str]:
    """Per system, what became of its records and addresses, as counts ("<vendor>: 1
    contact erased, 1 address blocklisted"); "blocklisted in <vendor>, no record held" where
    a system held no record; "nothing held" where none did."""
    from bridge.adapters.registry import VENDORS

    lines = []
    for name, entry in sorted(systems.items()):
        title = VENDORS[name].title if name in VENDORS else name
        records = [
            f"{_counted(n, kind.replace('_', ' '))} {_OUTCOMES.get(outcome, outcome)}"
            for kind, counts in sorted(entry["objects"].items())
            for outcome, n in sorted(counts.items())
        ]
        addresses: dict[str, int] = entry.get("addresses", {})
        blocked = [
            f"{_counted(n, 'address')} "
            + _ADDRESS_OUTCOMES.get(outcome, _OUTCOMES.get(outcome, outcome))
            for outcome, n in sorted(addresses.items())
        ]
        if records:
            lines.append(f"{title}: {', '.join(records + blocked)}")
        elif set(addresses) <= set(_ADDRESS_OUTCOMES):
            lines.append(f"blocklisted in {title}, no record held")
        else:
            lines.append(f"{title}: no record held, {', '.join(blocked)}")
    if not lines:
        nothing = {"completed": "nothing held", "received": "not planned yet"}
        lines.append(nothing.get(status, "nothing planned"))
    return lines


def _held_lines(holds: list[dict[str, Any]]) -> list[str]:
    return [
        f"kept {held['system']} {held['object_type']} {held['record_id']} "
        f"({held['outcome']}) under legal hold {held['hold']}: {held['reason']}"
        for held in holds
    ]


def _extended(extensions: list[dict[str, Any]], why: bool = False) -> str:
    """The due date's tail: ", extended by N months", with each extension's date and reason
    when ``why``."""
    if not extensions:
        return ""
    total = _counted(sum(e["months"] for e in extensions), "month")
    if not why:
        return f", extended by {total}"
    each = "; ".join(
        f"{_counted(e['months'], 'month')} on {e['at'][:10]}: {e['reason']}" for e in extensions
    )
    return f", extended by {total} (Art. 12(3): {each})"


def _counted(n: int, noun: str) -> str:
    plural = noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")
    return f"{n} {noun if n == 1 else plural}"


def _when(moment: str) -> str:
    """A stored UTC time, to the minute."""
    return f"{moment[:16].replace('T', ' ')} UTC"
