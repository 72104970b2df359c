"""Erasure run by several instances at once (the daemon on several hosts): every step runs on
one of them, a request completes once, and a request completed by one is never reopened by
another that planned or looked at it a moment earlier."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge import audit
from bridge.adapters.base import ErasureMode, ErasureTarget
from bridge.adapters.hubspot import HUBSPOT
from bridge.adapters.salesforce import SALESFORCE
from bridge.services.erasure import COMPLETED, PLANNED, Erasure
from bridge.store import erasure as rows
from bridge.store.db import Store
from tests.conftest import Crms
from tests.services.test_erasure import ANN, seed_ann, service

GDPR_DELETE = "POST /crm/v3/objects/contacts/gdpr-delete"
SF_DELETE = "DELETE /services/data/v{version}/composite/sobjects"


class Hooked:
    """An adapter whose ``method`` first calls ``hook`` (once, when ``when()`` holds): another
    instance acting at exactly that moment of this one's work."""

    def __init__(
        self,
        inner: Any,
        method: str,
        hook: Callable[[], object],
        when: Callable[[], bool] = lambda: True,
    ) -> None:
        self._inner, self._method, self._hook, self._when = inner, method, hook, when
        self.fired = False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name != self._method:
            return attribute

        def hooked(*args: Any, **kwargs: Any) -> Any:
            if not self.fired and self._when():
                self.fired = True
                self._hook()
            return attribute(*args, **kwargs)

        return hooked


# The interleavings below are forced by hooks, one thread: the database makes no difference,
# so they run on SQLite only; the free-running drain test runs on both.
ONE_DATABASE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def completions(store: Store, request_id: str) -> int:
    return sum(
        e["action"] == "erasure.completed" and e["reason"] == f"request {request_id}"
        for e in audit.events(store)
    )


def assert_completed_once(store: Store, request_id: str) -> None:
    request = rows.request(store, request_id)
    assert request is not None and request["status"] == COMPLETED
    assert request["emails_encrypted"] is None  # destroyed, not re-sealed
    assert completions(store, request_id) == 1
    assert [s for s in rows.steps(store, request_id) if s["status"] != "done"] == []
    assert audit.verify(store).ok


@ONE_DATABASE
def test_two_instances_finishing_one_request_complete_it_once(crms: Crms, store: Store) -> None:
    seed_ann(crms)
    first = service(crms, store)
    request_id = first.submit([ANN], "delete", None, "cli")

    def all_steps_done() -> bool:
        steps = rows.steps(store, request_id)
        return bool(steps) and all(s["status"] == "done" for s in steps)

    second = service(crms, store)
    # While the second verifies (its last stage before completing), the first completes.
    hook = Hooked(
        second.adapters[HUBSPOT],
        "find_by_emails",
        lambda: first.run(request_id),
        when=all_steps_done,
    )
    second.adapters[HUBSPOT] = hook
    view = second.run(request_id)

    assert hook.fired
    assert view["status"] == COMPLETED
    assert_completed_once(store, request_id)


@ONE_DATABASE
def test_a_plan_racing_a_completion_leaves_the_request_completed(crms: Crms, store: Store) -> None:
    seed_ann(crms)
    first = service(crms, store)
    request_id = first.submit([ANN], "delete", None, "cli")
    second = service(crms, store)
    # The second instance plans; while it searches, the first runs the whole request.
    hook = Hooked(second.adapters[SALESFORCE], "erasure_targets", lambda: first.run(request_id))
    second.adapters[SALESFORCE] = hook
    view = second.run(request_id)

    assert hook.fired
    assert view["status"] == COMPLETED
    assert_completed_once(store, request_id)


@ONE_DATABASE
def test_a_stopped_run_finishes_the_batch_under_way_and_starts_no_other(
    crms: Crms, store: Store
) -> None:
    seed_ann(crms)
    erasure = service(crms, store)
    request_id = erasure.submit([ANN], "delete", None, "cli")
    erasure.plan([request_id])
    stop = threading.Event()
    hubspot = erasure.adapters[HUBSPOT]
    hubspot.erase_batch = 1  # type: ignore[misc]  # one HubSpot step per batch
    erasure.adapters[HUBSPOT] = Hooked(hubspot, "erase", stop.set)  # SIGTERM, mid-batch
    crms.hubspot.delete("/__emulator/counters").raise_for_status()

    view = erasure.run(request_id, stop=stop)
    assert view["status"] == PLANNED  # open: the daemon's next run carries on
    steps = rows.steps(store, request_id)
    hubspot_steps = [s for s in steps if s["system"] == HUBSPOT]
    assert [s["status"] for s in hubspot_steps[:1]] == ["done"]  # the batch under way finished
    unstarted = hubspot_steps[1:]
    assert unstarted and {(s["status"], s["attempts"], s["available_at"]) for s in unstarted} == {
        ("pending", 0, None)
    }  # never claimed: no batch starts once stopping
    assert {s["status"] for s in steps if s["system"] == SALESFORCE} == {"done"}  # side by side

    erasure.adapters[HUBSPOT] = hubspot
    assert erasure.run(request_id)["status"] == COMPLETED
    calls = crms.hubspot.get("/__emulator/counters").json()["calls"]
    assert calls[GDPR_DELETE] == len(hubspot_steps)  # no step ran twice
    assert_completed_once(store, request_id)


