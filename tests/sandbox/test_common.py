"""The emulators' shared machinery: counters by route, and faults a real client can feel."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from bridge_sandbox.emulators.common import EmulatorControl, install, serve_in_thread


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    app = FastAPI()

    @app.get("/things/{thing_id}")
    def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    def respond(kind: str, status: int) -> JSONResponse:
        return JSONResponse({"kind": kind}, status_code=status)

    with (
        serve_in_thread(install(app, EmulatorControl(), respond)) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        yield http


def test_calls_are_counted_by_route_not_by_id(client: httpx.Client) -> None:
    for n in range(3):
        assert client.get(f"/things/{n}").json() == {"id": str(n)}
    counters = client.get("/__emulator/counters").json()
    assert counters["calls"] == {"GET /things/{thing_id}": 3}
    assert client.delete("/__emulator/counters").status_code == 204
    assert client.get("/__emulator/counters").json()["total"] == 0


def test_rate_limit_bursts_hit_the_next_matching_calls(client: httpx.Client) -> None:
    client.put("/__emulator/faults", json={"burst_429": 2, "endpoints": ["GET /things/*"]})
    statuses = [client.get("/things/1").status_code for _ in range(3)]
    assert statuses == [429, 429, 200]
    assert client.get("/__emulator/counters").json()["injected"] == {"rate_limit": 2}


def test_error_rate_and_dropped_connections_are_real(client: httpx.Client) -> None:
    client.put("/__emulator/faults", json={"error_rate": 1.0, "error_status": 502})
    failed = client.get("/things/1")
    assert (failed.status_code, failed.json()) == (502, {"kind": "error"})
    client.put("/__emulator/faults", json={"drop_rate": 1.0})
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/things/1")
    assert client.delete("/__emulator/faults").status_code == 204
    assert client.get("/things/1").status_code == 200


def test_seeded_fault_mix_is_reproducible(client: httpx.Client) -> None:
    def run() -> list[int]:
        client.put("/__emulator/faults", json={"error_rate": 0.5, "seed": 7})
        return [client.get("/things/1").status_code for _ in range(20)]

    first = run()
    assert first == run()
    assert set(first) == {200, 503}
