"""Data-subject rights beside erasure: access (Art. 15/20) and rectification (Art. 16), each
reaching every address of the person (``bridge.services.people``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bridge import audit
from bridge.adapters.base import AdapterError, CrmAdapter, RectifyProblem, WriteStatus
from bridge.errors import BridgeError, ConfigError
from bridge.identity import normalise_email, subject_ref
from bridge.model import AuditEvent, System
from bridge.services.people import find_holders, find_person
from bridge.store.db import Store


def export_subject(
    store: Store,
    adapters: Mapping[System, CrmAdapter],
    key: bytes,
    emails: Sequence[str],
    actor: str,
    *,
    linked: bool = True,
) -> dict[str, Any]:
    """One document with everything held about a person: every record in every system (all
    the fields the adapters expose, consent with the history vendors keep) and the audit
    events about them. It is the person's own data, so it is given to them in clear; the
    export is audited as ``actor``'s, under the person's pseudonym.

    ``linked`` False: the given addresses alone, not the others their records link to (the
    portal, where a person has proved only these)."""
    everyone = find_person(adapters, emails).emails if linked else _given(emails)
    refs = {subject_ref(key, e) for e in everyone}
    document = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "emails": everyone,
        "systems": {system: adapter.export(everyone) for system, adapter in adapters.items()},
        "audit_events": [e for ref in sorted(refs) for e in audit.events(store, ref)],
    }
    if emails:
        details: dict[str, Any] = {"systems": sorted(adapters), "emails": len(everyone)}
        if not linked:
            details["linked"] = False
        event = AuditEvent(
            actor, "export", "exported", subject_ref=subject_ref(key, emails[0]), details=details
        )
        audit.record(store, event)
    return document


def rectify_subject(
    store: Store,
    adapters: Mapping[System, CrmAdapter],
    key: bytes,
    emails: Sequence[str],
    changes: Mapping[str, str],
    allowed: Sequence[str],
    *,
    actor: str = "cli",
    linked: bool = True,
) -> dict[str, Any]:
    """Correct a person's data (Art. 16) in every record of every system that holds them
    (``linked`` False: only the records holding the given addresses, as ``export_subject``).

    Only fields on the allow-list (``rectify.fields``) may be written; any other is refused
    before anything is read. The correction is all or nothing across systems: every system
    holding a record of the person checks every value against its limits first
    (``check_rectify``), and if any could not take one, nothing is written anywhere and
    ``RectifyRefused`` names the field, the system, where it keeps it and the limit, never
    the value (audited as ``refused``). Each record's outcome is audited under the person's
    pseudonym with the names of the fields, never their values. A system that fails as a
    whole is one failed entry without a record id. Returns ``{"records": [...]}``, free of
    personal data.
    """
    if not changes:
        raise ConfigError(["rectify: nothing to correct; give --set FIELD=VALUE"])
    refused = sorted(set(changes) - set(allowed))
    if refused:
        raise ConfigError(
            [
                f"rectify: {name} is not a field rectify may write; add it to rectify.fields "
                f"in the settings (allowed now: {', '.join(allowed) or 'none'})"
                for name in refused
            ]
        )
    given = _given(emails)
    if not given:
        raise ConfigError(["rectify: give an EMAIL of the person"])
    try:
        person = find_person(adapters, given) if linked else find_holders(adapters, given)
    except AdapterError as error:
        raise error.during("rectify: cannot look the person up") from None
    everyone = person.emails
    ref = subject_ref(key, given[0])
    fields = sorted(changes)
    holding = {r.system for r in person.records}
    _check_first(store, {s: a for s, a in adapters.items() if s in holding}, changes, ref, actor)
    records: list[dict[str, Any]] = []
    for system, adapter in adapters.items():
        try:
            outcomes = adapter.rectify(everyone, changes)
        except AdapterError as error:
            records.append(_entry(system, None, None, WriteStatus.FAILED, str(error)))
            continue
        records += [
            _entry(o.record.system, o.record.object_type, o.record.id, o.status, o.detail)
            for o in outcomes
        ]
    for entry in records:
        audit.record(
            store,
            AuditEvent(
                actor=actor,
                action="rectify",
                outcome=entry["status"],
                system=entry["system"],
                record_id=entry["record_id"],
                subject_ref=ref,
                details={"object_type": entry["object_type"], "fields": fields}
                | ({"detail": entry["detail"]} if entry["detail"] else {}),
            ),
        )
    if not records:
        details = {"fields": fields, "systems": sorted(s for s in adapters)}
        event = AuditEvent(actor, "rectify", "not_found", subject_ref=ref, details=details)
        audit.record(store, event)
    return {"records": records}


def _given(emails: Sequence[str]) -> list[str]:
    """The addresses given, normalised, each once, blanks left out."""
    return sorted({normalise_email(e) for e in emails if e.strip()})


class RectifyRefused(BridgeError):
    """A system holding the person could not take a value, so nothing was written anywhere;
    the message names fields, systems and limits, never a value. A failed operation (exit
    1): the settings and the command were fine, the data does not fit."""


def _check_first(
    store: Store,
    adapters: Mapping[System, CrmAdapter],
    changes: Mapping[str, str],
    ref: str,
    actor: str,
) -> None:
    """Ask every system whether it could take the whole correction, before any writes;
    raise ``RectifyRefused`` (audited) if one could not."""
    problems: list[RectifyProblem] = []
    for adapter in adapters.values():
        try:
            problems += adapter.check_rectify(changes)
        except AdapterError as error:
            raise error.during("rectify: nothing written; checking the correction failed") from None
    if not problems:
        return
    audit.record(
        store,
        AuditEvent(
            actor,
            "rectify",
            "refused",
            subject_ref=ref,
            details={"fields": sorted(changes), "problems": [str(p) for p in problems]},
        ),
    )
    raise RectifyRefused(f"rectify: refused, nothing written anywhere: {_summary(problems)}")


def _summary(problems: Sequence[RectifyProblem]) -> str:
    """The problems in one line, one part per field, system and limit: ``first_name: <system>
    holds at most 40 characters (Contact.FirstName, Lead.FirstName)``."""
    grouped: dict[tuple[str, str, int | None], list[str]] = {}
    for problem in problems:
        key = (problem.field, problem.system, problem.limit)
        grouped.setdefault(key, []).append(problem.where or "")
    parts = []
    for (name, system, limit), places in grouped.items():
        named = ", ".join(p for p in places if p)
        if not named:
            parts.append(f"{name}: {system} has no field for it")
        elif limit is None:
            parts.append(f"{name}: {system} cannot write {named}")
        else:
            parts.append(f"{name}: {system} holds at most {limit:,} characters ({named})")
    return "; ".join(parts)


def _entry(
    system: str, object_type: str | None, record_id: str | None, status: WriteStatus, detail: str
) -> dict[str, Any]:
    return {
        "system": system,
        "object_type": object_type,
        "record_id": record_id,
        "status": status.value,
        "detail": detail,
    }
