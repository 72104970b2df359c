"""Webhook intake benchmark: signed single-event requests into `bridge serve`, vs a bare endpoint.

Run: .venv/bin/python bench/webhooks.py [--seconds 10] [--senders 10 50]
Starts each server as its own process on loopback (the receiver on SQLite, then on PostgreSQL
when BRIDGE_TEST_POSTGRES_URL is set, and a bare FastAPI endpoint that returns 200 without
verifying or storing), drives it with N concurrent senders for a fixed time from this process,
and prints requests/second, p50/p99 acknowledgement latency and the ratio to the bare endpoint.
Targets: >= 1,000 req/s on SQLite, p99 < 50 ms at 10 senders, >= 0.5 x the bare throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import uvloop
from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url

from bridge.adapters.hubspot.webhooks import sign_v3


async def read_response(reader: asyncio.StreamReader) -> int:
    """One HTTP/1.1 response with a Content-Length; its status."""
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


SECRET = "bench-client-secret"
BARE_APP = """
from fastapi import FastAPI, Request, Response
app = FastAPI()
@app.post("/webhooks/hubspot")
async def hook(request: Request) -> Response:
    await request.body()
    return Response('{"stored":1,"duplicates":0}', media_type="application/json")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.post(url + "/webhooks/hubspot", content=b"[]")
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(url)


def start_receiver(database_url: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env |= {
        "BRIDGE_DATABASE_URL": database_url,
        "BRIDGE_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "BRIDGE_HUBSPOT__CLIENT_SECRET": SECRET,
        "BRIDGE_LOG_LEVEL": "warning",
    }
    bridge = [sys.executable, "-m", "bridge"]
    subprocess.run(
        [*bridge, "db", "upgrade"], env=env, cwd=workdir, check=True, capture_output=True
    )
    port = free_port()
    process = subprocess.Popen(
        [*bridge, "serve", "--port", str(port)], env=env, cwd=workdir, stdout=subprocess.DEVNULL
    )
    return process, f"http://127.0.0.1:{port}"


def start_bare(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    (workdir / "bare_app.py").write_text(BARE_APP)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(port), "--log-level",
         "warning", "--no-access-log"],
        cwd=workdir,
    )  # fmt: skip
    return process, f"http://127.0.0.1:{port}"


async def drive(url: str, senders: int, seconds: float) -> tuple[float, list[float], int]:
    """N senders posting signed single-event requests back to back for ``seconds``.

    Each sender is one keep-alive HTTP/1.1 connection written with plain asyncio streams: a
    full HTTP client costs more CPU than the server under test, on a machine with two cores.
    """
    host, port = url.removeprefix("http://").split(":")
    target = f"{url}/webhooks/hubspot"
    latencies: list[float] = []
    errors = 0
    counter = iter(range(10**9))
    run_id = int(time.time())

    def request() -> bytes:
        n = next(counter)
        body = json.dumps([{
            "eventId": n, "subscriptionId": 1, "portalId": 1, "appId": 1,
            "occurredAt": run_id * 1000 + n, "subscriptionType": "contact.propertyChange",
            "attemptNumber": 0, "objectId": n, "changeSource": "CRM",
            "propertyName": "hs_email_optout", "propertyValue": "true",
        }]).encode()  # fmt: skip
        ts = str(int(time.time() * 1000))
        head = (
            f"POST /webhooks/hubspot HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"X-HubSpot-Signature-v3: {sign_v3(SECRET, 'POST', target, body, ts)}\r\n"
            f"X-HubSpot-Request-Timestamp: {ts}\r\n\r\n"
        )
        return head.encode() + body

    async def sender(stop: float) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, int(port))
        while time.perf_counter() < stop:
            payload = request()
            started = time.perf_counter()
            writer.write(payload)
            status = await read_response(reader)
            if status == 200:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1
        writer.close()

    stop = time.perf_counter() + seconds
    began = time.perf_counter()
    await asyncio.gather(*(sender(stop) for _ in range(senders)))
    return len(latencies) / (time.perf_counter() - began), latencies, errors


def fresh_postgres(admin_url: str) -> str:
    name = f"bridge_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--senders", type=int, nargs="+", default=[10, 50])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        targets = [("bare", None), ("sqlite", f"sqlite:///{workdir / 'bench.db'}")]
        if admin := os.environ.get("BRIDGE_TEST_POSTGRES_URL"):
            targets.append(("postgresql", fresh_postgres(admin)))
        bare_rps: dict[int, float] = {}
        print(f"{'target':<11}{'senders':>8}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}"
              f"{'vs bare':>9}")  # fmt: skip
        for name, database_url in targets:
            if database_url is None:
                process, url = start_bare(workdir)
            else:
                process, url = start_receiver(database_url, workdir)
            try:
                wait_listening(url)
                for senders in args.senders:
                    rps, latencies, errors = uvloop.run(drive(url, senders, args.seconds))
                    latencies.sort()
                    p50 = statistics.median(latencies) * 1000
                    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
                    if name == "bare":
                        bare_rps[senders] = rps
                    ratio = rps / bare_rps[senders]
                    print(f"{name:<11}{senders:>8}{rps:>9.0f}{p50:>8.1f}{p99:>8.1f}{errors:>7}"
                          f"{ratio:>9.2f}")  # fmt: skip
            finally:
                process.terminate()
                process.wait(timeout=30)


if __name__ == "__main__":
    main()
