"""Reconcile benchmark: merge and plan in memory, then a full sync across both emulators.

Run: .venv/bin/python bench/reconcile.py [--subjects 100000] [--people 20000] [--scale 1]
[--hubspot-tier enterprise|professional|starter]

(1) Merge + plan, one core: N subjects made in memory, each a HubSpot contact and a
Salesforce Contact (a third of them a Salesforce Lead as well), every record with a consent
for two purposes, a global opt-out (a tenth opted out) and a lawful basis (most); each goes
through ``bridge.services.plan.plan_subject`` with every field writable and an empty ledger.
The subjects stream: each is made, planned, its changes counted, and dropped, as a sync
need not hold every subject and plan at once. Prints subjects/second, timed by the wall
clock inside ``plan_subject`` only (making the subjects is the bench's own cost; target >=
50,000), the share of a core the process had (below 100%, a busy machine lowered the
figure), and the growth of the process's peak RSS over the run (target <= 1 GB at any size).

(2) A full sync of P people: ``bridge sync --full --jsonl`` as a process of its own, on
SQLite, its changes counted from the lines it prints (it holds none of them) and its peak
RSS read from /proc while it runs (target <= 1 GB at any size: it stages what it reads in
the database and plans a partition of people at a time); both emulators served in this
process on loopback, seeded through their admin APIs with people the CRMs disagree about
(some in one CRM only; grants and withdrawals at different times; unsubscribe-all in
HubSpot, ``HasOptedOutOfEmail`` in Salesforce; Leads and Contacts; lawful bases on one or
both sides). The HubSpot portal is of ``--hubspot-tier`` (default enterprise): its published
private-app limits (Starter 100 calls per 10 s, Professional and Enterprise 190), or those
times ``--scale`` for a quicker run, and below Enterprise a token without the batch consent
scopes; every ratio is computed against the limits in force. Prints:

- API calls used / the minimum possible on that tier, per vendor and in total. The minimum
  does every read and every write the plan needs with the fewest calls the tier's endpoints
  allow, and nothing else (no read before a write, no asking for the token's scopes):
  - HubSpot reads: ceil(H/100) contact list pages; then on Enterprise ceil(H/100) v4 status
    batch reads and ceil(K/100) unsubscribe-all batch reads for the K contacts opted out of
    all email; below it one status read per contact whose opt-out properties show a status
    (R: those holding a status for a configured subscription; the others have none to read)
    and one unsubscribe-all read per opted-out contact (K);
  - HubSpot writes: one v3 subscribe per grant G on every tier (v3 is the only API that
    refuses to resubscribe an opt-out, so grants cannot be batched; one HubSpot must refuse
    needs no call, as what was read already shows the opt-out); on Enterprise ceil(W/100) v4
    ``statuses/batch/write`` calls for the W withdrawals and ceil(U/100)
    ``batch/unsubscribe-all`` calls, below it one single-address v4 call each (W + U); and
    on every tier ceil(B/100) contact ``batch/update`` calls for the B lawful-basis changes;
  - Salesforce reads: one login, three describes (the global one, Contact's and Lead's: what
    the org lets the bridge hold), and ceil(rows/2,000) query pages (at least one) for each
    object a full read covers: ContactPointTypeConsent, ContactPointEmail, Contact, Lead;
  - Salesforce writes, sObject Collections of 200: one POST per 200 Individuals to create
    (for people with consent to write and no Individual yet), one POST per 200 consent rows
    to create, and one PATCH per 200 rows to update: consent rows that exist, and Contacts
    and Leads whose opt-out flag, lawful basis or Individual link changes (one row per
    record, whatever it changes; a collection may mix object types).
- wall time / the least time on that tier: under a rolling window of M calls per I seconds
  the last of C calls cannot start before floor((C - 1) / M) * I, so the least time is that
  for C = the minimum HubSpot calls; and / that for the calls used (how well they were
  paced). Salesforce has no per-second limit, only a daily quota;
- 429s received from HubSpot (calls counted minus calls admitted against the daily quota; a
  refused call consumes none), and Salesforce's daily quota consumed (it answers an
  exhausted quota with 403 REQUEST_LIMIT_EXCEEDED, never 429).

Targets: >= 50,000 subjects/s, <= 1 GB at any size, calls ratio <= 1.05, time ratio <= 1.15, 0 429s.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from propagation import bridge_env  # bench/, beside this script

from bridge.adapters.hubspot import HUBSPOT
from bridge.adapters.hubspot.settings import purpose_keys
from bridge.adapters.salesforce import SALESFORCE
from bridge.config import load_settings
from bridge.logs import configure as configure_logging
from bridge.model import (
    Consent,
    ConsentStatus,
    CrmRecord,
    Evidence,
    GlobalOptOut,
    LawfulBasis,
    ObjectType,
    Subject,
    System,
)
from bridge.services.plan import Writable, plan_subject
from bridge_sandbox.emulators.common import serve_in_thread
from bridge_sandbox.emulators.hubspot import HubSpotEmulatorConfig, Profile, RateLimits
from bridge_sandbox.emulators.hubspot import create_app as hubspot_app
from bridge_sandbox.emulators.hubspot_tiers import PUBLISHED_LIMITS, TIERS, Tier
from bridge_sandbox.emulators.people import Act, Held, Person, seed_hubspot, seed_salesforce
from bridge_sandbox.emulators.salesforce import SalesforceEmulatorConfig
from bridge_sandbox.emulators.salesforce import create_app as salesforce_app

TOKEN = "bench-token"
KEY = "bench-pseudonym-key-0123456789abcdef0123456789"
# The shipped example's purposes: the emulators' subscription definitions match them.
EXAMPLE = Path(__file__).parents[1] / "config" / "bridge.example.toml"
PURPOSES = load_settings(EXAMPLE).purposes
GRANTED, WITHDRAWN, UNKNOWN = ConsentStatus.GRANTED, ConsentStatus.WITHDRAWN, ConsentStatus.UNKNOWN
BASES = (LawfulBasis.CONSENT, LawfulBasis.CONTRACT, LawfulBasis.LEGITIMATE_INTERESTS)
START = datetime(2025, 1, 1, tzinfo=UTC)
HS_BATCH, SF_BATCH, SF_PAGE = 100, 200, 2_000
MB = 1024 * 1024
GB = 1024 * MB


def moment(rng: random.Random) -> datetime:
    return START + timedelta(hours=rng.randrange(24 * 90))


# -- (1) merge + plan in memory -------------------------------------------------------------


def record(rng: random.Random, i: int, system: System, kind: ObjectType) -> CrmRecord:
    record_id = f"{system[:2]}{kind.value[:1]}{i:08d}"
    evidenced = system is SALESFORCE
    consents = tuple(
        Consent(
            purpose=p.id,
            status=rng.choice((GRANTED, GRANTED, WITHDRAWN, UNKNOWN)),
            changed_at=(at := moment(rng)),
            source_system=system,
            source_record=record_id,
            lawful_basis=LawfulBasis.CONSENT,
            evidence=Evidence("web form", at) if evidenced else Evidence(),
        )
        for p in PURPOSES
    )
    opted_out = rng.random() < 0.1
    return CrmRecord(
        system=system,
        object_type=kind,
        id=record_id,
        emails=(f"person{i}@example.com",),
        lawful_basis=rng.choice(BASES) if rng.random() < 0.7 else None,
        consents=consents,
        opt_out=GlobalOptOut(
            opted_out, False, moment(rng) if opted_out else None, system, record_id
        ),
        modified_at=moment(rng),
    )


def subjects(count: int, seed: int = 1) -> Iterator[Subject]:
    """``count`` subjects, made one at a time (the same ones for the same seed)."""
    rng = random.Random(seed)
    for i in range(count):
        records = [
            record(rng, i, HUBSPOT, ObjectType.CONTACT),
            record(rng, i, SALESFORCE, ObjectType.CONTACT),
        ]
        if i % 3 == 0:
            records.append(record(rng, i, SALESFORCE, ObjectType.LEAD))
        yield Subject(f"{i:064x}", tuple(records), frozenset({f"person{i}@example.com"}))


def writable(_record: CrmRecord, _field: str) -> Writable:
    return Writable.YES


def peak_rss() -> int:
    """The process's peak resident set so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def bench_plan(count: int) -> None:
    """Plan each subject as it is made and keep only counts: memory must not grow with N."""
    before = peak_rss()
    clock = time.perf_counter
    planning = 0.0
    changes = records = 0
    started, cpu = clock(), time.process_time()
    for subject in subjects(count):
        begun = clock()
        plan = plan_subject(subject, PURPOSES, placement=writable, ledger={})
        planning += clock() - begun
        changes += len(plan.changes)
        records += len(subject.records)
        del plan  # freed here, not inside the next subject's timing
    elapsed, cpu = clock() - started, time.process_time() - cpu
    grown = peak_rss() - before
    rate = count / planning
    print(f"merge + plan: {count:,} subjects ({records:,} records), {changes:,} changes planned")
    print(
        f"  throughput: {rate:,.0f} subjects/s on one core / 50,000 target = {rate / 50_000:.2f}"
        f" ({planning:.2f} s in plan_subject, {elapsed:.2f} s with making the subjects)"
    )
    # Timed by the wall clock: on a busy machine the process waits for a core, and the
    # figure drops with its share of one.
    print(f"  this process had a core {cpu / elapsed:.0%} of the run")
    print(f"  peak RSS growth: {grown / MB:,.0f} MB / 1,024 MB (1 GB) target = {grown / GB:.2f}")


