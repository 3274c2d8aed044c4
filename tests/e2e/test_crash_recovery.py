"""kill -9 of a node, on SQLite and on PostgreSQL: nothing acknowledged is lost.

1. Killed while deliveries are in flight (the receiver holds each response 0.3 s):
   after a restart with the same node id and store, every acknowledged message reaches
   the receiver, always under the same Idempotency-Key; a key arrives twice only when it
   was sent before the kill (at most concurrency x prefetch of them); the store shows
   each delivery sent once and the audit chain verifies.
2. Killed while clients are POSTing: every POST answered 202 is delivered after the
   restart (POSTs that failed with a connection error are not counted either way).
3. The peer down (it answers 503): the channel keeps acknowledging, deliveries are
   retried with rising X-Radbridge-Attempt and all go out once the peer is back; with
   max_attempts 2 they end dead, and `radbridge messages retry --all` sends them again.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid

import httpx
import pytest

from radbridge.engine.dispatcher import PREFETCH
from tests.e2e.conftest import (
    RecordingReceiver,
    Spawn,
    StoreProbe,
    assert_audit_verifies,
    duplicates,
    relay_channel,
    report,
    wait_until,
)

pytestmark = pytest.mark.slow

CONCURRENCY = 4
MESSAGES = 60


def test_kill_9_with_deliveries_in_flight(
    spawn: Spawn, receiver: RecordingReceiver, database_url: str
) -> None:
    receiver.set_delay(0.3)
    node = spawn(channel_yaml=relay_channel(receiver.url, concurrency=CONCURRENCY, lease="2s"),
                 database_url=database_url, node_id="crash-1").start()
    run = uuid.uuid4().hex[:8]
    bodies = [f"MSH|crash|{run}|{i:03d}".encode() for i in range(MESSAGES)]
    acknowledged: dict[bytes, int] = {}
    for body in bodies:
        response = node.post(body)
        assert response.status_code == 202, response.text
        assert response.json()["duplicate"] is False
        acknowledged[body] = response.json()["message_id"]

    wait_until(lambda: len(receiver.arrivals()) >= 12 and receiver.in_flight() > 0, 20,
               "the receiver to see some deliveries while others are in flight")
    in_flight_at_kill = receiver.in_flight()
    node.kill(signal.SIGKILL)
    assert node.wait(10) == -signal.SIGKILL
    killed_at = time.monotonic()  # the process is gone: nothing it sends arrives later
    seen_at_kill = {a.body for a in receiver.arrivals()}
    assert len(seen_at_kill) < MESSAGES, "everything was delivered before the kill"

    node.start()
    took = receiver.wait_for_bodies(bodies, timeout=25)
    probe = StoreProbe(database_url)
    try:
        probe.wait_all_sent(MESSAGES)
        probe.assert_each_sent_once(acknowledged.values())
    finally:
        probe.close()
    assert receiver.accepted_bodies() == set(bodies)

    keys = receiver.keys_per_body()
    assert all(len(k) == 1 for k in keys.values()), "a body arrived under two keys"
    assert len({next(iter(k)) for k in keys.values()}) == MESSAGES, "two bodies share a key"
    repeated = duplicates(receiver)
    first_seen: dict[str, float] = {}
    for arrival in receiver.arrivals():
        first_seen.setdefault(arrival.key, arrival.at)
    assert all(first_seen[key] <= killed_at for key in repeated), (
        "a key was sent twice that had not been sent before the kill")
    assert sum(n - 1 for n in repeated.values()) <= CONCURRENCY * PREFETCH
    for key in repeated:
        attempts = receiver.attempts_per_key()[key]
        assert attempts == sorted(set(attempts)), f"attempt numbers of {key}: {attempts}"
    report(f"kill -9 in flight [{node.database_url.split(':')[0]}]: {len(seen_at_kill)} of "
           f"{MESSAGES} seen at the kill, {in_flight_at_kill} held by the receiver; "
           f"{sum(n - 1 for n in repeated.values())} duplicate arrival(s) after restart; "
           f"all delivered {took:.1f}s after the restart was ready; "
           f"{len(receiver.truncated)} request(s) cut short by the kill")

    assert node.stop_gracefully() == 0
    assert_audit_verifies(node)


class _Poster(threading.Thread):
    """POSTs unique bodies one after another until stopped (at most `limit`)."""

    def __init__(self, url: str, prefix: str, stop: threading.Event, limit: int = 2000, *,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(name=f"poster-{prefix}", daemon=True)
        self._url, self._prefix, self._halt, self._limit = url, prefix, stop, limit
        self._headers = headers or {}
        self.acknowledged: dict[bytes, int] = {}
        self.refused = 0
        self.unexpected: list[str] = []

    def run(self) -> None:
        with httpx.Client(timeout=5.0, headers=self._headers) as client:
            for i in range(self._limit):
                if self._halt.is_set():
                    return
                body = f"{self._prefix}|{i:05d}".encode()
                try:
                    response = client.post(self._url, content=body,
                                           headers={"Content-Type": "text/plain"})
                except httpx.TransportError:
                    self.refused += 1  # the node is down: not acknowledged, not counted
                    self._halt.wait(0.01)
                    continue
                if response.status_code == 202:
                    self.acknowledged[body] = response.json()["message_id"]
                else:
                    self.unexpected.append(f"{response.status_code} {response.text[:100]}")


def test_kill_9_while_receiving(
    spawn: Spawn, receiver: RecordingReceiver, database_url: str
) -> None:
    node = spawn(channel_yaml=relay_channel(receiver.url, concurrency=CONCURRENCY, lease="2s"),
                 database_url=database_url, node_id="crash-2").start()
    url = f"{node.base_url}/api/channels/relay/messages"
    stop = threading.Event()
    run = uuid.uuid4().hex[:8]
    posters = [_Poster(url, f"MSH|receipt|{run}|{n}", stop, headers=node.auth_headers())
               for n in range(4)]
    for poster in posters:
        poster.start()
    try:
        wait_until(lambda: sum(len(p.acknowledged) for p in posters) >= 80, 20,
                   "80 acknowledged POSTs before the kill")
        node.kill(signal.SIGKILL)
        assert node.wait(10) == -signal.SIGKILL
        # The posters keep going against the dead port until each saw a refusal.
        wait_until(lambda: all(p.refused or not p.is_alive() for p in posters), 10,
                   "every poster to see the node gone")
    finally:
        stop.set()
        for poster in posters:
            poster.join(timeout=10)
    assert not any(p.is_alive() for p in posters)
    assert not [u for p in posters for u in p.unexpected], "a POST got neither 202 nor an error"
    acknowledged = {body: mid for p in posters for body, mid in p.acknowledged.items()}
    delivered_at_kill = len(receiver.accepted_bodies())

    node.start()
    receiver.wait_for_bodies(acknowledged, timeout=25)
    probe = StoreProbe(database_url)
    try:
        wait_until(lambda: set(acknowledged.values()) <= probe.sent_message_ids(), 15,
                   "every acknowledged message to be sent in the store")
        probe.assert_each_sent_once(acknowledged.values())
    finally:
        probe.close()
    keys = receiver.keys_per_body()
    assert all(len(keys[body]) == 1 for body in acknowledged)
    report(f"kill -9 during receipt [{database_url.split(':')[0]}]: {len(acknowledged)} "
           f"acknowledged, {delivered_at_kill} delivered before the kill, "
           f"{sum(p.refused for p in posters)} POSTs refused while down, "
           f"{sum(n - 1 for n in duplicates(receiver).values())} duplicate arrival(s)")
    assert node.stop_gracefully() == 0
    assert_audit_verifies(node)


# --- the peer down -------------------------------------------------------------------


def test_peer_down_then_recovers(
    spawn: Spawn, receiver: RecordingReceiver, sqlite_url: str
) -> None:
    receiver.set_status(503)
    node = spawn(channel_yaml=relay_channel(receiver.url, concurrency=CONCURRENCY,
                                            max_attempts=50),
                 database_url=sqlite_url, node_id="peer-down").start()
    run = uuid.uuid4().hex[:8]
    early = [f"MSH|down|{run}|{i:02d}".encode() for i in range(10)]
    for body in early:
        assert node.post(body).status_code == 202

    def retried_three_times() -> bool:
        per_body = {body: 0 for body in early}
        for arrival in receiver.arrivals():
            per_body[arrival.body] += 1
        return min(per_body.values()) >= 3

    wait_until(retried_three_times, 20, "each message to be tried three times")
    # The channel keeps accepting while its destination is down.
    late = [f"MSH|down|{run}|{i:02d}".encode() for i in range(10, 20)]
    for body in late:
        assert node.post(body).status_code == 202
    receiver.set_status(200)
    receiver.wait_for_bodies(early + late, timeout=20)

    attempts = receiver.attempts_per_key()
    for key, numbers in attempts.items():
        assert numbers == list(range(1, len(numbers) + 1)), f"{key}: attempts {numbers}"
    assert all(n == 1 for n in receiver.accepted_per_key().values())
    failed_tries = sum(1 for a in receiver.arrivals() if a.status == 503)
    probe = StoreProbe(sqlite_url)
    try:
        probe.wait_all_sent(len(early) + len(late))
    finally:
        probe.close()
    report(f"peer down: {failed_tries} requests answered 503, then all "
           f"{len(early) + len(late)} delivered once; most attempts for one key: "
           f"{max(len(n) for n in attempts.values())}")
    assert node.stop_gracefully() == 0


def test_dead_letters_retried_by_the_cli(
    spawn: Spawn, receiver: RecordingReceiver, sqlite_url: str
) -> None:
    receiver.set_status(503)
    node = spawn(channel_yaml=relay_channel(receiver.url, concurrency=CONCURRENCY,
                                            max_attempts=2),
                 database_url=sqlite_url, node_id="dead-letters").start()
    run = uuid.uuid4().hex[:8]
    bodies = [f"MSH|dead|{run}|{i}".encode() for i in range(6)]
    for body in bodies:
        assert node.post(body).status_code == 202
    probe = StoreProbe(sqlite_url)
    try:
        wait_until(lambda: probe.delivery_statuses() == {"dead": len(bodies)}, 20,
                   lambda: f"{len(bodies)} dead deliveries, not {probe.delivery_statuses()}",
                   interval=0.2)
        assert sorted(receiver.attempts_per_key().values()) == [[1, 2]] * len(bodies)
        assert not receiver.accepted_bodies()

        receiver.set_status(200)
        retried = node.cli("messages", "retry", "--all", "--json")
        assert retried.returncode == 0, retried.stderr
        assert json.loads(retried.stdout) == {"retried": len(bodies)}
        receiver.wait_for_bodies(bodies, timeout=15)
        probe.wait_all_sent(len(bodies))
    finally:
        probe.close()
    assert all(n == 1 for n in receiver.accepted_per_key().values())
    assert len(receiver.arrivals()) == 3 * len(bodies)
    assert node.stop_gracefully() == 0
    assert_audit_verifies(node)
    events = node.cli("audit", "query", "--action", "delivery.retried")
    assert events.returncode == 0, events.stderr
    assert len(json.loads(events.stdout)["events"]) == len(bodies)

