"""Prometheus metrics the engine updates as it works; /metrics exposes them.

Counters and histograms are process-wide (one node per process). Queue depth and the
age of the oldest pending delivery are read from the store when scraped, so they are
right even for work another node queued.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

MESSAGES_RECEIVED = Counter(
    "radbridge_messages_received_total", "Messages committed by a channel's source", ["channel"]
)
MESSAGES_FILTERED = Counter(
    "radbridge_messages_filtered_total", "Messages a channel filter dropped", ["channel"]
)
MESSAGES_ERRORED = Counter(
    "radbridge_messages_errored_total", "Messages a filter or transformer failed on", ["channel"]
)
DELIVERIES_SENT = Counter(
    "radbridge_deliveries_sent_total", "Deliveries a destination accepted",
    ["channel", "destination"],
)
DELIVERY_FAILURES = Counter(
    "radbridge_delivery_failures_total", "Failed delivery attempts",
    ["channel", "destination", "outcome"],
)
DELIVERY_LATENCY = Histogram(
    "radbridge_delivery_seconds", "Time for one delivery attempt to a destination",
    ["channel", "destination"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
END_TO_END_LATENCY = Histogram(
    "radbridge_end_to_end_seconds", "From a message's receipt to its delivery's success",
    ["channel", "destination"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
COMMIT_BATCH_SIZE = Histogram(
    "radbridge_commit_batch_size", "Messages committed together by the group committer",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