# -- (2) a full sync across both emulators --------------------------------------------------


def population(count: int, seed: int = 2) -> list[Person]:
    """People the CRMs disagree about, the same ones for the same seed."""
    rng = random.Random(seed)
    people = []
    for i in range(count):
        roll = rng.random()
        sides = [
            Held(
                acts=tuple(
                    Act(p.id, GRANTED if r < 0.7 else WITHDRAWN, moment(rng))
                    for p in PURPOSES
                    if (r := rng.random()) >= 0.35
                ),
                opted_out_at=moment(rng) if rng.random() < 0.1 else None,
                lawful_basis=rng.choice(BASES) if rng.random() < 0.45 else None,
                object_type="lead" if rng.random() < 0.3 else "contact",
            )
            for _ in range(2)
        ]
        people.append(
            Person(
                email=f"person{i:06d}@example.com",
                first_name="Bench",
                last_name=f"Person {i}",
                hubspot=sides[0] if roll >= 0.15 else None,
                salesforce=sides[1] if roll < 0.15 or roll >= 0.30 else None,
            )
        )
    return people


def pages(rows: int, size: int) -> int:
    return max(1, math.ceil(rows / size))


def records(admin: httpx.Client, sobject: str) -> list[dict[str, Any]]:
    reply = admin.get("/__emulator/records", params={"type": sobject})
    reply.raise_for_status()
    rows: list[dict[str, Any]] = reply.json()["records"]
    return rows


