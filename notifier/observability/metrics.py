"""The daemon's Prometheus metrics (module-level objects, as prometheus-client intends)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter(
    "notifier_deliveries",
    "Delivery attempts by kind of destination (webhook, rabbitmq, kafka, nats) and outcome: "
    "succeeded, failed (will retry), dead, gone (410).",
    ["sink", "outcome"],
)
ATTEMPT_DURATION = Histogram(
    "notifier_attempt_duration_seconds",
    "Duration of one delivery attempt, by kind of destination.",
    ["sink"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DELIVERY_LATENCY = Histogram(
    "notifier_delivery_latency_seconds",
    "From the event's capture (its commit) to its successful delivery, by kind of destination.",
    ["sink"],
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300, 3600, 86400),
)
BACKLOG = Gauge(
    "notifier_backlog",
    "Events not yet claimed by every subscription, plus claimed ones not yet done.",
)
OLDEST_PENDING_AGE = Gauge(
    "notifier_oldest_pending_age_seconds", "Age of the oldest event not yet delivered."
)
LISTENER_CONNECTED = Gauge(
    "notifier_listener_connected", "1 while the LISTEN connection is up, else 0."
)
LISTENER_RECONNECTS = Counter(
    "notifier_listener_reconnects", "Times the LISTEN connection was re-established."
)
SUBSCRIPTIONS_DISABLED = Counter(
    "notifier_subscriptions_disabled",
    "Subscriptions the daemon disabled, by reason: gone (410) or failing (no success for too long).",
    ["reason"],
)
OLDEST_DELIVERABLE_AGE = Gauge(
    "notifier_oldest_deliverable_age_seconds",
    "How long the oldest due work (an event not yet claimed, a batch whose lease ran out, "
    "a due delivery of an enabled subscription) has waited.",
)
STALLED = Gauge(
    "notifier_stalled",
    "1 while the oldest deliverable work is older than NOTIFIER_STALL_THRESHOLD_SECONDS.",
)
RETENTION_DELETED = Counter(
    "notifier_retention_deleted_events", "Events removed by retention (with their deliveries)."
)
# The daemon's two statements per round: how long the database takes for them is what
# a growing outbox would show first.
STATEMENT_BUCKETS = (0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 1)
CLAIM_DURATION = Histogram(
    "notifier_claim_duration_seconds",
    "Duration of one claim: positions moved, batches and due deliveries claimed.",
    buckets=STATEMENT_BUCKETS,
)
SETTLE_DURATION = Histogram(
    "notifier_settle_duration_seconds",
    "Duration of recording one run of outcomes.",
    buckets=STATEMENT_BUCKETS,
)
