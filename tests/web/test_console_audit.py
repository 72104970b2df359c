"""The Audit page over HTTP: the log newest first and paged, filtered by kind, time and a
subject typed as an address (which no page shows again), and "Verify chain" before and
after someone edits a row in the database."""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime, timedelta

from bridge import audit
from bridge.identity import subject_ref
from bridge.model import AuditEvent
from tests.conftest import PSEUDONYM_KEY
from tests.web.conftest import Console

ANN, BEN = "ann.audited@example.com", "ben.bystander@example.com"
SEQ = re.compile(r"<tr>\s*<td>(\d+)</td>")
REF = re.compile(r'class="ref" href="[^"]*" title="this subject\'s events">([0-9a-f]{12})…')


def ref(email: str) -> str:
    return subject_ref(PSEUDONYM_KEY.encode(), email)


def erase(console: Console, *emails: str) -> None:
    console.crms.seed_people(list(emails))
    erasure = console.wiring.erasure()
    for email in emails:
        assert erasure.run(erasure.submit([email], "delete", None, "cli"))["status"] == "completed"


def test_the_log_is_filtered_by_a_typed_address_that_no_page_shows_again(console: Console) -> None:
    erase(console, ANN, BEN)
    viewer = console.sign_in("vera", "viewer")
    everything = viewer.get("/audit")
    assert everything.status_code == 200 and "<h1>Audit</h1>" in everything.text
    assert {ref(ANN)[:12], ref(BEN)[:12]} <= set(REF.findall(everything.text))
    seqs = [int(s) for s in SEQ.findall(everything.text)]
    assert seqs == sorted(seqs, reverse=True) and seqs[-1] == 1  # newest first, all on one page
    assert '<option value="erasure.requested">' in everything.text

    typed = viewer.post("/audit", {"subject": "  Ann.Audited@EXAMPLE.com "})
    assert typed.status_code == 200, typed.text
    html = typed.text
    assert "ann.audited" not in html.lower()  # neither as typed nor normalised
    assert 'name="subject" type="email" value=""' in html
    assert f'Filtered by the subject you typed (ref <span class="ref">{ref(ANN)[:12]}…' in html
    shown = REF.findall(html)
    assert shown and set(shown) == {ref(ANN)[:12]}
    ann_events = [e for e in audit.events(console.wiring.store()) if e["subject_ref"] == ref(ANN)]
    assert len(SEQ.findall(html)) == len(ann_events)
    # The next filters keep the subject by its pseudonym, in links and the filter form.
    assert f'name="subject" value="{ref(ANN)}"' in html

    kind = viewer.get(f"/audit?action=erasure.requested&subject={ref(ANN)}")
    assert len(SEQ.findall(kind.text)) == 1 and "Filtered by one subject" in kind.text
    family = viewer.get("/audit?action=erasure").text
    assert "<td>console.signed_in</td>" not in family and "<td>erasure.completed</td>" in family
    today = datetime.now(UTC).date()
    assert "No event matches." in viewer.get(f"/audit?until={today - timedelta(days=1)}").text
    assert len(SEQ.findall(viewer.get(f"/audit?since={today}&until={today}").text)) == len(seqs)

    # Garbage is refused on the page, and an address in a link is neither used nor echoed.
    linked = viewer.get("/audit", params={"subject": ANN})
    assert linked.status_code == 400 and ANN not in linked.text
    assert "Type an address into the “Subject” box" in linked.text
    for params in ({"since": "yesterday"}, {"action": "<script>"}, {"before": "-1"},
                   {"since": "2026-02-01", "until": "2026-01-01"}, {"subject": "abc"}):  # fmt: skip
        bad = viewer.get("/audit", params=params)
        assert bad.status_code == 400 and 'role="alert"' in bad.text, params
    for typed in ("not an address", "x" * 400 + "@example.com"):
        bad = viewer.post("/audit", {"subject": typed})
        assert bad.status_code == 400 and typed not in bad.text
        assert "The subject is an email address" in bad.text
    assert viewer.post("/audit", {"subject": ANN, "csrf": "forged"}).status_code == 403


def test_the_log_is_paged_a_hundred_at_a_time(console: Console) -> None:
    store = console.wiring.store()
    for n in range(130):
        audit.record(store, AuditEvent("cli", "test.filler", "ok", details={"n": n}))
    viewer = console.sign_in("vera", "viewer")
    first = viewer.get("/audit?action=test.filler")
    seqs = [int(s) for s in SEQ.findall(first.text)]
    assert len(seqs) == 100 and seqs[0] == 130 and seqs[-1] == 31
    older = re.search(r'href="/console/audit\?([^"]+)">Older events', first.text)
    assert older and older.group(1) == "action=test.filler&amp;before=31"
    second = viewer.get("/audit?action=test.filler&before=31")
    assert [int(s) for s in SEQ.findall(second.text)] == list(range(30, 0, -1))
    assert "Older events" not in second.text and "Newest events" in second.text


def test_verify_chain_says_intact_then_names_the_row_someone_edited(console: Console) -> None:
    erase(console, ANN)
    viewer = console.sign_in("vera", "viewer")
    events = len(list(audit.events(console.wiring.store())))
    intact = viewer.post("/audit/verify")
    assert intact.status_code == 200, intact.text
    assert f"Chain intact: {events} events." in intact.text
    assert "No signed checkpoint is configured" in intact.text
    (checked,) = [
        e for e in audit.events(console.wiring.store()) if e["action"] == "audit.verified"
    ]
    assert (checked["actor"], checked["outcome"]) == ("operator:vera", "intact")

    # Someone with write access to the database, but not the audit key, edits one row.
    database = console.wiring.settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:
        conn.execute("UPDATE audit_log SET outcome = 'skipped' WHERE seq = 2")
    tampered = viewer.post("/audit/verify")
    assert "Chain intact" not in tampered.text
    assert "The audit log was tampered with (the chain holds up to event 1):" in tampered.text
    assert "row 2 was edited: its content does not match its keyed hash" in tampered.text
