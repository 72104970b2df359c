"""Lawful basis (Art. 6): which basis a person's records agree on, merged across systems.

Pure; each vendor's own words for the bases live with its adapter.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import NamedTuple

from bridge.model import LawfulBasis

_OLDEST = datetime.min.replace(tzinfo=UTC)


class HeldBasis(NamedTuple):
    """One record's lawful basis, with what the merge needs to weigh it. A tuple: the sync
    builds one per record holding a basis."""

    basis: LawfulBasis
    modified_at: datetime | None
    system: str
    record_id: str

    def order(self) -> tuple[datetime, str, str, str]:
        return (self.modified_at or _OLDEST, self.system, self.record_id, self.basis)


class BasisDecision(NamedTuple):
    """The basis every system should hold, and the record it follows."""

    basis: LawfulBasis
    follows: HeldBasis
    why: str


def merge_bases(held: Iterable[HeldBasis], agreed: LawfulBasis | None) -> BasisDecision | None:
    """The lawful basis of a subject, three-way: against the basis the systems last agreed on.

    A record's timestamp moves with any edit, so "latest record wins" would let a phone
    number typed in one CRM undo a basis set in the other. Instead, a record holding another
    basis than the agreed one has *changed* it, and the change wins; only when the systems
    changed it differently (or never agreed) does the latest-modified record decide, as the
    ``why`` says. Records holding none do not vote: an empty field is not a basis. The
    answer depends on the set of records only, never on the order they are read in.
    """
    values = list(held)
    if not values:
        return None
    changed = [h for h in values if h.basis is not agreed]
    if not changed:
        return BasisDecision(values[0].basis, _latest(values), "agreed")
    follows = _latest(changed)
    if len(changed) > 1 and len({h.basis for h in changed}) > 1:
        why = "systems disagree: the latest-modified record decides"
    elif agreed is None:
        why = "held in one system, not yet agreed"
    else:
        why = f"changed from {agreed.value} since the systems last agreed"
    return BasisDecision(follows.basis, follows, why)


def _latest(held: list[HeldBasis]) -> HeldBasis:
    """The latest-modified of some records (most subjects have one that votes)."""
    return held[0] if len(held) == 1 else max(held, key=HeldBasis.order)
