"""The vendors the bridge speaks to. Settings sections, the receiver's routes, the CLI's
vendor choices and the event handling all come from here: adding a CRM is a folder under
``bridge/adapters/`` and one line below.
"""

from __future__ import annotations

from bridge.adapters.dynamics.spec import VENDOR as DYNAMICS
from bridge.adapters.hubspot.spec import VENDOR as HUBSPOT
from bridge.adapters.salesforce.spec import VENDOR as SALESFORCE
from bridge.adapters.spec import Vendor

VENDORS: dict[str, Vendor] = {vendor.name: vendor for vendor in (HUBSPOT, SALESFORCE, DYNAMICS)}


def person_objects() -> tuple[str, ...]:
    """Every ``<vendor>.<object>`` whose records are people."""
    return tuple(name for vendor in VENDORS.values() for name in vendor.person_objects)
