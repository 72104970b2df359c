"""The receiver: signed vendor events into the durable inbox, then acknowledged.

Nothing a client sends can cause a 500: a bad signature or token is 401/403/404 with nothing
stored, a bad body or an event the database cannot store 400, an oversized one 413. An event
is acknowledged only once its inbox row has committed; a storage failure answers 503, so the
vendor delivers it again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from bridge import metrics
from bridge.adapters import spec
from bridge.adapters.registry import VENDORS
from bridge.config import Settings
from bridge.errors import BridgeError, SchemaError
from bridge.logs import get_logger
from bridge.runtime import status
from bridge.runtime.throttle import ClientLimiter, LimitedPaths
from bridge.sealing import Keyring
from bridge.services.erasure import Escalation
from bridge.store import inbox
from bridge.store.db import Store

log = get_logger("bridge.web")


class Rejected(Exception):
    """A request refused before anything was stored; ``reason`` is short and countable."""

    def __init__(self, source: str, status: int, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.source, self.status, self.reason, self.detail = source, status, reason, detail


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


async def _read_body(request: Request, source: str, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and len(declared) < 20 and int(declared) > limit:
        raise Rejected(source, 413, "too_large", f"body over {limit} bytes")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise Rejected(source, 413, "too_large", f"body over {limit} bytes")
    except ClientDisconnect:
        # The client left, or the listener cut it at web.body_timeout_seconds: nobody hears
        # the answer, and one line says it happened (no traceback: nothing broke here).
        log.info("webhook.body_incomplete", source=source, received_bytes=len(body))
        raise Rejected(source, 400, "body_incomplete", "the client left mid-body") from None
    return bytes(body)


class Refused(Exception):
    """The database refused a request's rows for what they hold, not for its own state:
    delivering them again cannot help, so the request is answered 400, never 503."""


# What a row itself can make the database refuse. The driver raises UnicodeError (text UTF-8
# cannot encode) itself, before SQLAlchemy could wrap it.
REFUSALS = (DataError, IntegrityError, UnicodeError)


class GroupCommit:
    """Commits the rows of concurrent requests together: one transaction, one fsync, many acks.

    Each request still waits for its own rows to be durable before it is acknowledged; under
    load, the requests that arrive while one commit runs share the next one. A row the
    database refuses fails only its own request (:class:`Refused`), never its neighbours.
    """

    def __init__(self, store: Store, max_requests: int = 256) -> None:
        self.store = store
        self.max_requests = max_requests
        self._queue: asyncio.Queue[tuple[list[dict[str, Any]], asyncio.Future[list[bool]]]] = (
            asyncio.Queue()
        )
        self._worker: asyncio.Task[None] | None = None

    async def add(self, rows: list[dict[str, Any]]) -> list[bool]:
        """Store ``rows``; True for each new one, False for each already stored."""
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._commit_forever())
        done: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        await self._queue.put((rows, done))
        return await done

    async def _commit_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < self.max_requests:
                batch.append(self._queue.get_nowait())
            try:
                results = await run_in_threadpool(self._commit, [rows for rows, _ in batch])
            except Exception as error:  # every waiting request answers 503; the vendor retries
                for _, done in batch:
                    done.set_exception(error)
            else:
                for (_, done), outcome in zip(batch, results, strict=True):
                    if isinstance(outcome, Exception):
                        done.set_exception(outcome)
                    else:
                        done.set_result(outcome)

    def _commit(self, requests: list[list[dict[str, Any]]]) -> list[list[bool] | Exception]:
        """One transaction for all. If the database refuses a row, each request again in a
        transaction of its own: the others commit, the one holding the row is refused."""
        try:
            return list(self._insert(requests))
        except REFUSALS as error:
            if len(requests) == 1:
                return [_refused(error)]
        outcomes: list[list[bool] | Exception] = []
        for rows in requests:
            try:
                outcomes += self._insert([rows])
            except REFUSALS as error:
                outcomes.append(_refused(error))
            except Exception as error:  # the storage failing meanwhile: this one answers 503
                outcomes.append(error)
        return outcomes

    def _insert(self, requests: list[list[dict[str, Any]]]) -> list[list[bool]]:
        with self.store.transaction() as conn:
            flags = iter(inbox.add(conn, [row for rows in requests for row in rows]))
        return [[next(flags) for _ in rows] for rows in requests]


def _refused(error: Exception) -> Refused:
    """Log why (the error's class and code, never the driver's words, which may quote the
    value) and make it the request's answer."""
    cause = getattr(error, "orig", None) or error
    code = getattr(cause, "sqlstate", None) or getattr(cause, "sqlite_errorname", None)
    log.warning("inbox refused a request's events", error=type(cause).__name__, code=code)
    return Refused(type(cause).__name__)


