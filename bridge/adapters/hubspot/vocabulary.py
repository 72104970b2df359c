"""HubSpot's two lawful-basis vocabularies (docs/vendors/hubspot.md)."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.adapters.vocabulary import Vocabulary
from bridge.model import LawfulBasis


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
