"""`radbridge send hl7 FILE... --to HOST:PORT`: send sample messages and print the ACKs.

An analyst's test tool: each file may hold one or more messages (each starts with
MSH), with segments ended by CR, LF or CRLF as editors save them; they are sent as CR,
one after another on one connection, each waiting for its ACK. Exit status 0 when every
message got AA (or CA), 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
from pathlib import Path

from radbridge.engine.config import TlsConfig
from radbridge.interfaces.mllp.sender import MllpConnection, read_msa
from radbridge.interfaces.tls import client_context
from radbridge.mappings.hl7.header import split_segments


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("send", help="send test messages to a peer (hl7 over MLLP)")
    kinds = parser.add_subparsers(dest="send_kind", required=True, metavar="KIND")
    hl7 = kinds.add_parser("hl7", help="send HL7 v2 files over MLLP and print the ACKs")
    hl7.add_argument("files", nargs="+", type=Path, metavar="FILE")
    hl7.add_argument("--to", required=True, metavar="HOST:PORT")
    hl7.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each ACK")
    hl7.add_argument("--encoding", default="utf-8", help="how the files are encoded")
    hl7.add_argument("--tls", action="store_true", help="connect with TLS")
    hl7.add_argument("--ca", help="CA certificate that signed the peer's certificate")
    hl7.add_argument("--cert", help="client certificate (mutual TLS)")
    hl7.add_argument("--key", help="client key (mutual TLS)")
    hl7.set_defaults(handler=_run)


def split_messages(text: str) -> list[str]:
    """Messages of a file: a new one at each MSH; segments rejoined with CR."""
    messages: list[list[str]] = []
    for segment in split_segments(text.lstrip("\ufeff")):
        if not segment.strip():
            continue
        if segment.startswith("MSH") or not messages:
            messages.append([])
        messages[-1].append(segment)
    return ["\r".join(segments) + "\r" for segments in messages]


def _run(args: argparse.Namespace) -> int:
    host, _, port = args.to.rpartition(":")
    if not host or not port.isdigit():
        print(f"--to {args.to!r}: expected HOST:PORT")
        return 2
    messages = []
    for path in args.files:
        try:
            text = path.read_text(encoding=args.encoding)
        except (OSError, UnicodeDecodeError) as exc:
            print(f"{path}: cannot read: {exc}")
            return 2
        messages += [(f"{path}#{n}", m) for n, m in enumerate(split_messages(text), start=1)]
    tls = None
    if args.tls or args.ca or args.cert:
        tls = client_context(TlsConfig(ca=args.ca, cert=args.cert, key=args.key), Path)
    return asyncio.run(_send_all(host, int(port), messages, tls, args.timeout,
                                 args.encoding))


async def _send_all(host: str, port: int, messages: list[tuple[str, str]],
                    tls: ssl.SSLContext | None, timeout: float, encoding: str) -> int:
    try:
        connection = await MllpConnection.open(host, port, tls=tls, timeout=timeout,
                                               max_size=16 * 2**20)
    except (OSError, TimeoutError) as exc:
        print(f"cannot connect to {host}:{port}: {exc}")
        return 1
    failures = 0
    try:
        for label, message in messages:
            await connection.send(message.encode(encoding))
            try:
                ack = await asyncio.wait_for(connection.receive(), timeout)
            except (TimeoutError, ConnectionError) as exc:
                print(f"{label}: no ACK ({type(exc).__name__})")
                return 1
            code, _, reason = read_msa(ack)
            failures += code not in ("AA", "CA")
            print(f"{label}: {code}" + (f" {reason}" if reason and code not in ("AA", "CA")
                                        else ""))
            print(ack.decode(encoding, errors="replace").replace("\r", "\n").rstrip("\n"))
    finally:
        connection.close()
    return 1 if failures else 0
