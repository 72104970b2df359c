"""What each adapter says of its vendor's API limits (``allowances``): after a call, exactly
what the emulator's headers reported (``X-HubSpot-RateLimit-*``, ``Sforce-Limit-Info``), the
emulator's own counters agreeing; asking costs no call."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import httpx
import pytest
from pydantic import SecretStr

from bridge.adapters.base import Allowance, AllowanceReporter, Permanent
from bridge.adapters.hubspot.adapter import HubSpotAdapter
from bridge.adapters.hubspot.settings import HubSpotSettings
from bridge.adapters.salesforce.adapter import SalesforceAdapter
from bridge.adapters.salesforce.settings import SalesforceSettings
from bridge.model import Purpose
from bridge_sandbox.emulators.common import RunningServer, serve_in_thread
from bridge_sandbox.emulators.hubspot import HubSpotEmulatorConfig, RateLimits
from bridge_sandbox.emulators.hubspot import create_app as hubspot_emulator
from bridge_sandbox.emulators.salesforce import create_app as salesforce_emulator

PURPOSES = (Purpose(id="marketing", hubspot_subscription_id="1"),)
SEARCH = "POST /crm/v3/objects/contacts/search"  # search has a window of its own, no headers
# A burst and a day of the emulator's own, so that the numbers read back are HubSpot's, not
# the published limits the adapter starts from (100 per 10 s).
LIMITS = RateLimits(burst_max=40, burst_interval_ms=10_000, daily_max=1_000)


@pytest.fixture(scope="module")
def hubspot() -> Iterator[RunningServer]:
    with serve_in_thread(hubspot_emulator(HubSpotEmulatorConfig(rate_limits=LIMITS))) as server:
        yield server


@pytest.fixture(scope="module")
def salesforce() -> Iterator[RunningServer]:
    with serve_in_thread(salesforce_emulator()) as server:
        yield server


def calls(admin: httpx.Client) -> dict[str, int]:
    """The vendor calls the emulator has answered, by route."""
    found: dict[str, int] = admin.get("/__emulator/counters").json()["calls"]
    return found


def test_hubspot_reports_the_burst_window_and_the_day_as_its_headers_said(
    hubspot: RunningServer,
) -> None:
    token = f"allowances-{uuid4().hex}"  # an app of its own: a fresh window in this process
    with (
        httpx.Client(base_url=hubspot.url, timeout=10) as admin,
        httpx.Client(base_url=hubspot.url, headers={"Authorization": f"Bearer {token}"}) as app,
    ):
        admin.post("/__emulator/reset").raise_for_status()
        admin.delete("/__emulator/counters").raise_for_status()
        contacts = [{"email": f"p{i}@example.com", "firstname": "P"} for i in range(3)]
        admin.post("/__emulator/seed", json={"contacts": contacts}).raise_for_status()
        # Another integration of the same app spends calls this adapter never makes.
        for _ in range(7):
            app.get("/crm/v3/objects/contacts", params={"limit": 1}).raise_for_status()
        settings = HubSpotSettings(access_token=SecretStr(token), base_url=hubspot.url)
        with HubSpotAdapter(settings, PURPOSES) as adapter:
            assert isinstance(adapter, AllowanceReporter)
            # Nothing heard yet: the burst window as configured and empty, no day.
            assert adapter.allowances() == [Allowance("TEN_SECONDLY_ROLLING", 0, 100, 10.0)]
            assert sum(calls(admin).values()) == 7, "asking made a call"

            assert len(list(adapter.read())) == 3
            counted = calls(admin)
            burst, daily = adapter.allowances()
            assert sum(calls(admin).values()) == sum(counted.values()), "asking made a call"
            every = sum(counted.values())
            windowed = every - counted.get(SEARCH, 0)
            assert every > 7
            # The day counts every call the emulator admitted, the other client's too.
            assert daily == Allowance("DAILY", every, 1_000)
            # The window: HubSpot's limit and length, the other client's calls booked in.
            assert burst == Allowance("TEN_SECONDLY_ROLLING", windowed, 40, 10.0)
            assert burst.left == 40 - windowed

            # The day's quota spent: the refusal's headers say so too.
            spent = LIMITS.model_copy(update={"daily_max": every})
            admin.put("/__emulator/rate-limits", json=spent.model_dump()).raise_for_status()
            with pytest.raises(Permanent) as refused:
                list(adapter.read())
            assert refused.value.code == "DAILY"
            assert adapter.allowances()[1] == Allowance("DAILY", every, every)
            assert adapter.allowances()[1].left == 0


def test_salesforce_reports_the_days_requests_as_sforce_limit_info_said(
    salesforce: RunningServer,
) -> None:
    with httpx.Client(base_url=salesforce.url, timeout=10) as admin:
        update = {"daily_api_limit": 5_000, "api_requests_used": 1_234}
        admin.patch("/__emulator/settings", json=update).raise_for_status()
        admin.delete("/__emulator/counters").raise_for_status()
        settings = SalesforceSettings(
            base_url=salesforce.url,
            username="bridge@example.com",
            password=SecretStr("password"),
            security_token=SecretStr("token"),
        )
        with SalesforceAdapter(settings, PURPOSES) as adapter:
            assert isinstance(adapter, AllowanceReporter)
            assert adapter.allowances() == []  # nothing heard yet, and nothing asked
            assert calls(admin) == {}

            assert adapter.find_by_emails(["nobody@example.com"]) == []
            used = admin.get("/__emulator/settings").json()["api_requests_used"]
            assert used > 1_234
            assert adapter.allowances() == [Allowance("DailyApiRequests", used, 5_000)]
            assert adapter.allowances()[0].left == 5_000 - used
            assert admin.get("/__emulator/settings").json()["api_requests_used"] == used
