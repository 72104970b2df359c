"""The ``[salesforce]`` settings section and the ``salesforce_*`` keys of ``[[purposes]]``."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from bridge.adapters.salesforce import SALESFORCE
from bridge.adapters.spec import VendorSettings
from bridge.model import Purpose

# What minimisation allows by default: the fields the bridge reads or writes, and the
# everyday business fields retention and reports look at.
# fmt: off
ALLOWED_FIELDS: dict[str, list[str]] = {
    f"{SALESFORCE}.Contact": [
        "Email", "FirstName", "LastName", "Phone", "MobilePhone", "AccountId", "OwnerId",
        "LeadSource", "HasOptedOutOfEmail", "DoNotCall", "IndividualId", "Lawful_Basis__c",
        "Purge_Due__c", "Contract_End__c",
    ],
    f"{SALESFORCE}.Lead": [
        "Email", "FirstName", "LastName", "Phone", "MobilePhone", "Company", "Status",
        "OwnerId", "LeadSource", "Industry", "Rating", "HasOptedOutOfEmail", "DoNotCall",
        "IndividualId", "Lawful_Basis__c", "Purge_Due__c",
    ],
    f"{SALESFORCE}.Individual": [
        "FirstName", "LastName", "HasOptedOutSolicit", "HasOptedOutProcessing",
        "ShouldForget",
    ],
    f"{SALESFORCE}.ContactPointTypeConsent": [
        "Name", "PartyId", "DataUsePurposeId", "ContactPointType", "PrivacyConsentStatus",
        "CaptureDate", "CaptureSource", "CaptureContactPointType",
        "DoubleConsentCaptureDate",
    ],
    f"{SALESFORCE}.ContactPointEmail": ["ParentId", "EmailAddress", "IsPrimary"],
}
# fmt: on

# The non-personal fields anonymising keeps for statistics.
KEEP_ON_ANONYMIZE: dict[str, list[str]] = {
    f"{SALESFORCE}.Contact": ["LeadSource", "AccountId", "OwnerId"],
    f"{SALESFORCE}.Lead": ["LeadSource", "Status", "Rating", "Industry", "OwnerId"],
}


class SalesforceSettings(VendorSettings):
    base_url: str | None = Field(
        None, description="every request goes here instead of Salesforce (emulator, tests)"
    )
    username: str | None = None
    password: SecretStr | None = None
    security_token: SecretStr | None = None
    domain: str = "login"
    consumer_key: str | None = None
    consumer_secret: SecretStr | None = None
    private_key_file: Path | None = None
    instance_url: str | None = None
    session_id: SecretStr | None = None
    organization_id: str | None = None
    outbound_token: SecretStr | None = None
    lawful_basis_field: str | None = Field(
        "Lawful_Basis__c",
        description="picklist on Contact and Lead holding the lawful basis; None: not held",
    )
    api_quota_reserve: float = Field(
        0.05, ge=0, lt=1, description="share of the daily API quota left to other integrations"
    )
    due_field: str | None = Field(
        "Purge_Due__c",
        description="date field on Contact and Lead the bridge sets when a person enters a "
        "retention rule's warning period; None: not marked (was retention.salesforce_due_field)",
    )
    empty_recycle_bin: bool = Field(
        True,
        description="without the Bulk API Hard Delete permission, purge erased rows from the "
        "recycle bin (SOAP emptyRecycleBin) instead of leaving them there for 15 days",
    )


class SalesforcePurpose(BaseModel):
    """A purpose's Salesforce side: ``salesforce_data_use_purpose`` (a DataUsePurpose name)
    and ``salesforce_contact_point_type`` (Email, Phone, ...; default from the channel)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_use_purpose: str | None = None
    contact_point_type: str | None = None


@cache
def purpose_keys(purpose: Purpose) -> SalesforcePurpose:
    """The purpose's Salesforce side."""
    return SalesforcePurpose.model_validate(purpose.mapping(SALESFORCE))


def contact_point_type(purpose: Purpose) -> str:
    """The ContactPointType the purpose's consent rows name: as configured, else from the
    purpose's channel."""
    return purpose_keys(purpose).contact_point_type or purpose.channel.capitalize()
