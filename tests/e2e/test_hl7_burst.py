"""kill -9 during a burst of 10,000 HL7 messages over MLLP, relayed to a test RIS over MLLP.

Eight sender threads each keep one MLLP connection and send ADT^A01s with unique
MSH-10s, waiting for each ACK, while the node relays everything to a RIS (python-hl7's
server). Part-way through, the node is killed with SIGKILL; the senders note which
messages were acknowledged (AA) before their connection broke, then, after a restart,
send the rest. Checked afterwards:

- every acknowledged MSH-10 is in the store, once;
- every acknowledged MSH-10 reached the RIS; an MSH-10 arrives twice only when its send
  was cut off by the kill before the outcome was recorded (bounded by concurrency x
  prefetch), always with the same MSH-10 so the RIS can recognise it;
- the store shows each delivery sent exactly once, and the audit chains verify.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections import Counter

import pytest
import yaml
from sqlalchemy import select

from radbridge.engine.dispatcher import PREFETCH
from radbridge.engine.models import Message
from tests.e2e.conftest import (
    Spawn,
    StoreProbe,
    assert_audit_verifies,
    free_port,
    report,
    wait_until,
)
from tests.hl7_support import adt_a01, frame, msa, read_frames
from tests.ris_listener import TestRis

pytestmark = pytest.mark.slow

TOTAL = 10_000
SENDERS = 8
CONCURRENCY = 4
KILL_AFTER = 3_000


def burst_channel(port: int, ris_port: int) -> str:
    return yaml.safe_dump({
        "name": "hl7-relay",
        "source": {"type": "mllp", "port": port},
        "destinations": [{
            "name": "ris", "type": "mllp", "host": "127.0.0.1", "port": ris_port,
            "ack_timeout": "5s",
            "queue": {"concurrency": CONCURRENCY, "lease": "3s", "max_attempts": 50,
                      "backoff": {"initial": 0.2, "max": 1.0, "jitter": 0.1}},
        }],
    }, sort_keys=False)


class Senders:
    """Eight threads sending their share of the control ids; they stop at a broken socket."""

    def __init__(self, port: int, ids: list[str]) -> None:
        self.port = port
        self.acked: set[str] = set()
        self._lock = threading.Lock()
        self._queues = [ids[i::SENDERS] for i in range(SENDERS)]

    def run(self) -> None:
        threads = [threading.Thread(target=self._send, args=(queue,)) for queue in self._queues]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)

    def _send(self, queue: list[str]) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                while queue:
                    control_id = queue[0]
                    sock.sendall(frame(adt_a01(control_id)))
                    answers = read_frames(sock, 1)
                    if not answers:
                        return
                    if msa(answers[0])[1] == "AA":
                        with self._lock:
                            self.acked.add(control_id)
                    queue.pop(0)
        except OSError:
            return

    @property
    def remaining(self) -> list[str]:
        return [control_id for queue in self._queues for control_id in queue]


def test_kill_9_during_a_burst_of_10000(spawn: Spawn, database_url: str) -> None:
    url = database_url
    store = url.split(":")[0]
    ids = [f"B{i:05d}" for i in range(TOTAL)]
    with TestRis("AA") as ris:
        mllp_port = free_port()
        node = spawn(channel_yaml=burst_channel(mllp_port, ris.port), database_url=url,
                     node_id="burst").start()
        senders = Senders(mllp_port, ids)
        burst = threading.Thread(target=senders.run)
        started = time.monotonic()
        burst.start()
        wait_until(lambda: len(senders.acked) >= KILL_AFTER, 60, "the first acknowledgements")
        node.kill(signal.SIGKILL)
        assert node.wait(10) == -signal.SIGKILL  # reaped before the restart
        burst.join(60)
        acked_before_kill = len(senders.acked)
        rate = acked_before_kill / (time.monotonic() - started)
        node.start()
        after = Senders(mllp_port, senders.remaining)
        after.run()
        acked = senders.acked | after.acked
        assert acked >= set(ids) - set(after.remaining), "a sender gave up early"

        wait_until(lambda: set(ris.control_ids()) >= acked, 180,
                   lambda: f"{len(acked - set(ris.control_ids()))} acknowledged messages"
                           " to reach the RIS")
        probe = StoreProbe(url)
        try:
            with probe.database.read() as session:
                stored = Counter(meta["hl7.control_id"] for meta in
                                 session.execute(select(Message.meta)).scalars())
            missing = acked - set(stored)
            assert not missing, f"acknowledged but not stored: {sorted(missing)[:10]}"
            assert all(stored[c] == 1 for c in acked), "an acknowledged message stored twice"
            probe.wait_all_sent(len(stored), timeout=120)
            probe.assert_each_sent_once(probe.sent_message_ids())
        finally:
            probe.close()
        arrivals = Counter(ris.control_ids())
        twice = {c: n for c, n in arrivals.items() if n > 1}
        assert len(twice) <= CONCURRENCY * PREFETCH, twice
        assert set(arrivals) == set(stored)
        node.stop_gracefully()
        assert_audit_verifies(node)
    report(f"hl7 burst [{store}]: {acked_before_kill} acked before kill -9 "
           f"({rate:.0f}/s with the relay running), {len(acked)} of {TOTAL} acked in all, "
           f"{len(twice)} MSH-10s arrived twice at the RIS (bound {CONCURRENCY * PREFETCH})")
