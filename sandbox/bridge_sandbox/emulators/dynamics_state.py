"""The emulated Dataverse environment: its tables, rows, change log, audit and recycle bin.

All domain rules live here behind one lock, so the Web API handlers, ``$batch`` parts and
admin seeding obey the same ones: every write bumps a row version (the ETag and the change
tracking watermark), deletions are logged for ``$deletedEntity``, each change leaves an
audit entry until ``DeleteRecordChangeHistory``, and with the recycle bin on a deleted row
stays restorable for its configured days (docs/vendors/dynamics.md,
"Deletion, recycle bin and audit history").
"""

from __future__ import annotations

import copy
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

from bridge_sandbox.emulators.dynamics_http import (
    DUPLICATE_RECORD,
    EXPIRED_MESSAGE,
    EXPIRED_VERSION_STAMP,
    INVALID_PROPERTY,
    DataverseError,
    does_not_exist,
    iso,
    now,
    parse_iso,
)

Row = dict[str, Any]
# "choice" and "state" columns hold option values (ints); "date" is a date-only column
# ("2026-12-31"); "memo" is multi-line text.
Kind = Literal[
    "string", "memo", "bool", "int", "bigint", "choice", "state", "guid", "datetime", "date"
]
SYSTEM_COLUMNS = ("createdon", "modifiedon", "versionnumber")
_BIND = re.compile(r"(?:^|/)(\w+)\(([0-9a-fA-F-]{36})\)$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
STRING_TOO_LONG = "0x80044331"  # not verified: the code Dataverse gives an over-long string
_INTEGERS = ("int", "bigint", "choice", "state")


@dataclass(frozen=True)
class Table:
    """One table: its entity set, logical name, key, typed columns, the maximum length of
    each text column, and lookups; a read-only table answers GET only."""

    entity_set: str
    logical_name: str
    key: str
    columns: dict[str, Kind]
    defaults: dict[str, Any] = field(default_factory=dict)
    lookups: dict[str, str] = field(default_factory=dict)  # navigation property -> entity set
    lengths: dict[str, int] = field(default_factory=dict)
    read_only: bool = False

    def readable(self) -> set[str]:
        return set(self.columns) | {f"_{nav}_value" for nav in self.lookups}


_PERSON: dict[str, Kind] = {
    "firstname": "string",
    "lastname": "string",
    "emailaddress1": "string",
    "emailaddress2": "string",
    "emailaddress3": "string",
    "telephone1": "string",
    # The README's set-up: a rollup column, the latest end of the row's activities (Dataverse
    # keeps no last-activity date on a contact or lead of its own).
    "cb_lastactivity": "datetime",
    "description": "memo",
    "donotbulkemail": "bool",
    "donotemail": "bool",
    "donotphone": "bool",
    "donotpostalmail": "bool",
    "donotfax": "bool",
    "followemail": "bool",
    "cb_purgedue": "date",
}
# Maximum lengths from the Dataverse contact reference (Contact ref in
# docs/vendors/dynamics.md: firstname and lastname 50, emailaddress1-3 100, telephone1 50,
# description 2000); lead is assumed to match.
_PERSON_LENGTHS = {
    "firstname": 50,
    "lastname": 50,
    "emailaddress1": 100,
    "emailaddress2": 100,
    "emailaddress3": 100,
    "telephone1": 50,
    "description": 2000,
}
_PERSON_DEFAULTS = {
    "donotbulkemail": False,
    "donotemail": False,
    "donotphone": False,
    "donotpostalmail": False,
    "donotfax": False,
    "followemail": True,  # the other way round: True allows
}
_SYSTEM: dict[str, Kind] = {
    "createdon": "datetime",
    "modifiedon": "datetime",
    "versionnumber": "bigint",
}
# consent4 and purpose lengths from the D365 refs (docs/vendors/dynamics.md, "Contact point
# consent"); opportunity's name length (300) and recyclebinconfig's (100) are assumed.
_CONSENT_LENGTHS = {"msdynmkt_contactpointvalue": 400, "msdynmkt_reason": 500}
_NAME_LENGTHS = {"msdynmkt_name": 100}


def _columns(key: str, columns: dict[str, Kind]) -> dict[str, Kind]:
    """A table's columns: its GUID key, its own columns and the system ones."""
    keyed: dict[str, Kind] = {key: "guid"}
    return keyed | columns | _SYSTEM


def build_tables(lawful_basis_field: str, sales_solution: bool) -> dict[str, Table]:
    """The tables the bridge uses; ``msdyn_gdproptout`` only with the Sales solution."""
    person: dict[str, Kind] = _PERSON | {lawful_basis_field: "choice"}
    person_defaults = dict(_PERSON_DEFAULTS)
    if sales_solution:
        person["msdyn_gdproptout"] = "bool"
        person_defaults["msdyn_gdproptout"] = False
    consent: dict[str, Kind] = {
        "msdynmkt_contactpointvalue": "string",
        "msdynmkt_contactpointtype": "choice",
        "msdynmkt_value": "choice",
        "msdynmkt_source": "choice",
        "msdynmkt_reason": "string",
        "msdynmkt_logicalreason": "choice",
    }
    named: dict[str, Kind] = {"msdynmkt_name": "string"}
    purpose = {"msdynmkt_purposeid": "msdynmkt_purposes"}
    opportunity: dict[str, Kind] = {"name": "string", "statecode": "state"}
    bin_config: dict[str, Kind] = {
        "name": "string",
        "statecode": "state",
        "isreadyforrecyclebin": "bool",
        "cleanupintervalindays": "int",
    }
    tables = [
        Table(
            "contacts",
            "contact",
            "contactid",
            _columns("contactid", person),
            person_defaults,
            lengths=_PERSON_LENGTHS,
        ),
        Table(
            "leads",
            "lead",
            "leadid",
            # A lead's company (text 100 in the D365 lead reference).
            _columns("leadid", person | {"companyname": "string"}),
            person_defaults,
            lengths=_PERSON_LENGTHS | {"companyname": 100},
        ),
        Table(
            "opportunities",
            "opportunity",
            "opportunityid",
            _columns("opportunityid", opportunity),
            {"statecode": 0},  # 0 open, 1 won, 2 lost
            {"parentcontactid": "contacts", "originatingleadid": "leads"},
            {"name": 300},
        ),
        Table(
            "msdynmkt_contactpointconsent4s",
            "msdynmkt_contactpointconsent4",
            "msdynmkt_contactpointconsent4id",
            _columns("msdynmkt_contactpointconsent4id", consent),
            {"msdynmkt_value": 534120000, "msdynmkt_contactpointtype": 534120000},
            purpose | {"msdynmkt_topicid": "msdynmkt_topics"},
            _CONSENT_LENGTHS,
        ),
        Table(
            "msdynmkt_purposes",
            "msdynmkt_purpose",
            "msdynmkt_purposeid",
            _columns("msdynmkt_purposeid", named),
            lengths=_NAME_LENGTHS,
        ),
        Table(
            "msdynmkt_topics",
            "msdynmkt_topic",
            "msdynmkt_topicid",
            _columns("msdynmkt_topicid", named),
            lookups=purpose,
            lengths=_NAME_LENGTHS,
        ),
        Table(
            "recyclebinconfigs",
            "recyclebinconfig",
            "recyclebinconfigid",
            _columns("recyclebinconfigid", bin_config),
            lengths={"name": 100},
            read_only=True,
        ),
    ]
    return {table.entity_set: table for table in tables}


def _check_type(table: Table, name: str, value: Any) -> None:
    """Dataverse's refusals of a value of the wrong type or an over-long text; the length
    message names the column and its maximum, never the value."""
    if value is None:
        return
    kind = table.columns[name]
    edm = {"bool": "Edm.Boolean", "date": "Edm.Date"}.get(kind, "Edm.Int32")
    wrong = (
        (kind == "bool" and not isinstance(value, bool))
        or (kind in _INTEGERS and (isinstance(value, bool) or not isinstance(value, int)))
        or (kind == "date" and not (isinstance(value, str) and _DATE.match(value)))
    )
    if wrong:
        raise DataverseError(
            400, "", f"Cannot convert the literal '{value}' to the expected type '{edm}'."
        )
    limit = table.lengths.get(name)
    if limit is not None and isinstance(value, str) and len(value) > limit:
        raise DataverseError(
            400,
            STRING_TOO_LONG,
            f"A validation error occurred. The length of the '{name}' attribute of the "
            f"'{table.logical_name}' entity exceeded the maximum allowed length of '{limit}'.",
        )


class Written(NamedTuple):
    """A PATCH's outcome: the row, whether it was created, and the columns it set (every
    column sent counts as updated, changed or not: docs/vendors/dynamics.md, "Web API
    basics")."""

    row: Row
    created: bool
    sent: Row


@dataclass
class _Deletion:
    entity_set: str
    record_id: str
    version: int


class DynamicsState:
    """Rows by entity set and id, with the logs change tracking and audit read."""

    def __init__(
        self,
        tables: dict[str, Table],
        recycle_bin_days: int | None = None,
        change_expiry_days: float = 7,
        clock: Callable[[], datetime] = now,
        untracked: frozenset[str] = frozenset(),
    ) -> None:
        self.tables = tables
        self.recycle_bin_days = recycle_bin_days
        self.change_expiry_days = change_expiry_days
        self.untracked = untracked  # logical names of tables without change tracking
        self.clock = clock
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.rows: dict[str, dict[str, Row]] = {name: {} for name in self.tables}
            self.version = 0
            self.deletions: list[_Deletion] = []
            self.audit: dict[tuple[str, str], list[dict[str, Any]]] = {}
            self.bin: dict[tuple[str, str], tuple[Row, datetime]] = {}
            self.tokens: dict[str, tuple[int, datetime]] = {}

    def table(self, entity_set: str) -> Table:
        return self.tables[entity_set]

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing: a changeset's writes are undone if any of them fails."""
        with self._lock:
            saved = copy.deepcopy((self.rows, self.version, self.deletions, self.audit, self.bin))
            try:
                yield
            except BaseException:
                self.rows, self.version, self.deletions, self.audit, self.bin = saved
                raise

    # -- writes ------------------------------------------------------------------------------

    def _values(self, table: Table, body: Row) -> Row:
        """Columns and ``nav@odata.bind`` lookups of a request body, checked."""
        values: Row = {}
        for name, value in body.items():
            if name.startswith("@odata."):
                continue
            nav, _, annotation = name.partition("@")
            if annotation == "odata.bind" and nav in table.lookups:
                values[f"_{nav}_value"] = self._bound(table.lookups[nav], value)
            elif annotation or name not in table.columns:
                raise DataverseError(
                    400,
                    INVALID_PROPERTY,
                    f"Invalid property '{name}' was found in entity "
                    f"'Microsoft.Dynamics.CRM.{table.logical_name}'.",
                )
            elif name not in SYSTEM_COLUMNS and name != table.key:
                _check_type(table, name, value)
                values[name] = value
        return values

    def _bound(self, entity_set: str, reference: Any) -> str | None:
        if reference is None:
            return None
        match = _BIND.search(str(reference))
        target = self.tables.get(match.group(1)) if match else None
        if match is None or target is None or target.entity_set != entity_set:
            raise DataverseError(400, "", f"Invalid reference '{reference}' for {entity_set}.")
        record_id = match.group(2).lower()
        if record_id not in self.rows[entity_set]:
            raise does_not_exist(target.logical_name, record_id)
        return record_id

    def _stamp(self, row: Row) -> None:
        self.version += 1
        row["versionnumber"] = self.version
        row["modifiedon"] = iso(self.clock())

    def _log(self, entity_set: str, record_id: str, operation: str, changes: Row) -> None:
        entry = {"changedon": iso(self.clock()), "operation": operation, "changes": changes}
        self.audit.setdefault((entity_set, record_id), []).append(entry)

    def create(
        self, entity_set: str, body: Row, record_id: str | None = None, seeded: bool = False
    ) -> Row:
        """A new row; ``seeded`` (the admin API) keeps the body's ``createdon`` and
        ``modifiedon``, so tests can make old rows; Web API writes are always stamped now."""
        table = self.tables[entity_set]
        if table.read_only:
            raise DataverseError(403, "", f"The {table.logical_name} table cannot be written.")
        with self._lock:
            record_id = (record_id or str(body.get(table.key) or uuid.uuid4())).lower()
            if record_id in self.rows[entity_set]:
                raise DataverseError(
                    412, DUPLICATE_RECORD, "A record with matching key values already exists."
                )
            values = self._values(table, body)
            row: Row = {table.key: record_id} | {f"_{nav}_value": None for nav in table.lookups}
            row |= {name: None for name in table.columns if name not in row}
            row |= table.defaults | values
            row["createdon"] = iso(self.clock())
            self._stamp(row)
            if seeded:
                row |= _seeded_times(body)
            self.rows[entity_set][record_id] = row
            self.bin.pop((entity_set, record_id), None)
            self._log(entity_set, record_id, "create", {k: [None, v] for k, v in values.items()})
            return dict(row)

    def upsert(
        self,
        entity_set: str,
        record_id: str,
        body: Row,
        if_match: str | None = None,
        if_none_match: str | None = None,
    ) -> Written:
        """PATCH: update, or create when the row is missing unless ``If-Match`` is sent
        (then 404); ``If-None-Match: *`` refuses an existing row (412). Microsoft documents
        these conditional refusals with an empty code."""
        table = self.tables[entity_set]
        record_id = record_id.lower()
        with self._lock:
            row = self.rows[entity_set].get(record_id)
            if row is None:
                if if_match is not None:
                    raise does_not_exist(table.logical_name, record_id, code="")
                made = self.create(entity_set, body, record_id)
                return Written(made, True, set_values(table, made))
            if if_none_match == "*":
                raise DataverseError(412, "", "A record with matching key values already exists.")
            if if_match not in (None, "*") and if_match != etag(row):
                raise DataverseError(
                    412,
                    "",
                    "The version of the existing record doesn't match the RowVersion property "
                    "provided.",
                )
            values = self._values(table, body)
            changes = {k: [row.get(k), v] for k, v in values.items() if row.get(k) != v}
            row |= values
            self._stamp(row)
            self._log(entity_set, record_id, "update", changes)
            return Written(dict(row), False, values)

    def delete(self, entity_set: str, record_id: str) -> None:
        """Gone for good, or into the recycle bin when it is on; related rows stay."""
        table = self.tables[entity_set]
        record_id = record_id.lower()
        with self._lock:
            row = self.rows[entity_set].pop(record_id, None)
            if row is None:
                raise does_not_exist(table.logical_name, record_id)
            self.version += 1
            self.deletions.append(_Deletion(entity_set, record_id, self.version))
            self._log(entity_set, record_id, "delete", {})
            if self.recycle_bin_days is not None:
                self.bin[(entity_set, record_id)] = (row, self.clock())

    def restore(self, entity_set: str, record_id: str) -> Row:
        with self._lock:
            self._purge_bin()
            kept = self.bin.pop((entity_set, record_id.lower()), None)
            if kept is None:
                raise does_not_exist(self.tables[entity_set].logical_name, record_id)
            row = kept[0]
            self._stamp(row)
            self.rows[entity_set][record_id.lower()] = row
            self._log(entity_set, record_id.lower(), "restore", {})
            return dict(row)

    def _purge_bin(self) -> None:
        if self.recycle_bin_days is None:
            self.bin.clear()
            return
        cutoff = self.clock() - timedelta(days=self.recycle_bin_days)
        self.bin = {key: kept for key, kept in self.bin.items() if kept[1] > cutoff}

    def delete_history(self, logical_name: str, record_id: str) -> int:
        """``DeleteRecordChangeHistory``: how many audit entries of the record went."""
        with self._lock:
            for name, table in self.tables.items():
                if table.logical_name == logical_name:
                    return len(self.audit.pop((name, record_id.lower()), []))
            raise DataverseError(404, "", f"Entity '{logical_name}' not found.")

    # -- reads -------------------------------------------------------------------------------

    def _live(self, entity_set: str) -> dict[str, Row]:
        """A table's rows by id; ``recyclebinconfigs`` reflects the recycle bin setting."""
        if entity_set == "recyclebinconfigs":
            return _bin_configs(self.recycle_bin_days)
        return self.rows[entity_set]

    def get(self, entity_set: str, record_id: str) -> Row:
        with self._lock:
            row = self._live(entity_set).get(record_id.lower())
            if row is None:
                raise does_not_exist(self.tables[entity_set].logical_name, record_id.lower())
            return dict(row)

    def rows_of(self, entity_set: str) -> list[Row]:
        """Every row, in key order (the order pages follow)."""
        with self._lock:
            rows = self._live(entity_set)
            return [dict(rows[k]) for k in sorted(rows)]

    # -- change tracking ---------------------------------------------------------------------

    def issue_token(self) -> str:
        """A delta token for everything up to now, in Dataverse's ``version!date`` form."""
        with self._lock:
            issued = self.clock()
            token = f"{self.version}!{issued:%m/%d/%Y %H:%M:%S}"
            self.tokens[token] = (self.version, issued)
            return token

    def changes_since(self, entity_set: str, token: str) -> tuple[list[Row], list[str]]:
        """Rows changed and ids deleted after ``token``; an expired one is refused."""
        with self._lock:
            found = self.tokens.get(token)
            limit = self.clock() - timedelta(days=self.change_expiry_days)
            if found is None or found[1] < limit:
                raise DataverseError(400, EXPIRED_VERSION_STAMP, EXPIRED_MESSAGE)
            since = found[0]
            changed = [r for r in self.rows_of(entity_set) if r["versionnumber"] > since]
            gone = {
                d.record_id
                for d in self.deletions
                if d.entity_set == entity_set and d.version > since
            }
            return changed, sorted(gone - set(self.rows[entity_set]))

    def expire_tokens(self) -> int:
        """Expire every delta token issued so far, as a lapsed expiry would."""
        with self._lock:
            count = len(self.tokens)
            self.tokens.clear()
            return count

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            self._purge_bin()
            return {
                "tables": {name: self.rows_of(name) for name in self.tables},
                "recycle_bin": [
                    {"entity_set": s, "id": i, "deleted_on": iso(when), "row": row}
                    for (s, i), (row, when) in self.bin.items()
                ],
                "audit": [
                    {"entity_set": s, "id": i, "entries": entries}
                    for (s, i), entries in self.audit.items()
                ],
                "recycle_bin_days": self.recycle_bin_days,
                "change_expiry_days": self.change_expiry_days,
            }


def _seeded_times(body: Row) -> Row:
    """``createdon``/``modifiedon`` given to the admin seed, in Dataverse's form."""
    times: Row = {}
    for name in ("createdon", "modifiedon"):
        if body.get(name) is not None:
            try:
                times[name] = iso(parse_iso(str(body[name])))
            except ValueError as exc:
                raise DataverseError(400, "", f"'{name}' is not an ISO date-time.") from exc
    return times


def set_values(table: Table, row: Row) -> Row:
    """The columns a new row holds values in, system columns and key left out."""
    skip = {table.key, *SYSTEM_COLUMNS}
    return {k: v for k, v in row.items() if v is not None and k not in skip}


def _bin_configs(days: int | None) -> dict[str, Row]:
    """``recyclebinconfigs`` as docs/vendors/dynamics.md describes it: no rows before the
    bin is first enabled; then ``organization`` holds the days for all tables and the
    contact and lead rows hold -1 (not overridden). Turning the bin off here removes the
    rows again, which a real environment may not do (not verified)."""
    if days is None:
        return {}
    rows: dict[str, Row] = {}
    for name, interval in (("organization", days), ("contact", -1), ("lead", -1)):
        record_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"recyclebinconfig/{name}"))
        rows[record_id] = {
            "recyclebinconfigid": record_id,
            "name": name,
            "statecode": 0,
            "isreadyforrecyclebin": True,
            "cleanupintervalindays": interval,
            "createdon": None,
            "modifiedon": None,
            "versionnumber": 1,
        }
    return rows


def etag(row: Row) -> str:
    return f'W/"{row["versionnumber"]}"'
