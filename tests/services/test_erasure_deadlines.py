"""Erasure requests over time: due dates in calendar months and their extensions (Art. 12(3)),
the daemon retrying a failed request with backoff until its due date and flagging it before,
re-planning what was never planned, and request ids named by a prefix; against both
emulators with the real clients, on a clock the test moves."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from bridge import audit
from bridge.adapters.base import Permanent
from bridge.errors import BridgeError, ConfigError
from bridge.services.erasure import COMPLETED, Escalation, standing
from bridge.store import erasure as rows
from bridge.store.db import Store
from tests.conftest import Crms
from tests.services.test_erasure import ANN, live_salesforce, seed_ann, service


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2027, 1, 31, 9, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def refusing_salesforce(crms: Crms) -> None:
    """Salesforce refuses the bridge's login (a password changed under it): every plan fails."""
    crms.salesforce.patch("/__emulator/settings", json={"strict_auth": True}).raise_for_status()
    crms.settings.salesforce.password = SecretStr("changed-meanwhile")


def accepting_salesforce(crms: Crms) -> None:
    crms.salesforce.patch("/__emulator/settings", json={"strict_auth": False}).raise_for_status()


def actions(store: Store, action: str) -> list[dict[str, Any]]:
    return [e for e in audit.events(store) if e["action"] == action]


def test_a_retried_request_whose_planning_never_finished_is_planned_then_completed(
    crms: Crms, store: Store
) -> None:
    seed_ann(crms)
    refusing_salesforce(crms)
    erasure = service(crms, store)
    request_id = erasure.submit([ANN], "delete", None, "cli")
    with pytest.raises(Permanent):
        erasure.run(request_id)
    view = erasure.view(request_id)
    assert (view["status"], view["systems"]) == ("failed", {})
    assert "INVALID_LOGIN" in view["problem"] and view["retry_at"] and view["failing_since"]
    assert [e["details"]["problem"] for e in actions(store, "erasure.failed")] == [view["problem"]]

    accepting_salesforce(crms)
    view = service(crms, store).retry(request_id)
    assert view["status"] == COMPLETED, view
    assert {"hubspot", "salesforce"} <= set(view["systems"])
    assert live_salesforce(crms, "Contact") == [] and live_salesforce(crms, "Lead") == []
    assert [e["actor"] for e in actions(store, "erasure.retried")] == ["cli"]
    assert audit.verify(store).ok


def test_asking_again_for_a_person_whose_request_failed_plans_and_runs_that_request(
    crms: Crms, store: Store
) -> None:
    seed_ann(crms)
    refusing_salesforce(crms)
    erasure = service(crms, store)
    request_id = erasure.submit([ANN], "delete", None, "cli")
    with pytest.raises(Permanent):
        erasure.run(request_id)
    accepting_salesforce(crms)
    again = service(crms, store)
    assert again.submit([ANN.upper()], "delete", None, "cli") == request_id
    view = again.run(request_id)
    assert view["status"] == COMPLETED and view["problem"] is None, view
    assert live_salesforce(crms, "Contact") == []
    request = rows.request(store, request_id)
    assert request is not None and request["emails_encrypted"] is None  # re-sealed, destroyed


