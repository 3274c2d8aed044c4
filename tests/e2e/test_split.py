"""`radbridge run --split`: two processes on one store, the processing child supervised.

Messages received by the parent (the MLLP source) are processed and delivered by the
child; when the child is killed with SIGKILL the parent starts it again and nothing is
lost; SIGTERM to the parent stops both, cleanly, and the audit chains verify.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
import yaml

from tests.e2e.conftest import Spawn, assert_audit_verifies, free_port, report, wait_until
from tests.hl7_support import adt_a01, exchange, frame, msa
from tests.ris_listener import TestRis

pytestmark = pytest.mark.slow


def child_pids(node_id: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", "--", f"--node-id {node_id}-process"],
                           capture_output=True, text=True, check=False)
    return [int(pid) for pid in found.stdout.split()]


def test_split_node_survives_the_loss_of_its_processing_child(
        spawn: Spawn, sqlite_url: str) -> None:
    mllp_port = free_port()
    with TestRis("AA") as ris:
        channel = yaml.safe_dump({
            "name": "relay", "source": {"type": "mllp", "port": mllp_port},
            "destinations": [{"name": "ris", "type": "mllp", "host": "127.0.0.1",
                              "port": ris.port, "queue": {"lease": "2s"}}]})
        node = spawn(channel_yaml=channel, database_url=sqlite_url, node_id="split",
                     extra_args=("--split",)).start()
        wait_until(lambda: len(child_pids("split")) == 1, 20, "the processing child")
        for i in range(50):
            assert msa(exchange(mllp_port, frame(adt_a01(f"S1-{i}")))[0])[1] == "AA"
        wait_until(lambda: len(set(ris.control_ids())) == 50, 30, "the first 50 at the RIS")

        [child] = child_pids("split")
        os.kill(child, signal.SIGKILL)
        for i in range(50):  # acknowledged by the parent while the child is gone
            assert msa(exchange(mllp_port, frame(adt_a01(f"S2-{i}")))[0])[1] == "AA"
        wait_until(lambda: child_pids("split") not in ([], [child]), 20, "a new child")
        wait_until(lambda: len(set(ris.control_ids())) == 100, 40, "all 100 at the RIS")

        assert node.stop_gracefully() == 0
        wait_until(lambda: child_pids("split") == [], 20, "the child to stop with its parent")
        assert_audit_verifies(node)
    duplicates = len(ris.control_ids()) - len(set(ris.control_ids()))
    report(f"split node: child killed after 50 messages, 100 of 100 delivered after its "
           f"restart, {duplicates} duplicate arrival(s)")


def test_the_child_stops_when_its_parent_is_killed(spawn: Spawn, sqlite_url: str) -> None:
    channel = yaml.safe_dump({"name": "quiet", "source": {"type": "mllp", "port": free_port()},
                              "destinations": [{"name": "out", "type": "null"}]})
    node = spawn(channel_yaml=channel, database_url=sqlite_url, node_id="orphan",
                 extra_args=("--split",)).start()
    wait_until(lambda: len(child_pids("orphan")) == 1, 20, "the processing child")
    node.kill(signal.SIGKILL)
    node.wait(10)
    wait_until(lambda: child_pids("orphan") == [], 20, "the orphaned child to stop")
