"""One emulated Salesforce org in memory: records, recycle bin, sessions, API quota, cursors.

All domain rules live here, behind one re-entrant lock, so that the HTTP layer stays a thin
translation and every path (REST, collections, Bulk API, SOAP, admin) behaves the same way.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bridge_sandbox.emulators.salesforce_config import (
    LEGAL_BASES,
    Org,
    SalesforceEmulatorConfig,
    SettingsUpdate,
)
from bridge_sandbox.emulators.salesforce_model import (
    USER_PERMISSIONS,
    ApiError,
    CustomField,
    FieldDef,
    ObjectDef,
    Record,
    SalesforceError,
    Schema,
    check_value,
    coerce,
    entity_is_deleted,
    format_datetime,
    json_value,
    make_id,
    no_such_column,
    normalize_id,
    not_found,
    now,
    parse_datetime,
)
from bridge_sandbox.emulators.salesforce_query import Plan, compile_query

USER_ID = make_id("005", 0xB21D6E)
MAX_COLLECTION = 200
MAX_BATCH_SIZE = 2000
MIN_BATCH_SIZE = 200
OPEN_CURSORS = 50
DAY = 24 * 3600.0
BULK_LIMITS = {
    "DailyBulkApiBatches": 15000,
    "DailyBulkV2QueryJobs": 10000,
    "DailyBulkV2QueryFileStorageMB": 976562,
}
SESSION_EXPIRED = ApiError("INVALID_SESSION_ID", "Session expired or invalid")
QUOTA_EXCEEDED = ApiError("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
ROLLED_BACK = ApiError(
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using AllOrNone "
    "header",
    (),
)
NO_DELETE_ACCESS = ApiError(
    "INSUFFICIENT_ACCESS_OR_READONLY", "insufficient access rights on object id", ()
)
TOO_MANY_RECORDS = ApiError(
    "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records into this call"
)

ChangeListener = Callable[[Record, frozenset[str], bool], None]
Commit = Callable[[], dict[str, Any]]


@dataclass
class _Cursor:
    """A query's rendered rows, kept for its ``nextRecordsUrl`` pages."""

    rows: list[dict[str, Any]]
    batch_size: int


class SeedError(Exception):
    """A seeded record failed validation; nothing of that seed call was kept."""

    def __init__(self, index: int, error: SalesforceError) -> None:
        super().__init__(error.errors[0].message)
        self.index = index
        self.error = error


