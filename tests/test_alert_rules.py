"""Alert rules: each rule raises one alert per incident however often it is checked, a
resolution when the condition is gone, and a second alert when it comes back; the
alerts reach a real webhook through an `alerts` channel's http destination."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy import select

import radbridge.interfaces.adapters  # noqa: F401  (registers the wire adapters)
from radbridge.engine import audit
from radbridge.engine.adapters import AdapterContext
from radbridge.engine.alerts.incidents import OPEN, RESOLVED
from radbridge.engine.alerts.source import AlertWatch
from radbridge.engine.blobstore import BlobStore
from radbridge.engine.config import AlertsSource, ChannelConfig
from radbridge.engine.db import Database
from radbridge.engine.lifecycle import DeliveryStatus
from radbridge.engine.models import AlertIncident, Delivery, utcnow
from radbridge.engine.peers import PeerTracker
from radbridge.engine.receiver import Inbound, Receipt
from radbridge.engine.runtime import Node
from radbridge.engine.settings import Settings
from radbridge.errors import StoreUnavailable
from tests.e2e.conftest import RecordingReceiver, free_port, wait_until
from tests.store_rows import add_delivery, add_message

RULES = ("error_rate", "queue_age", "dead_letters", "peer_down", "drift")


def only(rule: str, **settings: Any) -> AlertsSource:
    """An alerts source with one rule on (with `settings`), the others off."""
    document: dict[str, Any] = {"type": "alerts", "interval": "1h"}
    for name in RULES:
        document[name] = {"enabled": name == rule, **(settings if name == rule else {})}
    return AlertsSource.model_validate(document)


class Inbox:
    """What the alerts source received on its channel (the receive callable)."""

    def __init__(self) -> None:
        self.messages: list[Inbound] = []
        self.fail_next = False

    async def receive(self, inbound: Inbound) -> Receipt:
        if self.fail_next:
            self.fail_next = False
            raise StoreUnavailable("store down for this test")
        self.messages.append(inbound)
        return Receipt(len(self.messages), f"u{len(self.messages)}", False)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(m.content or b"") for m in self.messages]

    def events(self) -> list[tuple[str, str, str]]:
        """(event, rule, key without the channel) of each alert, in order."""
        return [(b["event"], b["rule"], b["key"].split(":", 1)[1]) for b in self.bodies()]


def watch(database: Database, tmp_path: Path, config: AlertsSource, inbox: Inbox,
          peers: PeerTracker | None = None, node: str = "node-a") -> AlertWatch:
    context = AdapterContext(tmp_path, BlobStore(tmp_path / "blobs"), 65536, inbox.receive,
                             database, node)
    return AlertWatch("ops", config, context, peers=peers or tracker())


def tracker() -> PeerTracker:
    return PeerTracker(Gauge("peer_up_test", "test", ["peer"], registry=CollectorRegistry()))


def attempts(database: Database, channel: str, destination: str | None, **counts: int) -> None:
    """Audit events as the outbox writer and processor write them: sent=, retry=, dead=,
    transformed=, errored=."""
    kinds = {"sent": ("delivery.sent", "success"), "retry": ("delivery.failed", "retry"),
             "dead": ("delivery.failed", "dead"),
             "transformed": ("message.transformed", "success"),
             "errored": ("message.errored", "failure")}
    detail = {} if destination is None else {"destination": destination}
    audit.append_now(database, [
        audit.AuditRecord(action=kinds[kind][0], outcome=kinds[kind][1], actor="engine",
                          channel=channel, detail=detail)
        for kind, count in counts.items() for _ in range(count)], "test")


def incidents(database: Database) -> list[AlertIncident]:
    with database.read() as session:
        rows = session.execute(select(AlertIncident).order_by(AlertIncident.id)).scalars().all()
        session.expunge_all()
        return list(rows)


# --- each rule ------------------------------------------------------------------------


async def test_error_rate_per_destination_and_per_channel(database: Database,
                                                          tmp_path: Path) -> None:
    attempts(database, "orders", "ris", sent=4, retry=6)       # 60% of 10: raised
    attempts(database, "orders", "ehr", sent=6, retry=4)       # 40%: below 50%
    attempts(database, "orders", "pacs", retry=9)              # 9 < min_attempts
    attempts(database, "orders", None, transformed=5, errored=5)  # processing: 50%
    inbox = Inbox()
    source = watch(database, tmp_path, only("error_rate", threshold=0.5, min_attempts=10),
                   inbox)
    settled = await source.check()
    assert len(settled.raised) == 2
    assert sorted(inbox.events()) == [("raised", "error-rate", "error-rate/orders"),
                                      ("raised", "error-rate", "error-rate/orders/ris")]
    ris = next(b for b in inbox.bodies() if b["destination"] == "ris")
    assert ris["figures"] == {"failed": 6, "total": 10, "rate": 0.6, "window_seconds": 300.0}
    assert ris["summary"] == ("orders/ris: 6 of 10 delivery attempts failed in the last 5m "
                              "(60%)")
    assert (await source.check()).raised == ()  # the same incidents: nothing new
    later = utcnow() + timedelta(minutes=6)  # the window has moved past every attempt
    assert len((await source.check(later)).resolved) == 2
    assert [e[0] for e in inbox.events()] == ["raised", "raised", "resolved", "resolved"]


async def test_queue_age_raises_once_and_resolves_when_the_queue_moves(
        database: Database, tmp_path: Path) -> None:
    now = utcnow()
    with database.write() as session:
        message = add_message(session, channel="orders")
        delivery = add_delivery(session, message, "ris", created_at=now - timedelta(minutes=20))
        add_delivery(session, add_message(session, channel="orders"), "ehr",
                     created_at=now - timedelta(minutes=2))
        delivery_id = delivery.id
    inbox = Inbox()
    source = watch(database, tmp_path, only("queue_age", max_age="10m"), inbox)
    await source.check(now)
    await source.check(now + timedelta(seconds=30))
    assert inbox.events() == [("raised", "queue-age", "queue-age/orders/ris")]
    assert inbox.bodies()[0]["figures"]["pending"] == 1
    with database.write() as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None
        row.status = DeliveryStatus.SENT
    await source.check(now + timedelta(seconds=60))
    assert inbox.events()[-1] == ("resolved", "queue-age", "queue-age/orders/ris")


async def test_dead_letters_one_incident_then_a_second_after_a_quiet_window(
        database: Database, tmp_path: Path) -> None:
    attempts(database, "orders", "ris", dead=2, retry=3)
    inbox = Inbox()
    source = watch(database, tmp_path, only("dead_letters", window="1h"), inbox)
    now = utcnow()
    await source.check(now)
    attempts(database, "orders", "ris", dead=1)  # more while open: the same incident
    await source.check(now + timedelta(minutes=1))
    assert inbox.events() == [("raised", "dead-letters", "dead-letters/orders/ris")]
    [open_one] = incidents(database)
    assert open_one.figures == {"dead": 3, "window_seconds": 3600.0}
    await source.check(now + timedelta(hours=2))  # an hour with none: resolved
    attempts(database, "orders", "ris", dead=1)
    await source.check(utcnow())
    assert [e[0] for e in inbox.events()] == ["raised", "resolved", "raised"]
    first, second = incidents(database)
    assert (first.state, second.state) == (RESOLVED, OPEN)
    assert first.key == second.key and first.id != second.id
    assert {b["incident"] for b in inbox.bodies()} == {first.id, second.id}


async def test_peer_down_is_the_node_s_own_view(database: Database, tmp_path: Path) -> None:
    peers = tracker()
    for _ in range(3):
        peers.unreachable("10.0.0.9:2575", "hl7-out/ris")
    peers.unreachable("pacs.example:104", "sr-out/pacs")  # once: below 3 failures
    inbox = Inbox()
    source = watch(database, tmp_path, only("peer_down", failures=3), inbox, peers)
    await source.check()
    assert inbox.events() == [("raised", "peer-down", "peer-down/node-a/10.0.0.9:2575")]
    body = inbox.bodies()[0]
    assert (body["peer"], body["channel"], body["destination"]) == (
        "10.0.0.9:2575", "hl7-out", "ris")
    other = watch(database, tmp_path, only("peer_down", failures=3), Inbox(), tracker(),
                  node="node-b")
    await other.check()  # node-b sees no peer down, and leaves node-a's incident alone
    assert [i.state for i in incidents(database)] == [OPEN]
    peers.reached("10.0.0.9:2575", "hl7-out/ris")
    await source.check()
    assert inbox.events()[-1] == ("resolved", "peer-down", "peer-down/node-a/10.0.0.9:2575")


async def test_drift_alerts_of_the_qa_monitor_last_until_their_period_ends(
        database: Database, tmp_path: Path) -> None:
    today = datetime.now(UTC).date()

    def drift(key: str, start: int, end: int) -> audit.AuditRecord:
        return audit.AuditRecord(
            action="qa.drift.alert", actor="qa.monitor", channel="qa-drift-alerts",
            detail={"key": key, "model": "fracture-xr", "version": "1.0", "measure": "score",
                    "verdict": "alert", "psi": 0.4, "ks_p_value": 0.001, "n_baseline": 900,
                    "n_current": 300,
                    "current": {"start": (today + timedelta(days=start)).isoformat(),
                                "end": (today + timedelta(days=end)).isoformat()}})

    audit.append_now(database, [drift("qa-drift/now", -3, 5), drift("qa-drift/old", -60, -31)],
                     "qa-monitor")
    inbox = Inbox()
    source = watch(database, tmp_path, only("drift"), inbox)
    await source.check()
    assert inbox.events() == [("raised", "drift", "drift/qa-drift/now")]
    assert inbox.bodies()[0]["figures"]["psi"] == 0.4
    await source.check(utcnow() + timedelta(days=6))  # the period is over
    assert inbox.events()[-1] == ("resolved", "drift", "drift/qa-drift/now")


# --- announcing, scope ----------------------------------------------------------------


async def test_an_alert_not_received_is_announced_by_the_next_pass_once(
        database: Database, tmp_path: Path) -> None:
    attempts(database, "orders", "ris", dead=1)
    inbox = Inbox()
    source = watch(database, tmp_path, only("dead_letters"), inbox)
    inbox.fail_next = True
    with pytest.raises(StoreUnavailable):
        await source.check()
    [row] = incidents(database)
    assert (row.state, row.raised_message_id) == (OPEN, None)
    await source.check()
    await source.check()
    assert inbox.events() == [("raised", "dead-letters", "dead-letters/orders/ris")]
    assert incidents(database)[0].raised_message_id == 1
    assert inbox.messages[0].dedup_key == f"alert/{row.id}/raised"


async def test_the_alerts_channel_watches_others_not_itself(database: Database,
                                                            tmp_path: Path) -> None:
    attempts(database, "ops", "webhook", dead=1)
    attempts(database, "lab", "lis", dead=1)
    attempts(database, "ris-out", "ris", dead=1)
    everything = Inbox()
    await watch(database, tmp_path, only("dead_letters"), everything).check()
    assert sorted(e[2] for e in everything.events()) == [
        "dead-letters/lab/lis", "dead-letters/ris-out/ris"]
    narrowed = AlertsSource.model_validate({**only("dead_letters").model_dump(),
                                            "channels": ["lab"]})
    picked = Inbox()
    context = AdapterContext(tmp_path, BlobStore(tmp_path / "b"), 65536, picked.receive,
                             database, "node-a")
    await AlertWatch("ops2", narrowed, context, peers=tracker()).check()
    assert [e[2] for e in picked.events()] == ["dead-letters/lab/lis"]


def test_the_rules_are_checked_like_any_channel_file() -> None:
    with pytest.raises(ValueError, match="threshold"):
        only("error_rate", threshold=1.5)
    with pytest.raises(ValueError, match="extra"):
        AlertsSource.model_validate({"type": "alerts", "queue_age": {"max_agee": "1m"}})
    defaults = AlertsSource.model_validate({"type": "alerts"})
    assert (defaults.interval, defaults.queue_age.max_age, defaults.peer_down.failures) == (
        30.0, 600.0, 3)


# --- end to end: a node, a failing peer, a webhook ---------------------------------------


@pytest.fixture
def webhook() -> Iterator[RecordingReceiver]:
    peer = RecordingReceiver()
    yield peer
    peer.close()


async def test_alerts_reach_a_webhook_once_per_incident(tmp_path: Path,
                                                        webhook: RecordingReceiver) -> None:
    closed = free_port()
    relay = ChannelConfig.model_validate({
        "name": "relay", "source": {"type": "http"},
        "destinations": [{"name": "peer", "type": "http", "timeout": "2s",
                          "url": f"http://127.0.0.1:{closed}/inbound",
                          "queue": {"max_attempts": 1}}]})
    ops = ChannelConfig.model_validate({
        "name": "ops", "source": {
            "type": "alerts", "interval": 0.2, "dead_letters": {"window": "4s"},
            "peer_down": {"failures": 1}, "queue_age": {"enabled": False}},
        "destinations": [{"name": "webhook", "type": "http", "url": webhook.url}]})
    settings = Settings.resolve(data_dir=str(tmp_path / "data"),
                                database_url=f"sqlite:///{tmp_path / 's.db'}",
                                node_id="node-a", api_port=0, environ={})
    node = Node(settings, [relay, ops], poll_interval=0.1)
    await node.start()

    def alerts() -> list[tuple[str, str, int]]:
        return [(b["event"], b["rule"], b["incident"]) for b in
                (json.loads(a.body) for a in webhook.arrivals() if a.accepted)]

    async def until(predicate: Any, what: str) -> None:
        await asyncio.to_thread(wait_until, predicate, 20.0, what)

    try:
        await node.receive(Inbound(channel="relay", content_type="text/plain",
                                   source="test", content=b"first"))
        await until(lambda: {(e, r) for e, r, _ in alerts()} == {
            ("raised", "dead-letters"), ("raised", "peer-down")}, "two raised alerts")
        await until(lambda: ("resolved", "dead-letters") in {(e, r) for e, r, _ in alerts()},
                    "the dead letters resolved after a quiet window")
        await node.receive(Inbound(channel="relay", content_type="text/plain",
                                   source="test", content=b"second"))
        await until(lambda: len(alerts()) == 4, "a second dead-letter incident")
        await asyncio.sleep(1.0)  # five more passes: nothing new while nothing changes
    finally:
        await node.stop()
    events = alerts()
    dead = [(e, i) for e, r, i in events if r == "dead-letters"]
    assert [e for e, _ in dead] == ["raised", "resolved", "raised"]
    assert dead[0][1] == dead[1][1] != dead[2][1]
    assert [e for e, r, _ in events if r == "peer-down"] == ["raised"]
    assert len(events) == 4
    assert set(webhook.accepted_per_key().values()) == {1}
    body = json.loads(webhook.arrivals()[0].body)
    assert body["type"] == "radbridge.alert" and body["node"] == "node-a"


async def test_two_nodes_on_one_store_open_one_incident(database: Database,
                                                        tmp_path: Path) -> None:
    attempts(database, "orders", "ris", dead=1)
    first, second = Inbox(), Inbox()
    await asyncio.gather(
        watch(database, tmp_path, only("dead_letters"), first, node="node-a").check(),
        watch(database, tmp_path, only("dead_letters"), second, node="node-b").check())
    [row] = incidents(database)
    assert row.state == OPEN
    # Both may announce it; the receiver's dedup key makes that one message.
    keys = {m.dedup_key for m in first.messages + second.messages}
    assert keys == {f"alert/{row.id}/raised"}
