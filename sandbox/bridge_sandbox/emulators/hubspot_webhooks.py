"""Signed webhook delivery, as HubSpot does it: batched, concurrent, retried, never blocking.

Events are queued by the API and sent by a background thread (docs/vendors/hubspot.md,
"Webhooks"): JSON arrays of at most 100 events, signed with v1 and v3 headers, retried on a
connection error, a timeout or any non-2xx answer up to 10 times with ``attemptNumber``
counting up. The delays are configurable and short by default, so tests see retries in
seconds, not hours.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from hubspot.utils.signature import Signature
from pydantic import BaseModel, Field

SubscriptionType = Literal[
    "contact.creation", "contact.deletion", "contact.privacyDeletion", "contact.propertyChange"
]
ALL_TYPES: tuple[SubscriptionType, ...] = (
    "contact.creation",
    "contact.deletion",
    "contact.privacyDeletion",
    "contact.propertyChange",
)
USER_AGENT = "HubSpot Connect 2.0 (http://dev.hubspot.com/) - WebhooksExecutorDaemon"
# Escapes HubSpot decodes in the URI before a v3 signature (docs/vendors/hubspot.md, "Webhooks").
_URI_DECODES = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
    "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}  # fmt: skip
_LOG_SIZE = 1000


class WebhookSettings(BaseModel):
    """What an app's webhook settings hold: where to send, how to sign, what to send."""

    target_url: str
    client_secret: str
    app_id: int = 1_160_452
    portal_id: int | None = Field(None, description="defaults to the emulator's portal id")
    subscription_types: list[SubscriptionType] = Field(default_factory=lambda: list(ALL_TYPES))
    property_names: list[str] | None = Field(
        None,
        description="propertyChange subscriptions; default hs_email_optout, hs_legal_basis "
        "and hs_email_optout_<id> for every subscription definition",
    )
    retry_delays_s: list[float] | None = Field(
        None, max_length=10, description="one delay per retry; default from the emulator config"
    )
    timeout_s: float | None = Field(None, gt=0, description="default from the emulator config")
    max_concurrent: int = Field(10, ge=1)
    batch_size: int = Field(100, ge=1, le=100)


@dataclass(frozen=True)
class Event:
    """One change, before delivery adds ids, app, portal and attempt number."""

    subscription_type: SubscriptionType
    object_id: int
    occurred_at_ms: int
    change_source: str
    property_name: str | None = None
    property_value: str | None = None


@dataclass
class _Batch:
    events: list[dict[str, Any]]
    attempt: int = 0
    due: float = 0.0
    generation: int = 0


@dataclass
class _Stats:
    queued_events: int = 0
    delivered_events: int = 0
    failed_events: int = 0
    requests: int = 0
    log: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=_LOG_SIZE))


def signing_uri(url: str) -> str:
    """The URI as HubSpot hashes it for v3: with the listed escapes decoded."""
    for escape, char in _URI_DECODES.items():
        url = url.replace(escape, char).replace(escape.lower(), char)
    return url


def signed_headers(body: str, url: str, secret: str, timestamp_ms: int) -> dict[str, str]:
    """The four signature headers of a webhook request."""
    stamp = str(timestamp_ms)
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-HubSpot-Signature": Signature.get_signature(secret, body, "v1"),
        "X-HubSpot-Signature-Version": "v1",
        "X-HubSpot-Signature-v3": Signature.get_signature(
            secret, body, "v3", http_uri=signing_uri(url), http_method="POST", timestamp=stamp
        ),
        "X-HubSpot-Request-Timestamp": stamp,
    }


