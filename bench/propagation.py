"""Propagation: HubSpot unsubscribe-alls until Salesforce holds the opt-outs (rest, burst).

Run: .venv/bin/python bench/propagation.py [--people 100] [--every 5]
     .venv/bin/python bench/propagation.py --burst 5000 [--seconds 60]
The demo set-up: both emulators in this process at their default (published) rate limits,
the daemon (`bridge run`) as its own process on SQLite with its default schedules except that
the incremental sync is pushed out of the way (so only the webhook path can do the work),
and the HubSpot emulator sending signed webhooks to it. N people are seeded in both CRMs.

At rest (``--every``): one of them unsubscribes from all email in HubSpot every ``--every``
seconds, and this script polls the Salesforce emulator until each one's Contact has
``HasOptedOutOfEmail``. It prints p50, p95 and the maximum of those delays (change in HubSpot
-> opt-out written in Salesforce), and their ratio to the 2-second target.

In a burst (``--burst N``): all N unsubscribe, spread evenly over ``--seconds``. It prints
- the vendor calls the daemon made over the minimum for those changes. The minimum is
  measured in the same run: a second pair of emulators is seeded and changed the same way,
  and this process hands every one of the N events to the same propagation at once (one
  batch): each lookup and write is then made once for all N, in the vendors' own batches
  (HubSpot reads 100 contacts a call, Salesforce's queries take as many addresses as its
  URI limit allows, its writes 200 rows a call);
- the time from the first change to the last opt-out in Salesforce over the time the rate
  limits allow: the changes' own spread, or the HubSpot calls made at its published pace
  (190 per 10 s; Salesforce has only a daily limit), whichever is longer;
- the 429s both emulators answered.
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet

from bridge.config import load_settings
from bridge_sandbox.emulators.common import serve_in_thread
from bridge_sandbox.emulators.hubspot import create_app as hubspot_app
from bridge_sandbox.emulators.hubspot_tiers import PUBLISHED_LIMITS
from bridge_sandbox.emulators.people import Person, seed_hubspot, seed_salesforce
from bridge_sandbox.emulators.salesforce import create_app as salesforce_app

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-client-secret"
TARGET_SECONDS = 2.0
HUBSPOT_PER_SECOND = (
    PUBLISHED_LIMITS["enterprise"].burst_max
    * 1000
    / PUBLISHED_LIMITS["enterprise"].burst_interval_ms
)


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


class Count429:
    """ASGI wrapper counting the 429s an emulator answers (its own counters count calls)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.count = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def counted(message: Any) -> None:
            if message["type"] == "http.response.start" and message["status"] == 429:
                self.count += 1  # one event loop: no lock needed
            await send(message)

        await self.app(scope, receive, counted)


@dataclass
class Rig:
    hubspot: httpx.Client
    salesforce: httpx.Client
    throttled: tuple[Count429, Count429]

    def calls(self) -> dict[str, dict[str, int]]:
        return {
            name: client.get("/__emulator/counters").json()["calls"]
            for name, client in (("hubspot", self.hubspot), ("salesforce", self.salesforce))
        }

    def reset_counters(self) -> None:
        for client in (self.hubspot, self.salesforce):
            client.delete("/__emulator/counters").raise_for_status()
        for counter in self.throttled:
            counter.count = 0

    def unsubscribe(self, people: list[Person]) -> None:
        now = datetime.now(UTC).isoformat()
        statuses = [{"email": p.email, "status": "UNSUBSCRIBED", "timestamp": now} for p in people]
        self.hubspot.post("/__emulator/seed", json={"statuses": statuses}).raise_for_status()

    def opted_out(self) -> set[str]:
        rows = self.salesforce.get("/__emulator/records", params={"type": "Contact"}).json()
        return {row["Email"] for row in rows["records"] if row["HasOptedOutOfEmail"]}


