"""The receiver's listener: uvicorn, bounded against clients that hold it open or flood it.

Uvicorn closes idle kept-alive connections, but has no deadline for a client that sends its
request slowly, no limit on the size of a request's headers (with httptools), and no cap on
connections that closes them before reading. Without these, a few hundred connections that
drip a header or a body a byte at a time stay open for ever, hold memory and file descriptors,
and take ``/healthz`` down with them. Here, per listener (``[web]`` settings):

- the request line and headers must arrive within ``header_timeout_seconds`` of the connection
  opening (or of the first byte of a further request on it), in at most
  :data:`MAX_HEADER_BYTES`; the whole body within ``body_timeout_seconds`` of the headers. Each
  deadline covers the whole phase, not each read: a byte a second does not extend it. Past one,
  the answer is 408 (431 for headers too large) and the connection is closed. Time the
  application spends on a request is never counted;
- at most ``max_connections`` connections are open at once on each listener (the receiver's,
  and the console's and the portal's when they have their own): one more is answered 503 and
  closed before anything is read from it, so a flood of the public receiver does not lock the
  console out;
- the soft limit on open files is raised as far as the connection limit needs (up to the hard
  limit), and the connection limit lowered if even that is not enough, keeping
  :data:`RESERVED_FILES` for the database and the rest of the process.

Each cut or refusal counts in ``bridge_http_refused_total`` by reason.

With ``[web] console_host``/``console_port`` (and likewise ``portal_host``/``portal_port``),
one server listens on every socket (:func:`listening`), and each request goes to the app of
the socket it came in on (:class:`ByListener`): the console never answers on the receiver's
socket, nor the receiver on the console's, nor either on the portal's.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bridge import metrics
from bridge.config import EVERY_INTERFACE, WebSettings, same_listener
from bridge.errors import ConfigError
from bridge.logs import get_logger

log = get_logger("bridge.web")

MAX_HEADER_BYTES = 64 * 1024
RESERVED_FILES = 128  # database connections (three files each on SQLite), logs, the event loop
WARN_EVERY_SECONDS = 60.0


def _answer(status: str, *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers, "content-length: 0", "connection: close", "", ""]
    return "\r\n".join(lines).encode()


REQUEST_TIMEOUT = _answer("408 Request Timeout")
HEADERS_TOO_LARGE = _answer("431 Request Header Fields Too Large")
UNAVAILABLE = _answer("503 Service Unavailable", "retry-after: 1")


class GuardedHttp(HttpToolsProtocol):
    """Uvicorn's HTTP/1.1 protocol (httptools) with read deadlines, a limit on the size of the
    headers and a cap on open connections; the class attributes are set by :func:`config`."""

    header_timeout: float
    body_timeout: float
    max_connections: int  # on each listener
    # Connections open, by the port of the listener they came to.
    open_by_port: ClassVar[Counter[int]]
    warned_at = -WARN_EVERY_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes: int | None = None  # of the request head under way; None: none is
        self._port: int | None = None  # the listener's, once counted

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        port = (self.server[1] if self.server else None) or 0
        self._port = port
        self.open_by_port[port] += 1
        if self.open_by_port[port] > self.max_connections:
            self._cut("connection_limit", UNAVAILABLE)
            now = time.monotonic()
            if now - type(self).warned_at >= WARN_EVERY_SECONDS:
                type(self).warned_at = now
                log.warning(
                    "web.connection_limit",
                    open=self.open_by_port[port] - 1,
                    port=port,
                    detail="new connections are answered 503 while web.max_connections are "
                    "open; see bridge_http_refused_total",
                )
            return
        self._start_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._port is not None:
            self.open_by_port[self._port] -= 1
            self._port = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_bytes is not None:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEADER_BYTES:
                self._cut("header_too_large", HEADERS_TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_bytes is None:  # a further request on a kept-alive connection
            self._start_head()

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._arm(self.body_timeout, "body_timeout")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _start_head(self) -> None:
        self._head_bytes = 0
        self._arm(self.header_timeout, "header_timeout")

    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._cut, reason, REQUEST_TIMEOUT)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _cut(self, reason: str, answer: bytes) -> None:
        """Answer ``answer`` (unless a response is under way) and close. A request the
        application is reading then sees the client gone (``http.disconnect``)."""
        self._disarm()
        self._head_bytes = None
        if self.transport.is_closing():
            return
        metrics.HTTP_REFUSED.labels(reason).inc()
        cycle = self.cycle
        if cycle is None or not cycle.response_started or cycle.response_complete:
            self.transport.write(answer)
        self.transport.close()


def connection_limit(wanted: int) -> int:
    """``wanted``, once the soft limit on open files allows it beside :data:`RESERVED_FILES`
    (raised up to the hard limit as needed); fewer, with a warning, if the hard limit is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + RESERVED_FILES
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # a platform cap below the hard limit: keep what we have
            pass
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    allowed = max(soft - RESERVED_FILES, 16)
    log.warning(
        "web.max_connections lowered",
        wanted=wanted,
        allowed=allowed,
        open_files_limit=soft,
        fix="raise the open-files limit (ulimit -n, systemd LimitNOFILE, docker --ulimit "
        "nofile) or lower web.max_connections",
    )
    return allowed


