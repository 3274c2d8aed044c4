"""IHE ATNA over syslog: RFC 5424 framing byte for byte, the store-and-forward cursor with
an in-memory transport (both engines; the commit-order gap on PostgreSQL), then a real
collector, Debian's rsyslog on loopback: UDP, TLS (RFC 5425), a collector that goes away
and comes back (nothing lost, in order), one killed mid-stream, a forged certificate
refused, mutual TLS, and a node forwarding its own ledger."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import update

import radbridge.interfaces.adapters  # noqa: F401  (registers the file and null adapters)
from radbridge.engine import audit
from radbridge.engine.audit_export import atna
from radbridge.engine.audit_export.errors import (
    CollectorError,
    CollectorUntrusted,
    SyslogTargetError,
)
from radbridge.engine.audit_export.event_map import AuditSource
from radbridge.engine.audit_export.events import LedgerEvent
from radbridge.engine.audit_export.forwarder import (
    AuditForwarder,
    ForwardingOptions,
    forwarding_status,
)
from radbridge.engine.audit_export.syslog import SyslogTarget, octet_counted, syslog_message
from radbridge.engine.config import ChannelConfig
from radbridge.engine.db import Database
from radbridge.engine.models import AUDIT_FORWARDING
from radbridge.engine.runtime import Node
from radbridge.engine.settings import Settings
from radbridge.interfaces import cli
from tests.conftest import reset_postgres
from tests.peers import rsyslog as rsyslog_peer
from tests.peers.fixtures import peer_unavailable
from tests.peers.rsyslog import Rsyslog, TlsFiles

AT = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
BOM = "\ufeff"
FAST = ForwardingOptions(batch=50, poll_interval=0.05, retry_max=0.3, gap_wait=30.0)


# --- framing ------------------------------------------------------------------------------


def test_rfc5424_message_and_octet_counting() -> None:
    message = syslog_message(b"<AuditMessage/>", at=AT, outcome="0", hostname="ris gw\u00e9",
                             procid="42")
    assert message == (b"<85>1 2026-03-04T05:06:07.891011Z ris_gw_ radbridge 42 "
                       b"IHE+RFC-3881 - \xef\xbb\xbf<AuditMessage/>")
    failed = syslog_message(b"x", at=AT, outcome="8", hostname="", procid="1")
    assert failed.startswith(b"<83>1 2026-03-04T05:06:07.891011Z - radbridge 1 ")
    assert octet_counted(b"<85>1 abc") == b"9 <85>1 abc"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.binary(max_size=300))
def test_any_header_value_and_body_frame_so_a_reader_can_split_them(value: str,
                                                                    body: bytes) -> None:
    message = syslog_message(body, at=AT, outcome="0", hostname=value, procid=value)
    header, _, rest = message.partition(b" \xef\xbb\xbf")
    fields = header.split(b" ")
    assert len(fields) == 7 and rest == body  # PRI+VERSION TIMESTAMP HOST APP PROCID MSGID SD
    assert all(33 <= byte <= 126 for field in fields for byte in field)
    framed = octet_counted(message) + octet_counted(b"next")
    length, _, tail = framed.partition(b" ")
    assert tail[:int(length)] == message and tail[int(length):] == b"4 next"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80), st.text(max_size=80), st.text(min_size=1, max_size=40))
def test_any_identifier_gives_a_well_formed_audit_message(patient: str, accession: str,
                                                          actor: str) -> None:
    event = LedgerEvent(seq=1, at=AT, action="message.viewed", actor=f"token:{actor}",
                        patient_id=patient or None, accession=accession or None,
                        study_uid="1.2.3", detail={"note": patient})
    root = ET.fromstring(atna.audit_message(event, AuditSource("node")))
    objects = root.findall("ParticipantObjectIdentification")
    assert objects[-1].get("ParticipantObjectID") == "1"
    assert root.find("ActiveParticipant").get("UserID") == atna.xml_text(  # type: ignore
        f"token:{actor}")


@pytest.mark.parametrize(("url", "expected"), [
    ("udp://collector", ("udp", "collector", 514, "udp://collector:514")),
    ("tls://collector.example:7000", ("tls", "collector.example", 7000,
                                      "tls://collector.example:7000")),
    ("tls://[::1]", ("tls", "::1", 6514, "tls://[::1]:6514")),
])
def test_syslog_targets_parse(url: str, expected: tuple[str, str, int, str]) -> None:
    target = SyslogTarget.parse(url)
    assert (target.protocol, target.host, target.port, target.name) == expected


@pytest.mark.parametrize(("url", "files"), [
    ("http://collector:514", {}),
    ("tls://collector:99999", {}),
    ("tls://collector:514/audit", {}),
    ("udp://collector:514", {"ca": "ca.pem"}),
    ("tls://collector:6514", {"cert": "client.pem"}),
])
def test_unusable_syslog_targets_are_refused(url: str, files: dict[str, str]) -> None:
    with pytest.raises(SyslogTargetError):
        SyslogTarget.parse(url, **files)


def test_syslog_target_from_the_environment() -> None:
    assert SyslogTarget.resolve(environ={}) is None
    target = SyslogTarget.resolve(environ={"RADBRIDGE_ATNA_SYSLOG": "tls://c:1",
                                           "RADBRIDGE_ATNA_CA": "/etc/ca.pem"})
    assert target is not None and (target.name, str(target.ca)) == ("tls://c:1", "/etc/ca.pem")
    given = SyslogTarget.resolve(url="udp://d:2", environ={"RADBRIDGE_ATNA_SYSLOG": "tls://c:1"})
    assert given is not None and given.name == "udp://d:2"


# --- the cursor, with an in-memory collector ----------------------------------------------


class MemoryCollector:
    """A transport that keeps what it was sent; it can refuse, or lose the connection
    right after a batch went out (so the batch is sent again)."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.refuse = False
        self.drop_after_send = False

    def send(self, messages: Sequence[bytes]) -> None:
        if self.refuse:
            raise CollectorError("memory", "connection refused (the collector is down)")
        self.received += messages

    def confirm(self) -> None:
        if self.drop_after_send:
            raise CollectorError("memory", "the collector closed the connection")

    def close(self) -> None:
        return None

    def seqs(self) -> list[int]:
        return [seq_of(message) for message in self.received]


