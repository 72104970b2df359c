"""The ``[dynamics]`` settings section and the ``dynamics_*`` keys of ``[[purposes]]``."""

from __future__ import annotations

from functools import cache

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from bridge.adapters.dynamics import DYNAMICS
from bridge.adapters.spec import VendorSettings
from bridge.model import LawfulBasis, Purpose

# What minimisation allows by default: the columns the bridge reads or writes, and the
# everyday business columns retention and reports look at.
# fmt: off
_PERSON_COLUMNS = [
    "firstname", "lastname", "emailaddress1", "emailaddress2", "emailaddress3", "telephone1",
    "donotbulkemail", "donotemail", "donotphone", "donotpostalmail", "donotfax",
    "followemail", "msdyn_gdproptout", "cb_lawfulbasis", "cb_purgedue", "cb_lastactivity",
    "ownerid",
]
ALLOWED_FIELDS: dict[str, list[str]] = {
    f"{DYNAMICS}.contact": [*_PERSON_COLUMNS, "parentcustomerid"],
    f"{DYNAMICS}.lead": [*_PERSON_COLUMNS, "companyname", "leadsourcecode", "statuscode"],
    # Where ``field_for`` places consent: the sync writes it there.
    f"{DYNAMICS}.msdynmkt_contactpointconsent4": [
        "msdynmkt_contactpointvalue", "msdynmkt_contactpointtype", "msdynmkt_value",
        "msdynmkt_purposeid", "msdynmkt_source", "msdynmkt_reason", "msdynmkt_logicalreason",
    ],
}
# fmt: on

# The non-personal columns anonymising keeps for statistics.
KEEP_ON_ANONYMIZE: dict[str, list[str]] = {
    f"{DYNAMICS}.contact": ["ownerid", "parentcustomerid"],
    f"{DYNAMICS}.lead": ["ownerid", "leadsourcecode", "statuscode"],
}

# A custom choice column's options start at the publisher's prefix value (100,000,000 for the
# default publisher); these are the options the README's set-up creates, in this order.
LAWFUL_BASIS_OPTIONS: dict[LawfulBasis, int] = {
    basis: 100_000_000 + index for index, basis in enumerate(LawfulBasis)
}


class DynamicsSettings(VendorSettings):
    tenant_id: str | None = Field(None, description="the Microsoft Entra tenant (directory) id")
    client_id: str | None = Field(None, description="the app registration's application id")
    client_secret: SecretStr | None = None
    environment_url: str | None = Field(
        None, description="the environment, e.g. https://contoso.crm4.dynamics.com"
    )
    base_url: str | None = Field(
        None,
        description="every request (the token too) goes here instead of Microsoft (emulator, "
        "tests); the environment URL still names the token's scope",
    )
    authority_url: str = Field(
        "https://login.microsoftonline.com", description="Microsoft Entra ID's login host"
    )
    lawful_basis_field: str | None = Field(
        "cb_lawfulbasis",
        description="choice column on contact and lead holding the lawful basis; None: not held",
    )
    lawful_basis_options: dict[LawfulBasis, int] = Field(
        default_factory=lambda: dict(LAWFUL_BASIS_OPTIONS),
        description="the choice column's option value for each lawful basis",
    )
    due_field: str | None = Field(
        "cb_purgedue",
        description="date-only column on contact and lead the bridge sets when a person "
        "enters a retention rule's warning period; None: not marked",
    )
    delete_change_history: bool = Field(
        True,
        description="after erasing a row, delete its audit history (DeleteRecordChangeHistory; "
        "needs prvDeleteRecordChangeHistory); False: the erasure report says it remains",
    )
    webhook_key: SecretStr | None = Field(
        None, description="the key the service endpoint sends (header or ?code=)"
    )
    webhook_header: str = Field(
        "x-bridge-key",
        description="the header the service endpoint's HttpHeader authentication sends the "
        "key in; a WebhookKey endpoint's ?code= is accepted too",
    )
    requests_per_window: int = Field(
        6000,
        ge=1,
        description="requests per 5 minutes, Dataverse's service protection limit per user; "
        "lower it to leave room for other work of the application user",
    )


class DynamicsPurpose(BaseModel):
    """A purpose's Dynamics side: ``dynamics_purpose`` (a Customer Insights - Journeys
    purpose's name, ``msdynmkt_name``) and ``dynamics_topic`` (a topic's name, optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    purpose: str | None = None
    topic: str | None = None


@cache
def purpose_keys(purpose: Purpose) -> DynamicsPurpose:
    """The purpose's Dynamics side."""
    return DynamicsPurpose.model_validate(purpose.mapping(DYNAMICS))
