"""Settings: environment (``BRIDGE_*``, nested with ``__``) over a TOML file.

Secrets (every ``SecretStr`` field) come only from the environment or from files in
``BRIDGE_SECRETS_DIR`` (one file per variable name, as Docker and Kubernetes mount them);
a secret written into the TOML file is refused, because config files end up in repositories.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from cryptography.fernet import Fernet
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bridge.errors import ConfigError
from bridge.model import Purpose

ENV_PREFIX = "BRIDGE_"
DEFAULT_CONFIG = Path("config/bridge.toml")


class HubSpotSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    access_token: SecretStr | None = None
    base_url: str = "https://api.hubapi.com"
    client_secret: SecretStr | None = None
    webhook_url: str | None = Field(
        None, description="the target URL exactly as configured in the HubSpot app"
    )
    legacy_signatures: bool = Field(False, description="also accept v1/v2 signatures")
    portal_id: int | None = Field(
        None, description="the Hub ID (account menu), for links to contacts; None: no links"
    )
    app_url: str = Field(
        "https://app.hubspot.com",
        description="HubSpot's UI (https://app-eu1.hubspot.com for EU portals)",
    )


class SalesforceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

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
    empty_recycle_bin: bool = Field(
        True,
        description="without the Bulk API Hard Delete permission, purge erased rows from the "
        "recycle bin (SOAP emptyRecycleBin) instead of leaving them there for 15 days",
    )


class RelatedRecords(BaseModel):
    """Salesforce rows of ``related_object`` whose ``link_field`` points at a Contact or Lead
    and that match ``where`` (SOQL): a deal, a quote, a task that says something about the
    person the record alone does not."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    related_object: str = Field(description="e.g. Opportunity, Task")
    link_field: str = Field(
        description="the field pointing at the Contact or Lead: ContactId, WhoId"
    )
    where: str = Field(description="SOQL condition on the related object")


class LegalHold(RelatedRecords):
    """A reason the law requires keeping a record (Art. 17(3)): related rows hold the Contact
    or Lead being erased."""

    action: Literal["anonymize", "refuse"] = Field(
        description="anonymise the held record instead of deleting it, or refuse to erase it"
    )
    reason: str = Field(description="recorded in the audit log and receipt; no personal data")


class ErasureSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    legal_holds: list[LegalHold] = []
    keep_on_anonymize: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "hubspot.contact": ["lifecyclestage", "hs_lead_status", "hubspot_owner_id"],
            "salesforce.Contact": ["LeadSource", "AccountId", "OwnerId"],
            "salesforce.Lead": ["LeadSource", "Status", "Rating", "Industry", "OwnerId"],
        },
        description="per '<system>.<object>': the non-personal fields anonymising keeps for "
        "statistics; every other field holding a value is cleared or given a placeholder",
    )
    reerase_reappeared: bool = Field(
        False, description="erase an erased person again when they re-appear in a CRM"
    )
    lease_seconds: float = Field(
        30,
        ge=1,
        description="how long a claimed step is reserved for the instance running it; if that "
        "instance dies, another retries the step after this; longer than the slowest step",
    )


class RectifySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fields: list[str] = Field(
        default_factory=lambda: ["first_name", "last_name", "phone"],
        description="common field names `bridge rectify --set` may write",
    )