ONE_DATABASE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@ONE_DATABASE
def test_the_daemon_retries_a_failed_request_with_growing_waits_until_its_due_date(
    crms: Crms, store: Store
) -> None:
    seed_ann(crms)
    refusing_salesforce(crms)
    clock = Clock()
    escalation = Escalation(
        retry_seconds=60, retry_max_seconds=86400, flag_after=timedelta(hours=2),
        flag_before_due=timedelta(days=7),
    )  # fmt: skip
    erasure = service(crms, store, escalation=escalation, clock=clock)
    request_id = erasure.submit([ANN], "delete", None, "cli")
    due = datetime.fromisoformat(erasure.view(request_id)["due_at"])
    assert due == datetime(2027, 2, 28, 9, 30, tzinfo=UTC)  # a calendar month, not 30 days
    stop = threading.Event()
    erasure.drain(stop)  # the first run: planning fails

    waits: list[float] = []
    tries = 0
    while (request := rows.request(store, request_id)) and request["retry_at"]:
        erasure.drain(stop)  # not due yet: nothing happens
        assert len(actions(store, "erasure.retried")) == tries
        failed_at = clock.now
        retry_at = datetime.fromisoformat(request["retry_at"])
        waits.append((retry_at - failed_at).total_seconds())
        clock.now = retry_at
        erasure.drain(stop)
        tries += 1
        assert len(actions(store, "erasure.retried")) == tries
    # Each wait within [1/2, 1] of 60 s doubled per failure, capped at a day; the last one
    # ends on the due date, and the failure there leaves the request to the operator.
    for failures, wait in enumerate(waits[:-1], 1):
        step = min(60 * 2 ** (failures - 1), 86400)
        assert step / 2 <= wait <= step, (failures, wait)
    assert clock.now == due and tries == len(waits)
    assert 28 <= tries <= 2 * 28 + 12  # daily at most, once the waits reach a day
    erasure.drain(stop)
    assert len(actions(store, "erasure.retried")) == tries
    view = erasure.view(request_id)
    assert (view["status"], view["overdue"], view["flagged"]) == ("failed", False, True)
    clock.advance(seconds=1)
    assert erasure.view(request_id)["overdue"]

    # Flagged once: after two hours of failing, whatever came after.
    [flagged] = actions(store, "erasure.flagged")
    assert flagged["details"] == {"status": "failed", "due": "2027-02-28", "failing": True}
    assert standing(store, escalation, clock.now) == {
        "open": 1, "failed": 1, "flagged": 1, "overdue": 1,
    }  # fmt: skip
    assert [v["id"] for v in erasure.requests(failed=True)] == [request_id]

    accepting_salesforce(crms)
    assert erasure.retry(request_id)["status"] == COMPLETED
    assert standing(store, escalation, clock.now) == dict.fromkeys(
        ("open", "failed", "flagged", "overdue"), 0
    )
    assert audit.verify(store).ok


@ONE_DATABASE
def test_a_request_near_its_due_date_is_flagged_once_until_extended(
    crms: Crms, store: Store
) -> None:
    clock = Clock()
    erasure = service(crms, store, clock=clock)
    request_id = erasure.submit([ANN], "delete", None, "cli")
    assert erasure.flag() == 0 and not erasure.view(request_id)["flagged"]
    clock.advance(days=21, seconds=1)  # due 28 February: within a week of it now
    assert erasure.flag() == 1 and erasure.flag() == 0
    assert erasure.view(request_id)["flagged"]
    assert [v["id"] for v in erasure.requests(failed=True)] == [request_id]
    assert len(actions(store, "erasure.flagged")) == 1
    # Extended, it is judged again against the new date: a month away, not flagged.
    assert not erasure.extend(request_id, 1, "complex request")["flagged"]
    assert erasure.flag() == 0 and erasure.requests(failed=True) == []


@ONE_DATABASE
def test_extensions_count_from_receipt_up_to_two_months_within_the_first_month(
    crms: Crms, store: Store
) -> None:
    clock = Clock()  # received on 31 January
    erasure = service(crms, store, clock=clock)
    request_id = erasure.submit([ANN], "delete", "ticket 4711", "cli")
    clock.advance(days=20)
    view = erasure.extend(request_id, 1, "complex: six systems to search")
    assert view["due_at"].startswith("2027-03-31")
    assert [e["months"] for e in view["extensions"]] == [1]
    with pytest.raises(BridgeError, match="2 further months at most"):
        erasure.extend(request_id, 2, "more")
    with pytest.raises(ConfigError, match="looks like an email address; it is kept in clear"):
        erasure.extend(request_id, 1, "asked by ann.erase@example.com")
    with pytest.raises(ConfigError, match="needs --reason"):
        erasure.extend(request_id, 1, " ")
    view = erasure.extend(request_id, 1, "many requests this month")
    assert view["due_at"].startswith("2027-04-30")  # from receipt: not 28 April
    [first, second] = actions(store, "erasure.extended")
    assert (first["reason"], second["details"]["total_months"]) == (
        "complex: six systems to search", 2,
    )  # fmt: skip

    clock.advance(days=40)  # 1 April: past the first due date, not the extended one
    assert not erasure.view(request_id)["overdue"] and erasure.requests(overdue=True) == []
    view = erasure.run(request_id)
    assert view["status"] == COMPLETED
    receipt = erasure.receipt(request_id)
    assert receipt["reason"] == "ticket 4711"
    assert [e["reason"] for e in receipt["extensions"]] == [
        "complex: six systems to search", "many requests this month",
    ]  # fmt: skip
    with pytest.raises(BridgeError, match="is completed: nothing to extend"):
        erasure.extend(request_id, 1, "late")

    late = erasure.submit(["someone.else@example.com"], "delete", None, "cli")
    clock.advance(days=32)
    with pytest.raises(BridgeError, match="within one month of receipt, by 2027-05-01"):
        erasure.extend(late, 1, "too late")


