"""Two nodes on one PostgreSQL database: they share the work, never send a key twice
while both live, and the survivor delivers what a killed node had leased.

Both nodes deploy the same channel (same name, destination, queue policy and URL); the
only difference between their channel files is a static `X-Node` header on the http
destination, so that the receiver can tell which node sent each request. The store
cannot tell: a sent delivery keeps no lease owner, and `delivery.sent` audit events
have the actor `engine`.
"""

from __future__ import annotations

import signal
import time
import uuid

import pytest

from radbridge.engine.db import Database
from radbridge.engine.dispatcher import PREFETCH
from tests.conftest import reset_postgres
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

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

CONCURRENCY = 2


@pytest.fixture
def shared_pg(pg_url: str) -> str:
    database = Database(pg_url)
    try:
        reset_postgres(database)
    finally:
        database.dispose()
    return pg_url


def test_two_nodes_share_one_store_and_survive_a_kill(
    spawn: Spawn, receiver: RecordingReceiver, shared_pg: str
) -> None:
    def channel(node: str) -> str:
        return relay_channel(receiver.url, concurrency=CONCURRENCY, lease="2s",
                             headers={"X-Node": node})

    receiver.set_delay(0.02)
    a = spawn(name="a", node_id="node-a", channel_yaml=channel("a"), database_url=shared_pg)
    b = spawn(name="b", node_id="node-b", channel_yaml=channel("b"), database_url=shared_pg)
    a.start(ready=False)
    b.start(ready=False)
    a.wait_ready()
    b.wait_ready()
    run = uuid.uuid4().hex[:8]

    # Phase 1: both live. 100 messages, alternately to each node's API.
    first = [f"MSH|two|{run}|{i:03d}".encode() for i in range(100)]
    acknowledged: dict[bytes, int] = {}
    for i, body in enumerate(first):
        response = (a if i % 2 == 0 else b).post(body)
        assert response.status_code == 202, response.text
        acknowledged[body] = response.json()["message_id"]
    receiver.wait_for_bodies(first, timeout=20)
    assert not duplicates(receiver), f"a key was sent twice by live nodes: {duplicates(receiver)}"
    per_node = {node: sum(1 for x in receiver.arrivals() if x.node == node) for node in "ab"}
    assert per_node["a"] > 0 and per_node["b"] > 0, f"one node sent everything: {per_node}"
    probe = StoreProbe(shared_pg)
    try:
        probe.wait_all_sent(len(first))
        probe.assert_each_sent_once(acknowledged.values())
    finally:
        probe.close()

    # Phase 2: slow peer, so that node a has deliveries in flight; kill it.
    receiver.set_delay(0.3)
    second = [f"MSH|two|{run}|{i:03d}".encode() for i in range(100, 140)]
    for i, body in enumerate(second):
        response = (a if i % 2 == 0 else b).post(body)
        assert response.status_code == 202, response.text
        acknowledged[body] = response.json()["message_id"]
    wait_until(lambda: receiver.in_flight("a") > 0, 15, "node a to have a send in flight")
    in_flight_at_kill = receiver.in_flight("a")
    a.kill(signal.SIGKILL)
    assert a.wait(10) == -signal.SIGKILL
    killed_at = time.monotonic()
    undelivered_at_kill = receiver.missing(acknowledged)
    assert undelivered_at_kill, "everything was delivered before the kill"

    # The survivor takes more, and delivers everything either node acknowledged.
    third = [f"MSH|two|{run}|{i:03d}".encode() for i in range(140, 150)]
    for body in third:
        response = b.post(body)
        assert response.status_code == 202, response.text
        acknowledged[body] = response.json()["message_id"]
    took = receiver.wait_for_bodies(acknowledged, timeout=25)

    by_survivor = {x.body for x in receiver.arrivals() if x.accepted and x.node == "b"}
    assert undelivered_at_kill <= by_survivor, "the survivor did not send what was left"
    posted_to_a = {body for i, body in enumerate(second) if i % 2 == 0}
    assert posted_to_a & undelivered_at_kill, "nothing acknowledged by a was left to b"
    repeated = duplicates(receiver)
    first_seen: dict[str, float] = {}
    for arrival in receiver.arrivals():
        first_seen.setdefault(arrival.key, arrival.at)
    assert all(first_seen[key] <= killed_at for key in repeated), (
        "a key first sent after the kill was sent twice")
    assert sum(n - 1 for n in repeated.values()) <= CONCURRENCY * PREFETCH
    assert all(len(keys) == 1 for keys in receiver.keys_per_body().values())
    probe = StoreProbe(shared_pg)
    try:
        probe.wait_all_sent(len(acknowledged))
        probe.assert_each_sent_once(acknowledged.values())
    finally:
        probe.close()
    report(f"two nodes [postgresql]: phase 1 sends a={per_node['a']} b={per_node['b']}, "
           f"0 duplicates; kill -9 of a with {in_flight_at_kill} held by the receiver and "
           f"{len(undelivered_at_kill)} undelivered: {sum(n - 1 for n in repeated.values())} "
           f"duplicate arrival(s), survivor delivered everything {took:.1f}s after "
           f"the last POST")

    assert b.stop_gracefully() == 0
    assert_audit_verifies(b)