# What minimisation allows by default: the fields the bridge reads or writes, and the
# everyday business fields retention and reports look at.
# fmt: off
DEFAULT_ALLOWED_FIELDS: dict[str, list[str]] = {
    "hubspot.contact": [
        "email", "hs_additional_emails", "firstname", "lastname", "phone", "company", "jobtitle",
        "lifecyclestage", "hs_lead_status", "hubspot_owner_id", "hs_legal_basis",
        "hs_email_optout*", "bridge_purge_due",
    ],
    "salesforce.Contact": [
        "Email", "FirstName", "LastName", "Phone", "MobilePhone", "AccountId", "OwnerId",
        "LeadSource", "HasOptedOutOfEmail", "DoNotCall", "IndividualId", "Lawful_Basis__c",
        "Purge_Due__c", "Contract_End__c",
    ],
    "salesforce.Lead": [
        "Email", "FirstName", "LastName", "Phone", "MobilePhone", "Company", "Status", "OwnerId",
        "LeadSource", "Industry", "Rating", "HasOptedOutOfEmail", "DoNotCall", "IndividualId",
        "Lawful_Basis__c", "Purge_Due__c",
    ],
    "salesforce.Individual": [
        "FirstName", "LastName", "HasOptedOutSolicit", "HasOptedOutProcessing", "ShouldForget",
    ],
    "salesforce.ContactPointTypeConsent": [
        "Name", "PartyId", "DataUsePurposeId", "ContactPointType", "PrivacyConsentStatus",
        "CaptureDate", "CaptureSource", "CaptureContactPointType", "DoubleConsentCaptureDate",
    ],
    "salesforce.ContactPointEmail": ["ParentId", "EmailAddress", "IsPrimary"],
}
# fmt: on


class MinimisationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allowed: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_ALLOWED_FIELDS.items()},
        description="per '<system>.<object>': the fields the bridge may hold and copy "
        "('*' ends a prefix); an object not named allows nothing",
    )


# A condition on records: field name -> the values that match ("" matches an empty field,
# "*" any value). Per "<system>.<object>"; every field named must match ({} matches all).
Conditions = dict[str, dict[str, list[str]]]
RETAINED_OBJECTS = ("hubspot.contact", "salesforce.Contact", "salesforce.Lead")


