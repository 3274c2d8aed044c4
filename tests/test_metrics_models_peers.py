"""Prometheus metrics: every per-channel and per-destination family after real traffic,
inference latency and positives per model and version, a peer's up/down gauge from
real connections (refused HTTP and MLLP peers, a live one), and the paused gauge."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Gauge

import radbridge.interfaces.adapters  # noqa: F401  (registers the wire adapters)
from radbridge.engine import metrics
from radbridge.engine.adapters import AdapterContext
from radbridge.engine.blobstore import BlobStore
from radbridge.engine.config import ChannelConfig
from radbridge.engine.db import Database
from radbridge.engine.metrics import StoreCollector
from radbridge.engine.models import utcnow
from radbridge.engine.outbox import OutboundDelivery
from radbridge.engine.peers import (
    PEERS,
    PeerTracker,
    PeerUnreachable,
    clean_url,
    is_connection_failure,
    peer_label,
)
from radbridge.engine.receiver import Inbound
from radbridge.engine.runtime import Node
from radbridge.engine.settings import Settings
from radbridge.errors import TransientDeliveryError
from radbridge.interfaces.http_destination import HttpSender
from radbridge.interfaces.mllp.sender import MllpSender
from tests.e2e.conftest import RecordingReceiver, free_port, wait_until
from tests.engine_harness import channel, harness
from tests.hl7_support import adt_a01
from tests.inference_support import index_series, make_cards, service


def destination(**fields: object) -> object:
    document = {"name": "x", "source": {"type": "channel"}, "destinations": [fields]}
    return ChannelConfig.model_validate(document).destinations[0]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- peers ------------------------------------------------------------------------------


def test_a_peer_is_where_a_destination_sends_without_its_credentials() -> None:
    dimse_peer = {"ae_title": "PACS", "host": "pacs.local", "port": 104}
    assert peer_label(destination(name="a", type="mllp", host="ris", port=2575)) == "ris:2575"
    assert peer_label(destination(name="a", type="dimse", peer=dimse_peer)) == "pacs.local:104"
    assert peer_label(destination(
        name="a", type="http", url="https://bot:s3cret@hooks.example:8443/in?token=t#x")) == \
        "https://hooks.example:8443/in"
    assert peer_label(destination(name="a", type="fhir", url="https://ehr/fhir/R4")) == \
        "https://ehr/fhir/R4"
    assert peer_label(destination(name="a", type="stow-rs", url="http://orthanc:8042/dw")) == \
        "http://orthanc:8042/dw"
    assert peer_label(destination(name="a", type="dicom-retrieve", method="wado-rs",
                                  dicomweb_url="http://u:p@pacs/dw", into_channel="in")) == \
        "http://pacs/dw"
    assert peer_label(destination(name="a", type="inference",
                                  triton={"url": "triton:8001"})) == "triton:8001"
    assert peer_label(destination(name="a", type="file", directory="out")) is None
    assert peer_label(destination(name="a", type="inference")) is None
    assert clean_url("http://[::1]:80/x") == "http://[::1]:80/x"


def _delivery(content: bytes) -> OutboundDelivery:
    now = utcnow()
    return OutboundDelivery(
        delivery_id=1, message_id=1, message_uid="u1", channel="c", destination="d",
        generation=0, attempt=1, idempotency_key="k1", content_type="text/plain",
        content=content, blob_sha256=None, size=len(content), created_at=now, received_at=now)


async def test_a_refused_connection_is_a_connection_failure_and_an_answer_is_not(
        tmp_path: Path) -> None:
    context = AdapterContext(tmp_path, BlobStore(tmp_path / "b"), 65536, None,  # type: ignore[arg-type]
                             None, "n")  # type: ignore[arg-type]
    closed = free_port()
    http = HttpSender(destination(name="a", type="http", url=f"http://127.0.0.1:{closed}/",
                                  timeout="2s"), context)  # type: ignore[arg-type]
    mllp = MllpSender(destination(name="a", type="mllp", host="127.0.0.1", port=closed,
                                  connect_timeout="2s"), context)  # type: ignore[arg-type]
    for sender, content in ((http, b"x"), (mllp, adt_a01("PEER-1").encode())):
        with pytest.raises(TransientDeliveryError) as refused:
            await sender.send(_delivery(content))
        assert is_connection_failure(refused.value)
        await sender.close()
    assert not is_connection_failure(TransientDeliveryError("HTTP 503: busy"))
    try:
        raise FileNotFoundError(errno.ENOENT, "no blob")
    except OSError as exc:
        local = TransientDeliveryError("cannot read the instance")
        local.__cause__ = exc
    assert not is_connection_failure(local)
    assert is_connection_failure(PeerUnreachable("association refused"))


def test_the_tracker_counts_failures_in_a_row_and_sets_the_gauge() -> None:
    registry = CollectorRegistry()
    peers = PeerTracker(Gauge("peer_up", "t", ["peer"], registry=registry))
    peers.unreachable("ris:2575", "a/ris")
    peers.unreachable("ris:2575", "b/ris")
    [state] = peers.snapshot()
    assert (state.up, state.consecutive_failures, state.destinations) == (
        False, 2, {"a/ris", "b/ris"})
    assert registry.get_sample_value("peer_up", {"peer": "ris:2575"}) == 0.0
    peers.reached("ris:2575", "a/ris")
    assert peers.snapshot()[0].consecutive_failures == 0
    assert registry.get_sample_value("peer_up", {"peer": "ris:2575"}) == 1.0
    peers.forget("a/ris")
    assert len(peers.snapshot()) == 1
    peers.forget("b/ris")
    assert peers.snapshot() == []
    assert registry.get_sample_value("peer_up", {"peer": "ris:2575"}) is None


# --- a node with traffic ------------------------------------------------------------------


@pytest.fixture
def receiver() -> object:
    peer = RecordingReceiver()
    yield peer
    peer.close()


async def test_channel_destination_and_peer_metrics_after_real_traffic(
        tmp_path: Path, receiver: RecordingReceiver) -> None:
    closed = free_port()
    once = {"max_attempts": 1}
    fanout = ChannelConfig.model_validate({
        "name": "metrics-fanout", "source": {"type": "http"},
        "filter": {"rules": [{"field": "content", "contains": "MSH"}]},
        "destinations": [
            {"name": "up", "type": "http", "url": receiver.url},
            {"name": "down", "type": "http", "url": f"http://127.0.0.1:{closed}/in",
             "timeout": "2s", "queue": once},
            {"name": "hl7", "type": "mllp", "host": "127.0.0.1", "port": closed,
             "connect_timeout": "2s", "queue": once}]})
    broken = ChannelConfig.model_validate({
        "name": "metrics-broken", "source": {"type": "http"},
        "transformers": [{"function": "tests.test_logs_without_phi:shout"}],
        "destinations": [{"name": "out", "type": "null"}]})
    before = {name: sample(name, channel=c) for name, c in (
        ("radbridge_messages_received_total", "metrics-fanout"),
        ("radbridge_messages_filtered_total", "metrics-fanout"),
        ("radbridge_messages_errored_total", "metrics-broken"))}
    sent_before = sample("radbridge_deliveries_sent_total", channel="metrics-fanout",
                         destination="up")
    settings = Settings.resolve(data_dir=str(tmp_path / "data"),
                                database_url=f"sqlite:///{tmp_path / 's.db'}",
                                node_id="node-m", api_port=0, environ={})
    node = Node(settings, [fanout, broken], poll_interval=0.1)
    await node.start()
    try:
        for content in (adt_a01("MET-1").encode(), b"no header here"):
            await node.receive(Inbound(channel="metrics-fanout", content_type="text/plain",
                                       source="test", content=content))
        await node.receive(Inbound(channel="metrics-broken", content_type="text/plain",
                                   source="test", content=b"x"))
        peers = {"up": clean_url(receiver.url), "down": f"http://127.0.0.1:{closed}/in",
                 "hl7": f"127.0.0.1:{closed}"}
        await asyncio.to_thread(wait_until, lambda: {s.peer for s in PEERS.snapshot()}
                                >= set(peers.values()), 20.0, "three peers tried")
        await node.pause_channel("metrics-fanout")
        assert sample("radbridge_channel_paused", channel="metrics-fanout") == 1.0
        await node.resume_channel("metrics-fanout")
        assert sample("radbridge_channel_paused", channel="metrics-fanout") == 0.0
        collector = StoreCollector(node.database, lambda: {
            "metrics-fanout": ["up", "down", "hl7"]})
        gauges = {(s.name, tuple(sorted(s.labels.items()))): s.value
                  for family in collector.collect() for s in family.samples}
    finally:
        await node.stop()
    assert sample("radbridge_peer_up", peer=peers["up"]) == 1.0
    assert sample("radbridge_peer_up", peer=peers["down"]) == 0.0
    assert sample("radbridge_peer_up", peer=peers["hl7"]) == 0.0
    assert sample("radbridge_messages_received_total", channel="metrics-fanout") - \
        before["radbridge_messages_received_total"] == 2
    assert sample("radbridge_messages_filtered_total", channel="metrics-fanout") - \
        before["radbridge_messages_filtered_total"] == 1
    assert sample("radbridge_messages_errored_total", channel="metrics-broken") - \
        before["radbridge_messages_errored_total"] == 1
    assert sample("radbridge_deliveries_sent_total", channel="metrics-fanout",
                  destination="up") - sent_before == 1
    for name in ("down", "hl7"):
        assert sample("radbridge_delivery_failures_total", channel="metrics-fanout",
                      destination=name, outcome="dead") >= 1
        assert gauges[("radbridge_queue_depth", (
            ("channel", "metrics-fanout"), ("destination", name), ("status", "dead")))] == 1
    assert sample("radbridge_delivery_seconds_count", channel="metrics-fanout",
                  destination="up") >= 1
    assert sample("radbridge_end_to_end_seconds_count", channel="metrics-fanout",
                  destination="up") >= 1
    assert gauges[("radbridge_queue_oldest_pending_seconds", (
        ("channel", "metrics-fanout"), ("destination", "up")))] == 0.0


# --- models -------------------------------------------------------------------------------


def test_inference_latency_and_positives_per_model_and_version(database: Database,
                                                              tmp_path: Path) -> None:
    cards = make_cards(tmp_path)
    with harness(database, tmp_path, [channel("dicom-in")]) as h:
        study_uid = index_series(h, tmp_path / "study")
        runner = service(h, cards)
        plan = runner.plan(study_uid, 1)
        [assignment] = plan.routing.assignments
        labels = {"model": "toy-ct", "version": assignment.card.version}
        runs_before = sample("radbridge_inference_seconds_count", **labels)
        positives_before = sample("radbridge_inference_positives_total", **labels)
        done = runner.run(plan, assignment)
        runner.run(plan, assignment)  # settled already: not run, not counted again
        runner.close()
    assert done.positive
    assert sample("radbridge_inference_seconds_count", **labels) - runs_before == 1
    assert sample("radbridge_inference_positives_total", **labels) - positives_before == 1
    assert sample("radbridge_inference_seconds_sum", **labels) > 0

    class Negative:
        positive = False

    negative = {"model": "toy-negative", "version": "2.0"}
    counted = sample("radbridge_inference_seconds_count", **negative)
    metrics.observe_inference("toy-negative", "2.0", 0.5, [Negative()])
    assert REGISTRY.get_sample_value("radbridge_inference_positives_total", negative) == 0.0
    assert sample("radbridge_inference_seconds_count", **negative) - counted == 1
