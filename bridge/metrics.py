"""Prometheus metrics, one place for every counter the bridge exposes on ``/metrics``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
SYNC_CHANGES = Counter(
    "bridge_sync_changes_total",
    "Changes the sync applied, by system, kind and outcome",
    ["system", "kind", "outcome"],
)
PROPAGATION_DELAY = Histogram(
    "bridge_propagation_delay_seconds",
    "From a consent event's receipt to its changes applied in every other system",
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
)
ERASURE_REQUESTS = Gauge(
    "bridge_erasure_requests",
    "Erasure requests not completed, by state: open (all of them), failed, flagged (failing "
    "too long or near the due date), overdue (past the due date, extensions included)",
    ["state"],
)
SCHEDULER_LEADER = Gauge(
    "bridge_scheduler_leader", "1 while this instance runs the leader-only jobs (sync), else 0"
)
DAEMON_JOB_RUNS = Counter(
    "bridge_daemon_job_runs_total",
    "Daemon job runs by job and outcome (ok, failed)",
    ["job", "outcome"],
)
HTTP_REFUSED = Counter(
    "bridge_http_refused_total",
    "Connections and requests the receiver cut or refused, by reason (header_timeout, "
    "body_timeout, header_too_large, connection_limit, rate_limited)",
    ["reason"],
)
