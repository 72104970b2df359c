"""The console's Requests and New request pages over HTTP, against both emulators: the list,
its filters and CSV, a request's page, the actions (retry, extend, cancel, reveal), and new
requests planned, then confirmed. No page a GET shows, nor the CSV, holds an address."""

from __future__ import annotations

import csv
import io
import json
import re

from bridge import audit
from bridge.identity import subject_ref
from bridge.store import erasure as rows
from tests.web.conftest import Console

ANN, BOB = "ann.request@example.com", "bob.request@example.org"
SEALED = re.compile(r'name="plan" value="([^"]+)"')


def _sealed(plan_page: str) -> str:
    """The plan the page's Confirm form carries."""
    found = SEALED.search(plan_page)
    assert found, plan_page
    return found.group(1)


def test_list_filters_csv_and_detail_hold_no_address(console: Console) -> None:
    console.crms.seed_people([ANN, BOB])
    erasure = console.wiring.erasure()
    by_cli = erasure.submit([ANN], "delete", "ticket 41", "cli")
    by_webhook = erasure.submit([BOB], "anonymize", None, "hubspot.privacy_deletion", "evt 1")
    assert erasure.run(by_cli)["status"] == "completed"
    viewer = console.sign_in("vera", "viewer")

    listed = viewer.get("/requests")
    assert listed.status_code == 200 and "<h1>Requests</h1>" in listed.text
    assert by_cli[:8] in listed.text and by_webhook[:8] in listed.text
    for query, shown in (
        ("kind=anonymize", by_webhook),
        ("origin=cli", by_cli),
        ("origin=webhook", by_webhook),
        ("status=completed", by_cli),
        ("due_within=40", by_webhook),  # due in a month; a completed request is due no more
    ):
        page = viewer.get(f"/requests?{query}")
        hidden = by_webhook if shown == by_cli else by_cli
        assert shown[:8] in page.text and hidden[:8] not in page.text, query
    assert "No request matches" in viewer.get("/requests?due_within=10").text

    exported = viewer.get("/requests.csv?origin=cli")
    assert exported.headers["content-disposition"].startswith("attachment;")
    [row] = list(csv.DictReader(io.StringIO(exported.text)))
    assert row["id"] == by_cli and row["kind"] == "delete" and row["status"] == "completed"
    assert row["origin"] == "cli" and row["extended"] == "0" and row["decided"]
    assert row["due"].startswith(erasure.view(by_cli)["due_at"][:10])

    detail = viewer.get(f"/requests/{by_cli[:10]}")
    assert detail.status_code == 200 and f"<h1>Request {by_cli[:8]}</h1>" in detail.text
    assert "Verified: " in detail.text and "erasure.completed" in detail.text
    assert "erased" in detail.text and "hubspot" in detail.text and "salesforce" in detail.text
    assert "Reveal addresses" not in detail.text  # a viewer, and a completed request
    receipt = viewer.get(f"/requests/{by_cli}/receipt")
    assert receipt.headers["content-disposition"].startswith("attachment;")
    assert receipt.json()["request_id"] == by_cli and receipt.json()["verification"]["ok"]
    assert viewer.get(f"/requests/{by_webhook}/receipt").status_code == 404

    everything = [listed, exported, detail, receipt, viewer.get("/requests.csv")]
    for reply in everything:
        for address in (ANN, BOB, "ann.request", "bob.request"):
            assert address not in reply.text


def test_garbage_filters_and_ids_are_refused_with_a_clear_page(console: Console) -> None:
    viewer = console.sign_in("vera", "viewer")
    for query, words in (
        ("status=<script>", "status must be one of"),
        ("kind=shred", "kind must be one of"),
        ("origin=mail", "origin must be one of"),
        ("due_within=-3", "due within must be a number of days"),
        ("due_within=²", "due within must be a number of days"),
    ):
        for path in ("/requests", "/requests.csv"):
            reply = viewer.get(f"{path}?{query}")
            assert reply.status_code == 400 and words in reply.text, (path, query)
            assert "<script>" not in reply.text
    for bad in ("nothex!!", "abc", "0" * 8, "f" * 100, "<b>12345678"):
        reply = viewer.get(f"/requests/{bad}")
        assert reply.status_code == 404 and "Request not found" in reply.text, bad
        assert viewer.get(f"/requests/{bad}/receipt").status_code == 404
    operator = console.sign_in("olive")
    operator.get("/requests")
    assert operator.post(f"/requests/{'a' * 8}/extend", {"months": "1"}).status_code == 404


