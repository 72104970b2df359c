"""Bulk API 2.0 jobs: ingest (insert, update, upsert, delete, hardDelete) and query.

Jobs move through Salesforce's states (Open -> UploadComplete -> JobComplete/Failed, or
Aborted); processing happens when the upload is closed, so the next GET already shows the end
state. CSV is written the way Bulk 2.0 writes it (every value quoted, ``sf__Id`` columns),
and a ``hardDelete`` without the "Bulk API Hard Delete" permission fails the job, with every
row left unprocessed.
"""

from __future__ import annotations

import base64
import csv
import io
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge_sandbox.emulators.salesforce_model import (
    ApiError,
    SalesforceError,
    format_datetime,
    make_id,
    not_found,
    now,
)
from bridge_sandbox.emulators.salesforce_state import USER_ID, SalesforceState

INGEST_OPERATIONS = ("insert", "update", "upsert", "delete", "hardDelete")
QUERY_OPERATIONS = ("query", "queryAll")
DELIMITERS = {
    "COMMA": ",",
    "TAB": "\t",
    "PIPE": "|",
    "SEMICOLON": ";",
    "CARET": "^",
    "BACKQUOTE": "`",
}
LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}
RESULT_KINDS = {
    "successfulresults": "successful",
    "failedresults": "failed",
    "unprocessedrecords": "unprocessed",
}
TERMINAL = ("JobComplete", "Failed", "Aborted")
# (job kind, requested state) -> the states a job may be in to get there
TRANSITIONS = {
    ("ingest", "UploadComplete"): ("Open",),
    ("ingest", "Aborted"): ("Open", "UploadComplete"),
    ("query", "Aborted"): ("UploadComplete", "InProgress"),
}
HARD_DELETE_DENIED = (
    "InsufficientAccess : You need the Bulk API Hard Delete permission to use the hardDelete "
    "operation"
)


def _job_error(code: str, message: str, status: int = 400) -> SalesforceError:
    return SalesforceError(status, ApiError(code, message))


@dataclass
class _Job:
    id: str
    kind: str  # "ingest" or "query"
    operation: str
    object: str
    version: str
    delimiter: str
    line_ending: str
    external_id: str | None = None
    state: str = "Open"
    created: str = field(default_factory=lambda: format_datetime(now()))
    modstamp: str = ""
    error_message: str | None = None
    uploads: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    successful: list[list[str]] = field(default_factory=list)
    failed: list[list[str]] = field(default_factory=list)
    unprocessed: list[list[str]] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.modstamp = self.created

    def info(self) -> dict[str, Any]:
        """The JobInfo JSON Salesforce answers for this job."""
        body: dict[str, Any] = {
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": USER_ID,
            "createdDate": self.created,
            "systemModstamp": self.modstamp,
            "state": self.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(self.version),
            "lineEnding": _key(LINE_ENDINGS, self.line_ending),
            "columnDelimiter": _key(DELIMITERS, self.delimiter),
            "retries": 0,
            "totalProcessingTime": 0,
        }
        if self.kind == "ingest":
            body.update(
                jobType="V2Ingest",
                contentUrl=f"services/data/v{self.version}/jobs/ingest/{self.id}/batches",
                numberRecordsProcessed=len(self.successful) + len(self.failed),
                numberRecordsFailed=len(self.failed),
                apiActiveProcessingTime=0,
                apexProcessingTime=0,
            )
            if self.external_id:
                body["externalIdFieldName"] = self.external_id
        else:
            body.update(jobType="V2Query", numberRecordsProcessed=len(self.rows))
        if self.error_message:
            body["errorMessage"] = self.error_message
        return body

    def set_state(self, state: str) -> None:
        self.state = state
        self.modstamp = format_datetime(now())

    def write_csv(self, header: list[str], rows: list[list[str]]) -> str:
        buffer = io.StringIO()
        writer = csv.writer(
            buffer, delimiter=self.delimiter, lineterminator=self.line_ending, quoting=csv.QUOTE_ALL
        )
        writer.writerow(header)
        writer.writerows(rows)
        return buffer.getvalue()


