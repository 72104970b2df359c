"""`bridge serve` under an unauthenticated attack on its own port (issue 18): slow-header and
slow-body clients are cut at their deadlines, /readyz callers are rate-limited, aborted uploads
log one line at info, and signed webhooks stay fast throughout.

The attack runs in a process of its own, so that a client saturating its event loop does not
delay the webhooks it is meant to measure. The one timed assertion is the issue's: signed
webhooks' p99 under 1 s (it was 0.14 s here when written, on two shared cores); the deadlines
are checked with seconds to spare.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import resource
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event

import httpx
import uvloop

from bridge.adapters.hubspot.webhooks import sign_v3
from tests.conftest import BridgeCli, free_port, wait_until_healthy
from tests.e2e.test_receiver_process import serve_env
from tests.runtime.conftest import CLIENT_SECRET, hubspot_event

HEADER_TIMEOUT, BODY_TIMEOUT = 2.0, 3.0
ATTACK_SECONDS = 12.0
SLOW_HEADERS = SLOW_BODIES = 150
READYZ_CALLERS = 200
RATE = 120  # per minute: the default public_rate_limit


async def _attack(host: str, port: int, seconds: float, ready: Event) -> dict[str, object]:
    """Slow clients that connect again whenever cut, and /readyz callers back to back, for
    ``seconds``. Each connection the server ended: (kind, how long it lived, the status line
    it got); each /readyz answer by status (or "failed")."""
    stop = time.monotonic() + seconds
    ended: list[tuple[str, float, str]] = []
    readyz: Counter[str] = Counter()

    async def slow(kind: str, start: bytes) -> None:
        while time.monotonic() < stop:
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                ended.append((kind, 0.0, "connection failed"))
                await asyncio.sleep(0.1)
                continue
            opened = time.monotonic()
            writer.write(start)
            while time.monotonic() < stop:
                try:
                    answer = await asyncio.wait_for(reader.read(4096), 0.5)
                except TimeoutError:
                    writer.write(b"x")  # one more byte of the header or body
                    continue
                except OSError:
                    answer = b""
                ended.append((kind, time.monotonic() - opened, answer.split(b"\r\n")[0].decode()))
                break
            writer.close()

    async def answer(reader: asyncio.StreamReader) -> str:
        status = (await reader.readline()).split()[1].decode()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        return status

    async def call_readyz() -> None:
        while time.monotonic() < stop:
            try:
                reader, writer = await asyncio.open_connection(host, port)
                while time.monotonic() < stop:
                    writer.write(b"GET /readyz HTTP/1.1\r\nHost: bridge\r\n\r\n")
                    readyz[await asyncio.wait_for(answer(reader), 10)] += 1
                writer.close()
            except (OSError, TimeoutError, asyncio.IncompleteReadError, IndexError):
                readyz["failed"] += 1
                await asyncio.sleep(0.1)

    header = b"GET /healthz HTTP/1.1\r\nHost: bridge\r\nX-Slow: "
    body = (
        b"POST /webhooks/hubspot HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1048576\r\n\r\n[" + b" " * 256 * 1024
    )
    tasks = [
        *(asyncio.ensure_future(slow("header", header)) for _ in range(SLOW_HEADERS)),
        *(asyncio.ensure_future(slow("body", body)) for _ in range(SLOW_BODIES)),
        *(asyncio.ensure_future(call_readyz()) for _ in range(READYZ_CALLERS)),
    ]
    await asyncio.sleep(0.5)
    ready.set()
    await asyncio.wait(tasks, timeout=seconds + 10)
    for task in tasks:
        task.cancel()
    return {"ended": ended, "readyz": dict(readyz)}


def attacker(host: str, port: int, seconds: float, ready: Event, results: Connection) -> None:
    results.send(uvloop.run(_attack(host, port, seconds, ready)))


@contextmanager
def open_files_limit(soft: int) -> Iterator[None]:
    """Processes started inside inherit a soft open-files limit of ``soft`` (the issue's
    /healthz failed at 237 slow connections for want of file descriptors)."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


