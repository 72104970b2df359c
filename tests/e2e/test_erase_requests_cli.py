"""What `bridge erase` and `bridge requests` say and accept, as a user runs them against both
emulators: addresses checked before anything is stored, counts that read as counts, "nothing
held", receipts by id prefix in text and JSON with their reason, Art. 12(3) extensions, and a
request whose planning never finished planned when it is retried or asked for again."""

from __future__ import annotations

import json

import pytest

from tests.conftest import BridgeCli, Crms, said

ADA = "ada.lovelace@example.com"
BOB = "bob.babbage@example.com"
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def listed(cli: BridgeCli, *options: str) -> list[dict[str, object]]:
    result = cli("requests", *options, "--json")
    assert result.returncode == 0, result.stderr
    requests: list[dict[str, object]] = json.loads(result.stdout)["requests"]
    return requests


def vendor_calls(crms: Crms) -> int:
    return sum(
        admin.get("/__emulator/counters").json()["total"]
        for admin in (crms.hubspot, crms.salesforce)
    )


def test_a_malformed_address_or_a_personal_reason_is_refused_before_anything_is_stored(
    cli: BridgeCli, crms: Crms
) -> None:
    crms.seed_hubspot(email=ADA, firstname="Ada")
    (cli.cwd / "people.txt").write_text(f"{BOB}\n\nnot-an-address\n{ADA}\nada@example\n")
    before = vendor_calls(crms)
    for args, expected in (
        ((ADA, "ada lovelace"), "erase: not an email address: argument 2; nothing was stored"),
        (
            ("--from-file", "people.txt"),
            "erase: not an email address: people.txt lines 3, 5; nothing was stored",
        ),
        (
            (ADA, "--reason", f"asked by {BOB}"),
            "--reason holds what looks like an email address; it is kept in clear on the "
            "receipt and in the audit log, which hold no personal data",
        ),
        (
            (ADA, "--reason", "call +44 20 7946 0958"),
            "--reason holds what looks like a phone number",
        ),
        (("--from-file", "missing.txt"), "erase --from-file: no such file missing.txt"),
    ):
        result = cli("erase", *args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
        assert "lovelace" not in result.stderr and "babbage" not in result.stderr
    assert listed(cli) == []
    assert vendor_calls(crms) == before  # no CRM asked either
    assert crms.hubspot.get("/__emulator/state").json()["blocklist"] == []


def test_an_address_no_crm_holds_completes_as_nothing_held(cli: BridgeCli, crms: Crms) -> None:
    result = cli("erase", "nobody.here@example.com")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == ["  blocklisted in HubSpot, no record held"]

    salesforce_only = BridgeCli(
        cli.cwd, {k: v for k, v in cli.env.items() if not k.startswith("BRIDGE_HUBSPOT__")}
    )
    result = salesforce_only("erase", "nobody.else@example.com")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == ["  nothing held"]
    [request] = [r for r in listed(cli) if not r["systems"]]
    receipt = cli("erase", "--receipt", str(request["id"])[:8])
    assert receipt.returncode == 0, receipt.stderr
    assert "  nothing held\n" in receipt.stdout and "contact" not in receipt.stdout


def test_counts_read_as_counts_and_a_receipt_is_named_by_a_prefix_with_its_reason(
    cli: BridgeCli, crms: Crms
) -> None:
    crms.seed_hubspot(email=ADA, firstname="Ada")
    crms.seed_salesforce("Contact", LastName="Lovelace", Email=ADA)
    crms.seed_salesforce("Lead", LastName="Lovelace", Company="Analytical", Email=ADA.upper())
    crms.seed_salesforce("Lead", LastName="Lovelace", Company="Engines", Email=ADA)
    result = cli("erase", ADA, "--reason", "ticket 4711")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1:] == [
        "  HubSpot: 1 contact erased, 1 address blocklisted",
        "  Salesforce: 1 contact erased, 2 leads erased",
    ]
    request_id = lines[0].split()[1].rstrip(":")

    text = cli("erase", "--receipt", request_id[:8].upper())
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[0] == f"erasure request {request_id}: receipt"
    for line in (
        "  reason: ticket 4711",
        "  HubSpot: 1 contact erased, 1 address blocklisted",
        "  Salesforce: 1 contact erased, 2 leads erased",
        "  verified: 1 address searched again in every system, no record left",
    ):
        assert line in text.stdout.splitlines(), text.stdout
    document = json.loads(cli("erase", "--receipt", request_id[:12], "--json").stdout)
    assert (document["request_id"], document["reason"]) == (request_id, "ticket 4711")
    assert document["systems"]["hubspot"]["objects"] == {"contact": {"erased": 1}}

    for given, code, words in (
        (request_id[:7], 2, "a request id is its hex digits, or its first 8 or more of them"),
        ("ffffffffff", 1, "no erasure request ffffffffff"),
    ):
        refused = cli("erase", "--receipt", given)
        assert refused.returncode == code and words in refused.stderr, refused.stderr


