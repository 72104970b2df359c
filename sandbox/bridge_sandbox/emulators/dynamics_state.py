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
from typing import Any, Literal

from bridge_sandbox.emulators.dynamics_http import (
    DUPLICATE_RECORD,
    EXPIRED_MESSAGE,
    EXPIRED_VERSION_STAMP,
    INVALID_PROPERTY,
    DataverseError,
    does_not_exist,
    iso,
    now,
)

Row = dict[str, Any]
Kind = Literal["string", "bool", "int", "guid", "datetime"]
SYSTEM_COLUMNS = ("createdon", "modifiedon", "versionnumber")
_BIND = re.compile(r"(?:^|/)(\w+)\(([0-9a-fA-F-]{36})\)$")


@dataclass(frozen=True)
class Table:
    """One table: its entity set, logical name, key, typed columns and lookups."""

    entity_set: str
    logical_name: str
    key: str
    columns: dict[str, Kind]
    defaults: dict[str, Any] = field(default_factory=dict)
    lookups: dict[str, str] = field(default_factory=dict)  # navigation property -> entity set

    def readable(self) -> set[str]:
        return set(self.columns) | {f"_{nav}_value" for nav in self.lookups}


_PERSON: dict[str, Kind] = {
    "firstname": "string",
    "lastname": "string",
    "emailaddress1": "string",
    "emailaddress2": "string",
    "emailaddress3": "string",
    "telephone1": "string",
    "donotbulkemail": "bool",
    "donotemail": "bool",
    "donotphone": "bool",
    "donotpostalmail": "bool",
    "donotfax": "bool",
    "followemail": "bool",
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
    "versionnumber": "int",
}


def _columns(key: str, columns: dict[str, Kind]) -> dict[str, Kind]:
    """A table's columns: its GUID key, its own columns and the system ones."""
    keyed: dict[str, Kind] = {key: "guid"}
    return keyed | columns | _SYSTEM


def build_tables(lawful_basis_field: str, sales_solution: bool) -> dict[str, Table]:
    """The five tables the bridge uses; ``msdyn_gdproptout`` only with the Sales solution."""
    person: dict[str, Kind] = _PERSON | {lawful_basis_field: "int"}
    person_defaults = dict(_PERSON_DEFAULTS)
    if sales_solution:
        person["msdyn_gdproptout"] = "bool"
        person_defaults["msdyn_gdproptout"] = False
    consent: dict[str, Kind] = {
        "msdynmkt_contactpointvalue": "string",
        "msdynmkt_contactpointtype": "int",
        "msdynmkt_value": "int",
        "msdynmkt_source": "int",
        "msdynmkt_reason": "string",
        "msdynmkt_logicalreason": "int",
    }
    named: dict[str, Kind] = {"msdynmkt_name": "string"}
    purpose = {"msdynmkt_purposeid": "msdynmkt_purposes"}
    tables = [
        Table("contacts", "contact", "contactid", _columns("contactid", person), person_defaults),
        Table("leads", "lead", "leadid", _columns("leadid", person), person_defaults),
        Table(
            "msdynmkt_contactpointconsent4s",
            "msdynmkt_contactpointconsent4",
            "msdynmkt_contactpointconsent4id",
            _columns("msdynmkt_contactpointconsent4id", consent),
            {"msdynmkt_value": 534120000, "msdynmkt_contactpointtype": 534120000},
            purpose | {"msdynmkt_topicid": "msdynmkt_topics"},
        ),
        Table(
            "msdynmkt_purposes",
            "msdynmkt_purpose",
            "msdynmkt_purposeid",
            _columns("msdynmkt_purposeid", named),
        ),
        Table(
            "msdynmkt_topics",
            "msdynmkt_topic",
            "msdynmkt_topicid",
            _columns("msdynmkt_topicid", named),
            lookups=purpose,
        ),
    ]
    return {table.entity_set: table for table in tables}


def _check_type(table: Table, name: str, value: Any) -> None:
    kind = table.columns[name]
    wrong = (kind == "bool" and not isinstance(value, bool)) or (
        kind == "int" and (isinstance(value, bool) or not isinstance(value, int))
    )
    if value is not None and wrong:
        edm = {"bool": "Edm.Boolean", "int": "Edm.Int32"}[kind]
        raise DataverseError(
            400, "", f"Cannot convert the literal '{value}' to the expected type '{edm}'."
        )


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
    ) -> None:
        self.tables = tables
        self.recycle_bin_days = recycle_bin_days
        self.change_expiry_days = change_expiry_days
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

    def create(self, entity_set: str, body: Row, record_id: str | None = None) -> Row:
        table = self.tables[entity_set]
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
    ) -> tuple[Row, bool]:
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
                return self.create(entity_set, body, record_id), True
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
            return dict(row), False

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

    def get(self, entity_set: str, record_id: str) -> Row:
        with self._lock:
            row = self.rows[entity_set].get(record_id.lower())
            if row is None:
                raise does_not_exist(self.tables[entity_set].logical_name, record_id.lower())
            return dict(row)

    def rows_of(self, entity_set: str) -> list[Row]:
        """Every row, in key order (the order pages follow)."""
        with self._lock:
            return [dict(self.rows[entity_set][k]) for k in sorted(self.rows[entity_set])]

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


def etag(row: Row) -> str:
    return f'W/"{row["versionnumber"]}"'