def hubspot_minimum(
    people: Sequence[Person], changes: Sequence[dict[str, Any]], tier: Tier
) -> dict[str, int]:
    """The fewest HubSpot calls that read everything and write what the plan needs, with
    the endpoints the tier allows (see the module docstring)."""
    in_hs = [p.hubspot for p in people if p.hubspot is not None]
    hs = Counter(
        c["value"] if c["change"] == "consent" else c["change"]
        for c in changes
        if c["system"] == "hubspot" and c.get("outcome") != "needs_self_service"
    )
    opted_out = sum(1 for held in in_hs if held.opted_out_at is not None)
    if tier == "enterprise":
        consent = {
            "read statuses": math.ceil(len(in_hs) / HS_BATCH),
            "read unsubscribe-all": math.ceil(opted_out / HS_BATCH),
            "withdraw": math.ceil(hs["withdrawn"] / HS_BATCH),
            "unsubscribe-all": math.ceil(hs["opt_out"] / HS_BATCH),
        }
    else:
        subscribed = {p.id for p in PURPOSES if purpose_keys(p).subscription_id}
        with_status = sum(1 for held in in_hs if {a.purpose for a in held.acts} & subscribed)
        consent = {
            "read statuses, one address each": with_status,
            "read unsubscribe-all, one address each": opted_out,
            "withdraw, one address each": hs["withdrawn"],
            "unsubscribe-all, one address each": hs["opt_out"],
        }
    return {
        "list contacts": math.ceil(len(in_hs) / HS_BATCH),
        **consent,
        "grant, one address each": hs["granted"],
        "update lawful basis": math.ceil(hs["lawful_basis"] / HS_BATCH),
    }


