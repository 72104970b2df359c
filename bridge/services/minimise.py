"""The minimisation report (Art. 5(1)(c)): which fields the CRMs fill, judged by the allow-list.

The adapters count, per object, the records filling each field a person or integration can
fill; the policy says which of those fields the configured list does not name. Nothing is
written, stored or audited: the report reads names and counts, never a value.
"""

from __future__ import annotations

from collections.abc import Mapping

from bridge.adapters.base import AdapterError, CrmAdapter
from bridge.model import System
from bridge.policies.minimisation import Minimisation, ObjectInUse, UsageReport


def usage_report(adapters: Mapping[System, CrmAdapter], minimisation: Minimisation) -> UsageReport:
    """Every system's objects and their fields in use; a system that cannot be read fails the
    report (a partial one would look like a clean bill of health)."""
    objects: list[ObjectInUse] = []
    for system, adapter in adapters.items():
        try:
            usage = adapter.field_usage()
        except AdapterError as error:
            raise error.during("minimise: cannot count the fields in use") from None
        objects += [
            minimisation.in_use(
                system,
                found.sobject,
                found.records,
                {f.name: f.filled for f in found.fields},
                {f.name for f in found.fields if f.free_text},
            )
            for found in usage
        ]
    return UsageReport(tuple(objects))
