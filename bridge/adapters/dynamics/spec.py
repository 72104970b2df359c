"""Dynamics 365 as the registry knows it: settings, defaults, webhook intake, adapter factory."""

from __future__ import annotations

from bridge.adapters.base import CrmAdapter
from bridge.adapters.dynamics import DYNAMICS
from bridge.adapters.dynamics.settings import (
    ALLOWED_FIELDS,
    KEEP_ON_ANONYMIZE,
    DynamicsPurpose,
    DynamicsSettings,
)
from bridge.adapters.dynamics.webhooks import Intake
from bridge.adapters.spec import AdapterOptions, Vendor

NAME = DYNAMICS


def _connect(section: DynamicsSettings, options: AdapterOptions) -> CrmAdapter:
    from bridge.adapters.dynamics.adapter import DynamicsAdapter  # msal is slow to import

    return DynamicsAdapter(
        section,
        options.purposes,
        keep_on_anonymize=options.keep_on_anonymize,
        # contact and lead share their columns: the rules of either are read from both
        read_fields=sorted(
            {f for table in ("contact", "lead") for f in options.read_fields(f"{NAME}.{table}")}
        ),
        # Only with rules: an environment that does not purge need not have the column.
        due_field=section.due_field if options.mark_due else None,
    )


VENDOR = Vendor(
    name=NAME,
    title="Dynamics 365",
    settings=DynamicsSettings,
    connect=_connect,
    configured=lambda section: bool(section.client_id and section.client_secret),
    credentials_hint=(
        "Dynamics 365 credentials (BRIDGE_DYNAMICS__TENANT_ID, __CLIENT_ID, __CLIENT_SECRET and "
        "__ENVIRONMENT_URL)"
    ),
    intake=Intake(),
    person_objects=(f"{NAME}.contact", f"{NAME}.lead"),
    allowed_fields=ALLOWED_FIELDS,
    keep_on_anonymize=KEEP_ON_ANONYMIZE,
    purpose_keys=DynamicsPurpose,
    related_rows=True,
    last_activity=False,  # Dataverse rows have no last-activity column of their own
)
