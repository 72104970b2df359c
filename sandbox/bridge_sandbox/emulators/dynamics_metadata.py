"""The metadata the emulated Web API serves: ``EntityDefinitions`` and their attributes.

Only what the bridge's readiness check reads: each table's logical name, entity set, key and
whether change tracking is on, and each column's logical name, type and maximum length
(docs/vendors/dynamics.md, "Change tracking" and "Consent fields on contact and lead").
"""

from __future__ import annotations

import uuid
from typing import Any

from bridge_sandbox.emulators.dynamics_state import DynamicsState, Kind, Row, Table

ATTRIBUTE_TYPES: dict[Kind, str] = {
    "string": "String",
    "memo": "Memo",
    "bool": "Boolean",
    "int": "Integer",
    "bigint": "BigInt",
    "choice": "Picklist",
    "state": "State",
    "guid": "Uniqueidentifier",
    "datetime": "DateTime",
    "date": "DateTime",  # a date-only column is a DateTime with the DateOnly format
}


def _metadata_id(*names: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(("metadata", *names))))


def entity_definition(state: DynamicsState, table: Table) -> Row:
    return {
        "MetadataId": _metadata_id(table.logical_name),
        "LogicalName": table.logical_name,
        "EntitySetName": table.entity_set,
        "PrimaryIdAttribute": table.key,
        "ChangeTrackingEnabled": table.logical_name not in state.untracked,
    }


# The derived metadata types a path may cast ``Attributes`` to, and the columns each covers.
CASTS = {
    "StringAttributeMetadata": "String",
    "MemoAttributeMetadata": "Memo",
    "BooleanAttributeMetadata": "Boolean",
    "IntegerAttributeMetadata": "Integer",
    "PicklistAttributeMetadata": "Picklist",
    "DateTimeAttributeMetadata": "DateTime",
    "LookupAttributeMetadata": "Lookup",
}
LENGTHY = frozenset({"String", "Memo"})  # the types that hold MaxLength


def attributes(table: Table, cast: str | None = None) -> list[Row]:
    """Every column, lookups under their own logical name (the navigation property's); with
    ``cast`` (``StringAttributeMetadata``, ...) only that type's columns. ``MaxLength`` is
    a property of the String and Memo types alone, so only a cast to them shows it: on the
    base AttributeMetadata a ``$select`` of it is refused, as Dataverse refuses it."""
    found: list[Row] = []
    for name, kind in table.columns.items():
        row: dict[str, Any] = {
            "MetadataId": _metadata_id(table.logical_name, name),
            "LogicalName": name,
            "AttributeType": ATTRIBUTE_TYPES[kind],
        }
        if cast is not None and row["AttributeType"] in LENGTHY and name in table.lengths:
            row["MaxLength"] = table.lengths[name]
        found.append(row)
    for nav in table.lookups:
        found.append(
            {
                "MetadataId": _metadata_id(table.logical_name, nav),
                "LogicalName": nav,
                "AttributeType": "Lookup",
            }
        )
    if cast is None:
        return found
    return [row for row in found if row["AttributeType"] == CASTS[cast]]
