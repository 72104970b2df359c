"""Settings: environment (``BRIDGE_*``, nested with ``__``) over a TOML file.

Secrets (every ``SecretStr`` field) come only from the environment or from files in
``BRIDGE_SECRETS_DIR`` (one file per variable name, as Docker and Kubernetes mount them);
a secret written into the TOML file is refused, because config files end up in repositories.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cryptography.fernet import Fernet
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    create_model,
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

from bridge.adapters.registry import VENDORS, person_objects
from bridge.errors import ConfigError
from bridge.model import Purpose, RelatedRecords
from bridge.policies.retention import RetentionRule

ENV_PREFIX = "BRIDGE_"
DEFAULT_CONFIG = Path("config/bridge.toml")


def _merged(attribute: str) -> dict[str, list[str]]:
    """Every vendor's default of ``attribute``, per ``<vendor>.<object>``."""
    return {
        key: list(values)
        for vendor in VENDORS.values()
        for key, values in getattr(vendor, attribute).items()
    }


class LegalHold(RelatedRecords):
    """A reason the law requires keeping a record (Art. 17(3)): related rows hold the person's
    record being erased."""

    action: Literal["anonymize", "refuse"] = Field(
        description="anonymise the held record instead of deleting it, or refuse to erase it"
    )
    reason: str = Field(description="recorded in the audit log and receipt; no personal data")


class ErasureSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    legal_holds: list[LegalHold] = []
    keep_on_anonymize: dict[str, list[str]] = Field(
        default_factory=lambda: _merged("keep_on_anonymize"),
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
    retry_seconds: float = Field(
        300,
        gt=0,
        description="the daemon tries a failed request again after about this long (jittered), "
        "twice as long after each further failure, up to retry_max_seconds, until its due date",
    )
    retry_max_seconds: float = Field(
        6 * 3600, gt=0, description="the longest the daemon waits between tries of a request"
    )
    flag_after_hours: float = Field(
        24,
        gt=0,
        description="a request still failing this long after it first failed is flagged (an "
        "audit event, the bridge_erasure_requests metric, bridge requests --failed)",
    )
    flag_days_before_due: int = Field(
        7, ge=0, le=28, description="an unfinished request this close to its due date is flagged"
    )


class RectifySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fields: list[str] = Field(
        default_factory=lambda: ["first_name", "last_name", "phone"],
        description="common field names `bridge rectify --set` may write",
    )


class MinimisationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allowed: dict[str, list[str]] = Field(
        default_factory=lambda: _merged("allowed_fields"),
        description="per '<system>.<object>': the fields the bridge may hold and copy "
        "('*' ends a prefix); an object not named allows nothing",
    )


class RetentionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[RetentionRule] = []

    @field_validator("rules")
    @classmethod
    def _checked(cls, value: list[RetentionRule]) -> list[RetentionRule]:
        names = [r.name for r in value]
        if repeated := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"rule names must be unique; repeated: {', '.join(repeated)}")
        people = person_objects()
        for rule in value:
            if unknown := sorted((set(rule.covers) | set(rule.kept_if)) - set(people)):
                raise ValueError(
                    f"rule {rule.name}: unknown object {', '.join(unknown)}; "
                    f"use {', '.join(people)}"
                )
            for entry in rule.since:
                if entry.rpartition(".")[0] not in people:
                    raise ValueError(
                        f"rule {rule.name}: {entry!r} is not '<system>.<object>.<field>' "
                        f"with an object of {', '.join(people)}"
                    )
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
    """Where the receiver listens, and how much any client may hold of it (``bridge serve``
    and ``bridge run`` alike; bridge/runtime/listener.py)."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    header_timeout_seconds: float = Field(
        10,
        gt=0,
        description="a request's line and headers must arrive within this long of the "
        "connection opening (or of the request's first byte); else 408 and closed",
    )
    body_timeout_seconds: float = Field(
        30,
        gt=0,
        description="a request's whole body must arrive within this long of its headers; "
        "else 408 and closed",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="connections open at once on each listener (the receiver's, and the "
        "console's own); one more is answered 503 and closed (lowered, with a warning, if the "
        "process may not open that many files)",
    )
    public_rate_limit: str = Field(
        "120/minute",
        description="per client address and path, on the paths anyone may call (/healthz, "
        "/readyz, /metrics): N/second, N/minute or N/hour; over it, 429. Webhooks are never "
        "limited",
    )

    console_host: str | None = Field(
        None,
        description="serve the console (/console) on a listener of its own, e.g. an internal "
        "interface, instead of beside the webhooks; with console_port",
    )
    console_port: int | None = Field(None, ge=1, le=65535, validate_default=True)
    secure_cookies: bool | None = Field(
        None,
        description="mark session cookies Secure; unset: when the request came over https "
        "(set true behind a proxy that ends TLS)",
    )
    session_idle_minutes: float = Field(
        30, gt=0, description="a console session ends after this long without a request"
    )
    session_hours: float = Field(
        12, gt=0, description="a console session ends this long after sign-in, used or not"
    )
    login_max_failures: int = Field(
        5, ge=1, description="failed sign-ins to one account before it is locked"
    )
    login_lockout_minutes: float = Field(
        15, gt=0, description="how long a locked account (and the failures counted) lasts"
    )
    login_max_failures_per_client: int = Field(
        20, ge=1, description="failed sign-ins from one client address per hour, any account"
    )

    portal_host: str | None = Field(
        None,
        description="serve the privacy portal (/privacy) on a listener of its own, e.g. the "
        "one a reverse proxy forwards to, instead of beside the webhooks; with portal_port",
    )
    portal_port: int | None = Field(None, ge=1, le=65535, validate_default=True)
    public_url: AnyHttpUrl | None = Field(
        None,
        description="the address people reach the bridge at, e.g. https://privacy.example.com; "
        "sign-in links are built from it, never from the request",
    )

    @field_validator("console_port", "portal_port")
    @classmethod
    def _listener_apart(cls, value: int | None, info: ValidationInfo) -> int | None:
        """Both or neither of a face's host and port; never the receiver's own listener (the
        face would not be apart from the webhooks, and cannot bind), nor for the portal the
        console's."""
        face = (info.field_name or "").removesuffix("_port")
        face_host = info.data.get(f"{face}_host")
        if (face_host is None) != (value is None):
            raise ValueError(
                f"{face}_host and {face}_port go together (the {face}'s own listener); "
                f"set both, or neither to serve the {face} beside the webhooks"
            )
        others = [("web.port", "receiver", info.data.get("host"), info.data.get("port"))]
        if face == "portal":
            console = (info.data.get("console_host"), info.data.get("console_port"))
            others.append(("web.console_port", "console", *console))
        for key, whose, host, port in others:
            if face_host and value and host and same_listener(face_host, value, host, port):
                raise ValueError(
                    f"must differ from {key} ({port}) when the {face} listens on the "
                    f"{whose}'s interface ({face_host} and {host} overlap)"
                )
        return value

    @field_validator("public_url")
    @classmethod
    def _bare_url(cls, value: AnyHttpUrl | None) -> AnyHttpUrl | None:
        """Links are built by appending to it: a query or fragment would end up mid-link."""
        if value is not None and (value.query or value.fragment):
            raise ValueError("must be a plain address without ?query or #fragment")
        return value

    @field_validator("public_rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        from limits import parse

        try:
            amount = parse(value).amount
        except ValueError:
            amount = 0
        if amount < 1:
            raise ValueError("must be N/second, N/minute or N/hour with N >= 1, e.g. 120/minute")
        return value


# How a host names every interface (recognised, not bound to, here).
EVERY_INTERFACE = {"", "0.0.0.0", "::", "[::]", "*"}  # noqa: S104
_LOOPBACK = {"localhost": "127.0.0.1", "[::1]": "::1"}


def same_listener(host: str, port: int | None, other_host: str, other_port: int | None) -> bool:
    """Whether two listeners would take the same socket: the same port on interfaces that
    overlap (the same one, or either of them every interface)."""
    a, b = (_LOOPBACK.get(h.lower(), h.lower()) for h in (host, other_host))
    return port == other_port and (a == b or a in EVERY_INTERFACE or b in EVERY_INTERFACE)


class SmtpSettings(BaseModel):
    """The mail server the portal's sign-in and confirmation emails go through (the password
    only from ``BRIDGE_SMTP__PASSWORD`` or the secrets folder)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    host: str | None = Field(
        None, description="the SMTP server; unset, the portal cannot send sign-in emails"
    )
    port: int = Field(587, ge=1, le=65535, description="587: submission, with STARTTLS")
    starttls: bool = Field(
        True,
        description="upgrade the connection with STARTTLS before logging in and sending; "
        "false only for a relay on this host or a trusted network",
    )
    from_address: str = Field(
        "privacy@localhost",
        alias="from",
        description='the From of every email, e.g. "Acme privacy <privacy@acme.example>"',
    )
    username: str | None = Field(None, description="log in with this name (and the password)")
    password: SecretStr | None = Field(None, validate_default=True)
    timeout_seconds: float = Field(
        10, gt=0, description="how long connecting and each SMTP exchange may take"
    )

    @field_validator("password")
    @classmethod
    def _login_whole(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if (info.data.get("username") is None) != (value is None):
            raise ValueError(
                "a login takes smtp.username and the password together; set both, or neither "
                "for a server that takes mail without one"
            )
        return value

    @field_validator("port")
    @classmethod
    def _not_implicit_tls(cls, value: int) -> int:
        """smtplib's SMTP speaks plain SMTP first; port 465 wants TLS first and would only
        time out."""
        if value == 465:
            raise ValueError(
                "465 is SMTPS (TLS from the first byte), which the bridge does not speak; use "
                "the submission port 587 with starttls = true"
            )
        return value

    @field_validator("from_address")
    @classmethod
    def _one_address(cls, value: str) -> str:
        from email.utils import parseaddr

        if "\r" in value or "\n" in value or "@" not in parseaddr(value)[1]:
            raise ValueError(
                'must be one address, e.g. privacy@acme.example or "Acme <privacy@acme.example>"'
            )
        return value


class PortalSettings(BaseModel):
    """How the privacy portal proves who someone is, and how much it sends to whom."""

    model_config = ConfigDict(extra="forbid")

    link_minutes: float = Field(
        15, gt=0, le=24 * 60, description="a sign-in link and its code work this long, once"
    )
    code_attempts: int = Field(
        5, ge=1, le=10, description="wrong codes typed before a sign-in email's code is dead"
    )
    session_minutes: float = Field(
        30, gt=0, le=24 * 60, description="a portal session ends this long after sign-in"
    )
    per_address_hour: int = Field(3, ge=1, description="sign-in emails to one address an hour")
    per_address_day: int = Field(10, ge=1, description="sign-in emails to one address a day")
    per_client_hour: int = Field(
        10, ge=1, description="sign-in emails asked from one client address an hour"
    )
    per_client_day: int = Field(
        50, ge=1, description="sign-in emails asked from one client address a day"
    )

    @model_validator(mode="after")
    def _hour_within_day(self) -> PortalSettings:
        for who in ("address", "client"):
            hour, day = getattr(self, f"per_{who}_hour"), getattr(self, f"per_{who}_day")
            if hour > day:
                raise ValueError(f"per_{who}_hour ({hour}) is more than per_{who}_day ({day})")
        return self


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


class AuditSettings(BaseModel):
    """The audit log's keys, and where signed checkpoints of its head go (ARCHITECTURE.md,
    "Cross-cutting"). Both keys are derived from the pseudonym key unless set."""

    model_config = ConfigDict(extra="forbid")

    key: SecretStr | None = Field(
        None,
        description="secret the hash chain's HMAC key is derived from, at least 32 characters; "
        "default: the pseudonym key. Fixed once rows are keyed: another key fails every row",
    )
    signing_key: SecretStr | None = Field(
        None,
        description="Ed25519 private key signing checkpoints, base64 of its 32 raw bytes; "
        "default: derived from the chain's secret",
    )
    checkpoint_path: Path | None = Field(
        None,
        description="file (or directory, for audit-checkpoints.jsonl) that signed checkpoints "
        "of the chain's head are appended to; somewhere the database's writers cannot write",
    )
    checkpoint_seconds: float = Field(
        60, gt=0, description="how often the daemon checkpoints the chain's head when it moved"
    )

    @field_validator("key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters of random secret")
        return value

    @field_validator("checkpoint_path", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        """``BRIDGE_AUDIT__CHECKPOINT_PATH=`` sets none (not the working directory)."""
        return None if value == "" else value

    @field_validator("signing_key")
    @classmethod
    def _ed25519_key(cls, value: SecretStr | None) -> SecretStr | None:
        import base64
        import binascii

        if value is not None:
            try:
                raw = base64.b64decode(value.get_secret_value(), validate=True)
            except binascii.Error:
                raw = b""
            if len(raw) != 32:
                raise ValueError(
                    "must be an Ed25519 private key, base64 of 32 random bytes (python -c "
                    "'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')"
                )
        return value


class CoreSettings(BaseSettings):
    """Every section but the vendors'; :data:`Settings` adds one per registered vendor."""

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
    web: WebSettings = WebSettings()
    erasure: ErasureSettings = ErasureSettings()
    rectify: RectifySettings = RectifySettings()
    schedule: ScheduleSettings = ScheduleSettings()
    minimisation: MinimisationSettings = MinimisationSettings()
    retention: RetentionSettings = RetentionSettings()
    audit: AuditSettings = AuditSettings()
    smtp: SmtpSettings = SmtpSettings()
    portal: PortalSettings = PortalSettings()
    purposes: list[Purpose] = []

    @field_validator("database_url")
    @classmethod
    def _usable_database_url(cls, value: str) -> str:
        """A URL SQLAlchemy parses, of a supported backend whose driver is installed; the
        message never repeats the URL (it may hold a password)."""
        from bridge.store.db import url_problem

        if problem := url_problem(value):
            raise ValueError(problem)
        return value

    @field_validator("pseudonym_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters of random secret")
        return value

    @field_validator("encryption_key")
    @classmethod
    def _fernet_keys(cls, value: SecretStr | None) -> SecretStr | None:
        """One Fernet key, or several (newest first, while older ones are rotated out)."""
        if value is None:
            return value
        keys = _split_keys(value.get_secret_value())
        if not keys:
            raise ValueError(f"is empty; set it to a Fernet key ({GENERATE_FERNET_KEY})")
        for number, key in enumerate(keys, 1):
            which = f"key {number} of {len(keys)} " if len(keys) > 1 else ""
            try:
                Fernet(key)
            except ValueError:
                raise ValueError(
                    f"{which}must be a Fernet key (32 url-safe base64-encoded bytes)"
                ) from None
            if _obviously_not_random(key):
                raise ValueError(
                    f"{which}is not a random key; generate one with {GENERATE_FERNET_KEY}"
                )
        return value

    @field_validator("purposes")
    @classmethod
    def _unique_purposes(cls, value: list[Purpose]) -> list[Purpose]:
        ids = [p.id for p in value]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"purpose ids must be unique; repeated: {', '.join(duplicates)}")
        return [_vendor_keys_checked(purpose) for purpose in value]

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        """Settings a vendor's section now holds, still accepted under their older names."""
        if not isinstance(data, dict):
            return data
        for vendor in VENDORS.values():
            for old, new in vendor.moved_keys.items():
                section, _, key = old.partition(".")
                if isinstance(data.get(section), dict) and key in data[section]:
                    moved = {**data[section]}
                    value = moved.pop(key)
                    data = {**data, section: moved}
                    data[vendor.name] = {new: value, **(data.get(vendor.name) or {})}
        return data

    @model_validator(mode="after")
    def _related_rows_name_their_crm(self) -> CoreSettings:
        """A condition on related rows is one CRM's query: with two CRMs that keep such rows
        configured, each must say whose (``system``)."""
        keeping = [
            v.name for v in VENDORS.values() if v.related_rows and v.configured(self.vendor(v.name))
        ]
        conditions: list[tuple[str, RelatedRecords]] = [
            ("legal hold", c) for c in self.erasure.legal_holds
        ]
        conditions += [
            ("retention rule", c) for rule in self.retention.rules for c in rule.kept_while_related
        ]
        for kind, condition in conditions:
            if condition.system is not None and condition.system not in VENDORS:
                raise ValueError(
                    f"{kind} {condition.name}: system {condition.system!r} is no CRM the bridge "
                    f"knows; use one of {', '.join(VENDORS)}"
                )
            if condition.system is None and len(keeping) > 1:
                raise ValueError(
                    f"{kind} {condition.name}: {' and '.join(keeping)} both keep related rows; "
                    f'say whose rows it reads, e.g. system = "{keeping[0]}"'
                )
        return self

    @model_validator(mode="after")
    def _rules_date_every_crms_activity(self) -> CoreSettings:
        """A rule judges people by their records' latest dates: for a CRM whose records say
        nothing of activity, only the creation date would be left, and people still worked
        with would fall due; such a rule must name that CRM's activity date (``since``)."""
        for rule in self.retention.rules:
            for obj in rule.covers:
                vendor = VENDORS.get(obj.partition(".")[0])
                if vendor is None or vendor.last_activity or rule.since_fields(obj):
                    continue
                raise ValueError(
                    f"retention rule {rule.name}: {vendor.title} records carry no "
                    f"last-activity date, so {obj} would be judged by its creation date "
                    f"alone and people still worked with could fall due; name the column "
                    f'that holds their last activity: since = ["{obj}.<column>"]'
                )
        return self

    @model_validator(mode="after")
    def _rules_name_purposes(self) -> CoreSettings:
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

    def vendor(self, name: str) -> Any:
        """The ``[name]`` section of a registered vendor."""
        return getattr(self, name)

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

    def require_encryption_keys(self) -> list[bytes]:
        """The Fernet keys for personal data held in flight (inbox payloads, open requests),
        newest first: the newest seals, any opens (``bridge keys rotate``)."""
        if self.encryption_key is None:
            raise ConfigError(
                [
                    "encryption_key: not set; set BRIDGE_ENCRYPTION_KEY to a Fernet key "
                    f"({GENERATE_FERNET_KEY})"
                ]
            )
        return [key.encode() for key in _split_keys(self.encryption_key.get_secret_value())]