@ONE_DATABASE
def test_a_request_is_named_by_any_unique_prefix_of_eight_characters_or_more(
    crms: Crms, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = iter(
        uuid.UUID(hex)
        for hex in ("abcdef01" + "0" * 24, "abcdef01" + "f" * 24, "12345678" + "9" * 24)
    )
    monkeypatch.setattr(uuid, "uuid4", lambda: next(ids))
    erasure = service(crms, store)
    first, second, third = (
        erasure.submit([f"p{n}@example.com"], "delete", None, "cli") for n in range(3)
    )
    assert erasure.resolve(third) == third
    assert erasure.resolve("12345678") == third
    assert erasure.resolve(" ABCDEF010 ") == first
    assert erasure.resolve("abcdef01f") == second
    with pytest.raises(ConfigError, match="names several requests; give more"):
        erasure.resolve("abcdef01")
    for wrong in ("1234567", "p0@example.com", "12345678%"):
        with pytest.raises(ConfigError, match="first 8 or more"):
            erasure.resolve(wrong)
    with pytest.raises(BridgeError, match="no erasure request 99999999"):
        erasure.resolve("99999999")


def test_an_address_no_crm_holds_is_blocklisted_with_no_record_counted(
    crms: Crms, store: Store
) -> None:
    erasure = service(crms, store)
    view = erasure.run(erasure.submit(["nobody@example.com"], "delete", None, "cli"))
    assert view["status"] == COMPLETED
    assert view["systems"] == {"hubspot": {"steps": 1, "objects": {}, "addresses": {"erased": 1}}}


@ONE_DATABASE
def test_an_event_delivered_again_leaves_its_failed_request_to_the_daemon_s_retry(
    crms: Crms, store: Store
) -> None:
    """A vendor's deletion event made a request whose planning failed; the same event again
    must not run it unplanned (verified, failed, ``"systems": {}``): the daemon plans it."""
    seed_ann(crms)
    refusing_salesforce(crms)
    clock = Clock()
    erasure = service(crms, store, clock=clock)
    origin = "hubspot:privacy-deletion:42"
    request_id = erasure.submit([ANN], "delete", None, "hubspot", origin)
    with pytest.raises(Permanent):
        erasure.run(request_id, wait_seconds=0)
    accepting_salesforce(crms)
    assert erasure.submit([ANN], "delete", None, "hubspot", origin) == request_id
    view = erasure.run(request_id, wait_seconds=0)
    assert (view["status"], view["systems"]) == ("failed", {})
    assert actions(store, "erasure.verification_failed") == []

    clock.now = datetime.fromisoformat(view["retry_at"])
    assert erasure.drain(threading.Event()) == 1
    assert erasure.view(request_id)["status"] == COMPLETED
    assert live_salesforce(crms, "Contact") == []


@given(
    st.integers(1, 200),
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1)),
    st.floats(-1e7, 1e7),
)
def test_a_retry_backs_off_never_past_the_due_date_and_not_at_all_once_it_has_come(
    failures: int, now: datetime, until_due: float
) -> None:
    escalation = Escalation(retry_seconds=300, retry_max_seconds=6 * 3600)
    now = now.replace(tzinfo=UTC)
    due = now + timedelta(seconds=until_due)
    retry = escalation.retry_at(failures, now, due)
    if due <= now:
        assert retry is None
        return
    assert retry is not None and now < retry <= due
    step = min(300 * 2.0 ** (failures - 1), 6 * 3600)
    assert retry == due or step / 2 <= (retry - now).total_seconds() <= step
