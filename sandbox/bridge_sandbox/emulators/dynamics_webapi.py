"""The Dataverse Web API's verbs on the emulated tables, one :class:`Call` at a time.

HTTP routes and ``$batch`` parts both end here, so a request behaves the same alone or
batched: collection reads with ``$select``, ``$filter``, ``$top``, ``odata.maxpagesize``
paging and change tracking; reads, upserts and deletes of one row with ``If-Match`` and
``If-None-Match``; ``DeleteRecordChangeHistory``; and ``$batch`` with atomic changesets
(docs/vendors/dynamics.md).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from fastapi import Response

from bridge_sandbox.emulators.dynamics_http import (
    API_ROOT,
    Call,
    DataverseError,
    Headers,
    Reply,
    no_property,
    query_error,
)
from bridge_sandbox.emulators.dynamics_metadata import (
    CASTS,
    LENGTHY,
    attributes,
    entity_definition,
)
from bridge_sandbox.emulators.dynamics_odata import (
    BatchAnswer,
    BatchPart,
    BatchRequest,
    parse_batch,
    parse_filter,
    render_batch,
)
from bridge_sandbox.emulators.dynamics_state import (
    DynamicsState,
    Row,
    Table,
    etag,
    set_values,
)
from bridge_sandbox.emulators.dynamics_webhooks import NOTIFIED, Event, Message, Webhooks

MAX_PAGE = 5000
BATCH = "$batch"
DELETE_HISTORY = "DeleteRecordChangeHistory"
DEFINITIONS = "EntityDefinitions"
_ITEM = re.compile(r"^(\w+)\(([0-9a-fA-F-]{36})\)$")
_DEFINITION = re.compile(
    r"^EntityDefinitions(?:\(LogicalName='(\w+)'\)"
    r"(/Attributes(?:/Microsoft\.Dynamics\.CRM\.(\w+))?)?)?$"
)


def not_a_segment(segment: str) -> DataverseError:
    return DataverseError(404, "0x8006088a", f"Resource not found for the segment '{segment}'.")


def _encode(cursor: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode().rstrip("=")


def _decode(token: str) -> dict[str, Any]:
    try:
        value = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except ValueError as exc:
        raise query_error("The $skiptoken is not valid.") from exc
    if not isinstance(value, dict):
        raise query_error("The $skiptoken is not valid.")
    return value


def _query_string(query: dict[str, str]) -> str:
    return "&".join(f"{k}={quote(v, safe=',()=$@')}" for k, v in query.items())


class WebApi:
    """Answers calls against one environment's state; failures become error replies.
    Writes that commit are reported to the webhooks; a failed changeset reports nothing."""

    def __init__(self, state: DynamicsState, webhooks: Webhooks) -> None:
        self.state = state
        self.webhooks = webhooks

    def execute(self, call: Call) -> Reply:
        events: list[Event] = []
        try:
            reply = self._route(call, events)
        except DataverseError as error:
            return error.reply()
        self._notify(call, events)
        return reply

    def _notify(self, call: Call, events: list[Event]) -> None:
        if events:
            self.webhooks.emit(events, call.base_url, call.user)

    def _route(self, call: Call, events: list[Event]) -> Reply:
        if call.path == DELETE_HISTORY and call.method == "POST":
            return self._delete_history(call)
        definition = _DEFINITION.match(call.path)
        if definition is not None:
            if call.method != "GET":
                raise _not_allowed(call)
            logical_name, columns, cast = definition.groups()
            return self._metadata(call, logical_name, bool(columns), cast)
        item = _ITEM.match(call.path)
        if item is None and "(" in call.path:
            raise query_error("Bad Request - Error in query syntax.")
        name = item.group(1) if item else call.path
        if name not in self.state.tables:
            raise not_a_segment(name)
        table = self.state.table(name)
        if table.read_only and call.method != "GET":
            raise _not_allowed(call)
        if item is None:
            if call.method == "GET":
                return self._read_collection(call, table)
            if call.method == "POST":
                return self._create(call, table, events)
        else:
            record_id = item.group(2).lower()
            if call.method == "GET":
                row = self.state.get(name, record_id)
                return Reply(200, self._entity(call, table, row, "/$entity"))
            if call.method == "PATCH":
                return self._upsert(call, table, record_id, events)
            if call.method == "DELETE":
                self.state.delete(name, record_id)
                if table.logical_name in NOTIFIED:
                    events.append(Event("Delete", table.logical_name, record_id))
                return Reply(204)
        raise _not_allowed(call)

    # -- metadata ----------------------------------------------------------------------------

    def _metadata(
        self, call: Call, logical_name: str | None, columns: bool, cast: str | None = None
    ) -> Reply:
        """``EntityDefinitions``, one of them, or its ``Attributes`` (cast to a derived type
        or not), with ``$select`` and ``$filter``. The 404s for an unknown table or type are
        the emulator's wording (not verified)."""
        if logical_name is None:
            rows = [entity_definition(self.state, t) for t in self.state.tables.values()]
            return self._metadata_rows(call, "EntityMetadata", rows, DEFINITIONS)
        table = next(
            (t for t in self.state.tables.values() if t.logical_name == logical_name), None
        )
        if table is None:
            raise DataverseError(
                404, "0x80040217", f"Could not find entity with logical name '{logical_name}'."
            )
        if columns:
            if cast is not None and cast not in CASTS:
                raise not_a_segment(f"Microsoft.Dynamics.CRM.{cast}")
            path = f"{DEFINITIONS}('{logical_name}')/Attributes"
            type_name = cast or "AttributeMetadata"
            rows = attributes(table, cast)
            known = {"MetadataId", "LogicalName", "AttributeType"}
            known |= {"MaxLength"} if cast is not None and CASTS[cast] in LENGTHY else set()
            return self._metadata_rows(call, type_name, rows, path, known)
        row = entity_definition(self.state, table)
        names = _metadata_select(call, "EntityMetadata", set(row))
        context = f"{call.base_url}{API_ROOT}/$metadata#{DEFINITIONS}/$entity"
        return Reply(200, {"@odata.context": context} | _pick(row, names))

    def _metadata_rows(
        self,
        call: Call,
        type_name: str,
        rows: list[Row],
        path: str,
        known: set[str] | None = None,
    ) -> Reply:
        known = known or set().union(*(set(row) for row in rows))
        names = _metadata_select(call, type_name, known)
        if "$filter" in call.query:
            predicate = parse_filter(
                call.query["$filter"], known, lambda name: no_property(name, type_name)
            )
            rows = [row for row in rows if predicate(row)]
        context = f"{call.base_url}{API_ROOT}/$metadata#{path}"
        return Reply(200, {"@odata.context": context, "value": [_pick(r, names) for r in rows]})

    # -- shaping -----------------------------------------------------------------------------

    def _select(self, call: Call, table: Table) -> list[str] | None:
        if "$skip" in call.query:
            raise query_error("The query parameter $skip is not supported")
        text = call.query.get("$select")
        if not text:
            return None
        names = [n.strip() for n in text.split(",") if n.strip()]
        readable = table.readable()
        for name in names:
            if name not in readable:
                raise no_property(name, table.logical_name)
        return names

    def _shape(self, table: Table, row: Row, names: list[str] | None) -> Row:
        keep = [table.key, *names] if names else [n for n in row if n != "versionnumber"]
        return {"@odata.etag": etag(row)} | {n: row.get(n) for n in keep}

    def _context(self, call: Call, table: Table, names: list[str] | None, tail: str = "") -> str:
        shape = f"({','.join(names)})" if names else ""
        return f"{call.base_url}{API_ROOT}/$metadata#{table.entity_set}{shape}{tail}"

    def _entity(self, call: Call, table: Table, row: Row, tail: str) -> Row:
        names = self._select(call, table)
        context = {"@odata.context": self._context(call, table, names, tail)}
        return context | self._shape(table, row, names)

    def _entity_id(self, call: Call, table: Table, record_id: str) -> dict[str, str]:
        url = call.api(f"{table.entity_set}({record_id})")
        return {"Location": url, "OData-EntityId": url}

    # -- collection reads --------------------------------------------------------------------

    def _read_collection(self, call: Call, table: Table) -> Reply:
        names = self._select(call, table)
        prefer = call.headers.prefer()
        if "$deltatoken" in call.query:
            return self._read_delta(call, table, names)
        tracking = "odata.track-changes" in prefer
        refused = sorted({"$filter", "$orderby", "$top", "$expand"} & set(call.query))
        if tracking and refused:
            raise query_error(
                f'The "{refused[0]}" query parameter isn\'t supported when Change Tracking is '
                "enabled."
            )
        rows = self.state.rows_of(table.entity_set)
        if "$filter" in call.query:
            predicate = parse_filter(
                call.query["$filter"],
                table.readable(),
                lambda name: no_property(name, table.logical_name),
            )
            rows = [row for row in rows if predicate(row)]
        cursor = _decode(call.query["$skiptoken"]) if "$skiptoken" in call.query else {}
        if cursor.get("after"):
            rows = [row for row in rows if row[table.key] > cursor["after"]]
        token = cursor.get("delta") or (self.state.issue_token() if tracking else None)
        applied: list[str] = ["odata.track-changes"] if tracking else []
        size = MAX_PAGE
        if "odata.maxpagesize" in prefer:
            try:
                size = min(MAX_PAGE, max(1, int(prefer["odata.maxpagesize"])))
            except ValueError as exc:
                raise query_error("The odata.maxpagesize preference is not valid.") from exc
            applied.append(f"odata.maxpagesize={size}")
        elif "$top" in call.query:
            if not call.query["$top"].isdigit():
                raise query_error(f"Invalid value '{call.query['$top']}' for $top query option.")
            rows = rows[: int(call.query["$top"])]
        page = rows[:size]
        body: Row = {"@odata.context": self._context(call, table, names)}
        body["value"] = [self._shape(table, row, names) for row in page]
        if len(rows) > size:
            after = {"after": page[-1][table.key]} | ({"delta": token} if token else {})
            query = {k: v for k, v in call.query.items() if k != "$skiptoken"}
            query["$skiptoken"] = _encode(after)
            body["@odata.nextLink"] = call.api(f"{table.entity_set}?{_query_string(query)}")
        elif token:
            body["@odata.deltaLink"] = self._delta_link(call, table, token)
        headers = {"Preference-Applied": ",".join(applied)} if applied else {}
        return Reply(200, body, headers)

    def _delta_link(self, call: Call, table: Table, token: str) -> str:
        query = {k: v for k, v in call.query.items() if k == "$select"}
        query["$deltatoken"] = token
        return call.api(f"{table.entity_set}?{_query_string(query)}")

    def _read_delta(self, call: Call, table: Table, names: list[str] | None) -> Reply:
        changed, gone = self.state.changes_since(table.entity_set, call.query["$deltatoken"])
        deleted_context = f"{call.base_url}{API_ROOT}/$metadata#{table.entity_set}/$deletedEntity"
        values = [self._shape(table, row, names) for row in changed]
        values += [{"@odata.context": deleted_context, "id": i, "reason": "deleted"} for i in gone]
        body: Row = {
            "@odata.context": self._context(call, table, names, "/$delta"),
            "value": values,
            "@odata.deltaLink": self._delta_link(call, table, self.state.issue_token()),
        }
        return Reply(200, body, {"Preference-Applied": "odata.track-changes"})

    # -- writes ------------------------------------------------------------------------------

    def _written(self, call: Call, table: Table, row: Row, status: int) -> Reply:
        headers = self._entity_id(call, table, row[table.key])
        if call.headers.prefer().get("return") == "representation":
            body = self._entity(call, table, row, "/$entity")
            return Reply(status, body, headers | {"Preference-Applied": "return=representation"})
        return Reply(204, None, headers)

    def _create(self, call: Call, table: Table, events: list[Event]) -> Reply:
        row = self.state.create(table.entity_set, call.json())
        if table.logical_name in NOTIFIED:
            values = {table.key: row[table.key]} | set_values(table, row)
            events.append(Event("Create", table.logical_name, row[table.key], values))
        return self._written(call, table, row, 201)

    def _upsert(self, call: Call, table: Table, record_id: str, events: list[Event]) -> Reply:
        written = self.state.upsert(
            table.entity_set,
            record_id,
            call.json(),
            if_match=call.headers.get("if-match"),
            if_none_match=call.headers.get("if-none-match"),
        )
        if table.logical_name in NOTIFIED:
            message: Message = "Create" if written.created else "Update"
            values = {table.key: record_id} | written.sent
            events.append(Event(message, table.logical_name, record_id, values))
        return self._written(call, table, written.row, 200)

    def _delete_history(self, call: Call) -> Reply:
        target = call.json().get("Target")
        if not isinstance(target, dict):
            raise DataverseError(400, "", "The Target parameter is required.")
        logical = str(target.get("@odata.type", "")).removeprefix("#")
        logical = logical.removeprefix("Microsoft.Dynamics.CRM.")
        table = next((t for t in self.state.tables.values() if t.logical_name == logical), None)
        if table is None or not target.get(table.key):
            raise DataverseError(400, "", "The Target must name a table and its key.")
        count = self.state.delete_history(logical, str(target[table.key]))
        context = f"{call.base_url}{API_ROOT}/$metadata#Microsoft.Dynamics.CRM."
        return Reply(
            200,
            {
                "@odata.context": f"{context}DeleteRecordChangeHistoryResponse",
                "DeletedEntriesCount": count,
            },
        )

    # -- $batch --------------------------------------------------------------------------------

    def batch(self, call: Call, admit: Callable[[int], None]) -> Response:
        """Run the parts in order; a changeset is all or nothing; the first failure ends the
        batch unless ``Prefer: odata.continue-on-error``. Each request counts for the limits."""
        try:
            parts = parse_batch(call.body, call.headers.get("content-type", ""))
            admit(max(1, sum(len(part.requests) for part in parts)))
        except DataverseError as error:
            return error.reply().response()
        go_on = "odata.continue-on-error" in call.headers.prefer()
        answers: list[BatchAnswer] = []
        status = 200
        for part in parts:
            answer = self._batch_part(call, part)
            answers.append(answer)
            failed = next((r.status for _, r in answer.replies if r.status >= 400), None)
            if failed is not None and not go_on:
                status = failed
                break
        content_type, body = render_batch(answers)
        headers = {"OData-Version": "4.0"}
        return Response(body, status_code=status, media_type=content_type, headers=headers)

    def _batch_part(self, call: Call, part: BatchPart) -> BatchAnswer:
        if not part.changeset:
            request = part.requests[0]
            try:
                inner = self._inner(call, request, {})
            except DataverseError as error:
                return BatchAnswer([(request, error.reply())])
            return BatchAnswer([(request, self.execute(inner))])
        refs: dict[str, str] = {}
        replies: list[tuple[BatchRequest, Reply]] = []
        events: list[Event] = []
        current = part.requests[0]
        try:
            with self.state.transaction():
                for current in part.requests:
                    reply = self._route(self._inner(call, current, refs), events)
                    replies.append((current, reply))
                    if current.content_id and "OData-EntityId" in reply.headers:
                        refs[current.content_id] = reply.headers["OData-EntityId"]
        except DataverseError as error:
            return BatchAnswer([(current, error.reply())])
        self._notify(call, events)
        return BatchAnswer(replies, changeset=True)

    def _inner(self, call: Call, request: BatchRequest, refs: dict[str, str]) -> Call:
        """A batch part as a call: ``$n`` references resolved, the URL made relative."""
        url, body = request.url, request.body
        for content_id, entity_url in refs.items():
            if url.startswith(f"${content_id}"):
                url = entity_url + url[len(content_id) + 1 :]
            body = body.replace(f'"${content_id}"'.encode(), json.dumps(entity_url).encode())
        if url.startswith("$"):
            reference = url.split("/")[0]
            raise DataverseError(
                400, "", f"Content-ID Reference: '{reference}' does not exist in the batch context."
            )
        parts = urlsplit(url)
        path = parts.path.split(API_ROOT, 1)[-1].lstrip("/")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        headers = Headers(request.headers)
        return Call(request.method, path, query, headers, body, call.base_url, call.user)


def _not_allowed(call: Call) -> DataverseError:
    return DataverseError(405, "", f"The HTTP method '{call.method}' is not allowed here.")


def _metadata_select(call: Call, type_name: str, known: set[str]) -> list[str] | None:
    names = [n.strip() for n in call.query.get("$select", "").split(",") if n.strip()]
    for name in names:
        if name not in known:
            raise no_property(name, type_name)
    return names or None


def _pick(row: Row, names: list[str] | None) -> Row:
    """The selected properties a row has (``MaxLength`` only on text columns)."""
    return {k: v for k, v in row.items() if names is None or k in names}
