"""Prometheus metrics the engine updates as it works; /metrics exposes them.

Counters and histograms are process-wide (one node per process). Queue depth and the
age of the oldest pending delivery are read from the store when scraped, so they are
right even for work another node queued.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from radbridge.engine import queries
from radbridge.engine.db import Database
from radbridge.engine.lifecycle import DeliveryStatus
from radbridge.engine.models import utcnow
from radbridge.errors import StoreError

_log = logging.getLogger(__name__)

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
HL7_ACKS = Counter(
    "radbridge_hl7_acks_total", "Acknowledgements an HL7 source sent, by MSA-1 code",
    ["channel", "code"],
)
MLLP_CONNECTIONS = Gauge(
    "radbridge_mllp_connections", "Open MLLP connections of a channel's listener", ["channel"]
)
CHANNEL_PAUSED = Gauge(
    "radbridge_channel_paused", "1 while a deployed channel is paused (runtime control)",
    ["channel"],
)
PEER_UP = Gauge(
    "radbridge_peer_up",
    "1 when the last delivery attempt to this peer reached it, 0 when it could not connect",
    ["peer"],
)
INFERENCE_LATENCY = Histogram(
    "radbridge_inference_seconds", "Time a model's backend took for one study (one run)",
    ["model", "version"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
INFERENCE_POSITIVES = Counter(
    "radbridge_inference_positives_total",
    "Finished runs with at least one positive finding (divide by the latency histogram's "
    "_count for the positive rate)",
    ["model", "version"],
)
ALERTS_RAISED = Counter(
    "radbridge_alerts_raised_total", "Alert incidents opened by an alerts channel's rules",
    ["rule"],
)


class _Finding(Protocol):
    @property
    def positive(self) -> bool: ...


def observe_inference(model: str, version: str, seconds: float,
                      findings: Iterable[_Finding]) -> None:
    """One finished run of a model: its backend time and whether it found something."""
    INFERENCE_LATENCY.labels(model, version).observe(seconds)
    positives = INFERENCE_POSITIVES.labels(model, version)  # a 0 series from the first run
    if any(finding.positive for finding in findings):
        positives.inc()


# --- gauges read from the store at scrape time ----------------------------------------

QUEUE_STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.IN_FLIGHT, DeliveryStatus.DEAD)
"""Statuses the queue-depth gauge reports. Sent deliveries are counted by
radbridge_deliveries_sent_total instead: counting them would scan the whole table."""

ChannelNamesProvider = Callable[[], Iterable[str] | Mapping[str, Iterable[str]]]
"""The deployed channels, or a mapping channel -> destination names (reported as 0 when
they have no deliveries, so that series do not vanish while a queue is empty)."""


class StoreCollector(Collector):
    """Queue depth per destination and status, and the oldest pending delivery's age.

    One GROUP BY over the open and dead deliveries per scrape; a store that cannot be
    read leaves the gauges out of that scrape (and is logged) instead of failing it.
    """

    def __init__(self, database: Database, channel_names_provider: ChannelNamesProvider) -> None:
        self.database = database
        self.channel_names_provider = channel_names_provider

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        depth, oldest = self._families()
        names = self.channel_names_provider()
        expected = names if isinstance(names, Mapping) else {name: () for name in names}
        try:
            with self.database.read() as session:
                rows = queries.queue_depths(session, list(expected), statuses=QUEUE_STATUSES)
        except StoreError as exc:
            _log.warning("queue gauges skipped in this scrape: %s", exc)
            return
        counts: dict[tuple[str, str, str], float] = {}
        ages: dict[tuple[str, str], float] = {}
        for channel, destinations in expected.items():
            for destination in destinations:
                ages[(channel, destination)] = 0.0
                for status in QUEUE_STATUSES:
                    counts[(channel, destination, status.value)] = 0.0
        now = utcnow()
        for row in rows:
            counts[(row.channel, row.destination, row.status)] = float(row.count)
            ages.setdefault((row.channel, row.destination), 0.0)
            if row.status == DeliveryStatus.PENDING and row.oldest_created_at is not None:
                age = (now - row.oldest_created_at).total_seconds()
                ages[(row.channel, row.destination)] = max(0.0, age)
        for labels, value in sorted(counts.items()):
            depth.add_metric(list(labels), value)
        for pair, age in sorted(ages.items()):
            oldest.add_metric(list(pair), age)
        yield depth
        yield oldest

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "radbridge_queue_depth", "Deliveries per destination and status",
                labels=["channel", "destination", "status"],
            ),
            GaugeMetricFamily(
                "radbridge_queue_oldest_pending_seconds",
                "Age of the oldest pending delivery of a destination (0 when none)",
                labels=["channel", "destination"],
            ),
        )


def register_store_collector(
    registry: CollectorRegistry,
    database: Database,
    channel_names_provider: ChannelNamesProvider,
) -> StoreCollector:
    """Register a StoreCollector on `registry` (unregister it when the node stops)."""
    collector = StoreCollector(database, channel_names_provider)
    registry.register(collector)
    return collector
