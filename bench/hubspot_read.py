"""HubSpot full-read benchmark: every contact, with consent, through the adapter at the
emulator's published limits.

Run: .venv/bin/python bench/hubspot_read.py [--contacts 20000] [--opted-out 0.1]
Serves the HubSpot emulator (its default Enterprise portal: v4 batch reads) in this process
on loopback at the lowest published limits, a Starter private app's (100 calls per 10 s,
search 5/s), seeds N
contacts with subscription statuses and legal bases (a share of them opted out of all email)
through its admin API, reads them all once with ``HubSpotAdapter.read()`` and prints:

- API calls used / the minimum possible: ceil(N/100) list pages, plus ceil(N/100) v4 status
  reads, plus ceil(K/100) unsubscribe-all reads for the K contacts opted out of all email;
- wall time / the time the rate limit allows those calls: under a rolling window of M calls
  per I seconds the last of C calls cannot start before floor((C - 1) / M) * I;
- 429s received, from the emulator: calls it counted minus calls it admitted against the
  daily quota (a refused call consumes none).

Targets: calls ratio <= 1.05, time ratio <= 1.15, zero 429s.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import httpx
from pydantic import SecretStr

from bridge.adapters.hubspot.adapter import HubSpotAdapter
from bridge.adapters.hubspot.settings import HubSpotSettings
from bridge.model import Purpose
from bridge_sandbox.emulators.common import serve_in_thread
from bridge_sandbox.emulators.hubspot import HubSpotEmulatorConfig, RateLimits, create_app

TOKEN = "bench-token"
SEED_CHUNK = 2_000
BASES = ("Freely given consent from contact", "Performance of a contract", "Not applicable")
PURPOSES = [
    Purpose(id="marketing", hubspot_subscription_id="1"),
    Purpose(id="product_updates", hubspot_subscription_id="2"),
]


def person(i: int, opted_out: bool) -> dict[str, Any]:
    subscriptions: list[dict[str, Any]] = [
        {"subscription_id": "1", "status": "SUBSCRIBED", "legal_basis": "CONSENT_WITH_NOTICE"},
        {"subscription_id": "2", "status": "UNSUBSCRIBED" if i % 3 else "SUBSCRIBED"},
    ]
    if opted_out:
        subscriptions.append({"status": "UNSUBSCRIBED"})
    return {
        "email": f"person{i}@example.com",
        "firstname": "Bench",
        "lastname": f"Person {i}",
        "hs_legal_basis": BASES[i % len(BASES)],
        "subscriptions": subscriptions,
    }


def seed(admin: httpx.Client, contacts: int, share: float) -> int:
    every = round(1 / share) if share else 0
    opted_out = 0
    for start in range(0, contacts, SEED_CHUNK):
        people = []
        for i in range(start, min(start + SEED_CHUNK, contacts)):
            leaves = bool(every) and i % every == 0
            opted_out += leaves
            people.append(person(i, leaves))
        admin.post("/__emulator/seed", json={"contacts": people}).raise_for_status()
    return opted_out


def admitted_calls(admin: httpx.Client, limits: RateLimits) -> int:
    """Calls the emulator counted against the daily quota, not counting this probe."""
    probe = admin.get("/crm/v3/properties/contacts/email")
    remaining = int(probe.headers["X-HubSpot-RateLimit-Daily-Remaining"])
    return limits.daily_max - remaining - (probe.status_code != 429)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--opted-out", type=float, default=0.1, help="share opted out of all")
    args = parser.parse_args()

    limits = RateLimits()  # a Starter private app's published limits, the lowest
    config = HubSpotEmulatorConfig(rate_limits=limits)
    with (
        serve_in_thread(create_app(config)) as server,
        httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120
        ) as admin,
    ):
        opted_out = seed(admin, args.contacts, args.opted_out)
        admin.delete("/__emulator/counters").raise_for_status()

        settings = HubSpotSettings(access_token=SecretStr(TOKEN), base_url=server.url)
        with HubSpotAdapter(settings, PURPOSES) as adapter:
            started = time.monotonic()
            records = sum(1 for _ in adapter.read())
            elapsed = time.monotonic() - started

        counters = admin.get("/__emulator/counters").json()
        refused = counters["total"] - admitted_calls(admin, limits)

    pages = math.ceil(args.contacts / 100)
    minimum = 2 * pages + math.ceil(opted_out / 100)
    used = counters["total"]
    window = limits.burst_interval_ms / 1000
    allowed = (used - 1) // limits.burst_max * window
    print(
        f"limits: published (Free/Starter private app): {limits.burst_max} calls per "
        f"{window:g} s, search {limits.search_max}/s"
    )
    print(f"contacts read: {records:,} of {args.contacts:,} ({opted_out:,} opted out of all)")
    for route, calls in sorted(counters["calls"].items()):
        print(f"  {calls:>6,}  {route}")
    print(
        f"API calls: {used} used / {minimum} minimum = {used / minimum:.3f} "
        f"(list {pages} + statuses {pages} + unsubscribe-all {math.ceil(opted_out / 100)})"
    )
    ratio = f"{elapsed / allowed:.3f}" if allowed else "n/a (all calls fit in one window)"
    print(f"wall time: {elapsed:.1f} s / {allowed:.1f} s allowed = {ratio}")
    print(f"429s received: {refused}")


if __name__ == "__main__":
    main()