class RetentionRule(BaseModel):
    """When records stop being justified (Art. 5(1)(e)) and what then happens to the person.

    A subject falls under the rule when every one of its Contacts, Leads and HubSpot
    contacts matches ``covers`` (an object not named there matches nothing). It is kept
    while anything justifies it, in any system: activity (its records' creation, last
    activity and ``since`` dates) within ``keep_months``, a granted consent for one of
    ``kept_while_consent``, a record matching ``kept_if``, or a related Salesforce row of
    ``kept_while_related``. Otherwise it falls due ``keep_months`` after the latest of those
    dates, and ``warning_days`` before that it is marked in both CRMs.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    covers: Conditions = Field(min_length=1)
    keep_months: int = Field(ge=1, le=1200)
    since: list[str] = Field(
        default_factory=list,
        description="'<system>.<object>.<field>' dates that restart the clock too "
        "(an event date, a contract end)",
    )
    kept_while_consent: list[str] = Field(
        default_factory=list, description="purpose ids whose granted consent keeps the person"
    )
    kept_if: Conditions = Field(default_factory=dict)
    kept_while_related: list[RelatedRecords] = Field(default_factory=list)
    action: Literal["delete", "anonymize"]
    warning_days: int = Field(30, ge=0, le=3650)

    @field_validator("covers", "kept_if")
    @classmethod
    def _known_objects(cls, value: Conditions) -> Conditions:
        unknown = sorted(set(value) - set(RETAINED_OBJECTS))
        if unknown:
            raise ValueError(
                f"unknown object {', '.join(unknown)}; use {', '.join(RETAINED_OBJECTS)}"
            )
        return value

    @field_validator("since")
    @classmethod
    def _dated_fields(cls, value: list[str]) -> list[str]:
        for entry in value:
            if entry.rpartition(".")[0] not in RETAINED_OBJECTS:
                raise ValueError(
                    f"{entry!r} is not '<system>.<object>.<field>' with an object of "
                    f"{', '.join(RETAINED_OBJECTS)}"
                )
        return value

    def since_fields(self, obj: str) -> list[str]:
        return [e.rpartition(".")[2] for e in self.since if e.rpartition(".")[0] == obj]


# The contact property the bridge sets in HubSpot during a retention warning period.
HUBSPOT_DUE_PROPERTY = "bridge_purge_due"


class RetentionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[RetentionRule] = []
    salesforce_due_field: str | None = Field(
        "Purge_Due__c",
        description="date field on Contact and Lead the bridge sets when a person enters a "
        "rule's warning period (HubSpot: the property bridge_purge_due); None: not marked",
    )

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, value: list[RetentionRule]) -> list[RetentionRule]:
        names = [r.name for r in value]
        if repeated := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"rule names must be unique; repeated: {', '.join(repeated)}")
        return value

    def fields_read(self, obj: str) -> list[str]:
        """The fields of ``obj`` ("<system>.<object>") the rules look at, for the adapters
        to read with every record; none without rules (the org may lack the due field)."""
        if not self.rules:
            return []
        names: set[str] = set()
        for rule in self.rules:
            for conditions in (rule.covers, rule.kept_if):
                names.update(conditions.get(obj, {}))
            names.update(rule.since_fields(obj))
        return sorted(names)


class WebSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)


class ScheduleSettings(BaseModel):
    """When the daemon (``bridge run``) does what. A job still running when it is due again is
    not started a second time: that run is skipped."""

    model_config = ConfigDict(extra="forbid")

    incremental_sync_minutes: float = Field(
        5, gt=0, description="pull and reconcile what changed since the last sync (leader only)"
    )
    full_sync_cron: str = Field(
        "0 2 * * *",
        description="crontab (minute hour day month weekday, the host's local time): a full "
        "reconciliation of every record (leader only); weekdays by name (sun, mon-fri)",
    )
    retention_cron: str = Field(
        "30 3 * * *",
        description="crontab: mark who enters a retention warning period and erase who is "
        "due (leader only)",
    )
    inbox_seconds: float = Field(2, gt=0, description="process stored webhook events")
    erasure_seconds: float = Field(30, gt=0, description="run open erasure requests")
    leader_check_seconds: float = Field(
        10, gt=0, description="how often an instance checks (or takes over) the leader lock"
    )

    @field_validator("full_sync_cron", "retention_cron")
    @classmethod
    def _crontab(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        fields = value.split()
        # APScheduler 3 counts weekday 0 as Monday, crontab as Sunday: names are unambiguous.
        if len(fields) == 5 and any(c.isdigit() for c in fields[4]):
            raise ValueError(
                "write the weekday by name (sun, mon-fri), not by number: "
                "numbers mean different days to different cron dialects"
            )
        try:
            CronTrigger.from_crontab(value)
        except ValueError as error:
            raise ValueError(
                f"not a crontab expression (minute hour day month weekday): {error}"
            ) from None
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        toml_file=DEFAULT_CONFIG,
    )

    database_url: str = "sqlite:///./bridge.db"
    pseudonym_key: SecretStr | None = None
    encryption_key: SecretStr | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    hubspot: HubSpotSettings = HubSpotSettings()
    salesforce: SalesforceSettings = SalesforceSettings()
    web: WebSettings = WebSettings()
    erasure: ErasureSettings = ErasureSettings()
    rectify: RectifySettings = RectifySettings()
    schedule: ScheduleSettings = ScheduleSettings()
    minimisation: MinimisationSettings = MinimisationSettings()
    retention: RetentionSettings = RetentionSettings()
    purposes: list[Purpose] = []

    @field_validator("pseudonym_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters of random secret")
        return value

    @field_validator("encryption_key")
    @classmethod
    def _fernet_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                Fernet(value.get_secret_value())
            except ValueError:
                raise ValueError(
                    "must be a Fernet key (32 url-safe base64-encoded bytes)"
                ) from None
        return value

    @field_validator("purposes")
    @classmethod
    def _unique_purposes(cls, value: list[Purpose]) -> list[Purpose]:
        ids = [p.id for p in value]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"purpose ids must be unique; repeated: {', '.join(duplicates)}")
        return value

    @model_validator(mode="after")
    def _rules_name_purposes(self) -> Settings:
        known = {p.id for p in self.purposes}
        for rule in self.retention.rules:
            if unknown := sorted(set(rule.kept_while_consent) - known):
                raise ValueError(
                    f"retention rule {rule.name}: kept_while_consent names unknown purposes "
                    f"{', '.join(unknown)}; use ids of [[purposes]]"
                )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("secrets_dir"):
            sources.append(NestedSecretsSettingsSource(file_secret_settings))
        sources.append(_TomlWithoutSecrets(settings_cls))
        return tuple(sources)

    def require_pseudonym_key(self) -> bytes:
        """The HMAC key for ``subject_ref``; nothing that pseudonymises can run without it."""
        if self.pseudonym_key is None:
            raise ConfigError(
                [
                    "pseudonym_key: not set; set BRIDGE_PSEUDONYM_KEY to a random secret of at "
                    "least 32 characters (python -c 'import secrets; print(secrets.token_hex(32))')"
                ]
            )
        return self.pseudonym_key.get_secret_value().encode()

    def require_encryption_key(self) -> bytes:
        """The Fernet key for personal data held in flight (inbox payloads, open requests)."""
        if self.encryption_key is None:
            raise ConfigError(
                [
                    "encryption_key: not set; set BRIDGE_ENCRYPTION_KEY to a Fernet key "
                    "(python -c 'from cryptography.fernet import Fernet; "
                    "print(Fernet.generate_key().decode())')"
                ]
            )
        return self.encryption_key.get_secret_value().encode()


def env_name(key: str) -> str:
    """``hubspot.access_token`` -> ``BRIDGE_HUBSPOT__ACCESS_TOKEN``."""
    return ENV_PREFIX + key.replace(".", "__").upper()


def secret_keys(model: type[BaseModel] = Settings, prefix: str = "") -> list[str]:
    """Dotted names of every secret setting: the ``SecretStr`` fields, however deep."""
    keys = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += secret_keys(annotation, f"{prefix}{name}.")
        elif SecretStr in getattr(annotation, "__args__", ()) or annotation is SecretStr:
            keys.append(prefix + name)
    return keys


class _TomlWithoutSecrets(TomlConfigSettingsSource):
    """The TOML source, refusing any secret found in the file."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = settings_cls.model_config.get("toml_file")
        found = [key for key in secret_keys() if _dig(self.toml_data, key.split(".")) is not None]
        if found:
            raise ConfigError(
                [
                    f"{key}: secrets may not be written in {path}; remove it there and set "
                    f"{env_name(key)} in the environment or in BRIDGE_SECRETS_DIR"
                    for key in found
                ]
            )