def config(
    app: Any, web: WebSettings, host: str, port: int, grace_seconds: int, listeners: int = 1
) -> uvicorn.Config:
    """How ``bridge serve`` and ``bridge run`` listen: the guarded protocol with ``web``'s
    limits (on each of ``listeners`` sockets), no access log (a webhook path may carry a secret
    token), uvicorn's logging left to :mod:`bridge.logs`."""

    class Listener(GuardedHttp):
        header_timeout = web.header_timeout_seconds
        body_timeout = web.body_timeout_seconds
        max_connections = connection_limit(web.max_connections * listeners) // listeners
        open_by_port: ClassVar[Counter[int]] = Counter()

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=Listener,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=grace_seconds,
    )


@dataclass(frozen=True)
class Listening:
    """What to run: ``uvicorn.Server(config).run(sockets=sockets)``; ``sockets`` None when
    uvicorn binds the receiver's host and port itself."""

    config: uvicorn.Config
    sockets: list[socket.socket] | None


@dataclass(frozen=True)
class Face:
    """An app people use (the console, the privacy portal) on a listener of its own:
    ``[web] <name>_host`` and ``<name>_port``."""

    name: str
    app: ASGIApp
    host: str
    port: int

    @property
    def settings(self) -> str:
        return f"web.{self.name}_host/{self.name}_port"


def listening(
    receiver: ASGIApp,
    web: WebSettings,
    host: str,
    port: int,
    grace_seconds: int,
    faces: Sequence[Face] = (),
) -> Listening:
    """The receiver on ``host:port`` and each of ``faces`` on its own listener, every socket
    bound here and now (so that one taken is a clear error before anything starts) and served
    by one server. (The settings keep the faces' listeners apart from each other.)"""
    if not faces:
        return Listening(config(receiver, web, host, port, grace_seconds), None)
    for face in faces:
        if same_listener(host, port, face.host, face.port):
            raise ConfigError(
                [f"web: the receiver's {host}:{port} is the {face.name}'s listener "
                 f"({face.settings}); choose another --host/--port"]
            )  # fmt: skip
    sockets: list[socket.socket] = []
    try:
        sockets.append(_bind(host, port, "--host/--port"))
        for face in faces:
            sockets.append(_bind(face.host, face.port, face.settings))
    except ConfigError:
        for bound in sockets:
            bound.close()
        raise
    routes = [
        (bound.getsockname(), face.app) for bound, face in zip(sockets[1:], faces, strict=True)
    ]
    for face in faces:
        log.info("web.own_listener", face=face.name, host=face.host, port=face.port)
    app = ByListener(receiver, routes)
    return Listening(config(app, web, host, port, grace_seconds, len(sockets)), sockets)


def _bind(host: str, port: int, settings: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host.strip("[]"), port), family=family)
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise ConfigError(
            [f"web: cannot listen on {host}:{port} ({reason}); choose another {settings}"]
        ) from None


class ByListener:
    """Each request to the app of the socket it came in on: a face's (each bound to its own
    address) or else the receiver's, which also gets the lifespan events. A connection's
    local address is its listener's, except on a listener bound to every interface (it is
    then the interface the connection came in on): that listener is known by its port
    alone."""

    def __init__(self, receiver: ASGIApp, faces: Sequence[tuple[Any, ASGIApp]]) -> None:
        self.receiver = receiver
        self.faces = [
            (None if str(address[0]) in EVERY_INTERFACE else str(address[0]), int(address[1]), app)
            for address, app in faces
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope)(scope, receive, send)

    def _app(self, scope: Scope) -> ASGIApp:
        server = scope.get("server") if scope["type"] in ("http", "websocket") else None
        if server:
            for host, port, app in self.faces:
                if server[1] == port and (host is None or server[0] == host):
                    return app
        return self.receiver
