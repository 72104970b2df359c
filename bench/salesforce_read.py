"""Salesforce full-read benchmark: Contacts and Leads with their consent, through the adapter.

Run: .venv/bin/python bench/salesforce_read.py [--people 20000] [--leads 0.4] [--aliases 0.1]
Serves the Salesforce emulator in this process on loopback, seeds N people through its admin
API (a share of them Leads, the rest Contacts), each with an Individual holding a
ContactPointTypeConsent row per purpose and a share with a further address (a
ContactPointEmail), reads them all once with ``SalesforceAdapter.read()`` and prints:

- API calls used / the minimum possible: one login, plus for each object a full read must
  cover (consent rows, contact points, Contacts, Leads) ceil(rows / 2,000) query pages, and
  at least one (an empty object still takes a call to find out);
- wall time;
- daily API quota consumed: the org's own count of REST calls (logins are not counted), and
  its share of a Developer Edition's 15,000.

Target: calls ratio <= 1.05.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterable
from typing import Any

import httpx
from pydantic import SecretStr

from bridge.adapters.salesforce.adapter import SalesforceAdapter
from bridge.adapters.salesforce.settings import SalesforceSettings
from bridge.model import Purpose
from bridge_sandbox.emulators.common import serve_in_thread
from bridge_sandbox.emulators.salesforce import SalesforceEmulatorConfig, create_app

PAGE = 2_000
SEED_CHUNK = 5_000
PURPOSES = [
    Purpose(id="marketing", salesforce_data_use_purpose="Marketing"),
    Purpose(id="product_updates", salesforce_data_use_purpose="Product Updates"),
]


def insert(admin: httpx.Client, rows: Iterable[dict[str, Any]]) -> list[str]:
    """Seed rows through the admin API, a chunk at a time; their ids, in order."""
    pending, ids = list(rows), []
    for start in range(0, len(pending), SEED_CHUNK):
        chunk = pending[start : start + SEED_CHUNK]
        response = admin.post("/__emulator/records", json={"records": chunk})
        response.raise_for_status()
        ids += response.json()["ids"]
    return ids


def seed(admin: httpx.Client, people: int, lead_share: float, alias_share: float) -> dict[str, int]:
    """N people with consent; the number of rows of each object a full read must cover."""
    bases = {
        r["Name"]: r["Id"]
        for r in admin.get("/__emulator/records?type=DataUseLegalBasis").json()["records"]
    }
    purposes = insert(
        admin,
        (
            {
                "attributes": {"type": "DataUsePurpose"},
                "Name": p.salesforce_data_use_purpose,
                "LegalBasisId": bases["Consent"],
            }
            for p in PURPOSES
        ),
    )
    individuals = insert(
        admin,
        ({"attributes": {"type": "Individual"}, "LastName": f"Person {i}"} for i in range(people)),
    )
    leads = round(people * lead_share)
    every_alias = round(1 / alias_share) if alias_share else 0
    aliased = [i for i in range(people) if every_alias and i % every_alias == 0]
    rows: list[dict[str, Any]] = []
    for i, individual in enumerate(individuals):
        kind = "Lead" if i < leads else "Contact"
        person = {
            "attributes": {"type": kind},
            "LastName": f"Person {i}",
            "Email": f"person{i}@example.com",
            "IndividualId": individual,
            "Lawful_Basis__c": "Consent" if i % 2 else "Legitimate Interests",
            "HasOptedOutOfEmail": i % 10 == 0,
        }
        rows.append(person | ({"Company": "Bench Ltd"} if kind == "Lead" else {}))
        rows += [
            {
                "attributes": {"type": "ContactPointTypeConsent"},
                "PartyId": individual,
                "DataUsePurposeId": purpose,
                "ContactPointType": "Email",
                "PrivacyConsentStatus": "OptIn" if (i + n) % 3 else "OptOut",
                "CaptureDate": "2025-01-01T00:00:00Z",
                "CaptureSource": "sign-up form",
            }
            for n, purpose in enumerate(purposes)
        ]
    rows += [
        {
            "attributes": {"type": "ContactPointEmail"},
            "ParentId": individuals[i],
            "EmailAddress": f"alias{i}@example.com",
        }
        for i in aliased
    ]
    insert(admin, rows)
    return {
        "ContactPointTypeConsent": people * len(PURPOSES),
        "ContactPointEmail": len(aliased),
        "Contact": people - leads,
        "Lead": leads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--leads", type=float, default=0.4, help="share of people who are Leads")
    parser.add_argument("--aliases", type=float, default=0.1, help="share with a further address")
    args = parser.parse_args()

    config = SalesforceEmulatorConfig()
    with (
        serve_in_thread(create_app(config)) as server,
        httpx.Client(base_url=server.url, timeout=300) as admin,
    ):
        rows = seed(admin, args.people, args.leads, args.aliases)
        admin.delete("/__emulator/counters").raise_for_status()
        quota_before = admin.get("/__emulator/settings").json()["api_requests_used"]

        settings = SalesforceSettings(
            base_url=server.url,
            username="bench@example.com",
            password=SecretStr("password"),
            security_token=SecretStr("token"),
        )
        with SalesforceAdapter(settings, PURPOSES) as adapter:
            started = time.monotonic()
            records = list(adapter.read())
            elapsed = time.monotonic() - started

        counters = admin.get("/__emulator/counters").json()
        quota = admin.get("/__emulator/settings").json()["api_requests_used"] - quota_before

    consents = sum(len(r.consents) for r in records)
    pages = {name: max(1, math.ceil(count / PAGE)) for name, count in rows.items()}
    minimum = 1 + sum(pages.values())
    used = counters["total"]
    print(
        f"records read: {len(records):,} of {args.people:,} "
        f"({rows['Contact']:,} Contacts, {rows['Lead']:,} Leads; {consents:,} consents)"
    )
    for route, calls in sorted(counters["calls"].items()):
        print(f"  {calls:>6,}  {route}")
    detail = " + ".join(f"{name} {n}" for name, n in pages.items())
    print(f"API calls: {used} used / {minimum} minimum = {used / minimum:.3f} (login 1 + {detail})")
    print(f"wall time: {elapsed:.2f} s ({len(records) / elapsed:,.0f} records/s)")
    print(
        f"daily API quota consumed: {quota} calls "
        f"({quota / config.daily_api_limit:.2%} of {config.daily_api_limit:,})"
    )


if __name__ == "__main__":
    main()
