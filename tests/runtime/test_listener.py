"""The listener's bounds (bridge/runtime/listener.py), over real sockets: read deadlines that a
byte a second does not extend, a limit on the headers' size, a cap on open connections, and
the open-files limit raised to fit the cap."""

from __future__ import annotations

import asyncio
import resource
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from bridge.config import WebSettings
from bridge.runtime import listener
from tests.conftest import free_port


async def echo_after(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, waits ``?wait=`` seconds, answers 200 with the body's size."""
    if scope["type"] != "http":
        return
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size, more = size + len(message.get("body", b"")), message.get("more_body", False)
    query = scope["query_string"].decode()
    await asyncio.sleep(float(query.removeprefix("wait=")) if query else 0)
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**web: Any) -> int:
        port = free_port()
        config = listener.config(echo_after, WebSettings(**web), "127.0.0.1", port, 1)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.01)
        return port

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(10)
    return sock


def drip_until_answered(sock: socket.socket, start: bytes) -> tuple[bytes, float]:
    """Send ``start``, then a byte every 0.2 s until the server answers; the answer (up to
    its close) and how long the connection lived."""
    opened = time.monotonic()
    sock.sendall(start)
    sock.settimeout(0.2)
    answer = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            if answer:
                continue
            try:
                sock.sendall(b"x")
            except OSError:
                break
            continue
        except OSError:
            break
        if not chunk:
            break
        answer += chunk
    return answer, time.monotonic() - opened


def test_a_dripped_request_line_and_headers_are_cut_at_the_header_timeout(serve: Any) -> None:
    port = serve(header_timeout_seconds=1.0)
    with connect(port) as sock:
        answer, lived = drip_until_answered(sock, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert 0.9 <= lived < 5  # a byte every 0.2 s never moved the deadline


def test_a_dripped_body_is_cut_at_the_body_timeout_counted_from_the_headers(serve: Any) -> None:
    port = serve(header_timeout_seconds=5.0, body_timeout_seconds=1.0)
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
    with connect(port) as sock:
        answer, lived = drip_until_answered(sock, head + b"x" * 1000)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert 0.9 <= lived < 4.5


def test_a_silent_connection_is_cut_at_the_header_timeout(serve: Any) -> None:
    port = serve(header_timeout_seconds=0.5)
    with connect(port) as sock:
        started = time.monotonic()
        assert sock.recv(4096).startswith(b"HTTP/1.1 408 ")
        assert sock.recv(4096) == b""
    assert time.monotonic() - started < 4


def test_the_application_time_and_each_kept_alive_request_get_a_deadline_of_their_own(
    serve: Any,
) -> None:
    port = serve(header_timeout_seconds=1.0, body_timeout_seconds=1.0)
    request = b"POST /?wait=1.5 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    with connect(port) as sock:
        for _ in range(2):  # 1.5 s in the application each time: longer than either deadline
            sock.sendall(request)
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
            time.sleep(0.7)  # idle between requests, within uvicorn's keep-alive timeout


def test_headers_over_the_limit_are_answered_431(serve: Any) -> None:
    port = serve()
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * listener.MAX_HEADER_BYTES
    with connect(port) as sock:
        sock.sendall(head)  # all of it at once: nothing left unread when the server closes
        assert sock.recv(4096).startswith(b"HTTP/1.1 431 ")


def test_a_connection_over_the_cap_is_answered_503_at_once(serve: Any) -> None:
    port = serve(max_connections=3, header_timeout_seconds=30)
    held = [connect(port) for _ in range(3)]
    time.sleep(0.2)  # accepted
    with connect(port) as extra:
        assert extra.recv(4096).startswith(b"HTTP/1.1 503 ")
    held.pop().close()
    time.sleep(0.2)  # the server saw it go
    with connect(port) as again:
        again.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert again.recv(4096).startswith(b"HTTP/1.1 200 ")
    for sock in held:
        sock.close()


def test_the_open_files_limit_is_raised_to_fit_the_connections() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 600:
        pytest.skip(f"the hard open-files limit here is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        assert listener.connection_limit(400) == 400
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 400 + listener.RESERVED_FILES
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_connection_cap_is_lowered_below_a_hard_open_files_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (300, 300))
    monkeypatch.setattr(resource, "setrlimit", lambda *_args: None)
    assert listener.connection_limit(1000) == 300 - listener.RESERVED_FILES
