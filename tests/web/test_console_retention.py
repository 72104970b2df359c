"""The Retention page over HTTP: the purge preview of the shipped example rules against both
emulators (seeded as for `bridge purge`), and a purge applied only when two operators agree."""

from __future__ import annotations

import re
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from bridge import audit
from bridge.config import RetentionSettings
from bridge.identity import subject_ref
from bridge.store import erasure as erasure_rows
from tests.conftest import PSEUDONYM_KEY, Crms
from tests.e2e.test_purge_cli import FORMER, GONE, SEEDED, WARNED, months_ago, seed
from tests.web.conftest import Console, Operator

EXAMPLE = Path(__file__).parents[2] / "config" / "bridge.example.toml"
DIGEST = re.compile(r'name="digest" value="([0-9a-f]{64})"')
PROPOSAL = re.compile(r"/retention/proposals/([0-9a-f]{32})/approve")


@pytest.fixture
def crms(crms: Crms) -> Crms:
    """The emulators, with the bridge's settings carrying the shipped example's rules."""
    rules = RetentionSettings.model_validate(tomllib.loads(EXAMPLE.read_text())["retention"])
    return replace(crms, settings=crms.settings.model_copy(update={"retention": rules}))


def ref(email: str) -> str:
    return subject_ref(PSEUDONYM_KEY.encode(), email)


def leads(console: Console) -> list[str]:
    reply = console.crms.salesforce.get("/__emulator/records", params={"type": "Lead"})
    return [r["Id"] for r in reply.json()["records"]]


def propose(operator: Operator, within: str = "60") -> str:
    page = operator.get(f"/retention?within={within}")
    found = DIGEST.search(page.text)
    assert found, page.text
    reply = operator.post("/retention/propose", {"within": within, "digest": found.group(1)})
    assert reply.status_code == 303, reply.text
    assert reply.headers["location"] == f"/console/retention?within={within}&done=proposed"
    return reply.headers["location"]


def test_the_preview_lists_who_is_due_and_who_comes_due_with_links_and_no_address(
    console: Console,
) -> None:
    ids = seed(console.crms)
    viewer = console.sign_in("vera", "viewer")
    page = viewer.get("/retention?within=60")
    assert page.status_code == 200, page.text
    html = page.text
    assert "<h1>Retention</h1>" in html
    assert not any(email in html for email in SEEDED)
    due, _, coming = html.partition("<h2>Proposals</h2>")
    # Due now: the idle lead (overdue) and the former customer, each by rule and pseudonym.
    assert (
        "2 people are due today (2 overdue: due before today): former_customers 1, "
        "unqualified_leads 1." in html
    )
    for email, rule in ((GONE, "unqualified_leads"), (FORMER, "former_customers")):
        assert f"{ref(email)[:12]}…" in due
        assert f"<td>{rule}</td>" in due
    assert "no consent for marketing_email" in due
    emulator = str(console.crms.settings.salesforce.base_url).rstrip("/")
    assert f'href="{emulator}/lightning/r/Lead/{ids[GONE]}/view"' in due
    # Falling due later: the warned HubSpot contact, with no link (no portal id) but its id.
    assert f"{ref(WARNED)[:12]}…" in coming and ref(WARNED)[:12] not in due
    assert f"<td>{months_ago(0, days=10).isoformat()}" in coming
    assert f'<span class="ref">{ids[WARNED]}</span>' in coming
    assert "set hubspot.portal_id" in coming
    # A viewer sees the preview but is offered no action, and is refused one.
    assert "Propose purge" not in html
    digest = DIGEST.search(html)
    assert digest is None
    refused = viewer.post("/retention/propose", {"within": "60", "digest": "0" * 64})
    assert refused.status_code == 403
    assert "needs operator" in refused.text
    # Garbage answers 4xx, on the page.
    assert viewer.get("/retention?within=soon").status_code == 400
    assert viewer.get("/retention?within=99999").status_code == 400
    operator = console.sign_in("olga")
    bad = operator.post("/retention/propose", {"within": "60", "digest": "<script>"})
    assert bad.status_code == 400 and 'role="alert"' in bad.text
    assert operator.post("/retention/proposals/../approve").status_code in (404, 405)
    assert operator.post("/retention/proposals/nonsense/approve").status_code == 404
    assert operator.post(f"/retention/proposals/{'a' * 32}/withdraw").status_code == 409


