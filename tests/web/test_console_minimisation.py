"""The Minimisation page over HTTP: the fields each emulated CRM fills, those outside the
allow-list first and flagged, and no value anywhere on the page."""

from __future__ import annotations

import re

from tests.web.conftest import Console

GRACE = "grace.minimise@example.com"
VALUES = (
    GRACE,
    "Grace",
    "Hopper",
    "Lovelace",
    "https://grace-hopper.example",
    "hospital",
    "divorce",
)
ROW = re.compile(
    r"<tr>\s*<td><code>(\w+)</code></td>.*?<td>(yes|<strong class=\"bad\">no</strong>)</td>", re.S
)


def test_fields_outside_the_allow_list_come_first_and_no_value_is_shown(console: Console) -> None:
    crms = console.crms
    crms.seed_hubspot(
        email=GRACE, firstname="Grace", lastname="Hopper",
        properties={"website": "https://grace-hopper.example", "message": "my hospital visit"},
    )  # fmt: skip
    crms.seed_salesforce("Lead", LastName="Lovelace", Company="Acme", Email=GRACE,
                         Description="spoke about her divorce")  # fmt: skip
    page = console.sign_in("vera", "viewer").get("/minimisation")
    assert page.status_code == 200, page.text
    html = page.text
    assert "<h1>Minimisation</h1>" in html
    assert not [value for value in VALUES if value.lower() in html.lower()]
    assert "fields outside the allow-list hold data" in html
    hubspot = html[html.index("<h2>HubSpot contact: 1 record</h2>") :].split("<h2>")[1]
    rows = [(name, allowed == "yes") for name, allowed in ROW.findall(hubspot)]
    assert ("website", False) in rows and ("message", False) in rows
    assert ("email", True) in rows and ("firstname", True) in rows
    allowed = [ok for _, ok in rows]
    assert allowed == sorted(allowed)  # every field outside the list before any on it
    lead = html[html.index("<h2>Salesforce Lead: 1 record</h2>") :].split("<h2>")[1]
    assert ("Description", False) in [(n, a == "yes") for n, a in ROW.findall(lead)]
