"""Erasure at scale: N people erased in one `bridge erase --from-file`, against both emulators.

Run: .venv/bin/python bench/erasure.py [--people 1000]
Both emulators run in this process on loopback: HubSpot at its lowest published limits (a
Starter private app: 100 calls per 10 s, search 5/s), Salesforce as a privacy-enabled org
whose integration user may hard-delete, with its default daily API quota. N people are
seeded in both, each with a consent act (so Salesforce holds an Individual and consent rows
besides the Contact). Then `bridge erase --from-file` (the command a user runs, as its own
process, on SQLite) erases them all, and this script prints:

- people erased and verified, of N;
- vendor calls used / the minimum possible, per vendor, with the formula per call kind:
  HubSpot: N gdpr-deletes (it has no batch form) + ceil(N/100) batch reads to find the
  contacts + ceil(N/100) batch reads and ceil(N/5) searches (five addresses per search, on
  the additional emails) to verify that none is left;
  Salesforce: 1 login + for each of the eight queries that reach a person's rows
  (Contact, Lead, ContactPointEmail by address; those three, ContactPointTypeConsent and
  Individual by Individual id) and the three that verify (ContactPointEmail, Contact and
  Lead by address), one query per IN list that fits the 16,384-byte URI (K addresses, or
  L Ids, per list) + 4 calls per Bulk API 2.0 job (create, upload, close,
  one status poll), one job per object type erased;
- wall time / the time HubSpot's published limits allow its calls (under a rolling window
  of M calls per I seconds the last of C calls cannot start before floor((C - 1) / M) * I;
  the burst window and search's own window run side by side, so the larger bound counts);
- 429s received (HubSpot: calls counted minus calls admitted), and the Salesforce daily API
  quota used.

Targets: calls <= 1.2x the minimum, wall <= 1.15x the bound, 0 429s.
BENCH_LOG_LEVEL=info also prints the end of the bridge's log (no personal data in it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote_plus

import httpx
from propagation import bridge_env  # bench/propagation.py, beside this file

from bridge.config import load_settings
from bridge_sandbox.emulators.common import serve_in_thread
from bridge_sandbox.emulators.hubspot import HubSpotEmulatorConfig, RateLimits
from bridge_sandbox.emulators.hubspot import create_app as hubspot_app
from bridge_sandbox.emulators.people import Act, Held, Person, seed_hubspot, seed_salesforce
from bridge_sandbox.emulators.salesforce import create_app as salesforce_app

ROOT = Path(__file__).resolve().parents[1]
URI_BYTES = 16_384
VERIFY_QUERIES, BULK_CALLS = 3, 4


def per_in_list(sample: str) -> int:
    """How many values like ``sample`` one SOQL IN list holds within the URI limit."""
    return (URI_BYTES - 1_024) // len(quote_plus(f"'{sample}',"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1000)
    args = parser.parse_args()
    n = args.people
    settings = load_settings(ROOT / "config" / "bridge.example.toml")
    act = Act(settings.purposes[0].id, "granted", datetime(2024, 2, 1, tzinfo=UTC))
    people = [
        Person(
            f"person{i:06d}@example.com", hubspot=Held(acts=(act,)), salesforce=Held(acts=(act,))
        )
        for i in range(n)
    ]
    limits = RateLimits()  # a Starter private app's published limits, the lowest
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve_in_thread(hubspot_app(HubSpotEmulatorConfig(rate_limits=limits))) as hubspot,
        serve_in_thread(salesforce_app()) as salesforce,
        httpx.Client(
            base_url=hubspot.url, headers={"Authorization": "Bearer pat-bench"}, timeout=60
        ) as hs_admin,
        httpx.Client(base_url=salesforce.url, timeout=60) as sf_admin,
    ):
        sf_admin.patch(
            "/__emulator/settings", json={"hard_delete_permission": True}
        ).raise_for_status()
        seed_hubspot(hs_admin, people, settings.purposes)
        seed_salesforce(sf_admin, people, settings.purposes)
        objects = {
            kind
            for kind in ("Contact", "Individual", "ContactPointTypeConsent", "ContactPointEmail")
            if sf_admin.get("/__emulator/records", params={"type": kind}).json()["records"]
        }
        workdir = Path(tmp)
        (workdir / "config").mkdir()
        (workdir / "config" / "bridge.toml").write_text(
            (ROOT / "config" / "bridge.example.toml").read_text()
        )
        (workdir / "people.txt").write_text("".join(f"{p.email}\n" for p in people))
        env = bridge_env(workdir, hubspot.url, salesforce.url)
        bridge = [sys.executable, "-m", "bridge"]
        subprocess.run([*bridge, "db", "upgrade"], env=env, cwd=workdir, check=True)
        for admin in (hs_admin, sf_admin):
            admin.delete("/__emulator/counters").raise_for_status()
        sf_before = sf_admin.get("/__emulator/settings").json()["api_requests_used"]
        started = time.monotonic()
        erased = subprocess.run(
            [*bridge, "erase", "--from-file", "people.txt", "--json"],
            env=env, cwd=workdir, capture_output=True, text=True, check=False,
        )  # fmt: skip
        elapsed = time.monotonic() - started
        hs_calls = hs_admin.get("/__emulator/counters").json()
        sf_calls = sf_admin.get("/__emulator/counters").json()
        sf_settings = sf_admin.get("/__emulator/settings").json()
        sf_used = sf_settings["api_requests_used"] - sf_before
        sf_limit = sf_settings["daily_api_limit"]
        refused = hs_calls["total"] - admitted(hs_admin, limits)
    if os.environ.get("BENCH_LOG_LEVEL"):
        print(erased.stderr[-20000:])
    if erased.returncode not in (0, 1):
        sys.exit(f"bridge erase failed ({erased.returncode}): {erased.stderr[-2000:]}")
    views = json.loads(erased.stdout)["requests"]
    report(n, views, hs_calls, sf_calls, objects, elapsed, limits, refused, sf_used, sf_limit)


def admitted(admin: httpx.Client, limits: RateLimits) -> int:
    """HubSpot calls counted against the daily quota (a refused call consumes none)."""
    probe = admin.get("/crm/v3/properties/contacts/email")
    remaining = int(probe.headers["X-HubSpot-RateLimit-Daily-Remaining"])
    return limits.daily_max - remaining - (probe.status_code != 429)


def report(
    n: int,
    views: list[dict[str, object]],
    hs_calls: dict[str, object],
    sf_calls: dict[str, object],
    objects: set[str],
    elapsed: float,
    limits: RateLimits,
    refused: int,
    sf_used: int,
    sf_limit: object,
) -> None:
    done = sum(v["status"] == "completed" for v in views)
    print(f"people erased and verified: {done} of {n}")
    lists = math.ceil(n / per_in_list("person000000@example.com"))
    id_lists = math.ceil(n / per_in_list("0PK000000000000AAA"))
    hs_min = n + 2 * math.ceil(n / 100) + math.ceil(n / 5)
    sf_min = 1 + 3 * lists + 5 * id_lists + VERIFY_QUERIES * lists + BULK_CALLS * len(objects)
    for name, calls, minimum in (
        ("HubSpot", hs_calls, hs_min),
        ("Salesforce", sf_calls, sf_min),
    ):
        used = int(str(calls["total"]))
        print(f"{name}: {used} calls / {minimum} minimum = {used / minimum:.3f}")
        for route, count in sorted(dict(calls["calls"]).items()):  # type: ignore[call-overload]
            print(f"  {count:>6,}  {route}")
    total = int(str(hs_calls["total"])) + int(str(sf_calls["total"]))
    print(f"both: {total} calls / {hs_min + sf_min} minimum = {total / (hs_min + sf_min):.3f}")
    print(f"  (before batching, issue 17 measured 37 calls per person: {37 * n} for {n})")
    routes: dict[str, int] = dict(hs_calls["calls"])  # type: ignore[call-overload]
    searches = sum(c for r, c in routes.items() if r.endswith("/search"))
    burst = int(str(hs_calls["total"])) - searches
    window = limits.burst_interval_ms / 1000
    bound = max(
        (burst - 1) // limits.burst_max * window,
        (searches - 1) // limits.search_max * limits.search_interval_ms / 1000,
    )
    print(f"wall time: {elapsed:.1f} s / {bound:.1f} s the HubSpot limits allow = "
          f"{elapsed / bound:.3f}" if bound else f"wall time: {elapsed:.1f} s")  # fmt: skip
    print(f"429s received (HubSpot): {refused}")
    print(f"Salesforce daily API quota used: {sf_used} of {sf_limit}")


if __name__ == "__main__":
    main()
