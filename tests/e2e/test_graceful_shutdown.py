"""SIGTERM with deliveries in flight: the sends finish, the node exits 0 within its
drain timeout, and a restart sends the rest without sending anything twice."""

from __future__ import annotations

import signal
import time
import uuid

import pytest

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

MESSAGES = 40
DRAIN_TIMEOUT = 10.0


def test_sigterm_drains_sends_in_flight(
    spawn: Spawn, receiver: RecordingReceiver, database_url: str
) -> None:
    receiver.set_delay(0.5)
    node = spawn(channel_yaml=relay_channel(receiver.url, concurrency=4, lease="4s"),
                 database_url=database_url, node_id="graceful", drain_timeout=DRAIN_TIMEOUT)
    node.start()
    run = uuid.uuid4().hex[:8]
    bodies = [f"MSH|term|{run}|{i:03d}".encode() for i in range(MESSAGES)]
    acknowledged = {}
    for body in bodies:
        response = node.post(body)
        assert response.status_code == 202, response.text
        acknowledged[body] = response.json()["message_id"]

    wait_until(lambda: len(receiver.arrivals()) >= 6 and receiver.in_flight() >= 2, 20,
               "some deliveries done and some in flight")
    node.kill(signal.SIGTERM)
    signalled = time.monotonic()
    in_flight_at_term = receiver.in_flight()
    rc = node.wait(DRAIN_TIMEOUT + 10)
    exited_after = time.monotonic() - signalled
    assert rc == 0, node.log_tail()
    assert exited_after < DRAIN_TIMEOUT, f"exit took {exited_after:.1f}s"
    assert receiver.in_flight() == 0
    delivered_before_restart = receiver.accepted_bodies()
    assert 0 < len(delivered_before_restart) < MESSAGES

    probe = StoreProbe(database_url)
    try:
        # Every send that reached the peer was recorded as sent before the process exited,
        # and nothing was left leased.
        statuses = probe.delivery_statuses()
        assert statuses["sent"] == len(delivered_before_restart), dict(statuses)
        assert statuses["in_flight"] == 0, dict(statuses)
        assert statuses["pending"] == MESSAGES - len(delivered_before_restart), dict(statuses)

        node.start()
        receiver.wait_for_bodies(bodies, timeout=25)
        probe.wait_all_sent(MESSAGES)
        probe.assert_each_sent_once(acknowledged.values())
    finally:
        probe.close()
    assert not duplicates(receiver), f"sent twice: {duplicates(receiver)}"
    assert all(len(keys) == 1 for keys in receiver.keys_per_body().values())
    report(f"SIGTERM [{database_url.split(':')[0]}]: {in_flight_at_term} sends in flight, "
           f"exit 0 after {exited_after:.2f}s, {len(delivered_before_restart)} of {MESSAGES} "
           f"sent before the restart, 0 duplicates")

    assert node.stop_gracefully() == 0
    assert_audit_verifies(node)
