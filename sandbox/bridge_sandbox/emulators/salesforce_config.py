"""Configuration of the Salesforce emulator: the org profile, credentials, limits,
permissions, custom fields, outbound messages. Everything has a default, so ``create_app()``
serves a permissive org with Data Protection and Privacy on."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bridge_sandbox.emulators.salesforce_model import CustomField, make_id

DEFAULT_ORGANIZATION_ID = make_id("00D", 0xB21D6E)
Org = Literal["privacy", "basic"]
ORGS: tuple[Org, ...] = ("privacy", "basic")
LEGAL_BASES = (
    ("Consent", "GDPR Art. 6(1)(a): the person consented"),
    ("Contract", "GDPR Art. 6(1)(b): needed for a contract with the person"),
    ("Legal Obligation", "GDPR Art. 6(1)(c): needed to comply with a legal obligation"),
    ("Vital Interests", "GDPR Art. 6(1)(d): needed to protect someone's vital interests"),
    ("Public Task", "GDPR Art. 6(1)(e): needed for a task in the public interest"),
    ("Legitimate Interests", "GDPR Art. 6(1)(f): needed for legitimate interests"),
)


def _default_custom_fields() -> dict[str, list[CustomField]]:
    lawful_basis = CustomField(
        name="Lawful_Basis__c", type="picklist", values=[name for name, _ in LEGAL_BASES]
    )
    # Where the bridge marks people a retention rule will soon purge, and (on Contacts) the
    # end of a customer's contract that the example retention rules count from.
    purge_due = CustomField(name="Purge_Due__c", type="date")
    contract_end = CustomField(name="Contract_End__c", type="date")
    return {"Contact": [lawful_basis, purge_due, contract_end], "Lead": [lawful_basis, purge_due]}


class OutboundMessageConfig(BaseModel):
    """An Outbound Message as Setup defines it, fired when a watched field changes."""

    model_config = ConfigDict(extra="forbid")

    object: str = Field(description="sObject type, e.g. Contact")
    endpoint_url: str = Field(description="where the SOAP notification is POSTed")
    watched_fields: list[str] = Field(min_length=1, description="a change to any fires it")
    fields: list[str] = Field(
        default_factory=list, description="sent besides Id and the watched fields"
    )
    send_session_id: bool = False


class SalesforceEmulatorConfig(BaseModel):
    """How one emulated org behaves. Credentials only matter when ``strict_auth`` is on."""

    model_config = ConfigDict(extra="forbid")

    org: Org = Field(
        "privacy",
        description="privacy: Data Protection and Privacy on (Individual, "
        "ContactPointTypeConsent, DataUsePurpose, DataUseLegalBasis, IndividualId); basic: "
        "none of them, as most orgs",
    )
    strict_auth: bool = Field(False, description="check credentials and reject unknown tokens")
    username: str = "bridge@example.com"
    password: str = "password"  # noqa: S105 - an emulator default, not a secret
    security_token: str = "token"  # noqa: S105
    consumer_key: str = "bridge-consumer-key"
    consumer_secret: str = "bridge-consumer-secret"  # noqa: S105
    organization_id: str = Field(DEFAULT_ORGANIZATION_ID, pattern=r"^00D[A-Za-z0-9]{15}$")
    instance_url: str | None = Field(
        None, description="returned by logins; by default the URL the emulator was called on"
    )
    session_lifetime_seconds: float = Field(7200.0, gt=0, description="inactivity timeout")
    daily_api_limit: int = Field(15000, ge=0, description="DailyApiRequests Max, rolling 24 h")
    hard_delete_permission: bool = Field(False, description='"Bulk API Hard Delete" granted')
    undeletable_ids: list[str] = Field(
        default_factory=list,
        description="records shared with the integration user Read/Write, not Full Access: "
        "it may change them but not delete them (INSUFFICIENT_ACCESS_OR_READONLY)",
    )
    custom_fields: dict[str, list[CustomField]] = Field(default_factory=_default_custom_fields)
    seed_legal_bases: bool = Field(
        True, description="start with the six GDPR legal bases (where the org has the object)"
    )
    outbound_messages: list[OutboundMessageConfig] = Field(default_factory=list)
    outbound_retry_delays_seconds: list[float] = Field(
        default_factory=lambda: [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0],
        min_length=1,
        description="wait after the 1st, 2nd... failed delivery; the last one repeats",
    )
    outbound_give_up_after_seconds: float = Field(
        3600.0, gt=0, description="Salesforce drops a message after 24 h; shortened here"
    )
    outbound_timeout_seconds: float = Field(5.0, gt=0)


class SettingsUpdate(BaseModel):
    """What the admin API may change while the emulator runs; unset fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    strict_auth: bool | None = None
    session_lifetime_seconds: float | None = Field(None, gt=0)
    daily_api_limit: int | None = Field(None, ge=0)
    api_requests_used: int | None = Field(None, ge=0, description="set the 24 h usage counter")
    hard_delete_permission: bool | None = None
    undeletable_ids: list[str] | None = None