def salesforce_minimum(
    people: Sequence[Person], sf_people: dict[str, Person], changes: Sequence[dict[str, Any]]
) -> dict[str, int]:
    """The fewest Salesforce calls that read everything and write what the plan needs."""
    in_sf = [p.salesforce for p in people if p.salesforce is not None]
    consent_rows = sum(len(held.acts) for held in in_sf)
    needs_party: set[str] = set()
    touched: set[str] = set()
    new_rows: set[tuple[str, str]] = set()
    updated_rows: set[tuple[str, str]] = set()
    for change in changes:
        if change["system"] != "salesforce":
            continue
        record_id, person = change["record_id"], sf_people[change["record_id"]]
        held = person.salesforce
        assert held is not None
        if change["change"] != "consent":
            touched.add(record_id)
            continue
        if not held.acts:
            needs_party.add(record_id)
            touched.add(record_id)  # linked to its new Individual
        rows = {a.purpose for a in held.acts}
        (updated_rows if change["purpose"] in rows else new_rows).add(
            (record_id, change["purpose"])
        )
    salesforce = {
        "login": 1,
        "describe the org": 3,
        "query ContactPointTypeConsent": pages(consent_rows, SF_PAGE),
        "query ContactPointEmail": pages(0, SF_PAGE),
        "query Contact": pages(sum(h.object_type == "contact" for h in in_sf), SF_PAGE),
        "query Lead": pages(sum(h.object_type == "lead" for h in in_sf), SF_PAGE),
        "create Individuals": math.ceil(len(needs_party) / SF_BATCH),
        "create consent rows": math.ceil(len(new_rows) / SF_BATCH),
        "update rows": math.ceil((len(updated_rows) + len(touched)) / SF_BATCH),
    }
    return salesforce


def admitted_calls(admin: httpx.Client, limits: RateLimits) -> int:
    """Calls the emulator counted against the daily quota, not counting this probe."""
    probe = admin.get("/crm/v3/properties/contacts/email")
    remaining = int(probe.headers["X-HubSpot-RateLimit-Daily-Remaining"])
    return limits.daily_max - remaining - (probe.status_code != 429)


def bench_sync(count: int, scale: int, tier: Tier) -> None:
    published = PUBLISHED_LIMITS[tier]
    limits = published.model_copy(
        update={
            "burst_max": published.burst_max * scale,
            "search_max": published.search_max * scale,
        }
    )
    people = population(count)
    sf_config = SalesforceEmulatorConfig()
    with (
        serve_in_thread(
            hubspot_app(HubSpotEmulatorConfig(profile=Profile(tier=tier), rate_limits=limits))
        ) as hs_server,
        serve_in_thread(salesforce_app(sf_config)) as sf_server,
        httpx.Client(
            base_url=hs_server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300
        ) as hs_admin,
        httpx.Client(base_url=sf_server.url, timeout=300) as sf_admin,
        tempfile.TemporaryDirectory() as folder,
    ):
        seed_hubspot(hs_admin, people, PURPOSES)
        seed_salesforce(sf_admin, people, PURPOSES)
        by_email = {p.email: p for p in people}
        sf_people = {
            row["Id"]: by_email[row["Email"]]
            for sobject in ("Contact", "Lead")
            for row in records(sf_admin, sobject)
        }
        for admin in (hs_admin, sf_admin):
            admin.delete("/__emulator/counters").raise_for_status()
        quota_before = sf_admin.get("/__emulator/settings").json()["api_requests_used"]

        started = time.monotonic()
        changes, summary, peak = run_sync(Path(folder), hs_server.url, sf_server.url)
        elapsed = time.monotonic() - started

        hs_counters = hs_admin.get("/__emulator/counters").json()
        sf_counters = sf_admin.get("/__emulator/counters").json()
        refused = hs_counters["total"] - admitted_calls(hs_admin, limits)
        quota = sf_admin.get("/__emulator/settings").json()["api_requests_used"] - quota_before

    counts = summary["counts"]
    hs_min = hubspot_minimum(people, changes, tier)
    sf_min = salesforce_minimum(people, sf_people, changes)
    hs_used, sf_used = hs_counters["total"], sf_counters["total"]
    window = limits.burst_interval_ms / 1000
    least_time = (sum(hs_min.values()) - 1) // limits.burst_max * window
    allowed = (hs_used - 1) // limits.burst_max * window
    print(
        f"full sync: {count:,} people, {counts['records']:,} records, {counts['subjects']:,} "
        f"subjects; {counts['planned']:,} changes planned: {counts['done']:,} done, "
        f"{counts['already']:,} already, {counts['needs_self_service']:,} needs_self_service, "
        f"{counts['failed']:,} failed"
    )
    print(
        f"  limits: HubSpot published ({tier} private app) x{scale}: "
        f"{limits.burst_max} calls per {window:g} s; Salesforce: daily quota only"
    )
    for name, counters in (("HubSpot", hs_counters), ("Salesforce", sf_counters)):
        for route, calls in sorted(counters["calls"].items()):
            print(f"  {calls:>6,}  {name} {route}")
    for name, used, least in (("HubSpot", hs_used, hs_min), ("Salesforce", sf_used, sf_min)):
        detail = " + ".join(f"{part} {n}" for part, n in least.items())
        total = sum(least.values())
        print(
            f"  API calls, {name}: {used:,} used / {total:,} minimum = {used / total:.3f} "
            f"({detail})"
        )
    total_min = sum(hs_min.values()) + sum(sf_min.values())
    print(
        f"  API calls: {hs_used + sf_used:,} used / {total_min:,} minimum = "
        f"{(hs_used + sf_used) / total_min:.3f} (target 1.05)"
    )
    for bound, what in ((least_time, "least on this tier"), (allowed, "for the calls used")):
        ratio = f"{elapsed / bound:.3f}" if bound else "n/a (all calls fit in one window)"
        print(f"  wall time: {elapsed:.1f} s / {bound:.1f} s {what} = {ratio} (target 1.15)")
    print(f"  429s received: {refused} (target 0)")
    print(f"  peak RSS of the sync process: {peak / MB:,.0f} MB / 1,024 MB target = "
          f"{peak / MB / 1024:.2f}")  # fmt: skip
    print(
        f"  Salesforce daily API quota consumed: {quota:,} calls "
        f"({quota / sf_config.daily_api_limit:.2%} of {sf_config.daily_api_limit:,})"
    )


