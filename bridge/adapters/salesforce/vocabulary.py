"""Salesforce's lawful-basis vocabulary (docs/vendors/salesforce.md)."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import suppress

from bridge.adapters.vocabulary import Unmappable, Vocabulary
from bridge.model import LawfulBasis

# Salesforce: the DataUseLegalBasis names an org with Data Protection and Privacy starts from
# (docs/vendors/salesforce.md, "Lawful-basis vocabulary"), which the lawful-basis picklist field
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