def test_a_purge_is_applied_only_when_a_second_operator_approves_what_was_proposed(
    console: Console,
) -> None:
    ids = seed(console.crms)
    alice, bob = console.sign_in("alice"), console.sign_in("bob")
    store = console.wiring.store()
    propose(alice)
    page = alice.get("/retention?within=60&done=proposed")
    assert "Purge proposed." in page.text
    assert "awaiting approval" in page.text
    assert "another operator must approve it" in page.text
    (proposal,) = set(PROPOSAL.findall(bob.get("/retention").text))

    # The proposer may not approve it: two people agree before anyone is erased.
    mine = alice.post(f"/retention/proposals/{proposal}/approve")
    assert mine.status_code == 409
    assert "You proposed this purge: another operator must approve it" in mine.text
    assert ids[GONE] in leads(console)

    applied = bob.post(f"/retention/proposals/{proposal}/approve")
    assert applied.status_code == 303, applied.text
    assert applied.headers["location"] == "/console/retention?within=60&done=applied"
    assert ids[GONE] not in leads(console)
    requests = [r for r in erasure_rows.requests(store) if r["trigger"] == "retention"]
    assert {r["subject_ref"] for r in requests} == {ref(GONE), ref(FORMER)}
    assert {r["status"] for r in requests} == {"completed"}
    page = bob.get("/retention?within=60&done=applied")
    assert "Purge approved and applied" in page.text
    assert "2 erasure requests" in page.text
    for request in requests:
        assert f'href="/console/requests/{request["id"]}"' in page.text
    assert "Approve purge" not in page.text  # nothing open any more

    events = {e["action"]: e for e in audit.events(store) if e["action"].startswith("retention.")}
    assert events["retention.proposed"]["actor"] == "operator:alice"
    approved = [e for e in audit.events(store) if e["action"] == "retention.approved"]
    assert [(e["actor"], e["outcome"]) for e in approved] == [
        ("operator:alice", "refused"),
        ("operator:bob", "applied"),
    ]
    assert approved[-1]["details"]["proposed_by"] == "operator:alice"
    assert approved[-1]["details"]["requests"] == 2
    again = bob.post(f"/retention/proposals/{proposal}/approve")
    assert again.status_code == 409 and "This proposal is applied already" in again.text


def test_a_proposal_turns_stale_when_who_is_due_changes_and_can_be_withdrawn(
    console: Console,
) -> None:
    ids = seed(console.crms)
    alice, bob = console.sign_in("alice"), console.sign_in("bob")
    propose(alice)
    (proposal,) = set(PROPOSAL.findall(bob.get("/retention").text))
    # Someone else falls due before the approval: the purge is not what was proposed.
    late = console.crms.seed_salesforce(
        "Lead", LastName="Late", Company="Acme", Email="larry.late@example.com",
        CreatedDate=f"{months_ago(40).isoformat()}T09:00:00.000+0000",
        LastActivityDate=months_ago(26).isoformat(),
    )  # fmt: skip
    stale = bob.post(f"/retention/proposals/{proposal}/approve")
    assert stale.status_code == 409
    assert "The preview changed since it was proposed; propose again." in stale.text
    assert {ids[GONE], late} <= set(leads(console))  # nothing was erased
    store = console.wiring.store()
    assert not [r for r in erasure_rows.requests(store) if r["trigger"] == "retention"]
    assert ">stale</span>" in stale.text

    # A page loaded before a change cannot be proposed either; a fresh one can, and withdrawn.
    old = DIGEST.search(alice.get("/retention").text)
    assert old
    console.crms.seed_salesforce(
        "Lead", LastName="Later", Company="Acme", Email="lara.later@example.com",
        CreatedDate=f"{months_ago(40).isoformat()}T09:00:00.000+0000",
        LastActivityDate=months_ago(27).isoformat(),
    )  # fmt: skip
    changed = alice.post("/retention/propose", {"within": "60", "digest": old.group(1)})
    assert changed.status_code == 409
    assert "The preview changed since you loaded it; look again." in changed.text
    assert "4 people are due today" in changed.text
    propose(alice)
    (fresh,) = set(PROPOSAL.findall(bob.get("/retention").text))
    assert bob.post(f"/retention/proposals/{fresh}/withdraw").status_code == 303
    page = alice.get("/retention?done=withdrawn")
    assert "Proposal withdrawn." in page.text and "Approve purge" not in page.text
    withdrawn = [e for e in audit.events(store) if e["action"] == "retention.withdrawn"]
    assert [(e["actor"], e["details"]["proposed_by"]) for e in withdrawn] == [
        ("operator:bob", "operator:alice")
    ]
