"""A vendor's words for the GDPR lawful bases, both ways, as an explicit table.

A value with no faithful counterpart raises ``Unmappable``: the caller reports it and leaves
the basis unknown, because a guessed lawful basis is worse than a missing one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

from bridge.model import LawfulBasis

# Hyphen, non-breaking hyphen, figure dash, en dash, em dash, horizontal bar, minus sign.
_DASHES = re.compile("[\u2010-\u2015\u2212]")


class Unmappable(ValueError):
    """No faithful counterpart. The value is a vendor option label, never personal data."""

    def __init__(self, vocabulary: str, value: str, reason: str = "no mapping") -> None:
        super().__init__(f"{vocabulary}: {reason} for {value!r}")
        self.vocabulary = vocabulary
        self.value = value


def _key(value: str) -> str:
    """Typography is not meaning: dashes, spacing and case do not change the option read.

    Writes always use the exact vendor string; only reads are this tolerant, because not
    every vendor documents the dash characters it uses (docs/vendors/).
    """
    return " ".join(_DASHES.sub("-", value).split()).casefold()


@dataclass(frozen=True)
class Vocabulary:
    """One vendor vocabulary: what to write for each basis, and every value that reads back.

    ``read`` must include every ``written`` value; construction refuses a table whose
    written value would read back as another basis, so a round trip cannot drift.
    """

    name: str
    written: Mapping[LawfulBasis, str]
    read: Mapping[str, LawfulBasis]

    def __post_init__(self) -> None:
        for basis, value in self.written.items():
            if self._index.get(_key(value)) is not basis:
                raise ValueError(f"{self.name}: {value!r} is written for {basis} but reads back")

    @cached_property
    def _index(self) -> dict[str, LawfulBasis]:
        return {_key(value): basis for value, basis in self.read.items()}

    def to_vendor(self, basis: LawfulBasis) -> str:
        """The exact vendor value to write for ``basis``."""
        try:
            return self.written[basis]
        except KeyError:
            raise Unmappable(self.name, basis.value) from None

    def from_vendor(self, value: str) -> LawfulBasis:
        """The common basis one vendor value stands for."""
        basis = self._index.get(_key(value))
        if basis is None:
            raise Unmappable(self.name, value)
        return basis

    def from_multi(self, value: str | None, separator: str = ";") -> LawfulBasis | None:
        """A multi-select value: None when empty; its options must all name the same basis."""
        options = [option for option in (value or "").split(separator) if option.strip()]
        bases = {self.from_vendor(option) for option in options}
        if len(bases) > 1:
            raise Unmappable(self.name, value or "", "options name different bases")
        return bases.pop() if bases else None
