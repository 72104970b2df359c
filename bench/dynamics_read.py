"""Dynamics 365 read benchmark: contacts with their consent4 rows, through the adapter.

Run: .venv/bin/python bench/dynamics_read.py [--contacts 20000] [--leads 0] [--consented 0.5]
     [--aliases 0.1] [--touched 100]
Serves the Dataverse emulator in this process on loopback at Dataverse's published service
protection limits (6,000 requests per user per 300 s), seeds N contacts (and L leads) through
its admin API, a share of them with a second address and a share with a consent4 row per
purpose on their primary address (the aliased among them one more on the second), all last
modified in the past. It reads them all once as the sync's first run does, by change
tracking (``DynamicsAdapter.track(None)``, the same pages as ``read()`` with a delta link
each); then changes the consent4 row of T consented contacts through the Web API, as a
marketer would, and reads the changes twice: from the token (``track(token)``, the sync's
later runs) and by time (``read(since)``, the watch and propagation). For each it prints:

- Web API calls used (the emulator's counters under /api/data/v9.2; Entra ID's token and
  discovery calls are listed apart and not counted) / the minimum possible. With pages of
  5,000 rows (``odata.maxpagesize``, the most Dataverse gives), a full read needs
  1 (purposes) + ceil(consent rows / 5,000) + ceil(contacts / 5,000)
  + max(1, ceil(leads / 5,000)) (an empty table still takes a call to find out)
  + 1 (whether the leads table exists: it comes only with a Dynamics 365 app).
  A read of changes needs, per table, one page of the rows changed since (a delta link, or
  ``modifiedon ge`` for contacts, leads, consent rows), then for the A addresses of the
  changed consent rows ceil(A / n) calls per table to find their people and ceil(A' / n)
  for all the consent rows of those people's A' addresses, n being the addresses one In()
  list may carry (the adapter's, bounded by the URL's length, which docs/vendors/dynamics.md
  does not give for a plain GET);
- wall time / the rate-limit bound: the time Dataverse's sustained rate, 6,000 requests
  per 300 s, allows those calls (calls x 0.05 s). Under the sliding window the first 6,000
  calls may all go at once, so a ratio above 1 says the read spends its time on the work,
  not on waiting for the limit.

Target: calls ratio <= 1.05 for the full read.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import SecretStr

from bridge.adapters.dynamics.adapter import IN_CHUNK, DynamicsAdapter
from bridge.adapters.dynamics.settings import LAWFUL_BASIS_OPTIONS, DynamicsSettings
from bridge.model import ConsentStatus, CrmRecord, LawfulBasis, Purpose
from bridge_sandbox.emulators.common import serve_in_thread
from bridge_sandbox.emulators.dynamics import DynamicsEmulatorConfig, create_app
from bridge_sandbox.emulators.dynamics_http import API_ROOT

PAGE = 5_000
SEED_CHUNK = 5_000
PAST = "2025-01-01T00:00:00Z"  # every seeded row's createdon and modifiedon
PURPOSES = [
    Purpose(id="marketing", dynamics_purpose="Marketing"),
    Purpose(id="product_updates", dynamics_purpose="Product updates"),
]
# consent4 choice values (docs/vendors/dynamics.md, "Contact point consent (consent4)").
OPTED_IN, OPTED_OUT = 534120001, 534120002
EMAIL_CHANNEL, INTERNAL_SOURCE = 534120000, 534120000
BASES = [LAWFUL_BASIS_OPTIONS[LawfulBasis.CONSENT], LAWFUL_BASIS_OPTIONS[LawfulBasis.CONTRACT]]


def insert(admin: httpx.Client, entity_set: str, rows: Iterable[dict[str, Any]]) -> list[str]:
    """Seed rows of one entity set through the admin API, a chunk at a time; their ids."""
    pending, ids = list(rows), []
    for start in range(0, len(pending), SEED_CHUNK):
        chunk = pending[start : start + SEED_CHUNK]
        response = admin.post("/__emulator/seed", json={entity_set: chunk})
        response.raise_for_status()
        ids += response.json()[entity_set]
    return ids


def person(i: int, aliased: bool) -> dict[str, Any]:
    return {
        "firstname": "Bench",
        "lastname": f"Person {i}",
        "emailaddress1": f"person{i}@example.com",
        "emailaddress2": f"alias{i}@example.com" if aliased else None,
        "donotbulkemail": i % 10 == 0,
        "cb_lawfulbasis": BASES[i % len(BASES)],
        "createdon": PAST,
        "modifiedon": PAST,
    }


def consent(address: str, purpose: str, value: int) -> dict[str, Any]:
    return {
        "msdynmkt_contactpointvalue": address,
        "msdynmkt_contactpointtype": EMAIL_CHANNEL,
        "msdynmkt_value": value,
        "msdynmkt_purposeid@odata.bind": f"/msdynmkt_purposes({purpose})",
        "msdynmkt_source": INTERNAL_SOURCE,
        "createdon": PAST,
        "modifiedon": PAST,
    }


def seed(
    admin: httpx.Client, contacts: int, leads: int, consented: float, alias_share: float
) -> tuple[dict[str, int], list[str]]:
    """The rows of each table a full read must cover, and the first purpose's consent4 row
    of each consented contact (the rows a marketer may change)."""
    purposes = insert(
        admin,
        "msdynmkt_purposes",
        ({"msdynmkt_name": p.mapping("dynamics")["purpose"]} for p in PURPOSES),
    )
    every_alias = round(1 / alias_share) if alias_share else 0
    every_consent = round(1 / consented) if consented else 0
    people = contacts + leads
    aliased = {i for i in range(people) if every_alias and i % every_alias == 0}
    insert(admin, "contacts", (person(i, i in aliased) for i in range(contacts)))
    insert(admin, "leads", (person(i, i in aliased) for i in range(contacts, people)))
    rows: list[dict[str, Any]] = []
    changeable: list[int] = []  # index in rows of each consented contact's first row
    for i in range(people):
        if not every_consent or i % every_consent:
            continue
        if i < contacts:
            changeable.append(len(rows))
        address = f"person{i}@example.com"
        rows += [
            consent(address, purpose, OPTED_IN if (i + n) % 3 else OPTED_OUT)
            for n, purpose in enumerate(purposes)
        ]
        if i in aliased:
            rows.append(consent(f"alias{i}@example.com", purposes[0], OPTED_IN))
    ids = insert(admin, "msdynmkt_contactpointconsent4s", rows)
    counts = {
        "purposes": len(purposes),
        "consent rows": len(rows),
        "contacts": contacts,
        "leads": leads,
    }
    return counts, [ids[i] for i in changeable]


def settings(url: str, config: DynamicsEmulatorConfig) -> DynamicsSettings:
    app = config.apps[0]  # the emulator's default application user
    return DynamicsSettings(
        tenant_id=config.tenant_id,
        client_id=app.client_id,
        client_secret=SecretStr(app.client_secret),
        environment_url=url,
        base_url=url,
    )


def change_consents(url: str, config: DynamicsEmulatorConfig, rows: list[str]) -> None:
    """Opt these consent4 rows out through the Web API, one PATCH each (If-Match: *)."""
    app = config.apps[0]
    token = httpx.post(
        f"{url}/{config.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "scope": f"{url}/.default",
        },
    )
    token.raise_for_status()
    headers = {"Authorization": f"Bearer {token.json()['access_token']}", "If-Match": "*"}
    with httpx.Client(base_url=f"{url}{API_ROOT}/", headers=headers) as web:
        for row in rows:
            answer = web.patch(
                f"msdynmkt_contactpointconsent4s({row})", json={"msdynmkt_value": OPTED_OUT}
            )
            answer.raise_for_status()


def timed(records: Iterator[CrmRecord]) -> tuple[list[CrmRecord], float]:
    started = time.monotonic()
    read = list(records)
    return read, time.monotonic() - started


def web_calls(admin: httpx.Client) -> dict[str, int]:
    """The calls counted since the last reset, by route, and set the counters to zero."""
    counted: dict[str, int] = admin.get("/__emulator/counters").json()["calls"]
    admin.delete("/__emulator/counters").raise_for_status()
    return counted


def report(
    counted: dict[str, int],
    minimum: int,
    detail: str,
    elapsed: float,
    config: DynamicsEmulatorConfig,
) -> None:
    web = {route: n for route, n in counted.items() if API_ROOT in route}
    used = sum(web.values())
    for route, calls in sorted(web.items()):
        print(f"  {calls:>6,}  {route}")
    others = sum(counted.values()) - used
    print(f"  ({others} Entra ID token/discovery calls, not counted)")
    print(f"  Web API calls: {used} used / {minimum} minimum = {used / minimum:.3f} ({detail})")
    limits = config.limits
    bound = used * limits.window_s / limits.max_requests
    print(
        f"  wall time: {elapsed:.2f} s / rate-limit bound {bound:.2f} s "
        f"({used} calls at {limits.max_requests:,} per {limits.window_s:g} s) "
        f"= {elapsed / bound:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--leads", type=int, default=0)
    parser.add_argument("--consented", type=float, default=0.5, help="share with consent rows")
    parser.add_argument("--aliases", type=float, default=0.1, help="share with a second address")
    parser.add_argument("--touched", type=int, default=100, help="consents changed, then read")
    args = parser.parse_args()

    config = DynamicsEmulatorConfig()  # Dataverse's published service protection limits
    with (
        serve_in_thread(create_app(config)) as server,
        httpx.Client(base_url=server.url, timeout=300) as admin,
    ):
        rows, changeable = seed(admin, args.contacts, args.leads, args.consented, args.aliases)
        touched = changeable[: args.touched]
        admin.delete("/__emulator/counters").raise_for_status()
        with DynamicsAdapter(settings(server.url, config), PURPOSES) as adapter:
            first = adapter.track(None)
            records, full_time = timed(first.records)
            full_calls = web_calls(admin)
            assert first.token is not None, "the full read gave no change token"

            since = datetime.now(UTC)
            change_consents(server.url, config, touched)
            admin.delete("/__emulator/counters").raise_for_status()
            tracked = adapter.track(first.token)
            tracked_changes, tracked_time = timed(tracked.records)
            tracked_calls = web_calls(admin)
            admin.delete("/__emulator/counters").raise_for_status()
            changes, since_time = timed(adapter.read(since))
            since_calls = web_calls(admin)

    consents = sum(len(r.consents) for r in records)
    pages = {name: math.ceil(count / PAGE) for name, count in rows.items()}
    pages["leads"] = max(1, pages["leads"])
    full_minimum = 1 + sum(pages.values())
    print(
        f"full read: {len(records):,} records of {args.contacts + args.leads:,} "
        f"({args.contacts:,} contacts, {args.leads:,} leads; {consents:,} consents from "
        f"{rows['consent rows']:,} consent4 rows)"
    )
    detail = " + ".join(f"{name} {n}" for name, n in pages.items())
    report(full_calls, full_minimum, f"leads probe 1 + {detail}", full_time, config)

    addresses = len(touched)
    people_addresses = sum(len(r.emails) for r in changes)
    lookups = math.ceil(addresses / IN_CHUNK)
    tables = 2  # contacts and leads: the leads probe was answered by the full read
    since_minimum = 3 + tables * lookups + math.ceil(people_addresses / IN_CHUNK)
    for name, read, calls, seconds in (
        ("track(token)", tracked_changes, tracked_calls, tracked_time),
        ("read(since)", changes, since_calls, since_time),
    ):
        withdrawn = sum(
            any(
                c.purpose == PURPOSES[0].id and c.status is ConsentStatus.WITHDRAWN
                for c in r.consents
            )
            for r in read
        )
        print(
            f"{name} after {len(touched)} contacts' {PURPOSES[0].id} consent was withdrawn: "
            f"{len(read):,} records, {withdrawn:,} of them showing it"
        )
        report(
            calls,
            since_minimum,
            f"changed since: contacts 1 + leads 1 + consent rows 1; people of {addresses} "
            f"addresses {tables} x {lookups}; their {people_addresses} addresses' consent rows "
            f"{math.ceil(people_addresses / IN_CHUNK)}; n = {IN_CHUNK}",
            seconds,
            config,
        )


if __name__ == "__main__":
    main()
