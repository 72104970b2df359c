"""Prometheus metrics, one place for every counter the bridge exposes on ``/metrics``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

WEBHOOK_EVENTS = Counter(
    "bridge_webhook_events_total",
    "Webhook events by source and outcome (received, stored, duplicate, rejected)",
    ["source", "outcome", "reason"],
)
INBOX_LAG = Gauge("bridge_inbox_lag_seconds", "Age of the oldest unprocessed inbox event")
INBOX_EVENTS = Gauge("bridge_inbox_events", "Inbox events by status", ["status"])
ADAPTER_CALLS = Counter(
    "bridge_adapter_calls_total", "Vendor API calls made by the adapters", ["vendor", "operation"]
)
ADAPTER_ERRORS = Counter(
    "bridge_adapter_errors_total", "Vendor API call failures by adapter error", ["vendor", "error"]
)
REAPPEARANCES = Counter(
    "bridge_reappearances_total", "Erased people found again in a CRM, by system", ["system"]
)