def test_extend_shows_the_new_due_date_and_audits_the_operator(console: Console) -> None:
    erasure = console.wiring.erasure()
    request_id = erasure.submit([ANN], "delete", None, "cli")
    due = erasure.view(request_id)["due_at"]
    operator = console.sign_in("olive")
    operator.get(f"/requests/{request_id}")
    refused = operator.post(f"/requests/{request_id}/extend", {"months": "3", "reason": "x"})
    assert refused.status_code == 400 and "extend by 1 or 2 months" in refused.text
    unexplained = operator.post(f"/requests/{request_id}/extend", {"months": "1"})
    assert unexplained.status_code == 400 and "reasons for the delay" in unexplained.text

    extended = operator.post(
        f"/requests/{request_id}/extend", {"months": "1", "reason": "<b>six systems</b>"}
    )
    assert extended.status_code == 303
    page = operator.get(extended.headers["location"].removeprefix("/console"))
    view = erasure.view(request_id)
    assert view["due_at"] > due and view["due_at"][:10] in page.text
    assert "The deadline is extended." in page.text
    assert "&lt;b&gt;six systems&lt;/b&gt;" in page.text and "<b>six" not in page.text
    [event] = [e for e in erasure.trail(request_id) if e["action"] == "erasure.extended"]
    assert event["actor"] == "operator:olive" and event["details"]["months"] == 1
    listed = list(csv.DictReader(io.StringIO(operator.get("/requests.csv").text)))
    assert [(r["extended"], r["operator"]) for r in listed] == [("1", "olive")]

    too_far = operator.post(f"/requests/{request_id}/extend", {"months": "2", "reason": "more"})
    assert too_far.status_code == 409 and "2 further months at most" in too_far.text


def test_cancel_destroys_the_addresses_and_refuses_a_started_request(console: Console) -> None:
    console.crms.seed_people([ANN, BOB])
    erasure = console.wiring.erasure()
    planned = erasure.submit([ANN], "delete", None, "cli")
    erasure.plan([planned])
    completed = erasure.submit([BOB], "delete", None, "cli")
    erasure.run(completed)
    operator = console.sign_in("olive")
    page = operator.get(f"/requests/{planned}")
    assert "Cancel request" in page.text and "Reveal addresses" in page.text
    assert operator.post(f"/requests/{planned}/cancel", {"reason": " "}).status_code == 400

    cancelled = operator.post(f"/requests/{planned}/cancel", {"reason": "sent by mistake"})
    assert cancelled.status_code == 303
    row = rows.request(erasure.store, planned)
    assert row is not None and row["status"] == "cancelled"
    assert row["emails_encrypted"] is None and row["emails_wrapped_key"] is None
    assert {s["status"] for s in erasure.steps(planned)} == {"cancelled"}
    [event] = [e for e in erasure.trail(planned) if e["action"] == "erasure.cancelled"]
    assert event["actor"] == "operator:olive" and event["reason"] == "sent by mistake"
    none_left = operator.post(f"/requests/{planned}/reveal")
    assert none_left.status_code == 409 and "there is none to reveal" in none_left.text
    assert erasure.submit([ANN], "delete", None, "cli") != planned  # asked anew: a new one

    refused = operator.post(f"/requests/{completed}/cancel", {"reason": "too late"})
    assert refused.status_code == 409 and "only a request with no step" in refused.text
    assert erasure.view(completed)["status"] == "completed"


def test_reveal_shows_the_addresses_only_in_its_answer_and_is_audited(console: Console) -> None:
    erasure = console.wiring.erasure()
    request_id = erasure.submit([ANN], "delete", None, "cli")
    operator = console.sign_in("olive")
    assert ANN not in operator.get(f"/requests/{request_id}").text
    revealed = operator.post(f"/requests/{request_id}/reveal")
    assert revealed.status_code == 200 and ANN in revealed.text
    assert 'hx-history="false"' in revealed.text  # never kept in htmx's history cache
    assert ANN not in operator.get(f"/requests/{request_id}").text
    [event] = [e for e in erasure.trail(request_id) if e["action"] == "erasure.revealed"]
    assert event["actor"] == "operator:olive"


def test_retry_plans_again_as_the_operator(console: Console) -> None:
    console.crms.seed_people([ANN])
    erasure = console.wiring.erasure()
    request_id = erasure.submit([ANN], "delete", None, "cli")
    operator = console.sign_in("olive")
    operator.get(f"/requests/{request_id}")
    retried = operator.post(f"/requests/{request_id}/retry")
    assert retried.status_code == 303
    assert erasure.view(request_id)["status"] == "planned"
    steps = erasure.steps(request_id)
    assert steps and {s["status"] for s in steps} == {"pending"}  # the daemon runs them
    [event] = [e for e in erasure.trail(request_id) if e["action"] == "erasure.retried"]
    assert event["actor"] == "operator:olive"
    erasure.run(request_id)
    done = operator.post(f"/requests/{request_id}/retry")
    assert done.status_code == 409 and "nothing to retry" in done.text