def create_app(settings: Settings, store: Store, clock: Callable[[], float] = time.time) -> FastAPI:
    """The receiver app; ``clock`` is injectable so signature-age tests need no sleeping."""
    keyring = Keyring(settings.require_encryption_keys())
    limit = settings.web.max_body_bytes
    app = FastAPI(title="consent-bridge", docs_url=None, redoc_url=None, openapi_url=None)
    intake = GroupCommit(store)

    async def persist(source: str, rows: list[dict[str, Any]]) -> tuple[int, int]:
        # Checked here, for every vendor, so an event the database cannot store is refused
        # before it meets other requests' events in a group commit.
        for number, event in enumerate(rows, 1):
            if problem := inbox.unstorable(event):
                raise Rejected(source, 400, "unstorable_event", f"event {number}: {problem}")
        try:
            flags = await intake.add(rows)
        except Refused:
            raise Rejected(source, 400, "unstorable_event", "the database refused it") from None
        stored = sum(flags)
        metrics.WEBHOOK_EVENTS.labels(source, "stored", "").inc(stored)
        metrics.WEBHOOK_EVENTS.labels(source, "duplicate", "").inc(len(flags) - stored)
        return stored, len(flags) - stored

    def row(source: str, key: str, event_type: str, kind: str, **extra: Any) -> dict[str, Any]:
        payload = extra.pop("payload")
        return {
            "source": source,
            "event_key": key,
            "event_type": event_type,
            "kind": kind,
            "received_at": now_iso(),
            "payload": keyring.seal(json.dumps(payload).encode()),
            **extra,
        }

    @app.exception_handler(Rejected)
    async def _rejected(_request: Request, error: Rejected) -> Response:
        metrics.WEBHOOK_EVENTS.labels(error.source, "rejected", error.reason).inc()
        return JSONResponse({"error": error.reason, "detail": error.detail}, error.status)

    @app.exception_handler(SQLAlchemyError)
    async def _storage_down(_request: Request, error: SQLAlchemyError) -> Response:
        log.error("inbox storage failed", error=type(error).__name__)
        return JSONResponse({"error": "storage_unavailable"}, 503)

    for vendor in VENDORS.values():
        _add_intake(app, vendor, settings.vendor(vendor.name), row, persist, limit, clock)

    # Anyone may call these: each client gets a budget per path, and the work behind /readyz
    # and /metrics runs once for all the callers that come while it runs.
    limiter = ClientLimiter(settings.web.public_rate_limit)
    app.add_middleware(LimitedPaths, limiter=limiter, paths=["/healthz", "/readyz", "/metrics"])

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    def readiness() -> Response:
        # The answer names the state, never the database's URL, host, user or the driver's
        # words; those go to the log (the URL there hides any password). One connection and
        # the schema's revision read against the one this code needs (SCHEMA): no Alembic.
        try:
            store.require_current_schema()
        except SchemaError as error:
            return _not_ready("schema not current", error)
        except (BridgeError, SQLAlchemyError) as error:
            return _not_ready("database unreachable", error)
        return JSONResponse({"status": "ready"})

    escalation = Escalation.of(settings.erasure)

    def stored_metrics() -> Response:
        # The same numbers as the console's Today page (bridge.runtime.status).
        status.publish(status.backlog(store, escalation, datetime.now(UTC)))
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/readyz", _shared(readiness))
    app.add_api_route("/metrics", _shared(stored_metrics))
    return app


def _shared(work: Callable[[], Response]) -> Callable[[], Awaitable[Response]]:
    """``work`` in the thread pool, once for all the callers that come while it runs. The
    thread pool and the database's connections are the webhooks' too: a crowd of callers must
    not take them all."""
    running: asyncio.Future[Response] | None = None

    async def shared() -> Response:
        nonlocal running
        if running is None or running.done():
            running = asyncio.ensure_future(run_in_threadpool(work))
        return await asyncio.shield(running)

    return shared


def _not_ready(reason: str, error: Exception) -> Response:
    """``/readyz``'s 503: a short, fixed reason for the caller; the detail for the log only
    (a BridgeError's message shows the URL with its password hidden; a driver's error, its
    first line)."""
    if isinstance(error, BridgeError):
        detail = str(error)
    else:
        cause = getattr(error, "orig", None) or error
        lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
        detail = f"{type(cause).__name__}: {lines[0][:200] if lines else ''}"
    log.warning("not ready", reason=reason, detail=detail)
    return JSONResponse({"status": "not ready", "reason": reason}, 503)


Row = Callable[..., dict[str, Any]]
Persist = Callable[[str, list[dict[str, Any]]], Awaitable[tuple[int, int]]]


def _add_intake(
    app: FastAPI,
    vendor: spec.Vendor,
    section: Any,
    row: Row,
    persist: Persist,
    limit: int,
    clock: Callable[[], float],
) -> None:
    """The vendor's webhook route: admitted, read within the size limit, verified and
    parsed by the vendor's intake, stored, then answered as the vendor expects."""
    source, intake = vendor.name, vendor.intake

    async def receive(request: Request) -> Response:
        try:
            intake.admit(section, request.path_params)
            body = await _read_body(request, source, limit)
            accepted = intake.accept(
                section,
                spec.WebhookRequest(request.method, str(request.url), request.headers, body),
                now_ms=int(clock() * 1000),
            )
        except spec.Rejected as error:
            raise Rejected(source, error.status, error.reason, error.detail) from None
        metrics.WEBHOOK_EVENTS.labels(source, "received", "").inc(len(accepted.events))
        rows = [
            row(
                source,
                event.key,
                event.event_type,
                event.kind,
                object_type=event.object_type,
                object_id=event.object_id,
                occurred_at=event.occurred_at,
                payload=event.payload,
            )
            for event in accepted.events
        ]
        stored, duplicates = await persist(source, rows)
        content, media_type = accepted.reply(stored, duplicates)
        return Response(content, media_type=media_type)

    app.add_api_route(intake.path, receive, methods=["POST"], name=f"{source}_webhook")
