"""The console on a listener of its own (``[web] console_host``/``console_port``), as real
``bridge serve`` and ``bridge run`` processes: each listener answers only its own paths, the
console works there (sign-in, cookies, Today), the listener's guards hold on both (a cap of
connections each), and SIGTERM still drains and exits 0."""

from __future__ import annotations

import re
import signal
import socket
import subprocess

import httpx
import pytest

from bridge.runtime.wiring import Wiring
from tests.conftest import BridgeCli, Crms, free_port, wait_until_healthy

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


CAP = 3  # web.max_connections, on each listener


def first_bytes(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    return sock.recv(64)


def sign_in(client: httpx.Client, name: str, password: str) -> None:
    """Signs the browser-like ``client`` in through the console's form."""
    form = client.get("/console/login")
    assert form.status_code == 200 and "<h1>Sign in</h1>" in form.text
    token = CSRF.search(form.text)
    assert token
    answer = client.post(
        "/console/login", data={"name": name, "password": password, "csrf": token.group(1)}
    )
    assert answer.status_code == 303, answer.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("command", ["serve", "run"])
def test_the_console_on_its_own_listener_answers_there_and_only_there(
    cli: BridgeCli, crms: Crms, command: str, stopped_at_end: list[subprocess.Popen[str]]
) -> None:
    password = (
        Wiring(config=None, _settings=crms.settings).operators().add("officer", "viewer", "test")
    )
    port, console_port = free_port(), free_port()
    receiver, console = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{console_port}"
    process = cli.start(
        command, "--port", str(port),
        BRIDGE_WEB__CONSOLE_HOST="127.0.0.1", BRIDGE_WEB__CONSOLE_PORT=str(console_port),
        BRIDGE_WEB__MAX_CONNECTIONS=str(CAP), BRIDGE_WEB__HEADER_TIMEOUT_SECONDS="2",
    )  # fmt: skip
    stopped_at_end.append(process)
    wait_until_healthy(receiver, process)

    with httpx.Client(base_url=console, timeout=10) as officer:
        sign_in(officer, "officer", password)
        today = officer.get("/console/")
        assert today.status_code == 200 and "<h1>Today</h1>" in today.text
        assert officer.get("/", follow_redirects=True).url.path == "/console/"
    # The receiver's listener has no console; the console's has no receiver.
    assert httpx.get(f"{receiver}/console/login").status_code == 404
    assert httpx.get(f"{receiver}/console/").status_code == 404
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(f"{console}{path}").status_code == 404, path
    assert httpx.post(f"{console}/webhooks/hubspot", content=b"[]").status_code == 404
    assert httpx.post(f"{console}/webhooks/salesforce/any-token").status_code == 404

    # The guards hold on both listeners, each with its own cap: the receiver full of idle
    # connections refuses one more, the console still answers; a dripped request is cut.
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(CAP + 1)]
    try:
        assert first_bytes(idle[-1]).startswith(b"HTTP/1.1 503")
        assert httpx.get(f"{console}/console/login").status_code == 200
        with socket.create_connection(("127.0.0.1", console_port)) as slow:
            slow.sendall(b"GET /console/login HTTP/1.1\r\nHost: x\r\n")
            assert first_bytes(slow).startswith(b"HTTP/1.1 408")
    finally:
        for sock in idle:
            sock.close()

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    for url in (receiver, console):
        with pytest.raises(httpx.ConnectError):
            httpx.get(url)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_without_a_listener_of_its_own_the_console_is_beside_the_receiver(
    cli: BridgeCli, stopped_at_end: list[subprocess.Popen[str]]
) -> None:
    port = free_port()
    receiver = f"http://127.0.0.1:{port}"
    process = cli.start("serve", "--port", str(port))
    stopped_at_end.append(process)
    wait_until_healthy(receiver, process)
    form = httpx.get(f"{receiver}/console/login")
    assert form.status_code == 200 and "<h1>Sign in</h1>" in form.text
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"BRIDGE_WEB__CONSOLE_HOST": "127.0.0.1"},
         "web.console_port: console_host and console_port go together"),
        ({"BRIDGE_WEB__CONSOLE_PORT": "8081"},
         "web.console_port: console_host and console_port go together"),
        ({"BRIDGE_WEB__CONSOLE_HOST": "0.0.0.0", "BRIDGE_WEB__CONSOLE_PORT": "8080"},  # noqa: S104
         "web.console_port: must differ from web.port (8080) when the console listens on the "
         "receiver's interface (0.0.0.0 and 127.0.0.1 overlap)"),
    ],
)  # fmt: skip
def test_a_console_listener_set_by_half_or_on_the_receivers_socket_is_refused(
    bridge: BridgeCli, settings: dict[str, str], said: str
) -> None:
    result = bridge("serve", **settings)
    assert result.returncode == 2
    assert said in result.stderr, result.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_receiver_port_given_on_the_command_line_that_is_the_consoles_is_refused(
    cli: BridgeCli,
) -> None:
    port = str(free_port())
    result = cli(
        "serve", "--port", port, BRIDGE_WEB__CONSOLE_HOST="127.0.0.1", BRIDGE_WEB__CONSOLE_PORT=port
    )
    assert result.returncode == 2
    assert f"the receiver's 127.0.0.1:{port} is the console's listener" in result.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_console_port_already_taken_is_refused_before_anything_starts(cli: BridgeCli) -> None:
    port = free_port()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        console_port = taken.getsockname()[1]
        result = cli(
            "serve", "--port", str(port),
            BRIDGE_WEB__CONSOLE_HOST="127.0.0.1", BRIDGE_WEB__CONSOLE_PORT=str(console_port),
        )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"bridge: web: cannot listen on 127.0.0.1:{console_port} (Address already in use); "
    ), result.stderr