def test_a_new_erasure_is_planned_then_confirmed_as_the_operator(console: Console) -> None:
    hubspot_id = console.crms.seed_hubspot(email=ANN, firstname="Ann")
    salesforce_id = console.crms.seed_salesforce("Contact", LastName="Ann", Email=ANN)
    operator = console.sign_in("olive")
    form = operator.get("/requests/new")
    assert form.status_code == 200 and "<h1>New request</h1>" in form.text

    bad = operator.post(
        "/requests/new/plan", {"addresses": f"{ANN}\n\nann at home <x>\n", "action": "erase"}
    )
    assert bad.status_code == 400 and "not an email address: line 3" in bad.text
    assert "ann at home" not in bad.text and ANN not in bad.text
    refused = operator.post("/requests/new/plan", {"addresses": ANN, "reason": ANN})
    assert refused.status_code == 400 and "looks like an email address" in refused.text

    asked = {"addresses": f" {ANN.upper()} \n", "action": "erase", "mode": "delete",
             "reason": "ticket 7"}  # fmt: skip
    plan = operator.post("/requests/new/plan", asked)
    assert plan.status_code == 200 and "Confirm" in plan.text
    assert "a***@e***.com" in plan.text and hubspot_id in plan.text and salesforce_id in plan.text
    assert console.wiring.erasure().summaries() == []  # a dry run stores nothing
    assert ANN not in plan.text.lower()  # Confirm carries them sealed, for this session only
    other = console.sign_in("otto")
    assert other.post("/requests/new", {"plan": _sealed(plan.text)}).status_code == 400
    assert console.wiring.erasure().summaries() == []

    confirmed = operator.post("/requests/new", {"plan": _sealed(plan.text)})
    assert confirmed.status_code == 303
    [request] = console.wiring.erasure().summaries()
    assert confirmed.headers["location"] == f"/console/requests/{request['id']}?done=created"
    assert request["trigger"] == "operator:olive" and request["status"] == "planned"
    assert request["reason"] == "ticket 7"
    page = operator.get(f"/requests/{request['id']}?done=created")
    assert "stored and planned" in page.text and hubspot_id in page.text
    assert "console" in operator.get("/requests?origin=console").text


def test_an_export_downloads_the_persons_data_and_is_audited(console: Console) -> None:
    console.crms.seed_people([ANN], name="Annabel")
    operator = console.sign_in("olive")
    operator.get("/requests/new")
    asked = {"addresses": ANN, "action": "export", "mode": "delete", "reason": ""}
    plan = operator.post("/requests/new/plan", asked)
    assert plan.status_code == 200 and "a***@e***.com" in plan.text
    exported = operator.post("/requests/new", {"plan": _sealed(plan.text)})
    assert exported.status_code == 200
    assert exported.headers["content-disposition"].startswith("attachment;")
    [document] = exported.json()["exports"]
    assert document["emails"] == [ANN] and "Annabel" in json.dumps(document["systems"])
    ref = subject_ref(console.wiring.settings.require_pseudonym_key(), ANN)
    [event] = [e for e in audit.events(console.wiring.store(), ref) if e["action"] == "export"]
    assert event["actor"] == "operator:olive"


def test_a_viewer_is_refused_every_action(console: Console) -> None:
    request_id = console.wiring.erasure().submit([ANN], "delete", None, "cli")
    viewer = console.sign_in("vera", "viewer")
    page = viewer.get(f"/requests/{request_id}")
    assert page.status_code == 200 and "Retry" not in page.text
    assert viewer.get("/requests/new").status_code == 403
    for action, form in (
        ("retry", {}),
        ("extend", {"months": "1", "reason": "x"}),
        ("cancel", {"reason": "x"}),
        ("reveal", {}),
    ):
        assert viewer.post(f"/requests/{request_id}/{action}", form).status_code == 403, action
    asked = {"addresses": ANN, "action": "erase", "mode": "delete", "reason": ""}
    for path in ("/requests/new/plan", "/requests/new"):
        assert viewer.post(path, asked).status_code == 403, path
    view = console.wiring.erasure().view(request_id)
    assert view["status"] == "received" and not view["extensions"]
