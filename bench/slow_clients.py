"""Slow clients against `bridge serve` (issue 18): do signed webhooks still get through?

Run: .venv/bin/python bench/slow_clients.py [--seconds 45] [--slow-headers 150]
     [--slow-bodies 150] [--readyz 200] [--nofile 256] [--env BRIDGE_WEB__X=Y ...]
Starts `bridge serve` on SQLite with its soft open-file limit at --nofile (hard limit left as
it is), then for --seconds keeps up, from a second process: slow-header clients (a request line,
then one header byte a second), slow-body clients (a 1 MB Content-Length, all but 1 KB sent at
once, then one byte a second), and /readyz callers back to back; every client whose connection
the server closes connects again, as an attacker would. Meanwhile this process times signed
HubSpot webhooks (--senders, each a request on a new connection every 0.1 s) and asks /healthz
twice a second.
Prints webhook p50/p99 and the ratio of p99 to the 1 s bound, /healthz failures, how long the
slow connections lived, the server's open files and RSS (idle, peak, 5 s after the attack), and
what the attack wrote to the log. To measure another checkout, run this with PYTHONPATH
pointing at it (the server starts in a temporary folder, so PYTHONPATH wins).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import httpx
import uvloop
from cryptography.fernet import Fernet
from webhooks import read_response  # bench/webhooks.py, beside this file

from bridge.adapters.hubspot.webhooks import sign_v3

SECRET = "bench-client-secret"
BOUND = 1.0  # seconds: the p99 for signed webhooks under attack
BODY = 1024 * 1024


@dataclass
class Figures:
    webhook_latencies: list[float] = field(default_factory=list)
    webhook_failures: Counter[str] = field(default_factory=Counter)
    healthz: Counter[str] = field(default_factory=Counter)
    readyz: Counter[str] = field(default_factory=Counter)
    lifetimes: dict[str, list[float]] = field(default_factory=lambda: {"header": [], "body": []})
    samples: list[tuple[int, float]] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def open_files_and_rss(pid: int) -> tuple[int, float]:
    """The server's open file descriptors and resident memory (MB), from /proc."""
    files = len(os.listdir(f"/proc/{pid}/fd"))
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return files, int(line.split()[1]) / 1024
    return files, 0.0


def start_server(
    workdir: Path, nofile: int, extra_env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str, Path]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env |= {
        "BRIDGE_DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
        "BRIDGE_PSEUDONYM_KEY": secrets.token_hex(32),
        "BRIDGE_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "BRIDGE_HUBSPOT__CLIENT_SECRET": SECRET,
        **extra_env,
    }
    bridge = [sys.executable, "-m", "bridge"]
    subprocess.run(
        [*bridge, "db", "upgrade"], env=env, cwd=workdir, check=True, capture_output=True
    )
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    port = free_port()
    log = workdir / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*bridge, "serve", "--port", str(port)],
            env=env,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard)),
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url, log
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(url)


class Attack:
    def __init__(self, url: str, figures: Figures) -> None:
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.url = url
        self.figures = figures
        self.stop = asyncio.Event()

    async def drip(self, kind: str, head: bytes, then: bytes) -> None:
        """Connect, send ``head`` and ``then`` at once, then one byte a second until the
        server answers or closes the connection; again and again until the attack stops."""
        while not self.stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(0.5)
                continue
            opened, cut = time.monotonic(), False
            writer.write(head + then)
            while not self.stop.is_set() and not cut:
                try:
                    await asyncio.wait_for(reader.read(65536), 1)
                    cut = True  # an answer (a timeout, a refusal) or the connection closed
                except TimeoutError:
                    writer.write(b"x")
                except OSError:
                    cut = True
            if cut:
                self.figures.lifetimes[kind].append(time.monotonic() - opened)
            writer.close()

    async def slow_header(self) -> None:
        head = f"GET /healthz HTTP/1.1\r\nHost: {self.host}\r\nX-Slow: ".encode()
        await self.drip("header", head, b"")

    async def slow_body(self) -> None:
        head = (
            f"POST /webhooks/hubspot HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {BODY}\r\n\r\n"
        ).encode()
        await self.drip("body", head, b"[" + b" " * (BODY - 1024))

    async def readyz(self) -> None:
        request = f"GET /readyz HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode()
        while not self.stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
                while not self.stop.is_set():
                    writer.write(request)
                    status = await asyncio.wait_for(read_response(reader), 30)
                    self.figures.readyz[str(status)] += 1
                writer.close()
            except (OSError, asyncio.IncompleteReadError, IndexError, ValueError, TimeoutError):
                self.figures.readyz["connection failed"] += 1
                await asyncio.sleep(0.1)

    async def healthz(self) -> None:
        async with httpx.AsyncClient(timeout=2) as http:
            while not self.stop.is_set():
                try:
                    status = (await http.get(f"{self.url}/healthz")).status_code
                    self.figures.healthz[str(status)] += 1
                except httpx.HTTPError as error:
                    self.figures.healthz[type(error).__name__] += 1
                await asyncio.sleep(0.5)

    async def webhooks(self, sender: int) -> None:
        """Signed single-event requests, one every 0.1 s, each on a fresh connection (as
        HubSpot sends them), timed from connecting to the full answer."""
        target = f"{self.url}/webhooks/hubspot"
        n = 0
        while not self.stop.is_set():
            n += 1
            event_id = sender * 10**6 + n
            body = json.dumps([{
                "eventId": event_id, "subscriptionId": 1, "portalId": 1, "appId": 1,
                "occurredAt": int(time.time() * 1000), "subscriptionType": "contact.creation",
                "attemptNumber": 0, "objectId": event_id, "changeSource": "CRM",
            }]).encode()  # fmt: skip
            ts = str(int(time.time() * 1000))
            request = (
                f"POST /webhooks/hubspot HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                f"X-HubSpot-Signature-v3: {sign_v3(SECRET, 'POST', target, body, ts)}\r\n"
                f"X-HubSpot-Request-Timestamp: {ts}\r\nConnection: close\r\n\r\n"
            ).encode() + body
            started = time.perf_counter()
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), 30
                )
                writer.write(request)
                status = await asyncio.wait_for(read_response(reader), 30)
                writer.close()
            except (OSError, asyncio.IncompleteReadError, IndexError, TimeoutError) as error:
                self.figures.webhook_failures[type(error).__name__] += 1
            else:
                if status == 200:
                    self.figures.webhook_latencies.append(time.perf_counter() - started)
                else:
                    self.figures.webhook_failures[str(status)] += 1
            await asyncio.sleep(0.1)


