"""The Re-appeared page over HTTP: an erased person typed into HubSpot again is found by
"Scan now" and erased again by "Re-erase", the request naming the operator."""

from __future__ import annotations

import re

from bridge import audit
from bridge.identity import subject_ref
from bridge.store import erasure as erasure_rows
from bridge.store.records import all_reappearances
from tests.conftest import PSEUDONYM_KEY
from tests.web.conftest import Console

BACK = "bob.back@example.com"
REERASE = re.compile(r"/reappeared/(\d+)/reerase")


def hubspot_emails(console: Console) -> list[str]:
    contacts = console.crms.hubspot.get("/__emulator/state").json()["contacts"]
    return [c["properties"].get("email") for c in contacts]


def test_an_erased_person_who_comes_back_is_listed_and_erased_again_by_an_operator(
    console: Console,
) -> None:
    console.crms.seed_people([BACK])
    erasure = console.wiring.erasure()
    assert erasure.run(erasure.submit([BACK], "delete", None, "cli"))["status"] == "completed"
    console.crms.seed_hubspot(email=BACK, firstname="Bob")  # typed in again by a rep
    viewer, olga = console.sign_in("vera", "viewer"), console.sign_in("olga")
    assert "No erased person has re-appeared" in viewer.get("/reappeared").text
    # (These settings hold no retention rule: the Retention page says so, and lists no one.)
    assert "No retention rules are configured" in viewer.get("/retention").text
    assert viewer.post("/reappeared/scan").status_code == 403

    scanned = olga.post("/reappeared/scan")
    assert scanned.status_code == 303, scanned.text
    page = olga.get(scanned.headers["location"].removeprefix("/console"))
    assert "Scan done" in page.text and "1 new re-appearance found." in page.text
    (row,) = all_reappearances(console.wiring.store())
    assert row["subject_ref"] == subject_ref(PSEUDONYM_KEY.encode(), BACK)
    assert f"{row['subject_ref'][:12]}…" in page.text and row["record_id"] in page.text
    assert BACK not in page.text
    assert REERASE.findall(page.text) == [str(row["id"])]
    assert "Re-erase" not in viewer.get("/reappeared").text
    assert viewer.post(f"/reappeared/{row['id']}/reerase").status_code == 403

    again = olga.post(f"/reappeared/{row['id']}/reerase")
    assert again.status_code == 303, again.text
    assert again.headers["location"] == "/console/reappeared?done=reerased"
    assert BACK not in hubspot_emails(console)
    (row,) = all_reappearances(console.wiring.store())
    request = erasure_rows.request(console.wiring.store(), row["request_id"])
    assert request is not None
    assert (request["trigger"], request["status"]) == ("operator:olga", "completed")
    page = olga.get("/reappeared?done=reerased")
    assert f'href="/console/requests/{row["request_id"]}"' in page.text
    assert "Re-erase" not in page.text
    (requested,) = [
        e for e in audit.events(console.wiring.store(), row["subject_ref"])
        if e["action"] == "erasure.requested" and e["actor"] == "operator:olga"
    ]  # fmt: skip
    assert requested["details"]["origin"].startswith("reappeared hubspot/contact/")
    scans = [e for e in audit.events(console.wiring.store()) if e["actor"] == "operator:olga"]
    assert ("erasure.reappeared_scan", {"flagged": 1}) in [
        (e["action"], e["details"]) for e in scans
    ]

    # Asked twice (a second tab): it says so and does nothing more.
    twice = olga.post(f"/reappeared/{row['id']}/reerase")
    assert twice.headers["location"] == "/console/reappeared?done=already"
    # Garbage ids answer 4xx on the page.
    assert olga.post("/reappeared/x1/reerase").status_code == 404
    missing = olga.post("/reappeared/999999/reerase")
    assert missing.status_code == 409 and "There is no re-appearance 999999." in missing.text
