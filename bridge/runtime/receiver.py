"""The receiver: signed vendor events into the durable inbox, then acknowledged.

Nothing a client sends can cause a 500: a bad signature or token is 401/403/404 with nothing
stored, a bad body 400, an oversized one 413. An event is acknowledged only once its inbox
row has committed; a storage failure answers 503, so the vendor delivers it again.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cryptography.fernet import Fernet
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from bridge import metrics
from bridge.adapters.hubspot import webhooks as hubspot
from bridge.adapters.salesforce import outbound as salesforce
from bridge.config import Settings
from bridge.errors import BridgeError
from bridge.logs import get_logger
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


def _ms_to_iso(ms: int) -> str | None:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="microseconds")
    except (OverflowError, OSError, ValueError):
        return None


def _iso(text: str | None) -> str | None:
    """A vendor timestamp in our one sortable format, or None if it is not one."""
    try:
        parsed = datetime.fromisoformat(text or "")
    except ValueError:
        return None
    return parsed.astimezone(UTC).isoformat(timespec="microseconds")


async def _read_body(request: Request, source: str, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Rejected(source, 413, "too_large", f"body over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Rejected(source, 413, "too_large", f"body over {limit} bytes")
    return bytes(body)


class GroupCommit:
    """Commits the rows of concurrent requests together: one transaction, one fsync, many acks.

    Each request still waits for its own rows to be durable before it is acknowledged; under
    load, the requests that arrive while one commit runs share the next one.
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
                for (_, done), flags in zip(batch, results, strict=True):
                    done.set_result(flags)

    def _commit(self, requests: list[list[dict[str, Any]]]) -> list[list[bool]]:
        with self.store.transaction() as conn:
            flags = iter(inbox.add(conn, [row for rows in requests for row in rows]))
        return [[next(flags) for _ in rows] for rows in requests]


def create_app(settings: Settings, store: Store, clock: Callable[[], float] = time.time) -> FastAPI:
    """The receiver app; ``clock`` is injectable so signature-age tests need no sleeping."""
    cipher = Fernet(settings.require_encryption_key())
    limit = settings.web.max_body_bytes
    app = FastAPI(title="consent-bridge", docs_url=None, redoc_url=None, openapi_url=None)
    intake = GroupCommit(store)

    async def persist(source: str, rows: list[dict[str, Any]]) -> tuple[int, int]:
        flags = await intake.add(rows)
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
            "payload": cipher.encrypt(json.dumps(payload).encode()),
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

    @app.post("/webhooks/hubspot")
    async def hubspot_webhook(request: Request) -> Response:
        secret = settings.hubspot.client_secret
        if secret is None:
            raise Rejected("hubspot", 404, "not_configured")
        body = await _read_body(request, "hubspot", limit)
        uri = settings.hubspot.webhook_url or str(request.url)
        try:
            hubspot.verify(
                request.headers,
                request.method,
                uri,
                body,
                secret.get_secret_value(),
                now_ms=int(clock() * 1000),
                accept_legacy=settings.hubspot.legacy_signatures,
            )
        except hubspot.SignatureError as error:
            raise Rejected("hubspot", 401, str(error)) from None
        try:
            events = hubspot.EVENTS.validate_json(body)
        except ValidationError as error:
            raise Rejected("hubspot", 400, "bad_payload", _first_problem(error)) from None
        if not 1 <= len(events) <= hubspot.MAX_EVENTS:
            raise Rejected("hubspot", 400, "bad_payload", "expected 1 to 100 events")
        metrics.WEBHOOK_EVENTS.labels("hubspot", "received", "").inc(len(events))
        rows = [
            row(
                "hubspot",
                event.key,
                event.subscription_type,
                event.kind,
                object_type="contact",
                object_id=str(event.object_id),
                occurred_at=_ms_to_iso(event.occurred_at),
                payload=event.model_dump(mode="json", by_alias=True),
            )
            for event in events
        ]
        stored, duplicates = await persist("hubspot", rows)
        return JSONResponse({"stored": stored, "duplicates": duplicates})

    @app.post("/webhooks/salesforce/{token}")
    async def salesforce_webhook(token: str, request: Request) -> Response:
        expected = settings.salesforce.outbound_token
        if expected is None or not _same(token, expected.get_secret_value()):
            raise Rejected("salesforce", 404, "bad_token")
        body = await _read_body(request, "salesforce", limit)
        try:
            message = salesforce.parse(body)
        except salesforce.OutboundMessageError as error:
            raise Rejected("salesforce", 400, "bad_payload", str(error)) from None
        organization = settings.salesforce.organization_id or ""
        if not _same(message.organization_id, organization):
            raise Rejected("salesforce", 403, "wrong_organization")
        metrics.WEBHOOK_EVENTS.labels("salesforce", "received", "").inc(len(message.notifications))
        rows = [
            row(
                "salesforce",
                note.id,
                "outboundMessage",
                note.kind,
                object_type=note.object_type,
                object_id=note.fields["Id"],
                occurred_at=_iso(note.fields.get("SystemModstamp")),
                payload={"action_id": message.action_id, "fields": note.fields},
            )
            for note in message.notifications
        ]
        await persist("salesforce", rows)
        return Response(salesforce.ACK, media_type="text/xml")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    def readyz() -> Response:
        try:
            store.ping()
            store.require_current_schema()
        except BridgeError as error:
            return JSONResponse({"status": "not ready", "reason": str(error)}, 503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        oldest = inbox.oldest_pending_received_at(store)
        lag = (datetime.now(UTC) - datetime.fromisoformat(oldest)).total_seconds() if oldest else 0
        metrics.INBOX_LAG.set(max(lag, 0.0))
        for status, count in inbox.counts(store).items():
            metrics.INBOX_EVENTS.labels(status).set(count)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def _same(given: str, expected: str) -> bool:
    """Constant-time equality; an unset expected value never matches."""
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def _first_problem(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"{where}: {first['msg']}"[:200]
