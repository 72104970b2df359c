"""Salesforce as the registry knows it: settings, defaults, webhook intake, adapter factory."""

from __future__ import annotations

from bridge.adapters.base import CrmAdapter
from bridge.adapters.salesforce import SALESFORCE
from bridge.adapters.salesforce.outbound import Intake
from bridge.adapters.salesforce.settings import (
    ALLOWED_FIELDS,
    KEEP_ON_ANONYMIZE,
    SalesforcePurpose,
    SalesforceSettings,
)
from bridge.adapters.spec import AdapterOptions, Vendor

NAME = SALESFORCE


def _connect(section: SalesforceSettings, options: AdapterOptions) -> CrmAdapter:
    from bridge.adapters.salesforce.adapter import SalesforceAdapter  # slow to import

    return SalesforceAdapter(
        section,
        options.purposes,
        keep_on_anonymize=options.keep_on_anonymize,
        read_fields={
            sobject: options.read_fields(f"{NAME}.{sobject}") for sobject in ("Contact", "Lead")
        },
        # Only with rules: an org that does not purge need not have the field.
        due_field=section.due_field if options.mark_due else None,
    )


def _channel(keys: SalesforcePurpose) -> str | None:
    return keys.contact_point_type.casefold() if keys.contact_point_type else None


VENDOR = Vendor(
    name=NAME,
    title="Salesforce",
    settings=SalesforceSettings,
    connect=_connect,
    configured=lambda s: bool(s.username or s.consumer_key or s.session_id),
    credentials_hint=(
        "Salesforce credentials (BRIDGE_SALESFORCE__USERNAME with __PASSWORD and "
        "__SECURITY_TOKEN, or __CONSUMER_KEY, or __SESSION_ID with instance_url)"
    ),
    intake=Intake(),
    person_objects=(f"{NAME}.Contact", f"{NAME}.Lead"),
    allowed_fields=ALLOWED_FIELDS,
    keep_on_anonymize=KEEP_ON_ANONYMIZE,
    purpose_keys=SalesforcePurpose,
    channel_of=_channel,
    related_rows=True,
    moved_keys={"retention.salesforce_due_field": "due_field"},
)
