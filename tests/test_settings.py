"""Settings: environment over TOML, secrets never from TOML, one clear line per problem."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from bridge.config import load_settings, secret_keys
from bridge.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "BRIDGE_CONFIG",
        "BRIDGE_DATABASE_URL",
        "BRIDGE_PSEUDONYM_KEY",
        "BRIDGE_LOG_LEVEL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_environment_overrides_toml_and_nests_with_double_underscore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(
        tmp_path / "bridge.toml",
        'log_level = "debug"\n[hubspot]\nbase_url = "http://from-toml"\n'
        '[[purposes]]\nid = "marketing_email"\nhubspot_subscription_id = "1"\n',
    )
    monkeypatch.setenv("BRIDGE_HUBSPOT__BASE_URL", "http://from-env")
    monkeypatch.setenv("BRIDGE_HUBSPOT__ACCESS_TOKEN", "pat-123")
    settings = load_settings(config)
    assert settings.hubspot.base_url == "http://from-env"
    assert settings.hubspot.access_token is not None
    assert settings.hubspot.access_token.get_secret_value() == "pat-123"
    assert settings.log_level == "debug"
    assert settings.purposes[0].hubspot_subscription_id == "1"


def test_config_path_comes_from_bridge_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_CONFIG", str(write(tmp_path / "x.toml", 'log_level = "error"\n')))
    assert load_settings().log_level == "error"


def test_default_config_file_may_be_absent_but_a_named_one_may_not(tmp_path: Path) -> None:
    assert load_settings().database_url == "sqlite:///./bridge.db"
    with pytest.raises(ConfigError, match=r"missing\.toml not found"):
        load_settings(tmp_path / "missing.toml")


@pytest.mark.parametrize("key", secret_keys())
def test_every_secret_in_the_toml_is_refused_by_name(key: str, tmp_path: Path) -> None:
    section, _, name = key.rpartition(".")
    text = (f"[{section}]\n" if section else "") + f'{name} = "leaked"\n'
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path / "bridge.toml", text))
    [problem] = caught.value.problems
    assert problem.startswith(f"{key}: secrets may not be written in")
    assert "BRIDGE_" + key.replace(".", "__").upper() in problem


def test_secrets_are_read_from_files_in_the_secrets_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "BRIDGE_PSEUDONYM_KEY").write_text("s" * 40)
    (secrets / "BRIDGE_HUBSPOT__CLIENT_SECRET").write_text("client-secret")
    monkeypatch.setenv("BRIDGE_SECRETS_DIR", str(secrets))
    settings = load_settings()
    assert settings.require_pseudonym_key() == b"s" * 40
    assert settings.hubspot.client_secret is not None
    assert settings.hubspot.client_secret.get_secret_value() == "client-secret"


def test_every_bad_value_gets_one_line_naming_key_and_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_PSEUDONYM_KEY", "short")
    monkeypatch.setenv("BRIDGE_ENCRYPTION_KEY", "not-a-fernet-key")
    config = write(
        tmp_path / "bridge.toml",
        'log_level = "loud"\nsurprise = 1\n[[purposes]]\nid = "a"\n[[purposes]]\nid = "a"\n',
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    problems = caught.value.problems
    assert len(problems) == 5
    joined = "\n".join(problems)
    assert "pseudonym_key: must be at least 32 characters" in joined
    assert "fix BRIDGE_PSEUDONYM_KEY" in joined
    assert "encryption_key: must be a Fernet key" in joined
    assert "log_level: Input should be" in joined and "BRIDGE_LOG_LEVEL" in joined
    assert "surprise: unknown setting" in joined
    assert "purposes: purpose ids must be unique; repeated: a" in joined
    assert "short" not in joined and "not-a-fernet-key" not in joined  # values stay secret


@pytest.mark.parametrize(
    "raw",
    [bytes(32), b"\xff" * 32, b"ab" * 16, bytes(range(32)), b"abcd" * 8],
    ids=["all zero", "one byte", "two bytes", "counting", "few values"],
)
def test_an_obviously_made_up_encryption_key_is_refused_naming_the_fix(
    monkeypatch: pytest.MonkeyPatch, raw: bytes
) -> None:
    key = base64.urlsafe_b64encode(raw).decode()
    monkeypatch.setenv("BRIDGE_ENCRYPTION_KEY", key)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    [problem] = caught.value.problems
    assert problem.startswith("encryption_key: is not a random key; generate one with python -c")
    assert "Fernet.generate_key()" in problem and key not in problem


def test_a_generated_encryption_key_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(200):
        monkeypatch.setenv("BRIDGE_ENCRYPTION_KEY", Fernet.generate_key().decode())
        assert load_settings().require_encryption_keys()


def test_several_encryption_keys_are_taken_newest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    new, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    for value in (f"{new},{old}", f"{new} {old}", f" {new},\n  {old} "):
        monkeypatch.setenv("BRIDGE_ENCRYPTION_KEY", value)
        assert load_settings().require_encryption_keys() == [new.encode(), old.encode()]


def test_each_of_several_encryption_keys_is_checked_and_named_by_position(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good, zero = Fernet.generate_key().decode(), base64.urlsafe_b64encode(bytes(32)).decode()
    for bad, expected in ((zero, "is not a random key"), ("not-a-key", "must be a Fernet key")):
        monkeypatch.setenv("BRIDGE_ENCRYPTION_KEY", f"{good},{bad}")
        with pytest.raises(ConfigError) as caught:
            load_settings()
        [problem] = caught.value.problems
        assert problem.startswith(f"encryption_key: key 2 of 2 {expected}")
        assert good not in problem and bad not in problem


def test_missing_pseudonym_key_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="BRIDGE_PSEUDONYM_KEY"):
        load_settings().require_pseudonym_key()


def test_example_config_loads_and_documents_every_setting() -> None:
    example = Path(__file__).parents[1] / "config" / "bridge.example.toml"
    settings = load_settings(example)
    text = example.read_text()
    for key in ("database_url", "log_level", "base_url", "domain", "organization_id", "purposes"):
        assert key in text
    for key in secret_keys():
        assert "BRIDGE_" + key.replace(".", "__").upper() in text
    assert settings.purposes


def test_schedule_comes_from_toml_and_environment_and_a_bad_cron_names_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path / "bridge.toml", '[schedule]\nfull_sync_cron = "30 3 * * sun"\n')
    monkeypatch.setenv("BRIDGE_SCHEDULE__INBOX_SECONDS", "0.5")
    schedule = load_settings(config).schedule
    assert (schedule.full_sync_cron, schedule.inbox_seconds) == ("30 3 * * sun", 0.5)
    assert schedule.incremental_sync_minutes == 5 and schedule.erasure_seconds == 30

    for cron, problem in (
        ("0 2 * *", "not a crontab expression (minute hour day month weekday): Wrong number"),
        ("61 * * * *", "not a crontab expression"),
        ("0 2 * * 0", "write the weekday by name"),  # Sunday to crontab, Monday to APScheduler
    ):
        monkeypatch.setenv("BRIDGE_SCHEDULE__FULL_SYNC_CRON", cron)
        with pytest.raises(ConfigError) as caught:
            load_settings(config)
        [line] = caught.value.problems
        assert line.startswith(f"schedule.full_sync_cron: {problem}")
        assert "BRIDGE_SCHEDULE__FULL_SYNC_CRON" in line


def test_a_rate_limit_that_is_not_a_rate_names_the_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_PSEUDONYM_KEY", "p" * 32)
    config = write(tmp_path / "bridge.toml", '[web]\npublic_rate_limit = "30/minute"\n')
    assert load_settings(config).web.public_rate_limit == "30/minute"
    for rate in ("lots", "0/minute"):
        monkeypatch.setenv("BRIDGE_WEB__PUBLIC_RATE_LIMIT", rate)
        with pytest.raises(ConfigError) as caught:
            load_settings(config)
        [line] = caught.value.problems
        assert line.startswith("web.public_rate_limit: must be N/second, N/minute or N/hour")


def test_a_setting_a_vendor_section_now_holds_still_works_under_its_older_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path / "bridge.toml", '[retention]\nsalesforce_due_field = "Old__c"\n')
    assert load_settings(config).vendor("salesforce").due_field == "Old__c"
    monkeypatch.setenv("BRIDGE_RETENTION__SALESFORCE_DUE_FIELD", "Env__c")
    assert load_settings(config).vendor("salesforce").due_field == "Env__c"
    monkeypatch.setenv("BRIDGE_SALESFORCE__DUE_FIELD", "New__c")  # the new name wins
    assert load_settings(config).vendor("salesforce").due_field == "New__c"


def test_each_vendor_checks_its_own_purpose_keys(tmp_path: Path) -> None:
    phone = '[[purposes]]\nid = "calls"\nsalesforce_contact_point_type = "Phone"\n'
    [purpose] = load_settings(write(tmp_path / "a.toml", phone)).purposes
    assert purpose.channel == "phone"

    typo = '[[purposes]]\nid = "news"\nhubspot_subscription = "1"\n'
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path / "b.toml", typo))
    [line] = caught.value.problems
    assert "purpose news" in line and "hubspot_subscription" in line

    unknown = '[[purposes]]\nid = "news"\nzoho_list = "1"\n'
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path / "c.toml", unknown))
    [line] = caught.value.problems
    assert "unknown keys zoho_list" in line


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://admin:secretpw@db/bridge", "mysql is not supported; use sqlite:///"),
        ("notaurl", "not a database URL; use sqlite:///"),
        ("sqlite+pysqlcipher://:secretpw@/bridge.db", "driver pysqlcipher is not installed"),
        ("postgresql+asyncpg://db/bridge", "driver asyncpg is asynchronous"),
    ],
)
def test_a_database_url_the_bridge_cannot_use_is_refused_naming_the_fix(
    url: str, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_DATABASE_URL", url)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    [line] = caught.value.problems
    assert line.startswith("database_url: ") and problem in line and "BRIDGE_DATABASE_URL" in line
    assert "secretpw" not in line


@pytest.mark.parametrize(
    "url", ["sqlite:///./bridge.db", "sqlite://", "postgres://u@h/x", "postgresql+psycopg://h/x"]
)
def test_supported_database_urls_pass(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_DATABASE_URL", url)
    assert load_settings().database_url == url


def test_the_portal_settings_come_from_toml_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(
        tmp_path / "bridge.toml",
        '[web]\npublic_url = "https://privacy.acme.example"\nportal_host = "127.0.0.1"\n'
        'portal_port = 8082\n[smtp]\nhost = "smtp.acme.example"\nfrom = "Acme <p@acme.example>"\n'
        'username = "bridge"\n[portal]\nlink_minutes = 10\n',
    )
    monkeypatch.setenv("BRIDGE_SMTP__PASSWORD", "mail-secret")
    monkeypatch.setenv("BRIDGE_PORTAL__PER_CLIENT_DAY", "20")
    settings = load_settings(config)
    assert str(settings.web.public_url) == "https://privacy.acme.example/"
    assert (settings.web.portal_host, settings.web.portal_port) == ("127.0.0.1", 8082)
    smtp = settings.smtp
    assert (smtp.host, smtp.port, smtp.starttls) == ("smtp.acme.example", 587, True)
    assert (smtp.from_address, smtp.username) == ("Acme <p@acme.example>", "bridge")
    assert smtp.password is not None and smtp.password.get_secret_value() == "mail-secret"
    assert (settings.portal.link_minutes, settings.portal.per_client_day) == (10, 20)
    monkeypatch.setenv("BRIDGE_SMTP__FROM", "privacy@acme.example")
    assert load_settings(config).smtp.from_address == "privacy@acme.example"
    assert "smtp.password" in secret_keys()  # refused in the TOML, as every secret


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"BRIDGE_WEB__PORTAL_HOST": "127.0.0.1"},
         "web.portal_port: portal_host and portal_port go together"),
        ({"BRIDGE_WEB__PORTAL_HOST": "0.0.0.0", "BRIDGE_WEB__PORTAL_PORT": "8080"},  # noqa: S104
         "web.portal_port: must differ from web.port (8080) when the portal listens on the "
         "receiver's interface (0.0.0.0 and 127.0.0.1 overlap)"),
        ({"BRIDGE_WEB__CONSOLE_HOST": "127.0.0.1", "BRIDGE_WEB__CONSOLE_PORT": "8081",
          "BRIDGE_WEB__PORTAL_HOST": "localhost", "BRIDGE_WEB__PORTAL_PORT": "8081"},
         "web.portal_port: must differ from web.console_port (8081) when the portal listens "
         "on the console's interface (localhost and 127.0.0.1 overlap)"),
        ({"BRIDGE_WEB__PUBLIC_URL": "https://privacy.acme.example/?next=x"},
         "web.public_url: must be a plain address without ?query or #fragment"),
        ({"BRIDGE_WEB__PUBLIC_URL": "privacy.acme.example"}, "web.public_url: Input should be"),
        ({"BRIDGE_SMTP__PORT": "465"}, "smtp.port: 465 is SMTPS"),
        ({"BRIDGE_SMTP__FROM": "nobody"}, "smtp.from: must be one address"),
        ({"BRIDGE_SMTP__USERNAME": "bridge"},
         "smtp.password: a login takes smtp.username and the password together"),
        ({"BRIDGE_PORTAL__PER_ADDRESS_HOUR": "11"},
         "portal: per_address_hour (11) is more than per_address_day (10)"),
        ({"BRIDGE_PORTAL__CODE_ATTEMPTS": "0"}, "portal.code_attempts: Input should be"),
    ],
)  # fmt: skip
def test_a_portal_setting_that_cannot_work_is_refused_by_name(
    env: dict[str, str], said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    [problem] = caught.value.problems
    assert problem.startswith(said), problem


HOLD = """
[[erasure.legal_holds]]
name = "won_deal"
{system}related_object = "opportunities"
link_field = "_parentcontactid_value"
where = "statecode eq 1"
action = "refuse"
reason = "Art. 17(3)(e)"
"""


def test_a_hold_names_its_crm_once_two_configured_crms_keep_related_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A condition is one CRM's query (SOQL, an OData filter): asked of the other, it fails
    every erasure; so with Salesforce and Dynamics 365 both configured it must say whose."""
    monkeypatch.setenv("BRIDGE_SALESFORCE__SESSION_ID", "session")
    unnamed = write(tmp_path / "unnamed.toml", HOLD.format(system=""))
    assert load_settings(unnamed).erasure.legal_holds[0].system is None  # one such CRM
    monkeypatch.setenv("BRIDGE_DYNAMICS__CLIENT_ID", "app")
    monkeypatch.setenv("BRIDGE_DYNAMICS__CLIENT_SECRET", "secret")
    with pytest.raises(ConfigError) as caught:
        load_settings(unnamed)
    assert "won_deal" in str(caught.value) and 'system = "salesforce"' in str(caught.value)
    named = write(tmp_path / "named.toml", HOLD.format(system='system = "dynamics"\n'))
    assert load_settings(named).erasure.legal_holds[0].system == "dynamics"
    unknown = write(tmp_path / "unknown.toml", HOLD.format(system='system = "sap"\n'))
    with pytest.raises(ConfigError, match="'sap' is no CRM the bridge knows"):
        load_settings(unknown)


RULE = """
[[retention.rules]]
name = "idle"
keep_months = 24
action = "delete"
{since}[retention.rules.covers]
"dynamics.contact" = {{}}
"""


def test_a_retention_rule_over_dynamics_names_its_activity_date(tmp_path: Path) -> None:
    """Dataverse rows say nothing of activity: judged by creation alone, people still worked
    with would be erased; so the rule must name the column that holds it."""
    bare = write(tmp_path / "bare.toml", RULE.format(since=""))
    with pytest.raises(ConfigError) as caught:
        load_settings(bare)
    assert "idle" in str(caught.value)
    assert 'since = ["dynamics.contact.<column>"]' in str(caught.value)
    dated = write(
        tmp_path / "dated.toml", RULE.format(since='since = ["dynamics.contact.cb_lastactivity"]\n')
    )
    assert load_settings(dated).retention.rules[0].since == ["dynamics.contact.cb_lastactivity"]
