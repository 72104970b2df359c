"""What ``bridge check --crm`` says about a HubSpot portal and its token: the scopes granted
against those the bridge needs (``capabilities.SCOPES``, the list config/hubspot-scopes.txt
ships), the consent path they allow, and that the subscriptions and contact properties the
settings name exist. Pure: the adapter makes the calls. The facts: docs/vendors/hubspot.md
("Tiers and scopes", "Checking the set-up").
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from bridge.adapters.base import Check
from bridge.adapters.hubspot.capabilities import (
    BATCH_READ,
    BATCH_WRITE,
    SCOPES,
    Capabilities,
    missing_scopes,
)


def scopes(known: Capabilities) -> Check:
    """The token's scopes against what every tier needs; the batch ones are Enterprise's."""
    name = "scopes"
    if known.scopes is None:
        return Check(
            name,
            "HubSpot lists no scopes for this token (not a private app's?), so they cannot be "
            "compared; a call it may not make will fail naming the scope",
        )
    missing = missing_scopes(known.scopes)
    if missing:
        fix = (
            "add them to the private app's scopes in HubSpot (Settings, Integrations, Private "
            "apps); config/hubspot-scopes.txt lists every scope per tier"
        )
        return Check(name, f"the token lacks {', '.join(missing)}", fix, ok=False)
    needed = sum(1 for scope in SCOPES if scope not in (BATCH_READ, BATCH_WRITE))
    absent = [scope for scope in (BATCH_READ, BATCH_WRITE) if scope not in known.scopes]
    batch = (
        f"; not {' or '.join(absent)} (Marketing Hub Enterprise only), so consent goes one "
        "address per call where it must"
        if absent
        else ", and the Enterprise batch scopes"
    )
    return Check(name, f"the token holds the {needed} scopes every tier needs{batch}")


def subscriptions(configured: Mapping[str, str], definitions: Sequence[Mapping[str, Any]]) -> Check:
    """Whether each purpose's subscription (``configured``: purpose id to subscription id)
    is one of the portal's ``definitions``, and active."""
    name = "subscriptions"
    if not configured:
        return Check(
            name,
            "no purpose is mapped to a HubSpot subscription: only the global email opt-out "
            "is synced",
        )
    known = {str(d.get("id")): d for d in definitions}
    problems = []
    for purpose, subscription in configured.items():
        found = known.get(subscription)
        if found is None:
            problems.append(f"purpose {purpose} names subscription {subscription}, unknown here")
        elif found.get("isActive") is False:
            problems.append(f"purpose {purpose}'s subscription {subscription} is archived")
    if problems:
        active = [d for d in known.values() if d.get("isActive") is not False]
        have = ", ".join(f"{d.get('id')} ({d.get('name')})" for d in active) or "none"
        fix = f"set hubspot_subscription_id in [[purposes]] to one of the portal's: {have}"
        return Check(name, "; ".join(problems), fix, ok=False)
    named = ", ".join(
        f"{purpose}: {sub} ({known[sub].get('name')})" for purpose, sub in configured.items()
    )
    return Check(name, f"exist and are active: {named}")


def properties(wanted: Sequence[str], held: Collection[str]) -> Check:
    """Whether the contact properties the retention rules read exist in the portal."""
    name = "retention"
    missing = [prop for prop in wanted if prop not in held]
    if missing:
        fix = "create them in HubSpot, or correct the retention rules that name them"
        return Check(name, f"no contact property {', '.join(missing)}", fix, ok=False)
    return Check(name, f"the contact properties the rules read exist: {', '.join(wanted)}")