class SalesforceState:
    """The org. Public methods take the lock; ``_``-methods expect it to be held."""

    def __init__(self, config: SalesforceEmulatorConfig) -> None:
        self._lock = threading.RLock()
        self._initial = config
        self._ids = itertools.count(1)
        self.on_change: ChangeListener | None = None
        self.instance_url = config.instance_url or "https://emulator.my.salesforce.com"
        self._load(config)

    def _load(self, config: SalesforceEmulatorConfig) -> None:
        self.config = config
        self.schema = Schema(config.custom_fields, privacy=config.org == "privacy")
        self._records: dict[str, Record] = {}
        self._by_type: dict[str, dict[str, Record]] = {name: {} for name in self.schema.objects}
        self._delete_log: list[tuple[str, str, datetime]] = []
        self._hard_deleted: dict[str, tuple[str, datetime]] = {}
        self._sessions: dict[str, float] = {}
        self._revoked: set[str] = set()
        self._usage: Counter[str] = Counter()
        self._usage_since = time.monotonic()
        self._cursors: OrderedDict[str, _Cursor] = OrderedDict()
        if config.seed_legal_bases and self.schema.object("DataUseLegalBasis"):
            sobject = self._object("DataUseLegalBasis")
            for name, description in LEGAL_BASES:
                self._apply(self._prepare(sobject, {"Name": name, "Description": description}))

    def reset(self, org: Org | None = None) -> None:
        """Back to the state ``create_app`` started with (configuration included), as the
        ``org`` profile when one is given (it then stays for later resets)."""
        with self._lock:
            if org is not None:
                self._initial = self._initial.model_copy(update={"org": org})
            self._load(self._initial)

    # Sessions, credentials and the daily API quota

    def accepts(self, **presented: str | None) -> bool:
        """Whether a login presented the configured credentials; any pass unless strict."""
        config = self.config
        if not config.strict_auth:
            return True
        expected = {
            "username": {config.username},
            "password": {config.password, config.password + config.security_token},
            "consumer_key": {config.consumer_key},
            "consumer_secret": {config.consumer_secret},
        }
        return all(value in expected[key] for key, value in presented.items())

    def open_session(self) -> str:
        token = f"{self.config.organization_id[:15]}!{secrets.token_urlsafe(48)}"
        with self._lock:
            self._sessions[token] = time.monotonic()
        return token

    def begin_call(self, token: str | None) -> None:
        """Admit one API call: a live session (401 otherwise), then quota (403 when spent)."""
        with self._lock:
            self._check_session(token)
            self._roll_usage_window()
            if self._usage["api"] >= self.config.daily_api_limit:
                raise SalesforceError(403, QUOTA_EXCEEDED)
            self._usage["api"] += 1

    def _check_session(self, token: str | None) -> None:
        if not token or token in self._revoked:
            raise SalesforceError(401, SESSION_EXPIRED)
        clock = time.monotonic()
        last_used = self._sessions.get(token)
        if last_used is None and self.config.strict_auth:
            raise SalesforceError(401, SESSION_EXPIRED)
        if last_used is not None and clock - last_used > self.config.session_lifetime_seconds:
            self._revoked.add(token)
            del self._sessions[token]
            raise SalesforceError(401, SESSION_EXPIRED)
        self._sessions[token] = clock

    def expire_sessions(self) -> int:
        """End every session now; their tokens stay invalid even when auth is not strict."""
        with self._lock:
            count = len(self._sessions)
            self._revoked.update(self._sessions)
            self._sessions.clear()
            return count

    def _roll_usage_window(self) -> None:
        if time.monotonic() - self._usage_since >= DAY:
            self._usage.clear()
            self._usage_since = time.monotonic()

    def api_usage(self) -> tuple[int, int]:
        with self._lock:
            return self._usage["api"], self.config.daily_api_limit

    def count_bulk(self, limit_name: str) -> None:
        with self._lock:
            self._usage[limit_name] += 1

    def limits(self) -> dict[str, Any]:
        with self._lock:
            self._roll_usage_window()
            ceiling = self.config.daily_api_limit
            limits = {
                "DailyApiRequests": {
                    "Max": ceiling,
                    "Remaining": max(0, ceiling - self._usage["api"]),
                }
            }
            for name, maximum in BULK_LIMITS.items():
                limits[name] = {"Max": maximum, "Remaining": max(0, maximum - self._usage[name])}
            return limits

    def update_settings(self, update: SettingsUpdate) -> dict[str, Any]:
        with self._lock:
            changes = update.model_dump(exclude_none=True)
            used = changes.pop("api_requests_used", None)
            if used is not None:
                self._usage["api"] = used
                self._usage_since = time.monotonic()
            self.config = self.config.model_copy(update=changes)
            return self.settings()

    def settings(self) -> dict[str, Any]:
        with self._lock:
            config = self.config
            return {
                "org": config.org,
                "strict_auth": config.strict_auth,
                "session_lifetime_seconds": config.session_lifetime_seconds,
                "daily_api_limit": config.daily_api_limit,
                "api_requests_used": self._usage["api"],
                "hard_delete_permission": config.hard_delete_permission,
                "undeletable_ids": config.undeletable_ids,
                "organization_id": config.organization_id,
            }

    def set_organization_id(self, organization_id: str) -> None:
        with self._lock:
            self.config = self.config.model_copy(update={"organization_id": organization_id})

    # Schema

    def _object(self, name: str) -> ObjectDef:
        sobject = self.schema.object(name)
        if sobject is None:
            raise not_found()
        return sobject

    def describe_global(self, version: str) -> dict[str, Any]:
        with self._lock:
            return {
                "encoding": "UTF-8",
                "maxBatchSize": MAX_COLLECTION,
                "sobjects": [o.describe(version) for o in self.schema.objects.values()],
            }

    def describe(self, type_name: str, version: str) -> dict[str, Any]:
        with self._lock:
            sobject = self._object(type_name)
            return {
                **sobject.describe(version),
                "fields": [f.describe() for f in sobject.fields.values()],
            }

    def add_custom_field(self, type_name: str, spec: CustomField) -> dict[str, Any]:
        with self._lock:
            sobject = self._object(type_name)
            if sobject.field(spec.name):
                raise SalesforceError(
                    400, ApiError("DUPLICATE_DEVELOPER_NAME", f"{spec.name} already exists")
                )
            definition = self.schema.add_custom_field(sobject.name, spec)
            for record in self._by_type[sobject.name.lower()].values():
                record.values[definition.name] = definition.default
            return definition.describe()

    # Validation and writes: _prepare checks everything and changes nothing, so that a batch
    # can be all-or-none; _apply then cannot fail.

    def _find(self, sobject: ObjectDef, record_id: str) -> Record:
        """The live record a URL names, or the error Salesforce answers for that URL."""
        normalized = normalize_id(record_id)
        if normalized is None:
            raise SalesforceError(
                404,
                ApiError(
                    "NOT_FOUND",
                    f"Provided external ID field does not exist or is not accessible: {record_id}",
                    (),
                ),
            )
        if normalized[:3] != sobject.prefix:
            raise SalesforceError(
                400,
                ApiError(
                    "MALFORMED_ID",
                    f"{sobject.name} ID: id value of incorrect type: {record_id}",
                    ("Id",),
                ),
            )
        record = self._records.get(normalized)
        if record is None:
            raise not_found()
        if record.deleted_at is not None:
            raise entity_is_deleted()
        return record

    def _live(self, record_id: str) -> Record | None:
        record = self._records.get(record_id)
        return record if record is not None and record.deleted_at is None else None

    def _prepare(
        self,
        sobject: ObjectDef,
        raw: Mapping[str, Any],
        record: Record | None = None,
        *,
        seeding: bool = False,
    ) -> _Write:
        values: dict[str, Any] = {}
        problems: list[ApiError] = []
        for key, raw_value in raw.items():
            if key == "attributes":
                continue
            definition = sobject.field(key)
            if definition is None:
                raise SalesforceError(
                    400,
                    ApiError(
                        "INVALID_FIELD",
                        f"No such column '{key}' on sobject of type {sobject.name}",
                        (key,),
                    ),
                )
            if not self._writable(definition, creating=record is None, seeding=seeding):
                problems.append(
                    ApiError(
                        "INVALID_FIELD_FOR_INSERT_UPDATE",
                        f"Unable to create/update fields: {definition.name}. Please check the "
                        "security settings of this field and verify that it is read/write for "
                        "your profile or permission set.",
                        (definition.name,),
                    )
                )
                continue
            value = coerce(definition, raw_value)
            problem = check_value(definition, value)
            if problem:
                problems.append(problem)
            values[definition.name] = value
        if problems:
            raise SalesforceError(400, *problems)
        merged = {**(record.values if record else sobject.defaults()), **values}
        missing = [
            f.name for f in sobject.fields.values() if f.required and merged.get(f.name) is None
        ]
        if missing:
            raise SalesforceError(
                400,
                ApiError(
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{', '.join(missing)}]",
                    tuple(missing),
                ),
            )
        for name, value in values.items():
            self._check_reference(sobject.fields[name], value)
            self._check_unique(sobject, sobject.fields[name], value, record)
        if record is not None and record.values.get("IsConverted") and not seeding:
            raise SalesforceError(
                400, ApiError("CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead", ())
            )
        return _Write(sobject, values, record)

    @staticmethod
    def _writable(definition: FieldDef, *, creating: bool, seeding: bool) -> bool:
        if seeding:
            return not definition.computed and definition.name != "Id"
        return definition.createable if creating else definition.updateable

    def _check_reference(self, definition: FieldDef, value: Any) -> None:
        if definition.type != "reference" or value is None:
            return
        target = self.schema.object_for_id(value)
        if target is None or target.name not in definition.references:
            raise SalesforceError(
                400,
                ApiError(
                    "FIELD_INTEGRITY_EXCEPTION",
                    f"{definition.label}: id value of incorrect type: {value}",
                    (definition.name,),
                ),
            )
        if self._live(value) is None:
            raise SalesforceError(
                400,
                ApiError(
                    "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", (definition.name,)
                ),
            )

    def _check_unique(
        self, sobject: ObjectDef, definition: FieldDef, value: Any, record: Record | None
    ) -> None:
        if not definition.unique or value is None:
            return
        for other in self._matching(sobject, definition, value):
            if other is not record:
                raise SalesforceError(
                    400,
                    ApiError(
                        "DUPLICATE_VALUE",
                        f"duplicate value found: {definition.name} duplicates value on record "
                        f"with id: {other.id}",
                        (definition.name,),
                    ),
                )

    def _matching(self, sobject: ObjectDef, definition: FieldDef, value: Any) -> list[Record]:
        """Live records whose field equals ``value`` (text without case, as Salesforce)."""
        wanted = _folded(value)
        return [
            record
            for record in self._by_type[sobject.name.lower()].values()
            if record.deleted_at is None and _folded(record.values.get(definition.name)) == wanted
        ]

    def _by_external_id(self, sobject: ObjectDef, definition: FieldDef, raw: Any) -> list[Record]:
        key = coerce(definition, raw)
        if key is None:
            raise not_found()
        return self._matching(sobject, definition, key)

    def _apply(self, write: _Write, *, notify: bool = False) -> Record:
        sobject, stamp = write.sobject, now()
        stamps = {"LastModifiedDate": stamp, "SystemModstamp": stamp}
        if write.record is None:
            record_id = make_id(sobject.prefix, next(self._ids))
            values = {
                **sobject.defaults(),
                "Id": record_id,
                "IsDeleted": False,
                "CreatedDate": stamp,
                **stamps,
                **write.values,
            }
            if sobject.derive:
                values.update(sobject.derive(values))
            record = Record(sobject, record_id, values)
            self._records[record_id] = record
            self._by_type[sobject.name.lower()][record_id] = record
            changed = frozenset(name for name, value in values.items() if value)
        else:
            record = write.record
            before = dict(record.values)
            record.values.update({**stamps, **write.values})
            if sobject.derive:
                record.values.update(sobject.derive(record.values))
            changed = frozenset(k for k, v in record.values.items() if before.get(k) != v)
        if notify and self.on_change is not None:
            self.on_change(record, changed, write.record is None)
        return record

    def _delete(self, record: Record, *, hard: bool) -> None:
        stamp = now()
        if record.deleted_at is None:
            self._delete_log.append((record.type, record.id, stamp))
            record.deleted_at = stamp
            record.values.update(IsDeleted=True, SystemModstamp=stamp)
        if hard:
            del self._records[record.id]
            del self._by_type[record.type.lower()][record.id]
            self._hard_deleted[record.id] = (record.type, stamp)

    # Single-record REST calls

    def create(self, type_name: str, raw: Mapping[str, Any]) -> str:
        with self._lock:
            sobject = self._object(type_name)
            return self._apply(self._prepare(sobject, raw), notify=True).id

    def get(
        self, type_name: str, record_id: str, fields: Sequence[str] | None, version: str
    ) -> dict[str, Any]:
        with self._lock:
            sobject = self._object(type_name)
            return self._render(self._find(sobject, record_id), fields, version)

    def _render(self, record: Record, fields: Sequence[str] | None, version: str) -> dict[str, Any]:
        names = list(record.sobject.fields) if fields is None else []
        for name in fields or ():
            definition = record.sobject.field(name)
            if definition is None:
                error = ApiError("INVALID_FIELD", no_such_column(name, record.type))
                raise SalesforceError(400, error)
            names.append(definition.name)
        return {
            "attributes": record.attributes(version),
            **{name: json_value(record.values.get(name)) for name in names},
        }

    def update(self, type_name: str, record_id: str, raw: Mapping[str, Any]) -> None:
        with self._lock:
            sobject = self._object(type_name)
            record = self._find(sobject, record_id)
            self._apply(self._prepare(sobject, raw, record), notify=True)

    def delete(self, type_name: str, record_id: str, *, hard: bool = False) -> None:
        with self._lock:
            self._delete(self._deletable(self._find(self._object(type_name), record_id)), hard=hard)

    def _deletable(self, record: Record) -> Record:
        """The record, unless sharing gives the user less than Full Access to it: Read/Write
        lets it change a record, and only Full Access (the owner's) lets it delete one."""
        if record.id in {normalize_id(i) for i in self.config.undeletable_ids}:
            raise SalesforceError(400, NO_DELETE_ACCESS)
        return record

    def _external_id_field(self, sobject: ObjectDef, field_name: str) -> FieldDef:
        definition = sobject.field(field_name)
        if definition is None or not (definition.external_id or definition.name == "Id"):
            raise SalesforceError(
                404,
                ApiError(
                    "NOT_FOUND",
                    f"Provided external ID field does not exist or is not accessible: {field_name}",
                    (),
                ),
            )
        return definition

    def get_by_external_id(
        self, type_name: str, field_name: str, value: str, version: str
    ) -> dict[str, Any]:
        with self._lock:
            sobject = self._object(type_name)
            definition = self._external_id_field(sobject, field_name)
            matches = self._by_external_id(sobject, definition, value)
            if not matches:
                raise not_found()
            if len(matches) > 1:
                raise self._multiple(matches, version)
            return self._render(matches[0], None, version)

    @staticmethod
    def _multiple(matches: Sequence[Record], version: str) -> SalesforceError:
        return SalesforceError(
            300,
            ApiError(
                "MULTIPLE_CHOICES",
                f"more than one record found for external id field: {[r.id for r in matches]}",
            ),
            body=[record.url(version) for record in matches],
        )

    def upsert(
        self,
        type_name: str,
        field_name: str,
        value: str,
        raw: Mapping[str, Any],
        version: str,
        *,
        update_only: bool = False,
    ) -> tuple[str, bool]:
        """Create or update by external id; returns the id and whether it was created."""
        with self._lock:
            sobject = self._object(type_name)
            commit = self._prepare_upsert(sobject, field_name, value, raw, version, update_only)
            result = commit()
            return result["id"], result["created"]

    def _prepare_upsert(
        self,
        sobject: ObjectDef,
        field_name: str,
        value: str,
        raw: Mapping[str, Any],
        version: str,
        update_only: bool,
    ) -> Commit:
        definition = self._external_id_field(sobject, field_name)
        matches = self._by_external_id(sobject, definition, value)
        if len(matches) > 1:
            raise self._multiple(matches, version)
        if matches:
            write = self._prepare(sobject, raw, matches[0])
        elif update_only or definition.name == "Id":
            raise not_found()
        else:
            write = self._prepare(sobject, {**raw, definition.name: value})
        return lambda: {**self._commit(write), "created": write.record is None}

    def _commit(self, write: _Write) -> dict[str, Any]:
        return {"id": self._apply(write, notify=True).id, "success": True, "errors": []}

    # sObject Collections: up to 200 rows, a result per row, optionally all-or-none

    def _run_collection(
        self, plans: Sequence[tuple[str | None, Callable[[], Commit]]], all_or_none: bool
    ) -> list[dict[str, Any]]:
        if len(plans) > MAX_COLLECTION:
            raise SalesforceError(400, TOO_MANY_RECORDS)
        with self._lock:
            prepared: list[Commit | SalesforceError] = []
            for _, prepare in plans:
                try:
                    prepared.append(prepare())
                except SalesforceError as exc:
                    prepared.append(exc)
            rollback = all_or_none and any(isinstance(p, SalesforceError) for p in prepared)
            results = []
            for (record_id, _), outcome in zip(plans, prepared, strict=True):
                if isinstance(outcome, SalesforceError):
                    results.append(_failure(record_id, outcome.errors))
                elif rollback:
                    results.append(_failure(record_id, (ROLLED_BACK,)))
                else:
                    results.append(outcome())
            return results

    def create_many(
        self, rows: Sequence[Mapping[str, Any]], all_or_none: bool
    ) -> list[dict[str, Any]]:
        def plan(row: Mapping[str, Any]) -> Callable[[], Commit]:
            def prepare() -> Commit:
                if "Id" in row:
                    raise SalesforceError(
                        400,
                        ApiError(
                            "INVALID_FIELD_FOR_INSERT_UPDATE",
                            "cannot specify Id in an insert call",
                            ("Id",),
                        ),
                    )
                write = self._prepare(self._row_type(row), row)
                return lambda: self._commit(write)

            return prepare

        return self._run_collection([(None, plan(row)) for row in rows], all_or_none)

    def update_many(
        self, rows: Sequence[Mapping[str, Any]], all_or_none: bool
    ) -> list[dict[str, Any]]:
        def plan(row: Mapping[str, Any]) -> Callable[[], Commit]:
            def prepare() -> Commit:
                if not row.get("Id"):
                    raise SalesforceError(
                        400, ApiError("MISSING_ARGUMENT", "Id not specified in an update call", ())
                    )
                sobject = self._row_type(row)
                record = self._find(sobject, str(row["Id"]))
                changes = {k: v for k, v in row.items() if k != "Id"}
                write = self._prepare(sobject, changes, record)
                return lambda: self._commit(write)

            return prepare

        return self._run_collection(
            [(_text_or_none(row.get("Id")), plan(row)) for row in rows], all_or_none
        )

    def delete_many(self, ids: Sequence[str], all_or_none: bool) -> list[dict[str, Any]]:
        def plan(record_id: str) -> Callable[[], Commit]:
            def prepare() -> Commit:
                sobject = self.schema.object_for_id(normalize_id(record_id) or "")
                if sobject is None:
                    raise SalesforceError(
                        400,
                        ApiError("MALFORMED_ID", f"malformed id {record_id}", ()),
                    )
                record = self._deletable(self._find(sobject, record_id))

                def commit() -> dict[str, Any]:
                    self._delete(record, hard=False)
                    return {"id": record.id, "success": True, "errors": []}

                return commit

            return prepare

        return self._run_collection([(i, plan(i)) for i in ids], all_or_none)

    def upsert_many(
        self,
        type_name: str,
        field_name: str,
        rows: Sequence[Mapping[str, Any]],
        all_or_none: bool,
        version: str,
    ) -> list[dict[str, Any]]:
        with self._lock:
            sobject = self._object(type_name)
            definition = self._external_id_field(sobject, field_name)

        def plan(row: Mapping[str, Any]) -> Callable[[], Commit]:
            def prepare() -> Commit:
                value = row.get(definition.name)
                if value is None:
                    raise SalesforceError(
                        400,
                        ApiError(
                            "MISSING_ARGUMENT",
                            f"{definition.name} not specified",
                            (definition.name,),
                        ),
                    )
                changes = {k: v for k, v in row.items() if k != definition.name}
                return self._prepare_upsert(sobject, field_name, value, changes, version, False)

            return prepare

        return self._run_collection([(None, plan(row)) for row in rows], all_or_none)

    def retrieve_many(
        self, type_name: str, ids: Sequence[str], fields: Sequence[str], version: str
    ) -> list[dict[str, Any] | None]:
        with self._lock:
            sobject = self._object(type_name)
            results: list[dict[str, Any] | None] = []
            for record_id in ids:
                record = self._live(normalize_id(record_id) or "")
                if record is not None and record.sobject is sobject:
                    results.append(self._render(record, fields, version))
                else:
                    results.append(None)
            return results

    def _row_type(self, row: Mapping[str, Any]) -> ObjectDef:
        attributes = row.get("attributes")
        type_name = attributes.get("type") if isinstance(attributes, dict) else None
        sobject = self.schema.object(type_name) if isinstance(type_name, str) else None
        if sobject is None:
            raise SalesforceError(
                400,
                ApiError(
                    "INVALID_TYPE",
                    "Must send a concrete entity type."
                    if type_name is None
                    else f"sObject type '{type_name}' is not supported.",
                    (),
                ),
            )
        return sobject

    # Bulk API 2.0 row operations (the job bookkeeping lives in salesforce_bulk)

    def bulk_write(
        self,
        operation: str,
        type_name: str,
        row: dict[str, Any],
        external_id: str | None,
        version: str,
    ) -> tuple[str, bool]:
        """Apply one CSV row of an ingest job; returns the record id and whether it was new."""
        if operation == "insert":
            return self.create(type_name, row), True
        if operation == "upsert" and external_id:
            value = row.pop(external_id, None)
            return self.upsert(type_name, external_id, str(value or ""), row, version)
        record_id = str(row.pop("Id", None) or "")
        if operation == "update":
            self.update(type_name, record_id, row)
        else:
            self.delete(type_name, record_id, hard=operation == "hardDelete")
        return record_id, False

    def bulk_query(
        self, soql: str, include_deleted: bool
    ) -> tuple[str, list[str], list[list[str]]]:
        """Run a Bulk API 2.0 query job: its object, CSV header and rows."""
        with self._lock:
            plan = compile_query(soql, self.schema, self._live)
            if plan.is_count:
                raise SalesforceError(
                    400, ApiError("API_ERROR", "Aggregate queries are not supported", ())
                )
            rows = self._rows(plan, include_deleted)
            header = plan.csv_header()
            return plan.sobject.name, header, [plan.csv_row(record) for record in rows]

    # SOQL with paging

    def _rows(self, plan: Plan, include_deleted: bool) -> list[Record]:
        if plan.sobject.name == USER_PERMISSIONS:
            return plan.select([self._user_permissions(plan.sobject)])
        candidates = self._by_type[plan.sobject.name.lower()].values()
        return plan.select(r for r in candidates if include_deleted or r.deleted_at is None)

    def _user_permissions(self, sobject: ObjectDef) -> Record:
        """UserPermissionAccess: what the configuration grants the running user."""
        granted = {
            "PermissionsApiEnabled": True,
            "PermissionsBulkApiHardDelete": self.config.hard_delete_permission,
        }
        return Record(sobject, make_id(sobject.prefix, 1), {**sobject.defaults(), **granted})

    def query(
        self, soql: str, include_deleted: bool, batch_size: int | None, version: str
    ) -> dict[str, Any]:
        size = min(max(batch_size or MAX_BATCH_SIZE, MIN_BATCH_SIZE), MAX_BATCH_SIZE)
        with self._lock:
            plan = compile_query(soql, self.schema, self._live)
            rows = self._rows(plan, include_deleted)
            if plan.is_count:
                return {"totalSize": len(rows), "done": True, "records": []}
            cursor = _Cursor([plan.render(record, version) for record in rows], size)
            locator = make_id("01g", next(self._ids))
            return self._page(locator, cursor, 0, version)

    def query_more(self, locator: str, version: str) -> dict[str, Any]:
        cursor_id, _, offset = locator.rpartition("-")
        with self._lock:
            cursor = self._cursors.get(cursor_id)
            if cursor is None or not offset.isdigit():
                raise SalesforceError(
                    400, ApiError("INVALID_QUERY_LOCATOR", "invalid query locator")
                )
            return self._page(cursor_id, cursor, int(offset), version)

    def _page(self, locator: str, cursor: _Cursor, start: int, version: str) -> dict[str, Any]:
        end = start + cursor.batch_size
        done = end >= len(cursor.rows)
        page: dict[str, Any] = {"totalSize": len(cursor.rows), "done": done}
        if done:
            self._cursors.pop(locator, None)
        else:
            page["nextRecordsUrl"] = f"/services/data/v{version}/query/{locator}-{end}"
            self._cursors[locator] = cursor
            self._cursors.move_to_end(locator)
            while len(self._cursors) > OPEN_CURSORS:
                self._cursors.popitem(last=False)
        page["records"] = cursor.rows[start:end]
        return page

    # Replication: getUpdated / getDeleted

    def _window(self, start: str, end: str, days: int) -> tuple[datetime, datetime, datetime]:
        """Start and end to the minute (seconds are ignored; the end is at most now) and the
        earliest start allowed. Windows are half-open, so chaining them on
        ``latestDateCovered`` loses nothing."""
        parsed_start, parsed_end = parse_datetime(start), parse_datetime(end)
        if parsed_start is None or parsed_end is None:
            raise SalesforceError(
                400, ApiError("INVALID_REPLICATION_DATE", "start and end must be dateTimes")
            )
        current = now()
        earliest = _to_minute(current - timedelta(days=days))
        begin, finish = _to_minute(parsed_start), min(_to_minute(parsed_end), current)
        if begin < earliest:
            raise SalesforceError(
                400,
                ApiError(
                    "INVALID_REPLICATION_DATE",
                    f"startDate cannot be more than {days} days ago",
                ),
            )
        if begin > finish:
            raise SalesforceError(
                400,
                ApiError("INVALID_REPLICATION_DATE", "startDate must be before endDate"),
            )
        return begin, finish, earliest

    def updated(self, type_name: str, start: str, end: str) -> dict[str, Any]:
        with self._lock:
            sobject = self._object(type_name)
            begin, finish, _ = self._window(start, end, 30)
            ids = [
                record.id
                for record in self._by_type[sobject.name.lower()].values()
                if record.deleted_at is None and begin <= record.values["SystemModstamp"] < finish
            ]
            return {"ids": ids, "latestDateCovered": format_datetime(finish)}

    def deleted(self, type_name: str, start: str, end: str) -> dict[str, Any]:
        with self._lock:
            sobject = self._object(type_name)
            begin, finish, earliest = self._window(start, end, 15)
            deleted = [
                {"id": record_id, "deletedDate": format_datetime(when)}
                for kind, record_id, when in self._delete_log
                if kind == sobject.name and begin <= when < finish
            ]
            return {
                "deletedRecords": deleted,
                "earliestDateAvailable": format_datetime(earliest),
                "latestDateCovered": format_datetime(finish),
            }

    # Recycle bin

    def empty_recycle_bin(self, ids: Sequence[str]) -> list[tuple[str, ApiError | None]]:
        """SOAP ``emptyRecycleBin``: purge deleted records, one result per id."""
        if len(ids) > MAX_COLLECTION:
            raise SalesforceError(500, TOO_MANY_RECORDS)
        results: list[tuple[str, ApiError | None]] = []
        with self._lock:
            for raw_id in ids:
                record = self._records.get(normalize_id(raw_id) or "")
                if record is None:
                    results.append((raw_id, ApiError("INVALID_ID_FIELD", "invalid record id")))
                elif record.deleted_at is None:
                    error = ApiError("INVALID_ID_FIELD", "record is not in the recycle bin")
                    results.append((record.id, error))
                else:
                    self._delete(record, hard=True)
                    results.append((record.id, None))
        return results

    # Outbound messages read the latest values when they are sent

    def current_values(self, record_id: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._records.get(record_id)
            return dict(record.values) if record else None

    # Admin API

    def seed(self, rows: Sequence[Mapping[str, Any]]) -> list[str]:
        """Create records bypassing quota and read-only rules, but validated; all or nothing.

        A row may set ``CreatedDate``, ``LastModifiedDate``, ``SystemModstamp`` and
        ``IsDeleted`` (which puts it straight into the recycle bin).
        """
        with self._lock:
            created: list[Record] = []
            try:
                for index, row in enumerate(rows):
                    try:
                        write = self._prepare(self._row_type(row), row, seeding=True)
                    except SalesforceError as exc:
                        raise SeedError(index, exc) from exc
                    record = self._apply(write)
                    if record.values["IsDeleted"]:
                        record.deleted_at = record.values["LastModifiedDate"]
                        self._delete_log.append((record.type, record.id, record.deleted_at))
                    created.append(record)
            except SeedError:
                for record in created:
                    del self._records[record.id]
                    del self._by_type[record.type.lower()][record.id]
                self._delete_log = [e for e in self._delete_log if e[1] not in self._records]
                raise
            return [record.id for record in created]

    def dump(self, type_name: str | None, include_deleted: bool) -> list[dict[str, Any]]:
        with self._lock:
            if type_name is None:
                records: Iterator[Record] = iter(self._records.values())
            else:
                records = iter(self._by_type[self._object(type_name).name.lower()].values())
            return [
                {"attributes": {"type": r.type}, **{k: json_value(v) for k, v in r.values.items()}}
                for r in records
                if include_deleted or r.deleted_at is None
            ]

    def summary(self) -> dict[str, Any]:
        with self._lock:
            counts = {}
            for sobject in self.schema.objects.values():
                rows = self._by_type[sobject.name.lower()].values()
                deleted = sum(1 for r in rows if r.deleted_at)
                counts[sobject.name] = {"live": len(rows) - deleted, "deleted": deleted}
            return {
                "counts": counts,
                "recycle_bin": [
                    {"id": r.id, "type": r.type, "deletedDate": format_datetime(r.deleted_at)}
                    for r in self._records.values()
                    if r.deleted_at is not None
                ],
                "hard_deleted": [
                    {"id": record_id, "type": kind, "deletedDate": format_datetime(when)}
                    for record_id, (kind, when) in self._hard_deleted.items()
                ],
                "sessions": len(self._sessions),
                "settings": self.settings(),
            }


@dataclass(frozen=True)
class _Write:
    """A validated create (``record`` is None) or update, ready to apply."""

    sobject: ObjectDef
    values: dict[str, Any]
    record: Record | None


def _failure(record_id: str | None, errors: Sequence[ApiError]) -> dict[str, Any]:
    result: dict[str, Any] = {"id": record_id} if record_id else {}
    return {**result, "success": False, "errors": [error.row() for error in errors]}


def _folded(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def _text_or_none(value: Any) -> str | None:
    return str(value) if value else None


def _to_minute(value: datetime) -> datetime:
    return value.replace(second=0, microsecond=0)
