"""One unstorable event never fails its neighbours: refused with a 400 before the group
commit, and, should the database still refuse a row, its request alone answers for it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bridge.runtime.receiver import GroupCommit, Refused
from bridge.sealing import Sealed
from bridge.store import inbox
from bridge.store.db import Store
from tests.runtime.conftest import UNSTORABLE, Receiver, hubspot_event, send_together

INNOCENT = 60


def _innocent_and_bad(receiver: Receiver) -> None:
    """60 innocent requests and every unstorable one, released together: each innocent one
    acknowledged and stored, each bad one a 400 with nothing of it stored, never a 503."""
    innocent = [[hubspot_event(n)] for n in range(INNOCENT)]
    bad = list(UNSTORABLE.values())
    responses = send_together(receiver.post_hubspot, innocent + bad)
    statuses = [response.status_code for response in responses]
    assert statuses == [200] * INNOCENT + [400] * len(bad), statuses
    assert {r.json()["error"] for r in responses[INNOCENT:]} == {"unstorable_event"}
    stored = {row["object_id"] for row in receiver.rows()}
    assert stored == {str(event["objectId"]) for [event] in innocent}


def test_unstorable_events_are_400_and_their_neighbours_commit(receiver: Receiver) -> None:
    _innocent_and_bad(receiver)
    text = receiver.http.get(f"{receiver.url}/metrics").text
    assert (
        'bridge_webhook_events_total{outcome="rejected",reason="unstorable_event",'
        'source="hubspot"}' in text
    )


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_row_only_the_database_refuses_fails_its_own_request_alone(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validation off: PostgreSQL itself refuses the bad rows, in the same group commit as the
    innocent ones, and the isolation gives each request its own answer."""
    monkeypatch.setattr(inbox, "unstorable", lambda _row: None)
    _innocent_and_bad(receiver)


def _row(n: int, **change: Any) -> dict[str, Any]:
    return {
        "source": "hubspot", "event_key": f"key-{n}", "event_type": "contact.creation",
        "kind": "other", "received_at": "2026-01-01T00:00:00.000000+00:00",
        "payload": Sealed(b"", b""),
    } | change  # fmt: skip


def test_group_commit_isolates_the_requests_the_database_refuses(store: Store) -> None:
    """All requests queued before the first commit, so they share it: the good ones commit,
    each refused one gets :class:`Refused` (never the storage error every request shares)."""
    refused_rows = [
        [_row(100, kind=None)],  # NOT NULL, on both databases
        [_row(101, event_type="contact.\ud800")],  # a lone surrogate: not text in UTF-8
        [_row(102), _row(103, kind=None)],  # the good row of a refused request is not stored
    ]
    if not store.is_sqlite:
        refused_rows.append([_row(104, object_id="1" * 101)])
    good = [[_row(n)] for n in range(20)] + [[_row(0)]]  # the last one a duplicate

    async def commit_all() -> list[list[bool] | BaseException]:
        commit = GroupCommit(store)
        return await asyncio.gather(
            *(commit.add(rows) for rows in good + refused_rows), return_exceptions=True
        )

    outcomes = asyncio.run(commit_all())
    assert outcomes[: len(good)] == [[True]] * 20 + [[False]]
    assert all(isinstance(outcome, Refused) for outcome in outcomes[len(good) :]), outcomes
    assert {row["event_key"] for row in inbox.all_rows(store)} == {f"key-{n}" for n in range(20)}