async def measure(url: str, pid: int, args: argparse.Namespace, figures: Figures) -> None:
    """The webhooks, /healthz and the server's files and memory, for the attack's length."""
    side = Attack(url, figures)

    async def sample() -> None:
        while not side.stop.is_set():
            figures.samples.append(open_files_and_rss(pid))
            await asyncio.sleep(1)

    tasks = [*(side.webhooks(n) for n in range(args.senders)), side.healthz(), sample()]
    running = [asyncio.ensure_future(task) for task in tasks]
    await asyncio.sleep(args.seconds)
    side.stop.set()
    await asyncio.wait(running, timeout=40)


async def attack(url: str, args: argparse.Namespace, figures: Figures) -> None:
    """The slow clients and the /readyz callers, for the attack's length."""
    side = Attack(url, figures)
    tasks = [
        *(side.slow_header() for _ in range(args.slow_headers)),
        *(side.slow_body() for _ in range(args.slow_bodies)),
        *(side.readyz() for _ in range(args.readyz)),
    ]
    running = [asyncio.ensure_future(task) for task in tasks]
    await asyncio.sleep(args.seconds)
    side.stop.set()
    await asyncio.wait(running, timeout=40)


def attacker(url: str, args: argparse.Namespace, results: Connection) -> None:
    """The attack in a process of its own: a client saturating its own event loop must not
    delay the webhooks it is meant to measure."""
    figures = Figures()
    uvloop.run(attack(url, args, figures))
    results.send(figures)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(int(len(ordered) * share) - 1, 0)] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=45)
    parser.add_argument("--slow-headers", type=int, default=150)
    parser.add_argument("--slow-bodies", type=int, default=150)
    parser.add_argument("--readyz", type=int, default=200)
    parser.add_argument("--senders", type=int, default=5)
    parser.add_argument("--nofile", type=int, default=256, help="the server's soft limit")
    parser.add_argument("--env", nargs="*", default=[], help="BRIDGE_...=value for the server")
    parser.add_argument("--log", type=Path, help="keep a copy of the server's log here")
    args = parser.parse_args()
    extra_env = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory() as tmp:
        process, url, log = start_server(Path(tmp), args.nofile, extra_env)
        try:
            idle = open_files_and_rss(process.pid)
            figures = Figures()
            results, sent = multiprocessing.Pipe(duplex=False)
            child = multiprocessing.get_context("spawn").Process(
                target=attacker, args=(url, args, sent)
            )
            child.start()
            uvloop.run(measure(url, process.pid, args, figures))
            attacked: Figures = results.recv()
            child.join()
            figures.readyz, figures.lifetimes = attacked.readyz, attacked.lifetimes
            time.sleep(5)
            after = open_files_and_rss(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=30)
        text = log.read_text(errors="replace")
    if args.log:
        args.log.write_text(text)
    lat = figures.webhook_latencies
    p50, p99 = (statistics.median(lat) if lat else float("nan")), percentile(lat, 0.99)
    print(f"attack: {args.slow_headers} slow-header, {args.slow_bodies} slow-body, "
          f"{args.readyz} /readyz clients for {args.seconds:.0f} s; server soft nofile "
          f"{args.nofile}")  # fmt: skip
    print(
        f"signed webhooks: {len(lat)} acknowledged, failed {dict(figures.webhook_failures)}; "
        f"p50 {p50:.3f} s, p99 {p99:.3f} s, {p99 / BOUND:.2f} x the {BOUND:.0f} s bound"
    )
    print(f"/healthz answers: {dict(figures.healthz)}")
    print(f"/readyz answers: {dict(figures.readyz)}")
    for kind, lives in figures.lifetimes.items():
        longest = max(lives, default=0.0)
        print(f"slow-{kind} connections closed by the server: {len(lives)}, longest lived "
              f"{longest:.1f} s of a {args.seconds:.0f} s attack")  # fmt: skip
    peak_files = max((files for files, _ in figures.samples), default=0)
    peak_rss = max((rss for _, rss in figures.samples), default=0.0)
    print(f"server open files: idle {idle[0]}, peak {peak_files}, 5 s after {after[0]}")
    print(f"server RSS MB: idle {idle[1]:.0f}, peak {peak_rss:.0f}, 5 s after {after[1]:.0f}")
    lines = text.splitlines()
    errors = sum('"level": "error"' in line or "ERROR" in line for line in lines)
    print(f"server log: {len(text.encode())} bytes, {len(lines)} lines, {errors} at error, "
          f"{text.count('Traceback')} tracebacks")  # fmt: skip


if __name__ == "__main__":
    main()