GENERATE_FERNET_KEY = (
    "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
)


def _split_keys(value: str) -> list[str]:
    """``BRIDGE_ENCRYPTION_KEY``'s keys: separated by commas or white space (Fernet keys hold
    neither)."""
    return value.replace(",", " ").split()


def _obviously_not_random(key: str) -> bool:
    """A Fernet key whose 32 bytes are plainly made up, not drawn: one byte repeated (all
    zeros most of all), a handful of values, or a counting sequence. Random 32 bytes hold
    about 30 distinct values; fewer than 8 happens by chance with odds far below 1e-30."""
    import base64
    from itertools import pairwise

    raw = base64.urlsafe_b64decode(key.encode())
    steps = {(b - a) % 256 for a, b in pairwise(raw)}
    return len(set(raw)) < 8 or len(steps) == 1


def _vendor_keys_checked(purpose: Purpose) -> Purpose:
    """Each ``<vendor>_<key>`` entry checked by its vendor; a channel the mapping implies
    (a phone contact point) is taken when none is given."""
    extra = set(purpose.model_extra or {})
    channel = None
    for vendor in VENDORS.values():
        mapping = purpose.mapping(vendor.name)
        extra -= {f"{vendor.name}_{key}" for key in mapping}
        try:
            keys = vendor.purpose_keys.model_validate(mapping)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ValueError(
                f"purpose {purpose.id}: {vendor.name}_{where}: {first['msg']}"
            ) from None
        channel = channel or vendor.channel_of(keys)
    if extra:
        known = ", ".join(f"{v.name}_<key>" for v in VENDORS.values())
        raise ValueError(
            f"purpose {purpose.id}: unknown keys {', '.join(sorted(extra))}; use {known}"
        )
    if channel and "channel" not in purpose.model_fields_set:
        return purpose.model_copy(update={"channel": channel})
    return purpose


if TYPE_CHECKING:
    Settings = CoreSettings
else:
    Settings = create_model(
        "Settings",
        __base__=CoreSettings,
        **{vendor.name: (vendor.settings, vendor.settings()) for vendor in VENDORS.values()},
    )


def env_name(key: str) -> str:
    """``web.port`` -> ``BRIDGE_WEB__PORT``."""
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
