"""HubSpot account tiers: the API limits each publishes, and which scopes a token can hold.

The accounts people really have differ in two ways the bridge must cope with
(docs/vendors/hubspot.md, "Tiers and scopes"): a Starter portal's private app may make
100 calls per 10 s, a Professional or Enterprise one 190; and the v4 batch endpoints of
communication preferences need the ``communication_preferences.statuses.batch.*`` scopes,
which only Marketing Hub Enterprise can grant. A token without a scope a route needs gets
HubSpot's 403 ``MISSING_SCOPES``, so a lower tier answers the batch endpoints exactly as
HubSpot answers a token that lacks those scopes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from bridge_sandbox.emulators.hubspot_limits import RateLimits

Tier = Literal["starter", "professional", "enterprise"]
TIERS: tuple[Tier, ...] = ("starter", "professional", "enterprise")

# The published limits of a private app (usage guidelines); search is 5/s on every tier.
PUBLISHED_LIMITS: dict[Tier, RateLimits] = {
    "starter": RateLimits(burst_max=100, daily_max=250_000),
    "professional": RateLimits(burst_max=190, daily_max=625_000),
    "enterprise": RateLimits(burst_max=190, daily_max=1_000_000),
}

CONTACTS_READ = "crm.objects.contacts.read"
CONTACTS_WRITE = "crm.objects.contacts.write"
SCHEMAS_READ = "crm.schemas.contacts.read"
SCHEMAS_WRITE = "crm.schemas.contacts.write"
PREFS_READ = "communication_preferences.read"
PREFS_WRITE = "communication_preferences.write"
PREFS_READ_WRITE = "communication_preferences.read_write"
BATCH_READ = "communication_preferences.statuses.batch.read"
BATCH_WRITE = "communication_preferences.statuses.batch.write"

EVERY_TIER = frozenset(
    {
        CONTACTS_READ,
        CONTACTS_WRITE,
        SCHEMAS_READ,
        SCHEMAS_WRITE,
        PREFS_READ,
        PREFS_WRITE,
        PREFS_READ_WRITE,
    }
)
ENTERPRISE_ONLY = frozenset({BATCH_READ, BATCH_WRITE})

_PREFS = "/communication-preferences"
_CONTACTS = "/crm/v3/objects/contacts"
_READ_PREFS = (PREFS_READ, PREFS_READ_WRITE)
_WRITE_PREFS = (PREFS_WRITE, PREFS_READ_WRITE)
# Per vendor route ("METHOD template"), the scopes any one of which lets a token call it
# (HubSpot's OpenAPI specs, "security"). A route not listed needs none (the token-info ones).
REQUIRED_SCOPES: dict[str, tuple[str, ...]] = {
    f"GET {_CONTACTS}": (CONTACTS_READ,),
    f"POST {_CONTACTS}": (CONTACTS_WRITE,),
    f"POST {_CONTACTS}/search": (CONTACTS_READ,),
    f"POST {_CONTACTS}/gdpr-delete": (CONTACTS_WRITE,),
    f"POST {_CONTACTS}/batch/read": (CONTACTS_READ,),
    f"POST {_CONTACTS}/batch/create": (CONTACTS_WRITE,),
    f"POST {_CONTACTS}/batch/update": (CONTACTS_WRITE,),
    f"POST {_CONTACTS}/batch/upsert": (CONTACTS_WRITE,),
    f"POST {_CONTACTS}/batch/archive": (CONTACTS_WRITE,),
    f"GET {_CONTACTS}/{{contact_id:path}}": (CONTACTS_READ,),
    f"PATCH {_CONTACTS}/{{contact_id:path}}": (CONTACTS_WRITE,),
    f"DELETE {_CONTACTS}/{{contact_id:path}}": (CONTACTS_WRITE,),
    "GET /crm/v3/properties/{object_type}": (CONTACTS_READ, SCHEMAS_READ),
    "POST /crm/v3/properties/{object_type}": (SCHEMAS_WRITE,),
    "GET /crm/v3/properties/{object_type}/{property_name}": (CONTACTS_READ, SCHEMAS_READ),
    f"GET {_PREFS}/v3/definitions": _READ_PREFS,
    f"GET {_PREFS}/v3/status/email/{{email_address:path}}": _READ_PREFS,
    f"POST {_PREFS}/v3/subscribe": _WRITE_PREFS,
    f"POST {_PREFS}/v3/unsubscribe": _WRITE_PREFS,
    f"GET {_PREFS}/v4/definitions": _READ_PREFS,
    f"POST {_PREFS}/v4/statuses/batch/read": (BATCH_READ,),
    f"POST {_PREFS}/v4/statuses/batch/write": (BATCH_WRITE,),
    f"POST {_PREFS}/v4/statuses/batch/unsubscribe-all": (BATCH_WRITE,),
    f"POST {_PREFS}/v4/statuses/batch/unsubscribe-all/read": (BATCH_READ,),
    f"GET {_PREFS}/v4/statuses/{{subscriber:path}}/unsubscribe-all": _READ_PREFS,
    f"POST {_PREFS}/v4/statuses/{{subscriber:path}}/unsubscribe-all": _WRITE_PREFS,
    f"GET {_PREFS}/v4/statuses/{{subscriber:path}}": _READ_PREFS,
    f"POST {_PREFS}/v4/statuses/{{subscriber:path}}": _WRITE_PREFS,
    # HubSpot asks for read and write (or read_write); every tier grants both together.
    f"POST {_PREFS}/v4/links/generate": _WRITE_PREFS,
}


def grantable(tier: Tier) -> frozenset[str]:
    """Every scope a private app on this tier can be granted (of those the emulator serves)."""
    return EVERY_TIER | (ENTERPRISE_ONLY if tier == "enterprise" else frozenset())


class Profile(BaseModel):
    """The account the emulator plays: its tier and what its token was granted."""

    tier: Tier = Field("enterprise", description="the portal's Marketing Hub tier")
    scopes: list[str] | None = Field(
        None,
        description="the scopes the token was granted; none given: every scope the tier can "
        "grant. A scope the tier cannot grant is dropped, as HubSpot would never grant it.",
    )

    def granted(self) -> frozenset[str]:
        allowed = grantable(self.tier)
        return allowed if self.scopes is None else allowed & frozenset(self.scopes)

    def missing(self, route: str) -> tuple[str, ...]:
        """The scopes a call of ``route`` lacks: empty when the token may call it."""
        needed = REQUIRED_SCOPES.get(route, ())
        return () if not needed or self.granted() & set(needed) else needed


class Account:
    """The profile in force: the admin API may change it while the emulator serves."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
