"""Faithful emulators of the vendor APIs the bridge speaks, one per vendor, by registry name."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp


def _hubspot(tier: str = "enterprise") -> ASGIApp:
    from bridge_sandbox.emulators.hubspot import HubSpotEmulatorConfig, Profile, create_app

    return create_app(HubSpotEmulatorConfig(profile=Profile.model_validate({"tier": tier})))


def _salesforce(org: str = "privacy") -> ASGIApp:
    from bridge_sandbox.emulators.salesforce import SalesforceEmulatorConfig, create_app

    return create_app(SalesforceEmulatorConfig.model_validate({"org": org}))


def _dynamics() -> ASGIApp:
    from bridge_sandbox.emulators.dynamics import create_app

    return create_app()


# Each takes the options of its account profile (``tier`` for HubSpot, ``org`` for Salesforce)
# as keywords.
EMULATORS: dict[str, Callable[..., ASGIApp]] = {
    "hubspot": _hubspot,
    "salesforce": _salesforce,
    "dynamics": _dynamics,
}