def test_an_extension_is_recorded_audited_and_stated_on_the_receipt(
    cli: BridgeCli, crms: Crms
) -> None:
    crms.seed_hubspot(email=ADA, firstname="Ada")
    submitted = cli("erase", ADA, "--no-wait", "--json")
    assert submitted.returncode == 0, submitted.stderr
    [request] = json.loads(submitted.stdout)["requests"]
    request_id = request["id"]
    received = request["received_at"]

    extended = cli("requests", "--extend", request_id[:8], "--months", "1", "--reason", "backlog")
    assert extended.returncode == 0, extended.stderr
    assert "extended by 1 month)" in extended.stdout.splitlines()[0]
    for args, code, words in (
        (("--months", "2", "--reason", "more"), 1, "Art. 12(3) allows 2 further months at most"),
        (("--months", "1"), 2, "--extend needs --reason"),
        (("--months", "3", "--reason", "x"), 2, "less than or equal to 2"),
        (("--reason", "x"), 2, "give --months 1 or 2"),
    ):
        refused = cli("requests", "--extend", request_id, *args)
        assert refused.returncode == code and words in refused.stderr, refused.stderr
    [view] = listed(cli)
    months_later = int(received[5:7]) + 2
    year = int(received[:4]) + (months_later > 12)
    assert view["due_at"][:7] == f"{year}-{(months_later - 1) % 12 + 1:02d}"
    assert [e["reason"] for e in view["extensions"]] == ["backlog"]  # type: ignore[union-attr]

    assert cli("requests", "--retry", request_id[:10]).returncode == 0
    receipt = cli("erase", "--receipt", request_id[:8]).stdout
    assert f"extended by 1 month (Art. 12(3): 1 month on {received[:10]}: backlog)" in receipt
    events = json.loads(cli("audit", "--json").stdout)["events"]
    [event] = [e for e in events if e["action"] == "erasure.extended"]
    assert (event["reason"], event["details"]["months"]) == ("backlog", 1)
    assert cli("audit", "--verify").returncode == 0


def test_a_request_whose_planning_never_finished_is_planned_when_retried_or_asked_again(
    cli: BridgeCli, crms: Crms
) -> None:
    """Salesforce refuses the login mid-planning; the request must not end planned with no
    steps, failed with ``"systems": {}``, returned as such by every later erase."""
    for person in (ADA, BOB):
        crms.seed_hubspot(email=person, firstname="P")
        crms.seed_salesforce("Contact", LastName="P", Email=person)
    crms.salesforce.patch("/__emulator/settings", json={"strict_auth": True}).raise_for_status()
    wrong = {"BRIDGE_SALESFORCE__PASSWORD": "changed-meanwhile"}
    for person in (ADA, BOB):
        refused = cli("erase", person, **wrong)
        assert refused.returncode != 0, refused.stderr
        assert len(said(refused)) == 1
    failed = listed(cli, "--failed")
    assert [(r["status"], r["systems"]) for r in failed] == [("failed", {}), ("failed", {})]
    assert all("INVALID_LOGIN" in str(r["problem"]) for r in failed)
    text = cli("requests", "--failed").stdout
    assert "  problem: " in text and "  the daemon tries it again from " in text

    retried = cli("requests", "--retry", str(failed[0]["id"])[:8], "--json")
    assert retried.returncode == 0, retried.stderr
    [view] = json.loads(retried.stdout)["requests"]
    assert view["status"] == "completed"
    assert view["systems"]["salesforce"]["objects"] == {"contact": {"erased": 1}}

    again = cli("erase", BOB, "--json")  # asked again: the same request, planned this time
    assert again.returncode == 0, again.stderr
    [view] = json.loads(again.stdout)["requests"]
    assert (view["id"], view["status"]) == (failed[1]["id"], "completed")
    assert view["systems"]["salesforce"]["objects"] == {"contact": {"erased": 1}}
    contacts = crms.salesforce.get("/__emulator/records", params={"type": "Contact"}).json()
    assert contacts["records"] == []
    assert {r["status"] for r in listed(cli)} == {"completed"}
    assert cli("audit", "--verify").returncode == 0
