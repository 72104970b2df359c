"""The Dataverse emulator's own admin API under ``/__emulator`` (never a Dataverse path).

Tests, benchmarks and the demo seed rows, read the whole environment (rows, recycle bin,
audit), reset it, restore from the bin, expire change-tracking tokens, manage the app
registrations and tune the service protection limits here; adapters never call it. Fault
injection and call counters come from :mod:`bridge_sandbox.emulators.common`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from bridge_sandbox.emulators.common import ADMIN_PREFIX, ADMIN_TAG
from bridge_sandbox.emulators.dynamics_auth import Apps, Directory
from bridge_sandbox.emulators.dynamics_http import DataverseError
from bridge_sandbox.emulators.dynamics_limits import ServiceLimits, ServiceProtection
from bridge_sandbox.emulators.dynamics_state import DynamicsState
from bridge_sandbox.emulators.dynamics_webhooks import WebhookEndpoint, Webhooks

Rows = list[dict[str, Any]]


class SeedRequest(BaseModel):
    """Rows as the Web API would take them (``nav@odata.bind`` for lookups); a row's key, when
    given, is its id, and its ``createdon``/``modifiedon`` (ISO) are kept, so rows can be old.
    Purposes and topics go first, so consent rows can bind to them; opportunities follow
    the contacts and leads they bind to."""

    msdynmkt_purposes: Rows = Field(default_factory=list)
    msdynmkt_topics: Rows = Field(default_factory=list)
    contacts: Rows = Field(default_factory=list)
    leads: Rows = Field(default_factory=list)
    opportunities: Rows = Field(default_factory=list)
    msdynmkt_contactpointconsent4s: Rows = Field(default_factory=list)


class Settings(BaseModel):
    recycle_bin_days: int | None = Field(None, ge=1, le=90, description="None: the bin is off")
    change_expiry_days: float = Field(7, gt=0)
    untracked_tables: list[str] = Field(
        default_factory=list, description="tables whose change tracking metadata says off"
    )


class RestoreRequest(BaseModel):
    entity_set: str
    id: str


def _admin_error(error: DataverseError) -> HTTPException:
    return HTTPException(error.status, {"code": error.code, "message": error.message})


def admin_routes(
    state: DynamicsState,
    directory: Directory,
    protection: ServiceProtection,
    webhooks: Webhooks,
) -> APIRouter:
    router = APIRouter(prefix=ADMIN_PREFIX, tags=[ADMIN_TAG])

    @router.post("/seed")
    def seed(request: SeedRequest) -> dict[str, list[str]]:
        """Create rows (no limits, no auth); answers the ids made, by entity set."""
        made: dict[str, list[str]] = {}
        try:
            for entity_set, rows in request.model_dump().items():
                table = state.table(entity_set)
                made[entity_set] = [
                    state.create(entity_set, row, seeded=True)[table.key] for row in rows
                ]
        except DataverseError as error:
            raise _admin_error(error) from error
        return made

    @router.get("/state")
    def read_state() -> dict[str, Any]:
        """Every row of every table, the recycle bin, the audit history, the settings and
        the service protection usage by app."""
        return state.snapshot() | {"limits_usage": protection.usage()}

    @router.post("/reset", status_code=204)
    def reset() -> None:
        """Forget all rows, logs, tokens, limit usage and webhook deliveries; keep the
        configuration (webhook registrations too)."""
        state.reset()
        protection.reset()
        webhooks.reset()

    @router.get("/settings")
    def get_settings() -> Settings:
        return Settings(
            recycle_bin_days=state.recycle_bin_days,
            change_expiry_days=state.change_expiry_days,
            untracked_tables=sorted(state.untracked),
        )

    @router.put("/settings")
    def put_settings(settings: Settings) -> Settings:
        """Turn the recycle bin on (days kept) or off, set the change-tracking expiry, and
        name the tables whose metadata says change tracking is off."""
        state.recycle_bin_days = settings.recycle_bin_days
        state.change_expiry_days = settings.change_expiry_days
        state.untracked = frozenset(settings.untracked_tables)
        return settings

    @router.post("/restore")
    def restore(request: RestoreRequest) -> dict[str, Any]:
        """Restore a row from the recycle bin, as an admin would."""
        try:
            return state.restore(request.entity_set, request.id)
        except (DataverseError, KeyError) as error:
            raise HTTPException(404, "not in the recycle bin") from error

    @router.post("/change-tokens/expire")
    def expire_tokens() -> dict[str, int]:
        """Expire every change-tracking token handed out so far."""
        return {"expired": state.expire_tokens()}

    @router.get("/webhooks")
    def get_webhooks() -> list[WebhookEndpoint]:
        return webhooks.endpoints

    @router.put("/webhooks")
    def put_webhooks(endpoints: list[WebhookEndpoint]) -> list[WebhookEndpoint]:
        """Replace the webhook service endpoints and their steps (message, table)."""
        webhooks.configure(endpoints)
        return webhooks.endpoints

    @router.get("/webhooks/deliveries")
    def get_deliveries() -> dict[str, Any]:
        """What each delivery answered (statuses, a retry's too), and how many are pending."""
        return webhooks.deliveries()

    @router.get("/apps")
    def get_apps() -> Apps:
        return directory.apps

    @router.put("/apps")
    def put_apps(apps: Apps) -> Apps:
        """Replace the app registrations (tokens already issued stay valid while their
        app is registered)."""
        directory.configure(apps)
        return directory.apps

    @router.get("/limits")
    def get_limits() -> ServiceLimits:
        return protection.limits

    @router.put("/limits")
    def put_limits(limits: ServiceLimits) -> ServiceLimits:
        """Change the service protection limits; ``enabled: false`` lifts them."""
        protection.configure(limits)
        return protection.limits

    return router