@contextmanager
def emulators(people: list[Person]) -> Iterator[tuple[Rig, str, str]]:
    """Both emulators serving, the people seeded in both; the rig and their URLs."""
    purposes = load_settings(ROOT / "config" / "bridge.example.toml").purposes
    counters = (Count429(hubspot_app()), Count429(salesforce_app()))
    with (
        serve_in_thread(counters[0]) as hubspot,
        serve_in_thread(counters[1]) as salesforce,
        httpx.Client(base_url=hubspot.url, timeout=60) as hs_admin,
        httpx.Client(base_url=salesforce.url, timeout=60) as sf_admin,
    ):
        seed_hubspot(hs_admin, people, purposes)
        seed_salesforce(sf_admin, people, purposes)
        yield Rig(hs_admin, sf_admin, counters), hubspot.url, salesforce.url


def prepared(workdir: Path, hubspot_url: str, salesforce_url: str) -> dict[str, str]:
    """A bridge's environment in ``workdir``, its configuration and database made."""
    (workdir / "config").mkdir(parents=True)
    (workdir / "config" / "bridge.toml").write_text(
        (ROOT / "config" / "bridge.example.toml").read_text()
    )
    env = bridge_env(workdir, hubspot_url, salesforce_url)
    env |= {
        "BRIDGE_HUBSPOT__CLIENT_SECRET": SECRET,
        "BRIDGE_SCHEDULE__INCREMENTAL_SYNC_MINUTES": "600",
    }
    upgrade = [sys.executable, "-m", "bridge", "db", "upgrade"]
    subprocess.run(upgrade, env=env, cwd=workdir, check=True, capture_output=True)
    return env


def wait_first_sync(database: Path, process: subprocess.Popen[bytes]) -> None:
    """Until the daemon's sync on leading (a full read: it has no cursors yet) is recorded,
    so that its calls are not counted as propagation's."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"bridge run exited with {process.returncode}")
        with closing(sqlite3.connect(database)) as conn:
            if conn.execute("SELECT count(*) FROM sync_runs").fetchone()[0]:
                return
        time.sleep(0.5)
    raise TimeoutError("the daemon's first sync")


@contextmanager
def daemon(people: list[Person]) -> Iterator[Rig]:
    """The emulators and `bridge run`, HubSpot's webhooks aimed at it; counters from zero."""
    with tempfile.TemporaryDirectory() as tmp, emulators(people) as (rig, hs_url, sf_url):
        workdir = Path(tmp)
        env = prepared(workdir, hs_url, sf_url)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env["BRIDGE_HUBSPOT__WEBHOOK_URL"] = f"{url}/webhooks/hubspot"
        command = [sys.executable, "-m", "bridge", "run", "--port", str(port)]
        process = subprocess.Popen(command, env=env, cwd=workdir)
        try:
            wait_healthy(url, process)
            wait_first_sync(workdir / "bridge.db", process)
            rig.hubspot.put(
                "/__emulator/webhooks",
                json={"target_url": f"{url}/webhooks/hubspot", "client_secret": SECRET},
            ).raise_for_status()
            rig.reset_counters()
            yield rig
        finally:
            process.terminate()
            process.wait(timeout=40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=100)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between opt-outs")
    parser.add_argument("--burst", type=int, help="this many opt-outs at once, instead")
    parser.add_argument("--seconds", type=float, default=60.0, help="a burst's spread")
    args = parser.parse_args()
    count = args.burst or args.people
    people = [Person(f"person{i:05d}@example.com") for i in range(count)]
    if args.burst:
        burst(people, args.seconds)
        return
    with daemon(people) as rig:
        delays = measure(rig, people, args.every)
    report(delays, args.people)


def measure(rig: Rig, people: list[Person], every: float) -> list[float]:
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
            rig.unsubscribe([person])
            changed_at[person.email] = time.monotonic()
            next_change = now + every
        for email in rig.opted_out():
            if email in changed_at and email not in delays:
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


