"""The HL7 benchmark's durable floor answers AA only for what it has committed.

The floor is a reference the benchmark compares Radbridge with; a floor that answered
before its commit would make durable ACKs look free, so its one promise is tested here
through its socket, as the load generator uses it.
"""

from __future__ import annotations

import socket
import sqlite3
import sys
from pathlib import Path

from benchmarks.mllp_load import message
from benchmarks.nodes import free_port, process

END = b"\x1c\x0d"


def _exchange(sock: socket.socket, frames: bytes, answers: int) -> list[bytes]:
    sock.sendall(frames)
    buffer = b""
    while buffer.count(END) < answers:
        data = sock.recv(65536)
        assert data, "the floor closed the connection"
        buffer += data
    return buffer.split(END)[:answers]


def test_floor_acknowledges_each_message_after_its_row_is_committed(tmp_path: Path) -> None:
    database = tmp_path / "floor.db"
    port = free_port()
    with process([sys.executable, "-m", "benchmarks.mllp_peers", "floor", "--port",
                  str(port), "--database", str(database)], ready="ready"), \
            socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        first = _exchange(sock, message(41), 1)
        with sqlite3.connect(database) as db:
            after_first = db.execute("SELECT control_id FROM received").fetchall()
        # Three frames in one write: each is committed and answered with its own MSH-10.
        rest = _exchange(sock, message(42) + message(43) + message(44), 3)
        with sqlite3.connect(database) as db:
            stored = [row[0] for row in db.execute("SELECT control_id FROM received")]

    assert b"MSA|AA|000000000041" in first[0]
    assert after_first == [(b"000000000041",)]
    assert [ack.rsplit(b"MSA|AA|", 1)[1].rstrip(b"\r") for ack in rest] == [
        b"000000000042", b"000000000043", b"000000000044"]
    assert stored == [b"000000000041", b"000000000042", b"000000000043", b"000000000044"]