def _dig(data: Any, path: list[str]) -> Any:
    for part in path:
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def load_settings(config: Path | None = None) -> Settings:
    """Load settings from ``config`` (or ``BRIDGE_CONFIG``, or ``config/bridge.toml``).

    An explicitly named file must exist; the default one may be absent. Every problem comes
    back in one ``ConfigError``, one line per key, each naming the fix.
    """
    from_env = os.environ.get("BRIDGE_CONFIG")
    explicit = config or (Path(from_env) if from_env else None)
    path = explicit or DEFAULT_CONFIG
    if explicit and not explicit.is_file():
        raise ConfigError([f"config: file {explicit} not found; pass an existing --config file"])
    config_dict = {**Settings.model_config, "toml_file": path}
    if secrets_dir := os.environ.get("BRIDGE_SECRETS_DIR"):
        config_dict |= {"secrets_dir": secrets_dir, "secrets_dir_missing": "error"}
    bound = type("Settings", (Settings,), {"model_config": config_dict})
    try:
        return bound()  # type: ignore[no-any-return]
    except ValidationError as error:
        raise ConfigError([_describe(e, path) for e in error.errors()]) from None
    except (OSError, ValueError) as error:
        raise ConfigError([f"config: cannot read {path}: {error}"]) from None


def _describe(error: Any, path: Path) -> str:
    key = ".".join(str(part) for part in error["loc"])
    where = env_name(key) if key in secret_keys() else f"`{key}` in {path} or {env_name(key)}"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown setting; remove it (see config/bridge.example.toml for the keys)"
    message = error["msg"].removeprefix("Value error, ")
    return f"{key}: {message}; fix {where}"
