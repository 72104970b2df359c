"""What ``bridge check --crm`` says about a Salesforce org and its integration user.

The describes show what the user may do to each object (the global describe's ``queryable``,
``createable``, ``updateable``, ``deletable``) and each field it can see (``updateable``,
``createable``; field-level security hides the rest); they are held against ``permissions``,
the list the shipped permission sets grant, with the fields the settings add (the
lawful-basis field, the retention rules' fields and due field). Then the lawful-basis
picklist's values, the purposes' DataUsePurposes and which erasure the user's permissions
allow. Pure: the adapter makes the calls. The facts: docs/vendors/salesforce.md ("Checking the
set-up").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from typing import Any

from bridge.adapters.base import Check
from bridge.adapters.salesforce.permissions import (
    CREATE,
    DELETE,
    EDIT,
    LAWFUL_BASIS,
    PERMISSION_SETS,
    READ,
    Grant,
    grants,
)
from bridge.adapters.salesforce.vocabulary import SALESFORCE_LEGAL_BASIS
from bridge.adapters.vocabulary import Unmappable
from bridge.model import LawfulBasis

# What each object permission shows as in the global describe.
FLAGS = {READ: "queryable", CREATE: "createable", EDIT: "updateable", DELETE: "deletable"}
PEOPLE = ("Contact", "Lead")
DELETED_DAYS = 15

Fields = Sequence[Mapping[str, Any]]


def needed(
    *,
    privacy: bool,
    lawful_basis_field: str | None,
    due_field: str | None,
    read_fields: Mapping[str, Sequence[str]],
) -> list[Grant]:
    """What this org's integration user needs: the shipped grants, with the lawful-basis field
    the settings name (or none), the due field (edited: retention rules mark people) and the
    fields the retention rules read, on Contact and Lead."""
    found = []
    for grant in grants(privacy=privacy):
        edit = [f for f in grant.edit if f != LAWFUL_BASIS]
        read = list(grant.read)
        if grant.sobject in PEOPLE:
            edit += [f for f in (lawful_basis_field, due_field) if f]
            read += read_fields.get(grant.sobject, ())
        edit = list(dict.fromkeys(edit))
        read = [f for f in dict.fromkeys(read) if f not in edit]
        found.append(Grant(grant.sobject, grant.access, tuple(edit), tuple(read)))
    return found


def access(grant: Grant, listed: Mapping[str, Any] | None, fields: Fields, privacy: bool) -> Check:
    """Whether the user may do to ``grant.sobject`` (``listed``: its global describe entry,
    None if absent) and its fields (``fields``: its describe) what the bridge does."""
    fix = (
        f'deploy and assign {PERMISSION_SETS[privacy]} (README, "Salesforce"); create a custom '
        "field that is missing, or correct the setting that names it"
    )
    if listed is None:
        return Check(grant.sobject, "not available to the integration user", fix, ok=False)
    refused = [verb for verb in grant.access if verb in FLAGS and not listed.get(FLAGS[verb])]
    by_name = {str(f.get("name")): f for f in fields}
    missing = [f for f in (*grant.edit, *grant.read) if f not in by_name]
    # A field of rows the bridge creates must take a value on create as well as on update.
    flags = ("updateable", "createable") if CREATE in grant.access else ("updateable",)
    read_only = [
        name
        for name in grant.edit
        if name in by_name and not all(by_name[name].get(flag) for flag in flags)
    ]
    problems = [
        *([f"the integration user may not {' or '.join(refused)} it"] if refused else []),
        *([f"no field {', '.join(missing)} (missing, or hidden from the user)"] if missing else []),
        *([f"{', '.join(read_only)} read-only for the user"] if read_only else []),
    ]
    if problems:
        return Check(grant.sobject, "; ".join(problems), fix, ok=False)
    verbs = ", ".join(verb for verb in grant.access if verb in FLAGS)
    named = [*grant.edit, *grant.read]
    used = f"; {len(named)} fields as the bridge uses them" if len(named) > 1 else ""
    used = f"; {named[0]} as the bridge uses it" if len(named) == 1 else used
    return Check(grant.sobject, verbs + used)


def lawful_basis(field: str | None, fields_of: Callable[[str], Fields]) -> Check:
    """Whether every value of the lawful-basis picklist on Contact and Lead names a lawful
    basis, and every basis the bridge writes has a value."""
    name = "lawful-basis picklist"
    if field is None:
        return Check(name, "not held (salesforce.lawful_basis_field is unset)")
    problems: list[str] = []
    for sobject in PEOPLE:
        described = next((f for f in fields_of(sobject) if f.get("name") == field), None)
        if described is None:
            continue  # the object's line names it missing
        where = f"{sobject}.{field}"
        if described.get("type") != "picklist":
            problems.append(f"{where} is a {described.get('type')} field, not a picklist")
            continue
        options = described.get("picklistValues") or ()
        bases = {str(p["value"]): _basis(str(p["value"])) for p in options if p.get("active")}
        unmapped = [value for value, basis in bases.items() if basis is None]
        absent = [w for b, w in SALESFORCE_LEGAL_BASIS.written.items() if b not in bases.values()]
        if unmapped:
            problems.append(f"{where} values {', '.join(map(repr, unmapped))} name no lawful basis")
        if absent:
            problems.append(f"{where} has no value for {', '.join(absent)}")
    if problems:
        wanted = ", ".join(SALESFORCE_LEGAL_BASIS.written.values())
        fix = f'give the picklist exactly the values {wanted} (README, "Salesforce")'
        return Check(name, "; ".join(problems), fix, ok=False)
    return Check(name, f"every value of {field} on Contact and Lead names a lawful basis")


def _basis(value: str) -> LawfulBasis | None:
    with suppress(Unmappable):
        return SALESFORCE_LEGAL_BASIS.from_vendor(value)
    return None


def purposes(wanted: Mapping[str, str], rows: Sequence[Mapping[str, Any]]) -> Check:
    """Whether a DataUsePurpose of each configured name (``wanted``: purpose id to name)
    exists; ``rows``: the org's DataUsePurposes, ``Name`` and ``LegalBasis.Name``."""
    name = "purposes"
    if not wanted:
        return Check(name, "no purpose is mapped to a DataUsePurpose: only the flags are synced")
    held = {str(row.get("Name")).casefold(): row for row in rows}
    absent = [f"{purpose} names {n!r}" for purpose, n in wanted.items() if n.casefold() not in held]
    if absent:
        have = ", ".join(repr(str(row.get("Name"))) for row in rows) or "none"
        fix = (
            "create the DataUsePurpose, or set the purpose's salesforce_data_use_purpose in "
            f"[[purposes]] to one the org has ({have})"
        )
        return Check(name, f"no DataUsePurpose for {'; '.join(absent)}", fix, ok=False)
    found = []
    for purpose, n in wanted.items():
        basis = (held[n.casefold()].get("LegalBasis") or {}).get("Name")
        found.append(f"{purpose}: {n}" + (f" ({basis})" if basis else ""))
    return Check(name, "DataUsePurposes exist: " + ", ".join(found))


def erasure(hard_delete: bool | None, empty_recycle_bin: bool) -> Check:
    """Which erasure the integration user's permissions allow (``hard_delete`` None: they
    could not be read), and the fallback without Bulk API Hard Delete."""
    name = "erasure"
    if hard_delete:
        return Check(name, "hard delete (Bulk API 2.0): the user has Bulk API Hard Delete")
    fallback = (
        "delete, then empty the recycle bin (emptyRecycleBin)"
        if empty_recycle_bin
        else f"delete only: erased rows stay recoverable in the recycle bin for {DELETED_DAYS} days"
    )
    why = (
        "cannot tell whether the user has Bulk API Hard Delete (UserPermissionAccess unreadable)"
        if hard_delete is None
        else "the user lacks Bulk API Hard Delete"
    )
    found = f"{why}; without it erasure will {fallback}"
    if empty_recycle_bin:
        return Check(name, found)
    fix = "grant Bulk API Hard Delete, or set salesforce.empty_recycle_bin = true"
    return Check(name, found, fix, ok=False)
