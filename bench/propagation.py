"""Propagation delay: a HubSpot unsubscribe-all until Salesforce holds the opt-out.

Run: .venv/bin/python bench/propagation.py [--people 100] [--every 0.25]
The demo set-up: both emulators in this process at their default (published) rate limits,
the daemon (`bridge run`) as its own process on SQLite with its default schedules except that
the incremental sync is pushed out of the way (so only the webhook path can do the work),
and the HubSpot emulator sending signed webhooks to it. N people are seeded in both CRMs;
then one of them unsubscribes from all email in HubSpot every ``--every`` seconds, and this
script polls the Salesforce emulator until each one's Contact has ``HasOptedOutOfEmail``.
It prints p50, p95 and the maximum of those delays (change in HubSpot -> opt-out written in
Salesforce), and their ratio to the 60-second target.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from bridge.config import load_settings
from bridge_sandbox.emulators.common import serve_in_thread
from bridge_sandbox.emulators.hubspot import create_app as hubspot_app
from bridge_sandbox.emulators.people import Person, seed_hubspot, seed_salesforce
from bridge_sandbox.emulators.salesforce import create_app as salesforce_app

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-client-secret"
TARGET_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bridge_env(workdir: Path, hubspot_url: str, salesforce_url: str) -> dict[str, str]:
    """The environment of a `bridge` process in ``workdir`` (SQLite there, fresh keys) aimed
    at both emulators; this process's own BRIDGE_ settings left out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return env | {
        "BRIDGE_DATABASE_URL": f"sqlite:///{workdir / 'bridge.db'}",
        "BRIDGE_PSEUDONYM_KEY": "bench-pseudonym-key-0123456789abcdef0123456789",
        "BRIDGE_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "BRIDGE_HUBSPOT__BASE_URL": hubspot_url,
        "BRIDGE_HUBSPOT__ACCESS_TOKEN": "pat-bench",
        "BRIDGE_SALESFORCE__BASE_URL": salesforce_url,
        "BRIDGE_SALESFORCE__USERNAME": "bench@example.com",
        "BRIDGE_SALESFORCE__PASSWORD": "password",
        "BRIDGE_SALESFORCE__SECURITY_TOKEN": "token",
        "BRIDGE_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "warning"),
    }


def wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"bridge run exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=100)
    parser.add_argument("--every", type=float, default=0.25, help="seconds between opt-outs")
    args = parser.parse_args()
    purposes = load_settings(ROOT / "config" / "bridge.example.toml").purposes
    people = [Person(f"person{i:05d}@example.com") for i in range(args.people)]
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve_in_thread(hubspot_app()) as hubspot,
        serve_in_thread(salesforce_app()) as salesforce,
        httpx.Client(base_url=hubspot.url, timeout=30) as hs_admin,
        httpx.Client(base_url=salesforce.url, timeout=30) as sf_admin,
    ):
        workdir = Path(tmp)
        (workdir / "config").mkdir()
        (workdir / "config" / "bridge.toml").write_text(
            (ROOT / "config" / "bridge.example.toml").read_text()
        )
        seed_hubspot(hs_admin, people, purposes)
        seed_salesforce(sf_admin, people, purposes)
        env = bridge_env(workdir, hubspot.url, salesforce.url)
        env |= {
            "BRIDGE_HUBSPOT__CLIENT_SECRET": SECRET,
            "BRIDGE_SCHEDULE__INCREMENTAL_SYNC_MINUTES": "600",
        }
        bridge = [sys.executable, "-m", "bridge"]
        subprocess.run([*bridge, "db", "upgrade"], env=env, cwd=workdir, check=True)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env["BRIDGE_HUBSPOT__WEBHOOK_URL"] = f"{url}/webhooks/hubspot"
        daemon = subprocess.Popen([*bridge, "run", "--port", str(port)], env=env, cwd=workdir)
        try:
            wait_healthy(url, daemon)
            hs_admin.put(
                "/__emulator/webhooks",
                json={"target_url": f"{url}/webhooks/hubspot", "client_secret": SECRET},
            ).raise_for_status()
            delays = measure(hs_admin, sf_admin, people, args.every)
        finally:
            daemon.terminate()
            daemon.wait(timeout=40)
    report(delays, args.people)


def measure(
    hs_admin: httpx.Client, sf_admin: httpx.Client, people: list[Person], every: float
) -> list[float]:
    """Opt each person out in HubSpot, one every ``every`` seconds; seconds until Salesforce
    holds it, per person (people still waiting after 5 minutes are left out and reported)."""
    changed_at: dict[str, float] = {}
    delays: dict[str, float] = {}
    pending = iter(people)
    next_change = time.monotonic()
    deadline = time.monotonic() + 300 + every * len(people)
    while len(delays) < len(people) and time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_change and (person := next(pending, None)) is not None:
            status = {"email": person.email, "status": "UNSUBSCRIBED",
                      "timestamp": datetime.now(UTC).isoformat()}  # fmt: skip
            hs_admin.post("/__emulator/seed", json={"statuses": [status]}).raise_for_status()
            changed_at[person.email] = time.monotonic()
            next_change = now + every
        rows = sf_admin.get("/__emulator/records", params={"type": "Contact"}).json()["records"]
        for row in rows:
            email = row["Email"]
            if row["HasOptedOutOfEmail"] and email in changed_at and email not in delays:
                delays[email] = time.monotonic() - changed_at[email]
        time.sleep(0.05)
    return list(delays.values())


def report(delays: list[float], people: int) -> None:
    if len(delays) < 2:
        print(f"only {len(delays)} of {people} opt-outs reached Salesforce")
        return
    ordered = sorted(delays)
    p50 = statistics.median(ordered)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(f"opt-outs propagated: {len(delays)} of {people}")
    for name, value in (("p50", p50), ("p95", p95), ("max", ordered[-1])):
        print(f"{name:<4}{value:8.2f} s   / {TARGET_SECONDS:.0f} s target = "
              f"{value / TARGET_SECONDS:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
