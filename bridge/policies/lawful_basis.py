"""Lawful basis: the common GDPR Art. 6 basis and each vendor's own words for it, both ways.

Pure functions over explicit tables, no I/O. A vendor value with no counterpart, a common
basis the vendor cannot express, or a multi-select whose options name different bases raises
``Unmappable``: the caller reports it (with the record id) and leaves the basis unknown,
because a guessed lawful basis is worse than a missing one.

HubSpot has two vocabularies (shared/reference/hubspot.md section 2): the contact property
``hs_legal_basis`` (multi-select; option values equal their labels, dashes exactly as HubSpot
spells them) and the ``legalBasis`` enum recorded with every subscription change. The
defaults below are what a later, configurable mapping starts from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
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

    Writes always use the exact vendor string; only reads are this tolerant, because the
    dash characters HubSpot uses are not documented (reference section 9).
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


@dataclass(frozen=True)
class HubSpotLawfulBases:
    """HubSpot's two vocabularies: the contact property and the subscription enum."""

    property: Vocabulary
    subscription: Vocabulary


LI_PROSPECT = "Legitimate interest \u2013 prospect/lead"
LI_CUSTOMER = "Legitimate interest \u2013 existing customer"
LI_OTHER = "Legitimate interest - other"
CONTRACT = "Performance of a contract"
CONSENT = "Freely given consent from contact"
NOT_APPLICABLE = "Not applicable"

HUBSPOT_PROPERTY = Vocabulary(
    name="hubspot hs_legal_basis",
    # The common model does not say which legitimate interest; "other" claims no more.
    written={
        LawfulBasis.CONSENT: CONSENT,
        LawfulBasis.CONTRACT: CONTRACT,
        LawfulBasis.LEGITIMATE_INTERESTS: LI_OTHER,
        LawfulBasis.NOT_APPLICABLE: NOT_APPLICABLE,
    },
    read={
        CONSENT: LawfulBasis.CONSENT,
        CONTRACT: LawfulBasis.CONTRACT,
        LI_PROSPECT: LawfulBasis.LEGITIMATE_INTERESTS,
        LI_CUSTOMER: LawfulBasis.LEGITIMATE_INTERESTS,
        LI_OTHER: LawfulBasis.LEGITIMATE_INTERESTS,
        NOT_APPLICABLE: LawfulBasis.NOT_APPLICABLE,
    },
)

HUBSPOT_SUBSCRIPTION = Vocabulary(
    name="hubspot subscription legalBasis",
    written={
        LawfulBasis.CONSENT: "CONSENT_WITH_NOTICE",
        LawfulBasis.CONTRACT: "PERFORMANCE_OF_CONTRACT",
        LawfulBasis.LEGITIMATE_INTERESTS: "LEGITIMATE_INTEREST_OTHER",
        LawfulBasis.NOT_APPLICABLE: "NON_GDPR",
    },
    # PROCESS_AND_STORE is left out on purpose: HubSpot does not document which Art. 6
    # basis it stands for, so it is reported rather than read as one.
    read={
        "CONSENT_WITH_NOTICE": LawfulBasis.CONSENT,
        "PERFORMANCE_OF_CONTRACT": LawfulBasis.CONTRACT,
        "LEGITIMATE_INTEREST_CLIENT": LawfulBasis.LEGITIMATE_INTERESTS,
        "LEGITIMATE_INTEREST_PQL": LawfulBasis.LEGITIMATE_INTERESTS,
        "LEGITIMATE_INTEREST_OTHER": LawfulBasis.LEGITIMATE_INTERESTS,
        "NON_GDPR": LawfulBasis.NOT_APPLICABLE,
    },
)

DEFAULT_HUBSPOT = HubSpotLawfulBases(property=HUBSPOT_PROPERTY, subscription=HUBSPOT_SUBSCRIPTION)

# Salesforce: the DataUseLegalBasis names an org with Data Protection and Privacy starts from
# (shared/reference/salesforce.md section 1), which the configured lawful-basis picklist field
# (``Lawful_Basis__c`` by default) usually repeats. Reads also accept the singular spellings.
SALESFORCE_LEGAL_BASIS = Vocabulary(
    name="salesforce DataUseLegalBasis",
    written={
        LawfulBasis.CONSENT: "Consent",
        LawfulBasis.CONTRACT: "Contract",
        LawfulBasis.LEGAL_OBLIGATION: "Legal Obligation",
        LawfulBasis.VITAL_INTERESTS: "Vital Interests",
        LawfulBasis.PUBLIC_TASK: "Public Task",
        LawfulBasis.LEGITIMATE_INTERESTS: "Legitimate Interests",
    },
    read={
        "Consent": LawfulBasis.CONSENT,
        "Contract": LawfulBasis.CONTRACT,
        "Legal Obligation": LawfulBasis.LEGAL_OBLIGATION,
        "Vital Interests": LawfulBasis.VITAL_INTERESTS,
        "Vital Interest": LawfulBasis.VITAL_INTERESTS,
        "Public Task": LawfulBasis.PUBLIC_TASK,
        "Legitimate Interests": LawfulBasis.LEGITIMATE_INTERESTS,
        "Legitimate Interest": LawfulBasis.LEGITIMATE_INTERESTS,
        "Not Applicable": LawfulBasis.NOT_APPLICABLE,
    },
)


def salesforce_field_vocabulary(field: str, picklist: Iterable[str]) -> Vocabulary:
    """One org's lawful-basis picklist field, from the values its describe lists.

    Each basis is written as the org's own exact option that reads as it (the first, when
    several do); a basis no option stands for, and an option that names no basis, stay
    unmappable.
    """
    written: dict[LawfulBasis, str] = {}
    for option in picklist:
        with suppress(Unmappable):
            written.setdefault(SALESFORCE_LEGAL_BASIS.from_vendor(option), option)
    read = {**SALESFORCE_LEGAL_BASIS.read, **{value: basis for basis, value in written.items()}}
    return Vocabulary(name=f"salesforce {field}", written=written, read=read)


# --- merge --------------------------------------------------------------------------------

_OLDEST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class HeldBasis:
    """One record's lawful basis, with what the merge needs to weigh it."""

    basis: LawfulBasis
    modified_at: datetime | None
    system: str
    record_id: str

    def order(self) -> tuple[datetime, str, str, str]:
        return (self.modified_at or _OLDEST, self.system, self.record_id, self.basis.value)


@dataclass(frozen=True)
class BasisDecision:
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
        return BasisDecision(values[0].basis, max(values, key=HeldBasis.order), "agreed")
    follows = max(changed, key=HeldBasis.order)
    if len({h.basis for h in changed}) > 1:
        why = "systems disagree: the latest-modified record decides"
    elif agreed is None:
        why = "held in one system, not yet agreed"
    else:
        why = f"changed from {agreed.value} since the systems last agreed"
    return BasisDecision(follows.basis, follows, why)
