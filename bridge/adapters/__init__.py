"""The CRM adapters, and the one place that decides which of them the settings configure."""

from __future__ import annotations

from bridge.adapters.base import CrmAdapter
from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.model import System


def connect(settings: Settings) -> dict[System, CrmAdapter]:
    """An adapter for each CRM with credentials in the settings; none at all is an error."""
    from bridge.adapters.hubspot.adapter import HubSpotAdapter
    from bridge.adapters.salesforce.adapter import SalesforceAdapter

    adapters: dict[System, CrmAdapter] = {}
    keep = settings.erasure.keep_on_anonymize
    retention = settings.retention
    if settings.hubspot.access_token is not None:
        adapters[System.HUBSPOT] = HubSpotAdapter(
            settings.hubspot,
            settings.purposes,
            keep_on_anonymize=keep,
            read_fields=retention.fields_read("hubspot.contact"),
        )
    sf = settings.salesforce
    if sf.username or sf.consumer_key or sf.session_id:
        adapters[System.SALESFORCE] = SalesforceAdapter(
            sf,
            settings.purposes,
            keep_on_anonymize=keep,
            read_fields={
                sobject: retention.fields_read(f"salesforce.{sobject}")
                for sobject in ("Contact", "Lead")
            },
            # Only with rules: an org that does not purge need not have the field.
            due_field=retention.salesforce_due_field if retention.rules else None,
        )
    if not adapters:
        raise ConfigError(
            [
                "crm: no CRM configured; set BRIDGE_HUBSPOT__ACCESS_TOKEN and/or Salesforce "
                "credentials (BRIDGE_SALESFORCE__USERNAME with __PASSWORD and __SECURITY_TOKEN, "
                "or __CONSUMER_KEY, or __SESSION_ID with instance_url)"
            ]
        )
    return adapters