def run_sync(
    folder: Path, hubspot_url: str, salesforce_url: str
) -> tuple[list[dict[str, Any]], dict[str, Any], int]:
    """``bridge sync --full --jsonl`` in ``folder``: the changes it settled (the fields the
    minimums need), its summary line, and its peak RSS in bytes."""
    (folder / "config").mkdir()
    (folder / "config" / "bridge.toml").write_text(EXAMPLE.read_text())
    env = bridge_env(folder, hubspot_url, salesforce_url) | {
        "BRIDGE_PSEUDONYM_KEY": KEY,
        "BRIDGE_HUBSPOT__ACCESS_TOKEN": TOKEN,
    }
    bridge = [sys.executable, "-m", "bridge"]
    subprocess.run([*bridge, "db", "upgrade"], env=env, cwd=folder, check=True)
    wanted = ("system", "record_id", "change", "purpose", "value", "outcome")
    changes: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    with subprocess.Popen(
        [*bridge, "sync", "--full", "--jsonl"],
        env=env,
        cwd=folder,
        stdout=subprocess.PIPE,
        text=True,
    ) as sync:
        peak = [0]
        watcher = threading.Thread(target=watch_peak, args=(sync, peak), daemon=True)
        watcher.start()
        assert sync.stdout is not None
        for line in sync.stdout:
            row = json.loads(line)
            if row.pop("type") == "change":
                changes.append({k: row.get(k) for k in wanted})
            else:
                summary = row
    watcher.join()
    if sync.returncode not in (0, 1):  # 1: some write failed, which the counts show
        raise RuntimeError(f"bridge sync exited with {sync.returncode}")
    return changes, summary, peak[0]


def watch_peak(process: subprocess.Popen[str], peak: list[int]) -> None:
    """The process's own peak RSS (``VmHWM``, which starts again at its exec), read every
    0.2 s until it exits: growth in its last 0.2 s is missed. Not ``RUSAGE_CHILDREN``: a
    child forked from this process counts this process's memory (the emulators') until it
    execs."""
    status = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            lines = status.read_text().splitlines()
        except OSError:  # gone between the poll and the read
            return
        for line in lines:
            if line.startswith("VmHWM:"):
                peak[0] = max(peak[0], int(line.split()[1]) * 1024)
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--people", type=int, default=20_000, help="0: skip the sync")
    parser.add_argument(
        "--scale", type=int, default=1, help="HubSpot's published limits times this"
    )
    parser.add_argument(
        "--hubspot-tier", choices=TIERS, default="enterprise", help="the portal's tier"
    )
    args = parser.parse_args()
    configure_logging("warning")
    bench_plan(args.subjects)
    if args.people:
        bench_sync(args.people, args.scale, args.hubspot_tier)


if __name__ == "__main__":
    main()