def burst(people: list[Person], seconds: float) -> None:
    """Every person unsubscribes, spread over ``seconds``; then the ratios (module docstring)."""
    with daemon(people) as rig:
        started = time.monotonic()
        changes = threading.Thread(target=spread, args=(rig, people, seconds, started))
        changes.start()
        done: set[str] = set()
        deadline = started + seconds + 600
        while len(done) < len(people) and time.monotonic() < deadline:
            # Reading every Contact costs the emulators' process time: seldom while the
            # changes are still being made (the last one cannot be done before they are).
            time.sleep(0.25 if not changes.is_alive() else 5.0)
            done = rig.opted_out()
        finished = time.monotonic() - started
        changes.join()
        calls = rig.calls()
        throttled = sum(counter.count for counter in rig.throttled)
    least_calls = minimum(people)
    least = {vendor: sum(by_route.values()) for vendor, by_route in least_calls.items()}
    used = {vendor: sum(by_route.values()) for vendor, by_route in calls.items()}
    searches = calls["hubspot"].get("POST /crm/v3/objects/contacts/search", 0)
    paced = max((used["hubspot"] - searches) / HUBSPOT_PER_SECOND, searches / 5.0)
    allowed = max(seconds, paced)
    print(f"opt-outs propagated: {len(done)} of {len(people)}, changes spread over {seconds:.0f} s")
    for vendor in used:
        print(f"{vendor:<11} calls {used[vendor]:6d} / minimum {least[vendor]:6d} = "
              f"{used[vendor] / max(1, least[vendor]):.3f}")  # fmt: skip
    total, floor = sum(used.values()), sum(least.values())
    print(f"all calls   {total:6d} / minimum {floor:6d} = {total / max(1, floor):.3f}   (<= 1.2)")
    print(
        f"time to the last {finished:7.1f} s / allowed {allowed:6.1f} s = "
        f"{finished / allowed:.3f}   (<= 1.15; HubSpot calls at its pace: {paced:.1f} s)"
    )
    print(f"429s answered: {throttled}")
    print("calls by route, where they differ (used / minimum):")
    for vendor, by_route in calls.items():
        for route in sorted(by_route.keys() | least_calls[vendor].keys()):
            if (n := by_route.get(route, 0)) != (m := least_calls[vendor].get(route, 0)):
                print(f"  {vendor} {route}: {n} / {m}")


def spread(rig: Rig, people: list[Person], seconds: float, started: float) -> None:
    """Each person's unsubscribe-all at its even share of ``seconds`` after ``started``."""
    for index, person in enumerate(people):
        time.sleep(max(0.0, started + index * seconds / len(people) - time.monotonic()))
        rig.unsubscribe([person])


def minimum(people: list[Person]) -> dict[str, dict[str, int]]:
    """The calls of one propagation handed every change at once (module docstring), on a
    second pair of emulators changed the same way."""
    from bridge.events.inbox import InboxEvent
    from bridge.events.propagate import Propagation
    from bridge.runtime.wiring import Wiring, connect

    with tempfile.TemporaryDirectory() as tmp, emulators(people) as (rig, hs_url, sf_url):
        workdir = Path(tmp)
        env = prepared(workdir, hs_url, sf_url)
        saved = dict(os.environ)
        os.environ.update(env)
        try:
            for start in range(0, len(people), 1000):
                rig.unsubscribe(people[start : start + 1000])
            contacts = rig.hubspot.get("/__emulator/state").json()["contacts"]
            now = datetime.now(UTC).isoformat(timespec="microseconds")
            events = [
                InboxEvent(n, "hubspot", "consent", "contact.propertyChange", "contact",
                           str(contact["id"]), None, now, {})
                for n, contact in enumerate(contacts)
            ]  # fmt: skip
            wiring = Wiring(workdir / "config" / "bridge.toml")
            propagation = Propagation(wiring.reconciler(adapters=connect(wiring.settings)))
            rig.reset_counters()
            failed = propagation.handle_batch(events)
            assert not failed and len(rig.opted_out()) == len(people), "the minimum run failed"
            return rig.calls()
        finally:
            os.environ.clear()
            os.environ.update(saved)


if __name__ == "__main__":
    main()
