"""HubSpot as the registry knows it: settings, defaults, webhook intake, adapter factory."""

from __future__ import annotations

from bridge.adapters.base import CrmAdapter
from bridge.adapters.hubspot import HUBSPOT
from bridge.adapters.hubspot.settings import (
    ALLOWED_FIELDS,
    KEEP_ON_ANONYMIZE,
    HubSpotPurpose,
    HubSpotSettings,
)
from bridge.adapters.hubspot.webhooks import Intake
from bridge.adapters.spec import AdapterOptions, Vendor

NAME = HUBSPOT


def _connect(section: HubSpotSettings, options: AdapterOptions) -> CrmAdapter:
    from bridge.adapters.hubspot.adapter import HubSpotAdapter  # the client is slow to import

    return HubSpotAdapter(
        section,
        options.purposes,
        keep_on_anonymize=options.keep_on_anonymize,
        read_fields=options.read_fields(f"{NAME}.contact"),
    )


VENDOR = Vendor(
    name=NAME,
    title="HubSpot",
    settings=HubSpotSettings,
    connect=_connect,
    configured=lambda section: section.access_token is not None,
    credentials_hint="BRIDGE_HUBSPOT__ACCESS_TOKEN",
    intake=Intake(),
    person_objects=(f"{NAME}.contact",),
    allowed_fields=ALLOWED_FIELDS,
    keep_on_anonymize=KEEP_ON_ANONYMIZE,
    purpose_keys=HubSpotPurpose,
    link_hint="set hubspot.portal_id (your Hub ID) to link HubSpot contacts",
)