def _key(mapping: Mapping[str, str], value: str) -> str:
    return next(name for name, char in mapping.items() if char == value)


class BulkJobs:
    """Every Bulk API 2.0 job of the org; rows are applied through the state's own rules."""

    def __init__(self, state: SalesforceState) -> None:
        self.state = state
        self._lock = threading.RLock()
        self._jobs: dict[str, _Job] = {}
        self._numbers = 0

    def reset(self) -> None:
        with self._lock:
            self._jobs.clear()

    def _new_job(self, kind: str, body: Mapping[str, Any], version: str) -> _Job:
        delimiter = DELIMITERS.get(str(body.get("columnDelimiter", "COMMA")))
        line_ending = LINE_ENDINGS.get(str(body.get("lineEnding", "LF")))
        if delimiter is None or line_ending is None:
            raise _job_error("INVALIDJOB", "InvalidJob : columnDelimiter or lineEnding is invalid")
        with self._lock:
            self._numbers += 1
            job = _Job(
                id=make_id("750", self._numbers),
                kind=kind,
                operation=str(body.get("operation")),
                object=str(body.get("object", "")),
                version=version,
                delimiter=delimiter,
                line_ending=line_ending,
            )
            self._jobs[job.id] = job
        return job

    def _job(self, job_id: str, kind: str) -> _Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or job.kind != kind:
            raise not_found()
        return job

    def jobs(self, kind: str) -> dict[str, Any]:
        with self._lock:
            jobs = [job.info() for job in self._jobs.values() if job.kind == kind]
        return {"done": True, "records": jobs, "nextRecordsUrl": None}

    def info(self, job_id: str, kind: str) -> dict[str, Any]:
        return self._job(job_id, kind).info()

    def delete(self, job_id: str, kind: str) -> None:
        job = self._job(job_id, kind)
        if job.state not in TERMINAL and not (kind == "ingest" and job.state == "Open"):
            raise _job_error("INVALIDJOBSTATE", f"Deleting a job in state {job.state} is invalid")
        with self._lock:
            del self._jobs[job_id]

    # Ingest

    def create_ingest(self, body: Mapping[str, Any], version: str) -> dict[str, Any]:
        operation = body.get("operation")
        if operation not in INGEST_OPERATIONS:
            raise _job_error("INVALIDJOB", f"InvalidJob : Invalid operation: {operation}")
        sobject = self.state.schema.object(str(body.get("object", "")))
        if sobject is None:
            raise _job_error(
                "INVALIDENTITY",
                f"InvalidEntity : Entity '{body.get('object')}' is not supported by the Bulk API.",
            )
        if body.get("contentType", "CSV") != "CSV":
            raise _job_error("INVALIDJOB", "InvalidJob : contentType must be CSV")
        external_id = body.get("externalIdFieldName")
        if operation == "upsert" and not external_id:
            raise _job_error("INVALIDJOB", "InvalidJob : upsert needs externalIdFieldName")
        job = self._new_job("ingest", {**body, "object": sobject.name}, version)
        job.external_id = str(external_id) if external_id else None
        return job.info()

    def upload(self, job_id: str, data: bytes) -> None:
        with self._lock:
            job = self._job(job_id, "ingest")
            if job.state != "Open":
                raise _job_error(
                    "INVALIDJOBSTATE",
                    f"Uploading data to a job in state {job.state} is invalid",
                    409,
                )
            if not data.strip():
                raise _job_error("INVALIDBATCH", "InvalidBatch : Records are empty")
            job.uploads.append(data.decode("utf-8-sig"))
        self.state.count_bulk("DailyBulkApiBatches")

    def set_state(self, job_id: str, kind: str, state: Any) -> dict[str, Any]:
        """Close (``UploadComplete``, which processes the rows) or abort a job."""
        with self._lock:
            job = self._job(job_id, kind)
            if job.state not in TRANSITIONS.get((kind, state), ()):
                raise _job_error(
                    "INVALIDJOBSTATE", f"Changing state {job.state} to {state} is invalid"
                )
            job.set_state(str(state))
            answer = job.info()
            if state == "UploadComplete":
                self._process(job)
            return answer

    def _process(self, job: _Job) -> None:
        """Apply every uploaded row through the state; per-row outcomes become the results."""
        header, rows = self._parse(job)
        job.header = header
        if job.operation == "hardDelete" and not self.state.config.hard_delete_permission:
            job.unprocessed = rows
            job.error_message = HARD_DELETE_DENIED
            job.set_state("Failed")
            return
        sobject = self.state.schema.object(job.object)
        unknown = [name for name in header if sobject is None or sobject.field(name) is None]
        if unknown:
            job.unprocessed = rows
            job.error_message = f"InvalidBatch : Field name not found : {unknown[0]}"
            job.set_state("Failed")
            return
        for row in rows:
            fields = {
                name: None if value == "#N/A" else value
                for name, value in zip(header, row, strict=False)
                if value != ""
            }
            given_id = str(fields.get("Id") or "")
            try:
                record_id, created = self.state.bulk_write(
                    job.operation, job.object, fields, job.external_id, job.version
                )
            except SalesforceError as exc:
                errors = "; ".join(error.bulk() for error in exc.errors)
                job.failed.append([given_id, errors, *row])
            else:
                job.successful.append([record_id, "true" if created else "false", *row])
        job.set_state("JobComplete")

    @staticmethod
    def _parse(job: _Job) -> tuple[list[str], list[list[str]]]:
        header: list[str] = []
        rows: list[list[str]] = []
        for upload in job.uploads:
            lines = list(csv.reader(io.StringIO(upload, newline=""), delimiter=job.delimiter))
            if lines:
                header = [name.strip() for name in lines[0]]
                rows.extend(line for line in lines[1:] if line)
        return header, rows

    def ingest_results(self, job_id: str, kind: str) -> str:
        job = self._job(job_id, "ingest")
        which = RESULT_KINDS.get(kind.lower())
        if which is None:
            raise not_found()
        if which == "successful":
            return job.write_csv(["sf__Id", "sf__Created", *job.header], job.successful)
        if which == "failed":
            return job.write_csv(["sf__Id", "sf__Error", *job.header], job.failed)
        return job.write_csv(job.header, job.unprocessed)

    # Query

    def create_query(self, body: Mapping[str, Any], version: str) -> dict[str, Any]:
        operation = body.get("operation", "query")
        if operation not in QUERY_OPERATIONS:
            raise _job_error("INVALIDJOB", f"InvalidJob : Invalid operation: {operation}")
        soql = body.get("query")
        if not isinstance(soql, str) or not soql.strip():
            raise _job_error("INVALIDJOB", "InvalidJob : query is required")
        sobject, header, rows = self.state.bulk_query(soql, operation == "queryAll")
        self.state.count_bulk("DailyBulkV2QueryJobs")
        job = self._new_job("query", {**body, "operation": operation, "object": sobject}, version)
        job.header, job.rows = header, rows
        job.set_state("UploadComplete")
        answer = job.info()
        job.set_state("JobComplete")
        return answer

    def query_results(
        self, job_id: str, locator: str | None, max_records: int | None
    ) -> tuple[str, int, str]:
        """One page of CSV, its row count and the next locator (``null`` on the last page)."""
        job = self._job(job_id, "query")
        if job.state != "JobComplete":
            raise _job_error("INVALIDJOBSTATE", f"Results are not available in state {job.state}")
        start = 0
        if locator:
            try:
                start = int(base64.urlsafe_b64decode(locator.encode()).decode())
            except ValueError:
                raise _job_error("INVALIDLOCATOR", "Invalid locator") from None
        end = len(job.rows) if not max_records else start + max_records
        page = job.rows[start:end]
        following = (
            base64.urlsafe_b64encode(str(end).encode()).decode() if end < len(job.rows) else "null"
        )
        return job.write_csv(job.header, page), len(page), following
