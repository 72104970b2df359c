"""Minimisation (Art. 5(1)(c)): the fields the bridge may hold and copy, per object. Pure.

The allow-list names vendor fields per ``"<system>.<object>"`` (``salesforce.Contact``,
``hubspot.contact``), the way the CRMs' own admins know them; a name may end in ``*`` to
cover a family (``hs_email_optout*``). An object the list does not name allows nothing: a
field is held because someone decided it is needed, never by default. The sync never writes
a field outside the list; it reports the change it left out instead, naming the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase


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
