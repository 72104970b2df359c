"""Minimisation (Art. 5(1)(c)): the fields the bridge may hold and copy, per object. Pure.

The allow-list names vendor fields per ``"<system>.<object>"`` (``crm.Contact``); a
name may end in ``*`` to cover a family. An object the list does not name allows nothing.
The sync never writes a field outside the list; it reports the change it left out instead.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any


@dataclass(frozen=True)
class Minimisation:
    """The configured allow-list (``minimisation.allowed``)."""

    allowed: Mapping[str, Sequence[str]]

    def permits(self, system: str, sobject: str, field: str) -> bool:
        """Whether ``field`` of ``sobject`` in ``system`` may be held and copied."""
        patterns = self.allowed.get(f"{system}.{sobject}", ())
        return any(fnmatchcase(field, pattern) for pattern in patterns)

    def outside(self, system: str, sobject: str, fields: Iterable[str]) -> list[str]:
        """The fields among ``fields`` the allow-list does not cover, sorted."""
        return sorted({f for f in fields if not self.permits(system, sobject, f)})

    def in_use(
        self,
        system: str,
        sobject: str,
        records: int,
        filled: Mapping[str, int],
        free_text: Collection[str] = (),
    ) -> ObjectInUse:
        """The fields of ``sobject`` that at least one of its ``records`` fills (``filled``:
        field name to number of records), each judged against the list; outside ones first."""
        fields = (
            FieldInUse(name, count, self.permits(system, sobject, name), name in free_text)
            for name, count in filled.items()
            if count > 0
        )
        ordered = sorted(fields, key=lambda f: (f.allowed, f.name))
        return ObjectInUse(system, sobject, records, tuple(ordered))


@dataclass(frozen=True)
class FieldInUse:
    """A field that ``filled`` records hold a value in: its name, never a value."""

    name: str
    filled: int
    allowed: bool
    free_text: bool


@dataclass(frozen=True)
class ObjectInUse:
    """The fields in use on one object of one system, outside the list first."""

    system: str
    sobject: str
    records: int
    fields: tuple[FieldInUse, ...]

    @property
    def outside(self) -> list[FieldInUse]:
        return [f for f in self.fields if not f.allowed]


@dataclass(frozen=True)
class UsageReport:
    """Every object's fields in use; ``outside`` counts the fields the list does not name."""

    objects: tuple[ObjectInUse, ...]

    @property
    def outside(self) -> int:
        return sum(len(o.outside) for o in self.objects)

    @property
    def free_text_outside(self) -> int:
        return sum(f.free_text for o in self.objects for f in o.outside)

    def as_dict(self) -> dict[str, Any]:
        """The JSON of ``bridge minimise --report --json``."""
        return {
            "systems": [
                {
                    "system": o.system,
                    "object": o.sobject,
                    "records": o.records,
                    "fields": [
                        {
                            "name": f.name,
                            "filled": f.filled,
                            "allowed": f.allowed,
                            "free_text": f.free_text,
                        }
                        for f in o.fields
                    ],
                }
                for o in self.objects
            ],
            "outside": self.outside,
            "free_text_outside": self.free_text_outside,
        }
