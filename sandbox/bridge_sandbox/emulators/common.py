"""What both vendor emulators share: fault injection, call counters, the admin API, a runner.

The admin API lives under ``/__emulator/`` (never a vendor path). Tests, benchmarks and the
demo use it to inject faults and read how many calls each endpoint received; adapters never do.
Each emulator describes its admin and vendor API at ``/__emulator/openapi.json`` and
``/__emulator/docs`` (:func:`describe_api`).
"""

from __future__ import annotations

import asyncio
import fnmatch
import random
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import BaseModel, Field
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.types import ASGIApp, Receive, Scope, Send

ADMIN_PREFIX = "/__emulator"
ADMIN_TAG = "emulator admin"
OPENAPI_URL = f"{ADMIN_PREFIX}/openapi.json"  # the admin and vendor API, described
DOCS_URL = f"{ADMIN_PREFIX}/docs"  # the same, as a page to read and try
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")

FaultKind = Literal["error", "rate_limit"]
FaultResponder = Callable[[FaultKind, int], Response]


class FaultSettings(BaseModel):
    """Faults to inject. Patterns are globs over ``"METHOD /path"``, e.g. ``"POST /crm/*"``."""

    error_rate: float = Field(0.0, ge=0.0, le=1.0, description="share of calls answered 5xx")
    error_status: int = Field(503, ge=500, le=599)
    drop_rate: float = Field(0.0, ge=0.0, le=1.0, description="share of connections dropped")
    latency_ms: int = Field(0, ge=0, description="added to every matching call")
    burst_429: int = Field(0, ge=0, description="the next N matching calls get a rate-limit error")
    endpoints: list[str] = Field(default_factory=lambda: ["*"])
    seed: int | None = None


@dataclass
class EmulatorControl:
    """Mutable fault settings and counters of one emulator instance, safe across threads."""

    faults: FaultSettings = field(default_factory=FaultSettings)
    calls: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    _rng: random.Random = field(default_factory=random.Random)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def set_faults(self, faults: FaultSettings) -> None:
        with self._lock:
            self.faults = faults
            self._rng = random.Random(faults.seed)

    def count(self, key: str) -> None:
        with self._lock:
            self.calls[key] += 1

    def latency_for(self, method: str, path: str) -> float:
        """Seconds to hold this call first: the faults' latency, if the call matches."""
        with self._lock:
            faults = self.faults
        if not any(fnmatch.fnmatchcase(f"{method} {path}", p) for p in faults.endpoints):
            return 0.0
        return faults.latency_ms / 1000

    def choose_fault(self, method: str, path: str) -> Literal["drop", "error", "rate_limit"] | None:
        """Decide, once per call, which fault (if any) this call suffers."""
        target = f"{method} {path}"
        with self._lock:
            faults = self.faults
            if not any(fnmatch.fnmatchcase(target, p) for p in faults.endpoints):
                return None
            if faults.burst_429 > 0:
                self.faults = faults.model_copy(update={"burst_429": faults.burst_429 - 1})
                chosen: Literal["drop", "error", "rate_limit"] | None = "rate_limit"
            elif self._rng.random() < faults.drop_rate:
                chosen = "drop"
            elif self._rng.random() < faults.error_rate:
                chosen = "error"
            else:
                chosen = None
            if chosen:
                self.injected[chosen] += 1
            return chosen

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": dict(self.calls),
                "total": sum(self.calls.values()),
                "injected": dict(self.injected),
            }

    def reset_counters(self) -> None:
        with self._lock:
            self.calls.clear()
            self.injected.clear()