def seq_of(message: bytes | str) -> int:
    """The ledger sequence number a syslog message carries (its audit-event object)."""
    text = message.decode() if isinstance(message, bytes) else message
    root = ET.fromstring(text[text.index("<?xml"):].encode())
    for item in root.findall("ParticipantObjectIdentification"):
        code = item.find("ParticipantObjectIDTypeCode")
        if code is not None and code.get("csd-code") == "audit-event":
            return int(item.get("ParticipantObjectID") or 0)
    raise AssertionError("no audit-event participant object")


def _append(database: Database, count: int, chain: str = "test") -> None:
    audit.append_now(database, [audit.AuditRecord(action="message.received",
                                                   actor="source:mllp:10.0.0.1:5000",
                                                   patient_id=f"P{i}", channel="hl7-in")
                                for i in range(count)], chain=chain)


def _forwarder(database: Database, transport: Any, owner: str = "node-a",
               options: ForwardingOptions = FAST) -> AuditForwarder:
    return AuditForwarder(database, transport, "memory://collector", owner,
                          AuditSource(owner), options, hostname="host")


def _cursor(database: Database) -> dict[str, Any]:
    [row] = forwarding_status(database)
    return row


def _last_seq(database: Database) -> int:
    return next((int(row["last_seq"]) for row in forwarding_status(database)), 0)


def test_cursor_moves_only_after_the_collector_took_the_batch(database: Database) -> None:
    collector = MemoryCollector()
    forwarder = _forwarder(database, collector)
    _append(database, 3)
    assert forwarder.forward_once() == 3 and collector.seqs() == [1, 2, 3]
    assert (_cursor(database)["last_seq"], _cursor(database)["forwarded"]) == (3, 3)
    assert forwarder.forward_once() == 0
    collector.refuse = True
    _append(database, 2)
    with pytest.raises(CollectorError):
        forwarder.forward_once()
    status = _cursor(database)
    assert (status["last_seq"], status["backlog"]) == (3, 2)
    assert "refused" in status["last_error"]
    collector.refuse = False
    assert forwarder.drain() == 2
    assert collector.seqs() == [1, 2, 3, 4, 5]
    status = _cursor(database)
    assert (status["last_seq"], status["forwarded"], status["last_error"]) == (5, 5, None)


def test_a_batch_lost_after_sending_goes_again(database: Database) -> None:
    collector = MemoryCollector()
    forwarder = _forwarder(database, collector)
    _append(database, 2)
    collector.drop_after_send = True
    with pytest.raises(CollectorError):
        forwarder.forward_once()
    assert _cursor(database)["last_seq"] == 0
    collector.drop_after_send = False
    assert forwarder.forward_once() == 2
    assert collector.seqs() == [1, 2, 1, 2]  # at least once: the repeat carries its seq


