"""The pair of accounts both emulators play: a HubSpot tier and a Salesforce org profile.

``bridge demo --hubspot-tier ... --salesforce-org ...`` and the tests' emulator fixtures
choose one; what each profile changes is in :mod:`bridge_sandbox.emulators.hubspot_tiers`
and :mod:`bridge_sandbox.emulators.salesforce_config`.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge_sandbox.emulators.hubspot_tiers import TIERS, Tier
from bridge_sandbox.emulators.salesforce_config import ORGS, Org


@dataclass(frozen=True)
class Accounts:
    """A HubSpot portal of one Marketing Hub tier beside a Salesforce org of one profile;
    by default the richest (Enterprise, Data Protection and Privacy on)."""

    hubspot_tier: Tier = "enterprise"
    salesforce_org: Org = "privacy"

    @property
    def batch_consent(self) -> bool:
        """Whether the HubSpot token may use the v4 batch consent endpoints (Enterprise)."""
        return self.hubspot_tier == "enterprise"

    @property
    def privacy(self) -> bool:
        """Whether the Salesforce org holds per-purpose consent (the privacy objects)."""
        return self.salesforce_org == "privacy"

    def __str__(self) -> str:
        return f"{self.hubspot_tier}-{self.salesforce_org}"


DEFAULT = Accounts()
EVERY_ACCOUNT = tuple(Accounts(tier, org) for tier in TIERS for org in ORGS)
