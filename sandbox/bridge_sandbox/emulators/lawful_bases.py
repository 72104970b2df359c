"""Each vendor's own words for the GDPR Art. 6 lawful bases, as the sandbox writes and reads them.

The sandbox keeps these tables itself, written from the vendor facts (the lawful-basis
sections of docs/vendors/hubspot.md and docs/vendors/salesforce.md) and never taken from the
bridge: the seeders, the demo's checks and the tests work out what a CRM should hold with
them, so a mapping bug in the bridge cannot pass on both sides. A basis is named as
the bridge's configuration and reports name it: ``consent``, ``contract``,
``legal_obligation``, ``vital_interests``, ``public_task``, ``legitimate_interests`` (GDPR
Art. 6(1)(a)-(f)) and ``not_applicable``.

Reads are exact, as the vendors' options are: a value spelled any other way names no basis.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final


class UnknownBasis(ValueError):
    """A vendor value that names no basis, or a multi-select whose options name several."""


# HubSpot's contact property ``hs_legal_basis``: a multi-select (options joined with ``;``)
# whose option values equal their labels, dashes exactly as HubSpot spells them (two en
# dashes, one ASCII hyphen). Which legitimate interest is not said in common terms, so the
# option that claims no more, "other", is the one written for it.
HUBSPOT_LEGAL_BASIS: Final[Mapping[str, str]] = {
    "consent": "Freely given consent from contact",
    "contract": "Performance of a contract",
    "legitimate_interests": "Legitimate interest - other",
    "not_applicable": "Not applicable",
}
HUBSPOT_LEGAL_BASIS_READ: Final[Mapping[str, str]] = {
    "Freely given consent from contact": "consent",
    "Performance of a contract": "contract",
    "Legitimate interest \u2013 prospect/lead": "legitimate_interests",
    "Legitimate interest \u2013 existing customer": "legitimate_interests",
    "Legitimate interest - other": "legitimate_interests",
    "Not applicable": "not_applicable",
}

# The ``legalBasis`` enum HubSpot records with every subscription change. HubSpot does not
# document which Art. 6 basis PROCESS_AND_STORE stands for, so it is read as none of them.
HUBSPOT_SUBSCRIPTION_LEGAL_BASIS: Final[Mapping[str, str]] = {
    "consent": "CONSENT_WITH_NOTICE",
    "contract": "PERFORMANCE_OF_CONTRACT",
    "legitimate_interests": "LEGITIMATE_INTEREST_OTHER",
    "not_applicable": "NON_GDPR",
}
HUBSPOT_SUBSCRIPTION_LEGAL_BASIS_READ: Final[Mapping[str, str]] = {
    "CONSENT_WITH_NOTICE": "consent",
    "PERFORMANCE_OF_CONTRACT": "contract",
    "LEGITIMATE_INTEREST_CLIENT": "legitimate_interests",
    "LEGITIMATE_INTEREST_PQL": "legitimate_interests",
    "LEGITIMATE_INTEREST_OTHER": "legitimate_interests",
    "NON_GDPR": "not_applicable",
}

# Salesforce: the DataUseLegalBasis names the emulated org starts with, which its default
# lawful-basis picklist (``Lawful_Basis__c``) repeats. Salesforce has no "not applicable".
SALESFORCE_LEGAL_BASIS: Final[Mapping[str, str]] = {
    "consent": "Consent",
    "contract": "Contract",
    "legal_obligation": "Legal Obligation",
    "vital_interests": "Vital Interests",
    "public_task": "Public Task",
    "legitimate_interests": "Legitimate Interests",
}
SALESFORCE_LEGAL_BASIS_READ: Final[Mapping[str, str]] = {
    name: basis for basis, name in SALESFORCE_LEGAL_BASIS.items()
}


def hubspot_basis(value: str | None) -> str | None:
    """The basis an ``hs_legal_basis`` value names; None when it holds no option."""
    options = [option for option in (value or "").split(";") if option]
    unknown = [option for option in options if option not in HUBSPOT_LEGAL_BASIS_READ]
    if unknown:
        raise UnknownBasis(f"hs_legal_basis option {unknown[0]!r} names no lawful basis")
    bases = {HUBSPOT_LEGAL_BASIS_READ[option] for option in options}
    if len(bases) > 1:
        raise UnknownBasis(f"hs_legal_basis {value!r} names more than one lawful basis")
    return bases.pop() if bases else None


def salesforce_basis(value: str | None) -> str | None:
    """The basis a DataUseLegalBasis name (or lawful-basis picklist value) names."""
    if not value:
        return None
    try:
        return SALESFORCE_LEGAL_BASIS_READ[value]
    except KeyError:
        raise UnknownBasis(f"{value!r} is no DataUseLegalBasis name") from None