@ONE_DATABASE
def test_an_instance_that_saw_steps_pending_never_reopens_a_completed_request(
    crms: Crms, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_ann(crms)
    first = service(crms, store)
    request_id = first.submit([ANN], "delete", None, "cli")
    first.plan([request_id])
    now = datetime.now(UTC)
    lease = (now + timedelta(seconds=30)).isoformat()
    for system in (HUBSPOT, SALESFORCE):  # held elsewhere
        assert rows.claim_steps(store, [request_id], system, now.isoformat(), lease, 50)
    # An instance whose clock is past those leases (as if they had expired) will complete it.
    later = service(crms, store, clock=lambda: datetime.now(UTC) + timedelta(hours=1))
    real_open_steps = rows.open_steps

    def open_steps_then_completed_elsewhere(
        store_: Store, requests: list[str]
    ) -> dict[str, list[str | None]]:
        """The second instance sees the steps pending (claimed elsewhere); right then the
        holder completes the request."""
        seen = real_open_steps(store_, requests)
        monkeypatch.setattr(rows, "open_steps", real_open_steps)
        assert later.run(request_id)["status"] == COMPLETED
        return seen

    monkeypatch.setattr(rows, "open_steps", open_steps_then_completed_elsewhere)
    view = service(crms, store).run(request_id, wait_seconds=0)

    assert rows.open_steps is real_open_steps  # the race happened
    assert view["status"] == COMPLETED  # not set back to planned by the instance that looked
    assert_completed_once(store, request_id)


@ONE_DATABASE
def test_an_instance_whose_lease_ran_out_starts_none_of_the_steps_taken_over(
    crms: Crms, store: Store
) -> None:
    seed_ann(crms)
    slow = service(crms, store)
    request_id = slow.submit([ANN], "delete", None, "cli")
    slow.plan([request_id])
    # An instance whose clock is past the slow one's leases takes every step over while the
    # slow one is inside its first HubSpot batch (of one step), and runs the request to the end.
    later = service(crms, store, clock=lambda: datetime.now(UTC) + timedelta(hours=1))
    hubspot = slow.adapters[HUBSPOT]
    hubspot.erase_batch = 1  # type: ignore[misc]
    sent: list[int] = []
    erase = hubspot.erase

    def counted(targets: Sequence[ErasureTarget], mode: ErasureMode) -> Any:
        sent.append(len(targets))
        return erase(targets, mode)

    hubspot.erase = counted  # type: ignore[method-assign]
    slow.adapters[HUBSPOT] = Hooked(hubspot, "erase", lambda: later.run(request_id))

    assert slow.run(request_id)["status"] == COMPLETED

    steps = rows.steps(store, request_id)
    # Every step was claimed by the later one: the slow one's claims (its first HubSpot
    # batch, every Salesforce step) a second time.
    first, *rest = [s["attempts"] for s in steps if s["system"] == HUBSPOT]
    assert (first, set(rest)) == (2, {1})
    assert {s["attempts"] for s in steps if s["system"] == SALESFORCE} == {2}
    # The batch under way when its lease was lost ran again (nothing can stop a call in
    # flight; erasing twice is harmless), but only the later instance settled and audited it,
    # and the slow one started no other HubSpot batch.
    assert sent == [1]
    step_events = [e for e in audit.events(store) if e["action"] == "erasure.step"]
    assert len(step_events) == len(steps)
    assert_completed_once(store, request_id)


PEOPLE = [f"drain{n:02d}@example.com" for n in range(6)]


def test_instances_draining_side_by_side_run_each_step_once(crms: Crms, store: Store) -> None:
    crms.seed_people(PEOPLE, name="D")
    instances = [service(crms, store) for _ in range(3)]
    request_ids = []
    for email in PEOPLE:
        request_id = instances[0].submit([email], "delete", None, "cli")
        instances[0].plan([request_id])
        request_ids.append(request_id)
    for admin in (crms.hubspot, crms.salesforce):
        admin.delete("/__emulator/counters").raise_for_status()
        faults = {"latency_ms": 40, "endpoints": [GDPR_DELETE, SF_DELETE.replace("{version}", "*")]}
        admin.put("/__emulator/faults", json=faults).raise_for_status()

    stop = threading.Event()

    def drain(erasure: Erasure) -> None:
        while not stop.is_set() and erasure.drain(stop) < len(PEOPLE):
            if not rows.requests(store, ["received", "planned"]):
                return

    threads = [threading.Thread(target=drain, args=(e,)) for e in instances]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0))
    stop.set()
    assert not any(t.is_alive() for t in threads), "drains did not finish in 60 s"

    for request_id in request_ids:
        assert_completed_once(store, request_id)
    steps = [s for r in request_ids for s in rows.steps(store, r)]
    assert {s["attempts"] for s in steps} == {1}  # each step claimed once, by one instance
    by_system = Counter(s["system"] for s in steps)
    hubspot = crms.hubspot.get("/__emulator/counters").json()["calls"]
    salesforce = crms.salesforce.get("/__emulator/counters").json()["calls"]
    assert by_system["hubspot"] == 2 * len(PEOPLE)  # contact, address
    # A contact's address is blocklisted by the contact's gdpr-delete in the same batch.
    assert hubspot[GDPR_DELETE] == len(PEOPLE)
    assert by_system["salesforce"] == len(PEOPLE)
    assert salesforce[SF_DELETE] == 1  # one batch of them all, by the instance that claimed it