def test_batches_are_bounded_and_in_order(database: Database) -> None:
    collector = MemoryCollector()
    forwarder = _forwarder(database, collector, options=ForwardingOptions(batch=4))
    _append(database, 10)
    assert [forwarder.forward_once() for _ in range(4)] == [4, 4, 2, 0]
    assert collector.seqs() == list(range(1, 11))


def test_one_node_at_a_time_forwards_to_a_destination(database: Database) -> None:
    first, second = MemoryCollector(), MemoryCollector()
    _append(database, 2)
    assert _forwarder(database, first, "node-a").forward_once() == 2
    _append(database, 1)
    standby = _forwarder(database, second, "node-b")
    assert standby.forward_once() == 0 and second.received == []
    with database.write() as session:
        session.execute(update(AUDIT_FORWARDING).values(
            lease_expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert standby.forward_once() == 1 and second.seqs() == [3]
    assert _cursor(database)["lease_owner"] == "node-b"


def test_a_sequence_gap_holds_the_cursor_until_its_transaction_ends(pg_url: str) -> None:
    """PostgreSQL: seq 1 is taken by a transaction still open while seq 2 commits."""
    database = Database(pg_url)
    reset_postgres(database)
    collector = MemoryCollector()
    forwarder = _forwarder(database, collector)
    try:
        with database.engine.connect() as slow:
            with slow.begin():
                audit.append_rows(slow, [audit.AuditRecord(action="slow")], chain="slow")
                _append(database, 1, chain="fast")
                assert forwarder.forward_once() == 0 and collector.received == []
            assert forwarder.forward_once() == 2 and collector.seqs() == [1, 2]
            with slow.begin() as transaction:
                audit.append_rows(slow, [audit.AuditRecord(action="lost")], chain="slow")
                _append(database, 1, chain="fast")
                assert forwarder.forward_once() == 0
                transaction.rollback()
            assert forwarder.forward_once() == 1 and collector.seqs() == [1, 2, 4]
    finally:
        database.dispose()


# --- a real collector: rsyslog ------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    reason = rsyslog_peer.missing()
    if reason is not None:
        peer_unavailable(reason, "rsyslog")
    folder = tmp_path_factory.mktemp("certs")
    ca = rsyslog_peer.make_ca(folder, "radbridge-test-ca")
    forged_ca = rsyslog_peer.make_ca(folder, "forged-ca")
    server = rsyslog_peer.make_cert(folder, "collector", ca)
    forged = rsyslog_peer.make_cert(folder, "forged-collector", forged_ca)
    client = rsyslog_peer.make_cert(folder, "radbridge-node", ca, client=True)
    return {"ca": ca[0], "server": server[0], "server_key": server[1], "forged": forged[0],
            "forged_key": forged[1], "forged_ca": forged_ca[0], "client": client[0],
            "client_key": client[1]}


def _collector(tmp_path: Path, certificates: dict[str, Path], *, forged: bool = False,
               require_client_cert: bool = False) -> Rsyslog:
    cert, key = ("forged", "forged_key") if forged else ("server", "server_key")
    ca = certificates["forged_ca" if forged else "ca"]
    return Rsyslog(tmp_path / "rsyslog", tls=TlsFiles(ca, certificates[cert],
                                                      certificates[key]),
                   require_client_cert=require_client_cert)


@pytest.fixture
def collector(tmp_path: Path, certificates: dict[str, Path]) -> Iterator[Rsyslog]:
    """rsyslog on 127.0.0.1 with UDP and TLS, its certificate from the test CA."""
    peer = _collector(tmp_path, certificates)
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()


def _tls(collector: Rsyslog, certificates: dict[str, Path], **files: Any) -> SyslogTarget:
    return SyslogTarget.parse(f"tls://127.0.0.1:{collector.tls_port}", ca=certificates["ca"],
                              **files)


def _seqs(received: list[dict[str, Any]]) -> list[int]:
    return [seq_of(message["msg"]) for message in received]


def _first_arrivals(seqs: list[int]) -> list[int]:
    seen: set[int] = set()
    return [s for s in seqs if not (s in seen or seen.add(s))]  # type: ignore[func-returns-value]


async def _until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def test_udp_delivers_rfc5424_atna_messages(database: Database, collector: Rsyslog) -> None:
    _append(database, 5)
    target = SyslogTarget.parse(f"udp://127.0.0.1:{collector.udp_port}")
    forwarder = AuditForwarder.to_target(database, target, "node-a:8080", FAST)
    try:
        assert forwarder.drain() == 5
    finally:
        forwarder.transport.close()
    received = collector.wait_for(5)
    assert _seqs(received) == [1, 2, 3, 4, 5]
    first = received[0]
    assert (first["app-name"], first["msgid"], first["structured-data"], first["pri"],
            first["inputname"]) == ("radbridge", "IHE+RFC-3881", "-", "85", "imudp")
    assert first["msg"].startswith(BOM + '<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(first["msg"][1:].encode())
    assert root.find("EventIdentification/EventID").get("csd-code") == "110107"  # type: ignore
    assert root.find("AuditSourceIdentification").get(  # type: ignore[union-attr]
        "AuditSourceID") == "node-a:8080"
    assert _cursor(database)["destination"] == target.name


def test_udp_collector_down_then_up(database: Database, collector: Rsyslog) -> None:
    """A closed port answers ICMP: the cursor stays, and the events go once it is back."""
    target = SyslogTarget.parse(f"udp://127.0.0.1:{collector.udp_port}")
    forwarder = AuditForwarder.to_target(database, target, "node-a", FAST)
    collector.stop()
    _append(database, 3)
    try:
        with pytest.raises(CollectorError, match="refused"):
            forwarder.forward_once()
        assert _cursor(database)["last_seq"] == 0
        collector.start()
        assert forwarder.drain() == 3
    finally:
        forwarder.transport.close()
    assert _seqs(collector.wait_for(3)) == [1, 2, 3]


def test_tls_delivers_with_octet_counting(database: Database, collector: Rsyslog,
                                          certificates: dict[str, Path]) -> None:
    audit.append_now(database, [audit.AuditRecord(
        action="message.viewed", actor="token:alice", patient_id="P\u00e9", study_uid="1.2.3",
        accession="A1", detail={"content": True})])
    _append(database, 120)
    forwarder = AuditForwarder.to_target(database, _tls(collector, certificates), "node-a",
                                         FAST)
    try:
        assert forwarder.drain() == 121
    finally:
        forwarder.transport.close()
    received = collector.wait_for(121)
    assert _seqs(received) == list(range(1, 122))
    assert {r["inputname"] for r in received} == {"imtcp"}
    viewed = ET.fromstring(received[0]["msg"].removeprefix(BOM).encode())
    patient = viewed.find("ParticipantObjectIdentification")
    assert patient is not None and patient.get("ParticipantObjectID") == "P\u00e9"
    assert viewed.find("EventIdentification/EventID").get("csd-code") == "110103"  # type: ignore


async def test_tls_collector_down_for_a_while_loses_nothing(
        database: Database, collector: Rsyslog, certificates: dict[str, Path]) -> None:
    """The forwarder runs as the node runs it; the collector stops (SIGTERM) with the
    connection open, 300 events are written while it is away, then it comes back."""
    stopping = asyncio.Event()
    forwarder = AuditForwarder.to_target(database, _tls(collector, certificates), "node-a",
                                         FAST)
    task = asyncio.create_task(forwarder.run(stopping))
    try:
        _append(database, 10)
        await _until(lambda: _last_seq(database) == 10)
        await asyncio.to_thread(collector.stop)
        for _ in range(6):
            _append(database, 50)
        await asyncio.sleep(1.0)  # several attempts fail meanwhile
        status = _cursor(database)
        assert (status["last_seq"], status["backlog"]) == (10, 300)
        assert "refused" in (status["last_error"] or "")
        await asyncio.to_thread(collector.start)
        received = await asyncio.to_thread(collector.wait_for, 310)
    finally:
        stopping.set()
        await task
    assert _first_arrivals(_seqs(received)) == list(range(1, 311))
    status = _cursor(database)
    assert (status["last_seq"], status["last_error"]) == (310, None)
    assert status["lease_owner"] is None  # given up at the stop: another node may go on


async def test_tls_collector_killed_mid_stream_loses_nothing(
        database: Database, collector: Rsyslog, certificates: dict[str, Path]) -> None:
    stopping = asyncio.Event()
    forwarder = AuditForwarder.to_target(database, _tls(collector, certificates), "node-a",
                                         FAST)
    task = asyncio.create_task(forwarder.run(stopping))
    try:
        _append(database, 20)
        await _until(lambda: _last_seq(database) == 20)
        await asyncio.to_thread(collector.kill)
        _append(database, 80)
        await asyncio.sleep(0.8)
        assert _cursor(database)["last_seq"] == 20
        await asyncio.to_thread(collector.start)
        received = await asyncio.to_thread(collector.wait_for, 100)
    finally:
        stopping.set()
        await task
    assert _first_arrivals(_seqs(received)) == list(range(1, 101))


def test_a_collector_with_a_forged_certificate_is_refused(
        database: Database, tmp_path: Path, certificates: dict[str, Path]) -> None:
    forged = _collector(tmp_path, certificates, forged=True)
    forged.start()
    try:
        _append(database, 2)
        forwarder = AuditForwarder.to_target(database, _tls(forged, certificates), "node-a",
                                             FAST)
        with pytest.raises(CollectorUntrusted, match="certificate"):
            forwarder.forward_once()
        status = _cursor(database)
        assert status["last_seq"] == 0 and "certificate" in status["last_error"]
        forwarder.transport.close()
        assert forged.messages() == []
    finally:
        forged.stop()


def test_mutual_tls_needs_the_client_certificate(database: Database, tmp_path: Path,
                                                 certificates: dict[str, Path]) -> None:
    strict = _collector(tmp_path, certificates, require_client_cert=True)
    strict.start()
    try:
        _append(database, 2)
        anonymous = AuditForwarder.to_target(database, _tls(strict, certificates), "node-a",
                                             FAST)
        with pytest.raises(CollectorError):
            anonymous.forward_once()
        anonymous.transport.close()
        assert _cursor(database)["last_seq"] == 0
        target = _tls(strict, certificates, cert=certificates["client"],
                      key=certificates["client_key"])
        known = AuditForwarder.to_target(database, target, "node-a", FAST)
        assert known.drain() == 2
        known.transport.close()
        assert _seqs(strict.wait_for(2)) == [1, 2]
    finally:
        strict.stop()


async def test_a_node_forwards_its_ledger(database_url: str, tmp_path: Path,
                                          collector: Rsyslog) -> None:
    """`radbridge run --atna-syslog udp://...`: the node starts the forwarder itself."""
    target = SyslogTarget.parse(f"udp://127.0.0.1:{collector.udp_port}")
    settings = Settings.resolve(data_dir=str(tmp_path / "data"), database_url=database_url,
                                node_id="node-z", api_port=0, environ={})
    settings = dataclasses.replace(settings, audit_syslog=target)
    channel = ChannelConfig.model_validate({
        "name": "lab", "source": {"type": "channel"},
        "destinations": [{"name": "out", "type": "null"}]})
    node = Node(settings, [channel], poll_interval=0.1)
    await node.start()
    try:
        received = await asyncio.to_thread(collector.wait_for, 1)
    finally:
        await node.stop()
    root = ET.fromstring(received[0]["msg"].removeprefix(BOM).encode())
    codes = [c.get("csd-code") for c in root.find("EventIdentification")]  # type: ignore
    assert codes == ["110100", "110120", "config.loaded"]
    entry = [o for o in root.findall("ParticipantObjectIdentification")][-1]
    chain = next(d.get("value") for d in entry.findall("ParticipantObjectDetail"))
    assert base64.b64decode(chain or "") == b"node-z/node"


def test_cli_forward_and_forwarding_status(database: Database, database_url: str,
                                           tmp_path: Path, collector: Rsyslog,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    _append(database, 4)
    url = f"udp://127.0.0.1:{collector.udp_port}"

    def run(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        args = cli.build_parser().parse_args(
            [*argv, "--database-url", database_url, "--data-dir", str(tmp_path / "data")])
        code: int = args.handler(args)
        return code, capsys.readouterr().out

    assert run("audit", "forward", "--atna-syslog", url) == (
        0, f"4 audit events sent to {url}\n")
    assert _seqs(collector.wait_for(4)) == [1, 2, 3, 4]
    code, out = run("audit", "forwarding")
    assert (code, out) == (0, f"{url}  sent up to 4 (4 events), 0 waiting, lease -\n")
    assert run("audit", "forward", "--atna-syslog", url) == (0, f"0 audit events sent to {url}\n")
    code, _ = run("audit", "forward", "--atna-syslog", "ftp://nowhere")
    assert code == 1