def _abort_connection(send: Send) -> bool:
    """Drop the TCP connection under the current request, as a flaky network would.

    uvicorn's ``send`` is a bound method of its request cycle, which holds the transport;
    aborting it closes the socket without any HTTP response.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        return False
    transport.abort()
    return True


class FaultMiddleware:
    """Counts every vendor call by route and injects the configured faults before it runs."""

    def __init__(self, app: ASGIApp, control: EmulatorControl, respond: FaultResponder) -> None:
        self.app = app
        self.control = control
        self.respond = respond

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        fault = self.control.choose_fault(method, path)
        if latency := self.control.latency_for(method, path):
            await asyncio.sleep(latency)
        if fault == "drop" and _abort_connection(send):
            self.control.count(f"{method} {_route_key(self.app, scope)} (dropped)")
            return
        if fault in ("error", "rate_limit"):
            status = 429 if fault == "rate_limit" else self.control.faults.error_status
            self.control.count(f"{method} {_route_key(self.app, scope)}")
            await self.respond(fault, status)(scope, receive, send)
            return
        await self.app(scope, receive, send)
        self.control.count(f"{method} {_route_key(self.app, scope)}")


def _route_key(app: ASGIApp, scope: Scope) -> str:
    """The route template (``/crm/v3/objects/contacts/{contact_id}``) so ids do not split counts."""
    route = scope.get("route")
    if route is not None and hasattr(route, "path"):
        return str(route.path)
    for candidate in getattr(getattr(app, "router", None), "routes", []):
        path = getattr(candidate, "path", None)  # included routers have none
        if path is not None and candidate.matches(scope)[0].name == "FULL":
            return str(path)
    return str(scope["path"])


def admin_router(control: EmulatorControl) -> APIRouter:
    """The fault and counter endpoints that both emulators expose under ``/__emulator``."""
    router = APIRouter(prefix=ADMIN_PREFIX, tags=[ADMIN_TAG])

    @router.get("/faults")
    def get_faults() -> FaultSettings:
        """The faults injected into vendor calls now (none by default)."""
        return control.faults

    @router.put("/faults")
    def put_faults(faults: FaultSettings) -> FaultSettings:
        """Inject faults into the vendor calls whose ``"METHOD /path"`` matches a glob of
        ``endpoints``: 5xx errors, dropped connections, latency, or a burst of rate-limit
        errors in the vendor's own words. Admin calls are never faulted."""
        control.set_faults(faults)
        return control.faults

    @router.delete("/faults", status_code=204)
    def clear_faults() -> None:
        """Inject no faults any more."""
        control.set_faults(FaultSettings())

    @router.get("/counters")
    def get_counters() -> dict[str, Any]:
        """Vendor calls received, by ``"METHOD /route template"`` (``calls``), their
        ``total``, and the faults ``injected`` by kind. Admin calls are not counted."""
        return control.snapshot()

    @router.delete("/counters", status_code=204)
    def reset_counters() -> None:
        """Set every call counter back to zero."""
        control.reset_counters()

    return router


def describe_api(app: FastAPI, vendor: str) -> None:
    """Order and tag the app's OpenAPI description (served at :data:`OPENAPI_URL`, and as a
    page at :data:`DOCS_URL`, both admin paths so that faults and counters leave them alone):
    the admin API first, then the vendor's own paths, tagged as such."""
    vendor_tag = f"{vendor} API (emulated)"
    app.openapi_tags = [
        {
            "name": ADMIN_TAG,
            "description": f"The emulator's own API under `{ADMIN_PREFIX}` (never a {vendor} "
            "path): seed and read records, reset, webhooks, faults, counters. No "
            "authentication, no quota, never faulted or counted.",
        },
        {
            "name": vendor_tag,
            "description": f"The {vendor} paths the bridge calls, as {vendor} answers them "
            "(docs/vendors/ in the bridge's repository); they need the vendor's "
            "authentication, spend its quotas and suffer injected faults.",
        },
    ]
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for operations in schema.get("paths", {}).values():
                for method, operation in operations.items():
                    if method in _METHODS and not operation.get("tags"):
                        operation["tags"] = [vendor_tag]
            schema["paths"] = dict(
                sorted(
                    schema.get("paths", {}).items(),
                    key=lambda item: not item[0].startswith(ADMIN_PREFIX),
                )
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI, control: EmulatorControl, respond: FaultResponder) -> FaultMiddleware:
    """Mount the admin API on an emulator app and wrap it in the fault middleware.

    The middleware must be outermost (serve what this returns) so that it holds uvicorn's own
    ``send`` and can drop the connection for real.
    """
    app.include_router(admin_router(control))
    return FaultMiddleware(app, control=control, respond=respond)


class AddHeaders(BaseHTTPMiddleware):
    """Adds headers computed per response (rate-limit counters and the like)."""

    def __init__(
        self, app: ASGIApp, headers: Callable[[Request, Response], Awaitable[dict[str, str]]]
    ) -> None:
        super().__init__(app)
        self.headers = headers

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        if not request.url.path.startswith(ADMIN_PREFIX):
            response.headers.update(await self.headers(request, response))
        return response


@dataclass
class RunningServer:
    """An ASGI app served by uvicorn in a background thread, on loopback."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextmanager
def serve_in_thread(
    app: ASGIApp, port: int = 0, log_level: str = "warning"
) -> Iterator[RunningServer]:
    """Serve ``app`` on 127.0.0.1 (a free port unless given) until the block ends."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level=log_level, access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("emulator server did not start")
        time.sleep(0.01)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    running = RunningServer(url=f"http://127.0.0.1:{bound_port}", server=server, thread=thread)
    try:
        yield running
    finally:
        running.stop()
