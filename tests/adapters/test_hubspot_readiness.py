"""What `bridge check --crm` says about a HubSpot token: scopes against the shipped list, and
the purposes' subscriptions."""

from __future__ import annotations

from pathlib import Path

from bridge.adapters.hubspot.capabilities import (
    BATCH_READ,
    BATCH_WRITE,
    SCOPES,
    TIERS,
    Capabilities,
)
from bridge.adapters.hubspot.capabilities import (
    Path as ConsentPath,
)
from bridge.adapters.hubspot.readiness import scopes, subscriptions

SCOPES_FILE = Path(__file__).parents[2] / "config" / "hubspot-scopes.txt"
EVERY_TIER = [scope for scope, tiers in SCOPES.items() if tiers == TIERS]


def known(granted: set[str] | None) -> Capabilities:
    scopes_ = None if granted is None else frozenset(granted)
    return Capabilities(ConsentPath.SINGLE, ConsentPath.SINGLE, scopes_, "the token's scopes")


def test_the_shipped_scopes_file_lists_exactly_what_the_check_compares_against() -> None:
    listed = {}
    for line in SCOPES_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            scope, *tiers = line.split()
            listed[scope] = tuple(tiers)
    assert listed == SCOPES


def test_a_token_missing_a_scope_fails_naming_it_and_the_file() -> None:
    lacking = set(EVERY_TIER) - {"crm.schemas.contacts.write"}
    check = scopes(known(lacking))
    assert not check.ok
    assert check.found == "the token lacks crm.schemas.contacts.write"
    assert "config/hubspot-scopes.txt" in check.fix


def test_read_write_stands_for_both_preference_scopes() -> None:
    granted = set(EVERY_TIER) - {
        "communication_preferences.read",
        "communication_preferences.write",
    } | {"communication_preferences.read_write"}
    check = scopes(known(granted))
    assert check.ok and "one address per call" in check.found


def test_the_batch_scopes_are_enterprise_only_and_never_required() -> None:
    below = scopes(known(set(EVERY_TIER)))
    assert below.ok and BATCH_READ in below.found and "Enterprise only" in below.found
    enterprise = scopes(known(set(EVERY_TIER) | {BATCH_READ, BATCH_WRITE}))
    assert enterprise.ok and enterprise.found.endswith("and the Enterprise batch scopes")


def test_a_token_whose_scopes_hubspot_will_not_list_is_not_a_failure() -> None:
    check = scopes(known(None))
    assert check.ok and "cannot be compared" in check.found


def test_subscriptions_must_exist_and_be_active_and_the_fix_lists_the_portals() -> None:
    definitions = [
        {"id": "1", "name": "Marketing Information", "isActive": True},
        {"id": "2", "name": "Product Updates", "isActive": False},
        {"id": "3", "name": "Newsletter", "isActive": True},
    ]
    ok = subscriptions({"marketing_email": "1", "news": "3"}, definitions)
    assert ok.ok and ok.found == (
        "exist and are active: marketing_email: 1 (Marketing Information), news: 3 (Newsletter)"
    )
    broken = subscriptions({"marketing_email": "9", "product_updates": "2"}, definitions)
    assert not broken.ok
    assert broken.found == (
        "purpose marketing_email names subscription 9, unknown here; "
        "purpose product_updates's subscription 2 is archived"
    )
    assert broken.fix.endswith("one of the portal's: 1 (Marketing Information), 3 (Newsletter)")
    assert subscriptions({}, definitions).ok
