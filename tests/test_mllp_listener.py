"""The MLLP listener over real sockets: ACK after commit, modes, dedup, limits, TLS."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from radbridge.engine.lifecycle import MessageStatus
from tests.hl7_support import (
    adt_a01,
    audit_events,
    err,
    exchange,
    frame,
    in_thread,
    mllp_channel,
    msa,
    read_frames,
    running_node,
    stored,
)


async def test_python_hl7_client_gets_aa_after_the_message_is_stored(database_url, tmp_path):
    message = tmp_path / "adt.hl7"
    message.write_text(adt_a01("CTRL-1").replace("\r", "\n"))
    async with running_node(tmp_path, database_url, [mllp_channel()]) as (node, port):
        result = await asyncio.to_thread(
            subprocess.run, [shutil.which("mllp_send", path=_venv_bin()) or "mllp_send",
                             "--loose", "--port", str(port), "--file", str(message),
                             "127.0.0.1"],
            capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert "MSA|AA|CTRL-1" in result.stdout.replace("\r", "\n")
        rows = stored(node.database)
        assert len(rows) == 1
        record, content = rows[0]
        assert content.decode().startswith("MSH|^~\\&|ADT1|")
        assert record.patient_id == "PATID1234"
        assert record.meta["hl7.type"] == "ADT^A01"
        events = audit_events(node.database, "message.received")
        assert [e.message_id for e in events] == [record.id]


async def test_frames_split_byte_by_byte_and_packed_together_are_all_acked_in_order(
        database_url, tmp_path):
    async with running_node(tmp_path, database_url, [mllp_channel()]) as (node, port):
        def send() -> list[str]:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                for byte in frame(adt_a01("SPLIT")):
                    sock.send(bytes([byte]))
                first = read_frames(sock, 1)
                sock.sendall(b"".join(frame(adt_a01(f"PACK-{i}")) for i in range(5)))
                return first + read_frames(sock, 5)
        acks = await in_thread(send)
    assert [msa(a)[1:3] for a in acks] == [["AA", "SPLIT"]] + [
        ["AA", f"PACK-{i}"] for i in range(5)]
    assert len(stored(node.database)) == 6


async def test_a_repeated_control_id_is_acked_again_but_stored_once(database_url, tmp_path):
    channel = mllp_channel(dedup_window="1s")
    async with running_node(tmp_path, database_url, [channel]) as (node, port):
        first = await in_thread(exchange, port, frame(adt_a01("DUP-1")))
        again = await in_thread(exchange, port, frame(adt_a01("DUP-1")))
        other_sender = await in_thread(exchange, port, frame(adt_a01("DUP-1", sender="LAB")))
        assert [msa(a)[1] for a in first + again + other_sender] == ["AA", "AA", "AA"]
        assert len(stored(node.database)) == 2
        await asyncio.sleep(1.2)  # past the dedup window: the id may be reused
        await in_thread(exchange, port, frame(adt_a01("DUP-1")))
        assert len(stored(node.database)) == 3


async def test_enhanced_mode_answers_commit_acks_only_when_asked(sqlite_url, tmp_path):
    async with running_node(tmp_path, sqlite_url, [mllp_channel()]) as (node, port):
        always = await in_thread(exchange, port, frame(adt_a01("ENH-1", extra_msh="|||AL|NE")))
        assert msa(always[0])[1:3] == ["CA", "ENH-1"]

        def never_then_normal() -> list[str]:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(frame(adt_a01("ENH-2", extra_msh="|||NE|AL")))
                sock.sendall(frame(adt_a01("ENH-3", extra_msh="|||ER|AL")))
                sock.sendall(frame(adt_a01("ENH-4")))
                return read_frames(sock, 1)
        answers = await in_thread(never_then_normal)
        assert [msa(a)[1:3] for a in answers] == [["AA", "ENH-4"]]
        errors = await in_thread(exchange, port, frame(
            adt_a01("ENH-5", version="9.9", extra_msh="|||ER|NE")))
        assert msa(errors[0])[1:3] == ["CR", "ENH-5"]
        assert len(stored(node.database)) == 5


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


BAD_INPUT = {
    "missing MSH": (b"PID|1||X^^^GHH^MR\rPV1|1|I\r", "AE", "100", "start with an MSH"),
    "wrong field separator": (
        adt_a01("SEP").replace("|", "#", 1).replace("#^~\\&|", "#^~\\&#", 1).encode()[:120],
        "AE", "101", "fields"),
    "segment with another separator": (
        adt_a01("SEG").replace("PID|1|", "PID^1^").encode(), "AE", "100", "segment 3"),
    "invalid UTF-8": (adt_a01("UTF").replace("EVERYMAN", "M\u00fcller").encode("latin-1"),
                      "AE", "102", "not valid utf-8"),
    "unknown message type": (adt_a01("TYPE").replace("ADT^A01^ADT_A01", "ZZZ^Z01").encode(),
                             "AR", "200", "table 0076"),
    "wrong version": (adt_a01("VER", version="3.0").encode(), "AR", "203", "3.0"),
    "missing PID in ADT": (
        "\r".join(s for s in adt_a01("NOPID").split("\r") if not s.startswith("PID")).encode(),
        "AE", "100", "PID"),
    "empty control id": (adt_a01("").encode(), "AE", "101", "MSH-10"),
}


@pytest.mark.parametrize("case", BAD_INPUT, ids=list(BAD_INPUT))
async def test_bad_content_gets_a_nak_with_err_and_is_kept_as_rejected(case, sqlite_url,
                                                                       tmp_path):
    content, code, error_code, words = BAD_INPUT[case]
    async with running_node(tmp_path, sqlite_url, [mllp_channel()]) as (node, port):
        acks = await in_thread(exchange, port, frame(content))
        follow_up = await in_thread(exchange, port, frame(adt_a01("AFTER")))
    assert msa(acks[0])[1] == code
    error = err(acks[0])
    assert f"|{error_code}^" in error and words.lower() in error.lower(), error
    assert msa(follow_up[0])[1] == "AA"  # the listener is unharmed
    rows = stored(node.database)
    assert rows[0][0].status == MessageStatus.REJECTED
    assert rows[0][1] == content
    assert rows[0][0].dedup_key is None  # a fixed resend under the same MSH-10 is new
    rejected = audit_events(node.database, "message.rejected")
    assert len(rejected) == 1 and words.lower() in json.loads(rejected[0].detail)["reason"].lower()


async def test_a_message_over_the_size_limit_gets_ar_and_its_head_is_kept(sqlite_url, tmp_path):
    channel = mllp_channel(max_message_size="1MiB")
    big = adt_a01("BIG").encode() + b"OBX|1|TX|||" + b"x" * (20 * 2**20) + b"\r"
    async with running_node(tmp_path, sqlite_url, [channel]) as (node, port):
        acks = await in_thread(exchange, port, frame(big))
        assert msa(acks[0])[1:3] == ["AR", "BIG"]
        assert "exceeds" in err(acks[0])
        rows = stored(node.database)
    assert rows[0][0].status == MessageStatus.REJECTED
    assert rows[0][1] == big[:len(rows[0][1])] and 0 < len(rows[0][1]) <= 2**20


async def test_truncated_frames_and_garbage_leave_rejected_records(sqlite_url, tmp_path):
    channel = mllp_channel(idle_timeout="1s")
    async with running_node(tmp_path, sqlite_url, [channel]) as (node, port):
        def misbehave() -> list[str]:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"\x0b" + adt_a01("CUT").encode()[:80])  # closes mid-frame
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"\x00\xffGET / HTTP/1.1\r\n\r\n")  # garbage, then close
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                # A frame with no end, then another frame: the first is cut, both answered.
                sock.sendall(b"\x0b" + adt_a01("NOEND").encode() + frame(adt_a01("NEXT")))
                answers = read_frames(sock, 2)
                sock.sendall(b"\x0b" + adt_a01("HANG").encode())  # no end; idle timeout
                sock.settimeout(5)
                answers.append("closed" if sock.recv(10) == b"" else "open")
                return answers
        answers = await in_thread(misbehave)
        await asyncio.sleep(0.3)
        assert [msa(a)[1:3] for a in answers[:2]] == [["AE", "NOEND"], ["AA", "NEXT"]]
        assert answers[2] == "closed"
        reasons = [m.status for m, _ in stored(node.database)]
        rejected = audit_events(node.database, "message.rejected")
    assert reasons.count(MessageStatus.REJECTED) == 4
    texts = sorted(json.loads(e.detail)["reason"] for e in rejected)
    assert sum("connection closed" in t for t in texts) == 2  # CUT and HANG
    assert sum("outside an MLLP frame" in t for t in texts) == 1
    assert sum("new start block" in t for t in texts) == 1


async def test_store_unavailable_answers_ar(sqlite_url, tmp_path):
    async with running_node(tmp_path, sqlite_url, [mllp_channel()]) as (node, port):
        node.receiver.stop()  # nothing can be committed from here on
        acks = await in_thread(exchange, port, frame(adt_a01("DOWN")))
        node.receiver.start()
        assert msa(acks[0])[1:3] == ["AR", "DOWN"]
        assert "207^" in err(acks[0]) and "unavailable" in err(acks[0])
        assert stored(node.database) == []


async def test_connections_over_the_limit_are_refused(sqlite_url, tmp_path):
    async with running_node(tmp_path, sqlite_url, [mllp_channel(max_connections=2)]) as (_, port):
        def crowd() -> bytes:
            held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
            time.sleep(0.2)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as third:
                refused = third.recv(10)
            for sock in held:
                sock.close()
            return refused
        refused = await in_thread(crowd)
        assert refused == b""
        await asyncio.sleep(0.2)
        acks = await in_thread(exchange, port, frame(adt_a01("AFTER")))
        assert msa(acks[0])[1] == "AA"


# --- TLS -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for localhost and a client certificate, made by openssl."""
    folder = tmp_path_factory.mktemp("pki")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=Radbridge Test CA")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
            f"{name}.csr", "-subj", "/CN=localhost")
        (folder / f"{name}.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return folder


def _client_context(pki: Path, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if with_cert:
        context.load_cert_chain(pki / "client.pem", pki / "client.key")
    return context


async def test_mutual_tls_admits_only_clients_with_a_certificate(pki, sqlite_url, tmp_path):
    tls = {"cert": str(pki / "server.pem"), "key": str(pki / "server.key"),
           "ca": str(pki / "ca.pem"), "require_client_cert": True}
    async with running_node(tmp_path, sqlite_url, [mllp_channel(tls=tls)]) as (node, port):
        acks = await in_thread(lambda: exchange(port, frame(adt_a01("TLS-1")),
                                                context=_client_context(pki, True)))
        assert msa(acks[0])[1:3] == ["AA", "TLS-1"]
        # TLS 1.3 reports a missing client certificate after the client's handshake ends:
        # either the send fails or the connection closes with no ACK.
        assert await in_thread(_refused, lambda: exchange(
            port, frame(adt_a01("TLS-2")), context=_client_context(pki, False)))
        assert await in_thread(_refused, lambda: exchange(port, frame(adt_a01("PLAIN"))))
        assert [msa_id for msa_id in (m.meta["hl7.control_id"]
                                      for m, _ in stored(node.database))] == ["TLS-1"]


def _refused(attempt) -> bool:
    try:
        return attempt() == []
    except (ssl.SSLError, ConnectionError, OSError, TimeoutError):
        return True


def _venv_bin() -> str:
    import sys
    return str(Path(sys.executable).parent)


async def test_the_mllp_sender_speaks_mutual_tls_to_our_listener(pki, sqlite_url, tmp_path):
    from tests.test_mllp_sender import delivery, sender_for

    tls = {"cert": str(pki / "server.pem"), "key": str(pki / "server.key"),
           "ca": str(pki / "ca.pem"), "require_client_cert": True}
    async with running_node(tmp_path, sqlite_url, [mllp_channel(tls=tls)]) as (node, port):
        client_tls = {"cert": str(pki / "client.pem"), "key": str(pki / "client.key"),
                      "ca": str(pki / "ca.pem")}
        sender = sender_for(port, tmp_path, tls=client_tls)
        result = await sender.send(delivery(adt_a01("TLS-OUT")))
        await sender.close()
        assert result.detail == "AA"
        assert [m.meta["hl7.control_id"] for m, _ in stored(node.database)] == ["TLS-OUT"]