class WebhookDispatcher:
    """Queues events and delivers them from its own (daemon) threads."""

    def __init__(
        self,
        portal_id: int,
        definition_ids: list[str],
        retry_delays_s: list[float],
        timeout_s: float,
    ) -> None:
        self._portal_id = portal_id
        self._definition_ids = definition_ids
        self._default_delays = retry_delays_s
        self._default_timeout = timeout_s
        self._cond = threading.Condition()
        self._settings: WebhookSettings | None = None
        self._subscriptions: dict[tuple[str, str | None], int] = {}
        self._queue: deque[dict[str, Any]] = deque()
        self._retries: list[_Batch] = []
        self._in_flight = 0
        self._generation = 0
        self._stats = _Stats()
        self._event_ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._client: httpx.Client | None = None

    # -- configuration -------------------------------------------------------------------

    def configure(self, settings: WebhookSettings) -> None:
        properties = settings.property_names
        if properties is None:
            optouts = [f"hs_email_optout_{sub_id}" for sub_id in self._definition_ids]
            properties = ["hs_email_optout", "hs_legal_basis", *optouts]
        keys: list[tuple[str, str | None]] = [
            (kind, None) for kind in settings.subscription_types if kind != "contact.propertyChange"
        ]
        if "contact.propertyChange" in settings.subscription_types:
            keys += [("contact.propertyChange", name) for name in properties]
        with self._cond:
            self._settings = settings
            self._subscriptions = {key: 1000 + index for index, key in enumerate(keys)}
            self._restart_workers(settings)
            self._cond.notify_all()

    def unconfigure(self) -> None:
        with self._cond:
            self._settings = None
            self._subscriptions = {}
            self._drop_pending()
            self._cond.notify_all()

    def reset(self) -> None:
        """Forget queued events, scheduled retries and counters; keep the settings."""
        with self._cond:
            self._drop_pending()
            self._stats = _Stats()
            self._cond.notify_all()

    def _drop_pending(self) -> None:
        self._queue.clear()
        self._retries.clear()
        self._generation += 1

    def _restart_workers(self, settings: WebhookSettings) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        if self._client is not None:
            self._client.close()
        self._pool = ThreadPoolExecutor(settings.max_concurrent, thread_name_prefix="hs-webhook")
        timeout = settings.timeout_s or self._default_timeout
        limits = httpx.Limits(max_connections=settings.max_concurrent)
        self._client = httpx.Client(timeout=timeout, limits=limits)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="hs-webhooks", daemon=True)
            self._thread.start()

    # -- the API side ----------------------------------------------------------------------

    def emit(self, events: list[Event]) -> None:
        """Queue events for delivery if the app subscribes to them; never blocks on I/O."""
        with self._cond:
            settings = self._settings
            if settings is None:
                return
            for event in events:
                sub_id = self._subscriptions.get((event.subscription_type, event.property_name))
                if sub_id is None:
                    continue
                self._queue.append(self._payload(event, sub_id, settings))
                self._stats.queued_events += 1
            self._cond.notify_all()

    def _payload(self, event: Event, sub_id: int, settings: WebhookSettings) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "eventId": next(self._event_ids),
            "subscriptionId": sub_id,
            "portalId": settings.portal_id or self._portal_id,
            "appId": settings.app_id,
            "occurredAt": event.occurred_at_ms,
            "subscriptionType": event.subscription_type,
            "attemptNumber": 0,
            "objectId": event.object_id,
            "changeSource": event.change_source,
        }
        if event.subscription_type == "contact.propertyChange":
            payload |= {"propertyName": event.property_name, "propertyValue": event.property_value}
        elif event.subscription_type == "contact.creation":
            payload["changeFlag"] = "NEW"
        else:
            payload["changeFlag"] = "DELETED"
        return payload

    def stats(self) -> dict[str, Any]:
        with self._cond:
            settings = self._settings
            return {
                "configured": settings is not None,
                "target_url": settings.target_url if settings else None,
                "app_id": settings.app_id if settings else None,
                "subscriptions": [
                    {"id": sub_id, "subscriptionType": kind, "propertyName": prop}
                    for (kind, prop), sub_id in self._subscriptions.items()
                ],
                "queued": self._stats.queued_events,
                "pending": len(self._queue) + sum(len(b.events) for b in self._retries),
                "in_flight": self._in_flight,
                "retrying": len(self._retries),
                "delivered": self._stats.delivered_events,
                "failed": self._stats.failed_events,
                "requests": self._stats.requests,
                "deliveries": list(self._stats.log),
            }

    def flush(self, timeout_s: float) -> bool:
        """Wait until nothing is queued, in flight or waiting to be retried."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._queue or self._retries or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    # -- the delivery side -------------------------------------------------------------------

    def _run(self) -> None:
        """Hand due batches to the sender pool, at most ``max_concurrent`` at a time."""
        while True:
            with self._cond:
                batch = self._next_batch()
                while batch is None:
                    self._cond.wait(self._wait_time())
                    batch = self._next_batch()
                self._in_flight += 1
                pool = self._pool
            assert pool is not None, "configured before anything is queued"
            pool.submit(self._deliver, batch)

    def _next_batch(self) -> _Batch | None:
        settings = self._settings
        if settings is None or self._in_flight >= settings.max_concurrent:
            return None
        moment = time.monotonic()
        due = [b for b in self._retries if b.due <= moment]
        if due:
            self._retries.remove(due[0])
            return due[0]
        if self._queue:
            count = min(settings.batch_size, len(self._queue))
            events = [self._queue.popleft() for _ in range(count)]
            return _Batch(events, generation=self._generation)
        return None

    def _wait_time(self) -> float | None:
        if not self._retries:
            return None
        return max(0.0, min(b.due for b in self._retries) - time.monotonic())

    def _deliver(self, batch: _Batch) -> None:
        with self._cond:
            settings, client = self._settings, self._client
        outcome: dict[str, Any] = {"attemptNumber": batch.attempt, "events": len(batch.events)}
        ok = False
        if settings is not None and client is not None:
            for event in batch.events:
                event["attemptNumber"] = batch.attempt
            body = json.dumps(batch.events, ensure_ascii=False, separators=(",", ":"))
            stamp = int(time.time() * 1000)
            headers = signed_headers(body, settings.target_url, settings.client_secret, stamp)
            try:
                response = client.post(settings.target_url, content=body.encode(), headers=headers)
                outcome["status"] = response.status_code
                ok = response.is_success
            except httpx.HTTPError as exc:
                outcome["error"] = type(exc).__name__
        self._settle(batch, ok, outcome, settings)

    def _settle(
        self, batch: _Batch, ok: bool, outcome: dict[str, Any], settings: WebhookSettings | None
    ) -> None:
        with self._cond:
            self._in_flight -= 1
            self._stats.requests += 1
            self._stats.log.append(outcome | {"ok": ok})
            custom = settings.retry_delays_s if settings else None
            delays = self._default_delays if custom is None else custom
            if ok:
                self._stats.delivered_events += len(batch.events)
            elif batch.generation == self._generation and batch.attempt < len(delays):
                batch.due = time.monotonic() + delays[batch.attempt]
                batch.attempt += 1
                self._retries.append(batch)
            else:
                self._stats.failed_events += len(batch.events)
            self._cond.notify_all()
