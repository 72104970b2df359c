"""The ``[hubspot]`` settings section and the ``hubspot_*`` keys of ``[[purposes]]``."""

from __future__ import annotations

from functools import cache

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from bridge.adapters.hubspot import HUBSPOT
from bridge.adapters.spec import VendorSettings
from bridge.model import Purpose

# The contact property the bridge sets during a retention warning period.
DUE_PROPERTY = "bridge_purge_due"


# What minimisation allows by default: the fields the bridge reads or writes, and the
# everyday business fields retention and reports look at.
# fmt: off
ALLOWED_FIELDS: dict[str, list[str]] = {
    f"{HUBSPOT}.contact": [
        "email", "hs_additional_emails", "firstname", "lastname", "phone", "company",
        "jobtitle", "lifecyclestage", "hs_lead_status", "hubspot_owner_id",
        "hs_legal_basis", "hs_email_optout*", "bridge_purge_due",
    ],
}
# fmt: on

# The non-personal fields anonymising keeps for statistics.
KEEP_ON_ANONYMIZE: dict[str, list[str]] = {
    f"{HUBSPOT}.contact": ["lifecyclestage", "hs_lead_status", "hubspot_owner_id"],
}


class HubSpotSettings(VendorSettings):
    access_token: SecretStr | None = None
    base_url: str = "https://api.hubapi.com"
    client_secret: SecretStr | None = None
    webhook_url: str | None = Field(
        None, description="the target URL exactly as configured in the HubSpot app"
    )
    legacy_signatures: bool = Field(False, description="also accept v1/v2 signatures")
    portal_id: int | None = Field(
        None, description="the Hub ID (account menu), for links to contacts; None: no links"
    )
    app_url: str = Field(
        "https://app.hubspot.com",
        description="HubSpot's UI (https://app-eu1.hubspot.com for EU portals)",
    )
    search_per_second: int = Field(
        5,
        ge=1,
        description="searches a second: HubSpot's published limit is 5 per account and its "
        "answers carry no headers to follow, so lower it to leave room for other apps of the "
        "account",
    )


class HubSpotPurpose(BaseModel):
    """A purpose's HubSpot side: ``hubspot_subscription_id``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subscription_id: str | None = Field(None, description="subscription definition id")


@cache
def purpose_keys(purpose: Purpose) -> HubSpotPurpose:
    """The purpose's HubSpot side."""
    return HubSpotPurpose.model_validate(purpose.mapping(HUBSPOT))
