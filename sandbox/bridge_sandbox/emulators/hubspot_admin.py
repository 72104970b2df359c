"""The HubSpot emulator's own admin API under ``/__emulator`` (never a HubSpot path).

Tests, benchmarks and the demo seed people, read the whole state, reset it, tune the rate
limits and point webhooks at a receiver here; adapters never call it. Fault injection and
call counters come from :mod:`bridge_sandbox.emulators.common`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from bridge_sandbox.emulators.common import ADMIN_PREFIX, ADMIN_TAG
from bridge_sandbox.emulators.hubspot_limits import RateLimiter, RateLimits
from bridge_sandbox.emulators.hubspot_state import HubSpotState, SeedAddressStatus, SeedContact
from bridge_sandbox.emulators.hubspot_tiers import PUBLISHED_LIMITS, Account, Profile, Tier
from bridge_sandbox.emulators.hubspot_webhooks import WebhookDispatcher, WebhookSettings


class SeedRequest(BaseModel):
    """People and address-only statuses; ``source`` is the change source webhooks report."""

    contacts: list[SeedContact] = Field(default_factory=list)
    statuses: list[SeedAddressStatus] = Field(default_factory=list)
    source: str = "CRM_UI"


class ImportRequest(BaseModel):
    contacts: list[SeedContact]


class TierState(BaseModel):
    """The account the emulator plays now."""

    tier: Tier
    scopes: list[str] = Field(description="the scopes the token holds")
    rate_limits: RateLimits


def admin_routes(
    state: HubSpotState, limiter: RateLimiter, webhooks: WebhookDispatcher, account: Account
) -> APIRouter:
    router = APIRouter(prefix=ADMIN_PREFIX, tags=[ADMIN_TAG])

    @router.post("/seed")
    def seed(request: SeedRequest) -> dict[str, Any]:
        """Create or update contacts by email (API-like: the blocklist does not apply), with
        their subscription statuses (no ``subscription_id``: the opt-out of all email), and
        statuses of addresses without a contact. Changes fire webhooks with ``source`` as
        their change source. Answers the contacts with their ids."""
        people = [state.seed(person, request.source) for person in request.contacts]
        for status in request.statuses:
            state.seed_status(status.email, status, request.source)
        return {"contacts": people, "statuses": len(request.statuses)}

    @router.post("/import")
    def import_contacts(request: ImportRequest) -> dict[str, Any]:
        """A CSV import: addresses on the GDPR blocklist are refused."""
        outcomes = [state.seed(p, "IMPORT", refuse_blocklisted=True) for p in request.contacts]
        return {
            "contacts": [o for o in outcomes if "rejected" not in o],
            "rejected": [
                {"email": o["email"], "reason": o["rejected"]} for o in outcomes if "rejected" in o
            ],
        }

    @router.get("/state")
    def read_state() -> dict[str, Any]:
        """Everything the portal holds: contacts with every property value, subscription
        statuses, the GDPR blocklist."""
        return state.snapshot()

    @router.post("/reset", status_code=204)
    def reset() -> None:
        """Forget all data, quotas used and queued webhooks; keep the configuration."""
        state.reset()
        limiter.reset()
        webhooks.reset()

    def tier_state() -> TierState:
        profile = account.profile
        return TierState(
            tier=profile.tier, scopes=sorted(profile.granted()), rate_limits=limiter.limits
        )

    @router.get("/tier")
    def get_tier() -> TierState:
        """The portal's Marketing Hub tier, the scopes its token holds, the rate limits."""
        return tier_state()

    @router.put("/tier")
    def put_tier(profile: Profile) -> TierState:
        """Play another tier: its published rate limits, and a token holding ``scopes`` (or
        every scope the tier can grant). Below Enterprise no token holds the batch
        communication-preference scopes, so those endpoints answer 403 ``MISSING_SCOPES``.
        Data is kept."""
        account.profile = profile
        limiter.configure(PUBLISHED_LIMITS[profile.tier])
        return tier_state()

    @router.get("/rate-limits")
    def get_rate_limits() -> RateLimits:
        """The rate limits vendor calls are held to (by default the tier's published ones)."""
        return limiter.limits

    @router.put("/rate-limits")
    def put_rate_limits(limits: RateLimits) -> RateLimits:
        """Change the rate limits; ``enabled: false`` lifts them."""
        limiter.configure(limits)
        return limiter.limits

    @router.get("/webhooks")
    def get_webhooks() -> dict[str, Any]:
        """The webhook settings and deliveries: queued, pending, delivered, failed, and the
        last deliveries with their outcome."""
        return webhooks.stats()

    @router.put("/webhooks")
    def put_webhooks(settings: WebhookSettings) -> dict[str, Any]:
        """Send contact events from now on to ``target_url`` (the bridge's
        ``/webhooks/hubspot``), signed (v1 and v3) with ``client_secret``, as the app's
        webhook settings would."""
        webhooks.configure(settings)
        return webhooks.stats()

    @router.delete("/webhooks", status_code=204)
    def delete_webhooks() -> None:
        """Send no webhooks any more."""
        webhooks.unconfigure()

    @router.post("/webhooks/flush")
    def flush_webhooks(timeout: float = Query(10.0, ge=0, le=120)) -> dict[str, Any]:
        """Block until every queued event is delivered or has failed for good."""
        drained = webhooks.flush(timeout)
        return webhooks.stats() | {"drained": drained}

    return router