def test_signed_webhooks_keep_p99_under_1s_while_slow_clients_and_readyz_callers_hammer(
    bridge: BridgeCli,
) -> None:
    env = serve_env(bridge) | {
        "BRIDGE_WEB__HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "BRIDGE_WEB__BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
    }
    assert bridge("db", "upgrade").returncode == 0
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open_files_limit(256):
        server = bridge.start("serve", "--port", str(port), **env)
    wait_until_healthy(url, server)

    spawn = multiprocessing.get_context("spawn")
    results, sent = spawn.Pipe(duplex=False)
    ready = spawn.Event()
    attack = spawn.Process(target=attacker, args=("127.0.0.1", port, ATTACK_SECONDS, ready, sent))
    attack.start()
    sent.close()  # the attacker's end: if it dies, recv() below fails instead of waiting
    assert ready.wait(60), "the attack did not start"
    stop = time.monotonic() + ATTACK_SECONDS - 2
    latencies: list[float] = []
    webhook_failures: list[str] = []
    healthz: Counter[str] = Counter()

    def send_webhooks(sender: int) -> None:
        with httpx.Client(timeout=10) as http:
            n = 0
            while time.monotonic() < stop:
                n += 1
                body = json.dumps([hubspot_event(sender * 100_000 + n)]).encode()
                ts = str(int(time.time() * 1000))
                target = f"{url}/webhooks/hubspot"
                headers = {
                    "Content-Type": "application/json",
                    "X-HubSpot-Signature-v3": sign_v3(CLIENT_SECRET, "POST", target, body, ts),
                    "X-HubSpot-Request-Timestamp": ts,
                    "Connection": "close",  # each on a new connection, as the attack's are
                }
                started = time.perf_counter()
                try:
                    status = http.post(target, content=body, headers=headers).status_code
                except httpx.HTTPError as error:
                    webhook_failures.append(type(error).__name__)
                    continue
                if status == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    webhook_failures.append(str(status))
                time.sleep(0.05)

    def probe_healthz() -> None:
        with httpx.Client(timeout=5) as http:
            while time.monotonic() < stop:
                try:
                    answer = http.get(f"{url}/healthz", headers={"Connection": "close"})
                    healthz[str(answer.status_code)] += 1
                except httpx.HTTPError as error:
                    healthz[type(error).__name__] += 1
                time.sleep(0.25)

    threads = [threading.Thread(target=send_webhooks, args=(n,)) for n in range(4)]
    threads.append(threading.Thread(target=probe_healthz))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    figures = results.recv()
    attack.join(timeout=30)
    time.sleep(1)  # the last cut uploads logged
    server.terminate()
    assert server.wait(timeout=30) == 0

    assert not webhook_failures, Counter(webhook_failures)
    assert len(latencies) > 100
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    assert p99 < 1.0, f"signed webhooks' p99 {p99:.3f} s under attack"
    assert set(healthz) == {"200"}, healthz

    # Every slow connection the server ended got a 408 at its deadline (the margins are the
    # attacker's own delays: 500 connections on one event loop, on a shared machine).
    ended = figures["ended"]
    for kind, timeout in (("header", HEADER_TIMEOUT), ("body", BODY_TIMEOUT)):
        cut = [(lived, line) for k, lived, line in ended if k == kind]
        assert len(cut) >= (SLOW_HEADERS if kind == "header" else SLOW_BODIES), kind
        assert {line for _, line in cut} == {"HTTP/1.1 408 Request Timeout"}, kind
        lives = [lived for lived, _ in cut]
        assert timeout / 2 < min(lives) and max(lives) < timeout + 5, (kind, lives)

    # 200 callers from one address: the budget's worth answered, the rest 429.
    assert figures["readyz"]["200"] <= RATE
    assert figures["readyz"]["429"] > 0
    assert set(figures["readyz"]) == {"200", "429"}

    # Each aborted upload is one line at info; nothing at error, no traceback.
    [log] = bridge.cwd.glob("serve-*.log")
    lines = log.read_text().splitlines()
    incomplete = [json.loads(line) for line in lines if "webhook.body_incomplete" in line]
    assert len(incomplete) >= SLOW_BODIES
    assert {(entry["level"], entry["source"]) for entry in incomplete} == {("info", "hubspot")}
    assert not [line for line in lines if '"level": "error"' in line or "Traceback" in line]
