"""HL7 test helpers: sample messages, a raw MLLP client, and a node with an MLLP channel.

The raw client speaks bytes on a real socket so tests can send exactly what a broken
sender would (split frames, garbage, no end block); well-behaved traffic in the tests
also goes through python-hl7's own client (`mllp_send`).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select

import radbridge.interfaces.adapters  # noqa: F401  (registers the MLLP adapters)
from radbridge.engine.config import ChannelConfig
from radbridge.engine.db import Database
from radbridge.engine.models import Message, MessageStage
from radbridge.engine.runtime import Node
from radbridge.engine.settings import Settings
from radbridge.interfaces.mllp.listener import MllpListener

START, END = b"\x0b", b"\x1c\x0d"


def adt_a01(control_id: str = "MSG00001", *, sender: str = "ADT1", patient: str = "PATID1234",
            version: str = "2.5.1", extra_msh: str = "") -> str:
    """A realistic ADT^A01 of about 400 bytes (fictitious patient)."""
    return "\r".join([
        f"MSH|^~\\&|{sender}|GOOD HEALTH HOSPITAL|RADBRIDGE|GOOD HEALTH HOSPITAL|"
        f"20261124101500||ADT^A01^ADT_A01|{control_id}|P|{version}{extra_msh}",
        "EVN|A01|20261124101500",
        f"PID|1||{patient}^^^GHH^MR||EVERYMAN^ADAM^A^III||19610615|M|||"
        "2222 HOME STREET^^GREENSBORO^NC^27401-1020||(555)555-2004|||S||"
        "PATID12345001^2^M10^ADT1^AN^A|444333333",
        "NK1|1|NUCLEAR^NELDA^W|SPO^SPOUSE",
        "PV1|1|I|2000^2012^01||||004777^ATTEND^AARON^A|||SUR||||ADM|A0",
    ]) + "\r"


def frame(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return START + data + END


def read_frames(sock: socket.socket, count: int, timeout: float = 10.0) -> list[str]:
    """Read `count` framed answers (ACKs) from a blocking socket."""
    sock.settimeout(timeout)
    buffer = b""
    frames: list[str] = []
    while len(frames) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
        while START in buffer and END in buffer:
            start = buffer.index(START)
            end = buffer.index(END, start)
            frames.append(buffer[start + 1:end].decode("latin-1"))
            buffer = buffer[end + 2:]
    return frames


def exchange(port: int, payload: bytes, answers: int = 1, *,
             context: ssl.SSLContext | None = None) -> list[str]:
    """Connect, send raw bytes, and read `answers` ACK frames."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        sock = context.wrap_socket(raw, server_hostname="localhost") if context else raw
        sock.sendall(payload)
        return read_frames(sock, answers)


def msa(ack: str) -> list[str]:
    for segment in ack.split("\r"):
        if segment.startswith("MSA|"):
            return segment.split("|")
    raise AssertionError(f"no MSA in {ack!r}")


def err(ack: str) -> str:
    for segment in ack.split("\r"):
        if segment.startswith("ERR|"):
            return segment
    return ""


def mllp_channel(name: str = "hl7in", **source: Any) -> ChannelConfig:
    return ChannelConfig.model_validate({
        "name": name,
        "source": {"type": "mllp", "port": 0, **source},
        "destinations": [{"name": "out", "type": "null"}],
    })


@asynccontextmanager
async def running_node(tmp_path: Path, url: str, channels: list[ChannelConfig],
                       ) -> AsyncIterator[tuple[Node, int]]:
    """A started node and the port its first MLLP listener is bound to."""
    settings = Settings.resolve(data_dir=str(tmp_path / "data"), database_url=url,
                                node_id="test-node", api_port=0, environ={})
    node = Node(settings, channels, poll_interval=0.1)
    await node.start()
    try:
        listener = next(s for s in node.sources if isinstance(s, MllpListener))
        yield node, listener.port
    finally:
        await node.stop()


def stored(database: Database) -> list[tuple[Message, bytes]]:
    """Every message with the content it arrived with, oldest first."""
    with database.read() as session:
        rows = session.execute(
            select(Message, MessageStage.content)
            .join(MessageStage, MessageStage.message_id == Message.id)
            .where(MessageStage.stage == "received").order_by(Message.id))
        return [(m, c or b"") for m, c in rows]


async def in_thread(function: Any, *args: Any) -> Any:
    return await asyncio.to_thread(function, *args)


def audit_events(database: Database, action: str) -> list[Any]:
    from radbridge.engine import audit
    with database.read() as session:
        return audit.query(session, audit.AuditQuery(action=action))
