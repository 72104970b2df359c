"""The privacy portal on a listener of its own (``[web] portal_host``/``portal_port``), beside
the console on its own, as real ``bridge serve`` processes: each listener answers only its own
paths, so the portal is reachable without the console and the console without the portal;
without listeners of their own both sit beside the receiver; a portal port already taken is
refused before anything starts."""

from __future__ import annotations

import signal
import socket
import subprocess

import httpx
import pytest

from tests.conftest import BridgeCli, free_port, wait_until_healthy


def test_the_portal_and_the_console_each_answer_on_their_own_listener_only(
    cli: BridgeCli, stopped_at_end: list[subprocess.Popen[str]]
) -> None:
    port, console_port, portal_port = free_port(), free_port(), free_port()
    receiver = f"http://127.0.0.1:{port}"
    console, portal = f"http://127.0.0.1:{console_port}", f"http://127.0.0.1:{portal_port}"
    process = cli.start(
        "serve", "--port", str(port),
        BRIDGE_WEB__CONSOLE_HOST="127.0.0.1", BRIDGE_WEB__CONSOLE_PORT=str(console_port),
        BRIDGE_WEB__PORTAL_HOST="127.0.0.1", BRIDGE_WEB__PORTAL_PORT=str(portal_port),
    )  # fmt: skip
    stopped_at_end.append(process)
    wait_until_healthy(receiver, process)

    start = httpx.get(f"{portal}/privacy/")
    assert start.status_code == 200 and 'name="email"' in start.text
    assert httpx.get(portal, follow_redirects=True).url.path == "/privacy/"
    assert httpx.get(f"{console}/console/login").status_code == 200
    for path in ("/console/login", "/healthz", "/metrics"):
        assert httpx.get(f"{portal}{path}").status_code == 404, path
    for base in (receiver, console):
        assert httpx.get(f"{base}/privacy/").status_code == 404, base
    assert httpx.get(f"{receiver}/console/login").status_code == 404

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(portal)


def test_without_listeners_of_their_own_both_are_beside_the_receiver(
    cli: BridgeCli, stopped_at_end: list[subprocess.Popen[str]]
) -> None:
    port = free_port()
    receiver = f"http://127.0.0.1:{port}"
    process = cli.start("serve", "--port", str(port))
    stopped_at_end.append(process)
    wait_until_healthy(receiver, process)
    assert 'name="email"' in httpx.get(f"{receiver}/privacy/").text
    assert httpx.get(f"{receiver}/console/login").status_code == 200
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def test_a_portal_port_already_taken_is_refused_before_anything_starts(cli: BridgeCli) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        portal_port = taken.getsockname()[1]
        result = cli(
            "serve", "--port", str(free_port()),
            BRIDGE_WEB__PORTAL_HOST="127.0.0.1", BRIDGE_WEB__PORTAL_PORT=str(portal_port),
        )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"bridge: web: cannot listen on 127.0.0.1:{portal_port} (Address already in use); "
        "choose another web.portal_host/portal_port"
    ), result.stderr
