"""The `dimse` source against real SCUs: dcmtk (echoscu, storescu) and pynetdicom.

Every test runs a node on a real store with one DICOM channel; what the SCU was told
(status) is checked against what the store holds (messages, blobs, audit events).
Protocol corner cases a well-behaved SCU cannot produce (a SOP class outside its
context, an unknown PDU type, silence) go through a raw socket speaking bytes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import struct
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom import _config as pynetdicom_config
from pynetdicom.dsutils import decode, encode, split_dataset
from pynetdicom.pdu import A_ASSOCIATE_RQ as RequestPdu
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context
from sqlalchemy import select

import radbridge.interfaces.adapters  # noqa: F401  (registers the dimse source)
from radbridge.engine.config import ChannelConfig
from radbridge.engine.db import Database
from radbridge.engine.dicom_index import stored_instances
from radbridge.engine.migrate import upgrade
from radbridge.engine.models import DICOM_MPPS, Message, MessageStage
from radbridge.engine.runtime import Node
from radbridge.engine.settings import Settings
from radbridge.interfaces.dimse.association import IMPLEMENTATION_CLASS_UID
from radbridge.interfaces.dimse.scp import DimseScp
from radbridge.mappings.dicom.records import CONTENT_TYPE, MPPS_CONTENT_TYPE
from tests.dicom_data import big_multiframe, compressed_samples, make_ct_series, make_instance
from tests.dimse_support import closed_port, make_pki
from tests.hl7_support import audit_events
from tests.peers.dcmtk import echoscu, storescu

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
MPPS = "1.2.840.10008.3.1.2.3.3"
COMMITMENT = "1.2.840.10008.1.20.1"
IMPLICIT, EXPLICIT = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"
AET = "RADBRIDGE"


@pytest.fixture(autouse=True)
def send_files_undecoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom sends a file's data set bytes as they are (else it decodes and
    re-encodes them, which would repair the broken files these tests send)."""
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    database = Database(url)
    upgrade(database)
    database.dispose()
    return url


@asynccontextmanager
async def running_scp(tmp_path: Path, url: str, *, role: str = "all",
                      **source: Any) -> AsyncIterator[tuple[Node, int]]:
    """A node with one `dimse` channel "dicom-in"; yields it and the SCP's port."""
    channel = ChannelConfig.model_validate({
        "name": "dicom-in", "source": {"type": "dimse", "port": 0, **source},
        "destinations": [{"name": "out", "type": "null"}]})
    settings = Settings.resolve(data_dir=str(tmp_path / "data"), database_url=url,
                                node_id="test-node", api_port=0, environ={})
    node = Node(settings, [channel], poll_interval=0.1, role=role)  # type: ignore[arg-type]
    await node.start()
    try:
        scp = next(s for s in node.sources if isinstance(s, DimseScp))
        yield node, scp.port
    finally:
        await node.stop()


def received(database: Database) -> list[tuple[Message, MessageStage]]:
    with database.read() as session:
        rows = session.execute(
            select(Message, MessageStage)
            .join(MessageStage, MessageStage.message_id == Message.id)
            .where(MessageStage.stage == "received").order_by(Message.id))
        return [(m, s) for m, s in rows]


def content(node: Node, stage: MessageStage) -> bytes:
    if stage.in_blob:
        return node.blobs.read_bytes(stage.content_sha256 or "")
    return stage.content or b""


def data_set_of(part10: bytes | Path) -> bytes:
    """The data set bytes of a Part-10 file (what follows its File Meta Information)."""
    if isinstance(part10, bytes):
        path = Path("/dev/shm") / f"rb-{generate_uid()}.dcm"
        path.write_bytes(part10)
        try:
            return data_set_of(path)
        finally:
            path.unlink()
    _, offset = split_dataset(part10)
    return part10.read_bytes()[offset:]


def scu(port: int, contexts: list[tuple[str, list[str]]], *, calling: str = "MODALITY",
        **options: Any) -> Any:
    """A pynetdicom association (call from a thread), proposing `contexts`."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for syntax, transfers in contexts:
        ae.add_requested_context(syntax, transfers)
    return ae.associate("127.0.0.1", port, ae_title=AET, **options)


def store_files(port: int, paths: list[Path], **options: Any) -> list[int]:
    """C-STORE the files as they are (bytes sent undecoded) on one association."""
    contexts = [(sop_class, [syntax]) for sop_class in (CT, MR) for syntax in (IMPLICIT, EXPLICIT)]
    assoc = scu(port, contexts, **options)
    assert assoc.is_established
    try:
        return [assoc.send_c_store(path).Status for path in paths]
    finally:
        assoc.release()


# --- dcmtk -------------------------------------------------------------------------------


async def test_echoscu_gets_a_success(tmp_path, sqlite_url):
    async with running_scp(tmp_path, sqlite_url) as (_, port):
        result = await asyncio.to_thread(echoscu, "127.0.0.1", port, AET)
    assert result.returncode == 0, result.stderr


def _samples(tmp_path: Path) -> list[Path]:
    files = make_ct_series(tmp_path / "ct", 3, rows=64, columns=64)
    # a real sample without Study/Series UIDs is refused (0xC000): see the bad content test
    return files + [path for path in compressed_samples(tmp_path / "compressed").values()
                    if _indexable(path)]


async def test_storescu_files_are_stored_in_their_transfer_syntax_and_indexed(
        tmp_path, database_url):
    files = _samples(tmp_path)
    async with running_scp(tmp_path, database_url) as (node, port):
        result = await asyncio.to_thread(storescu, "127.0.0.1", port, files, AET)
        assert result.returncode == 0, result.stderr
        rows = {m.meta["sop_instance_uid"]: (m, s) for m, s in received(node.database)}
        assert len(rows) == len(files)
        for path in files:
            original = pydicom.dcmread(path)
            message, stage = rows[original.SOPInstanceUID]
            assert message.content_type == CONTENT_TYPE
            assert message.status != "rejected", message.meta
            assert message.meta["transfer_syntax"] == original.file_meta.TransferSyntaxUID
            assert message.source == "dimse:STORESCU@127.0.0.1"
            assert message.study_uid == original.StudyInstanceUID
            # storescu re-encodes what it sends (group lengths, padding); the pixel data
            # arrives unchanged, still compressed as it was (byte-for-byte: next test)
            stored = pydicom.dcmread(node.blobs.path(stage.content_sha256 or ""))
            assert stored.PixelData == original.PixelData, path.name
            assert stored.SOPInstanceUID == original.SOPInstanceUID
            assert stored.file_meta.SourceApplicationEntityTitle == "STORESCU"
            assert stored.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
        assert stored_instances(node.database, rows) == set(rows)


async def test_the_data_set_sent_is_kept_byte_for_byte(tmp_path, sqlite_url):
    files = _samples(tmp_path)
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in files]

    def send() -> list[int]:
        contexts = sorted({(h.SOPClassUID, h.file_meta.TransferSyntaxUID) for h in headers})
        assoc = scu(port, [(sop_class, [syntax]) for sop_class, syntax in contexts])
        try:
            return [assoc.send_c_store(path).Status for path in files]
        finally:
            assoc.release()

    async with running_scp(tmp_path, sqlite_url) as (node, port):
        assert await asyncio.to_thread(send) == [0] * len(files)
        rows = {m.meta["sop_instance_uid"]: s for m, s in received(node.database)}
        for path, header in zip(files, headers, strict=True):
            blob = content(node, rows[header.SOPInstanceUID])
            assert data_set_of(blob) == data_set_of(path), path.name


def _indexable(path: Path) -> bool:
    header = pydicom.dcmread(path, stop_before_pixels=True)
    return all(header.get(keyword) for keyword in ("StudyInstanceUID", "SeriesInstanceUID"))


# --- negotiation ---------------------------------------------------------------------------


async def test_an_unknown_sop_class_context_is_refused_but_the_association_accepted(
        tmp_path, sqlite_url):
    def negotiate() -> tuple[list[str], list[str]]:
        assoc = scu(port, [(CT, [EXPLICIT]), ("1.2.3.4.5.6", [EXPLICIT])])
        try:
            return ([str(c.abstract_syntax) for c in assoc.accepted_contexts],
                    [str(c.abstract_syntax) for c in assoc.rejected_contexts])
        finally:
            assoc.release()

    async with running_scp(tmp_path, sqlite_url) as (node, port):
        accepted, rejected = await asyncio.to_thread(negotiate)
        [event] = audit_events(node.database, "dicom.contexts-refused")
    assert (accepted, rejected) == ([CT], ["1.2.3.4.5.6"])
    assert json.loads(event.detail)["refused"] == [
        {"abstract_syntax": "1.2.3.4.5.6", "result": 3}]  # abstract syntax not supported


async def test_a_calling_ae_not_on_the_allow_list_is_rejected(tmp_path, sqlite_url):
    def attempt(calling: str) -> tuple[bool, Any]:
        assoc = scu(port, [(CT, [EXPLICIT])], calling=calling)
        established = assoc.is_established
        if established:
            assoc.release()
        return established, assoc

    async with running_scp(tmp_path, sqlite_url, allowed_calling_aes=["CT1"]) as (node, port):
        _, refused = await asyncio.to_thread(attempt, "INTRUDER")
        admitted, _ = await asyncio.to_thread(attempt, "CT1")
        assert received(node.database) == []
        [event] = audit_events(node.database, "dicom.association-rejected")
    assert (event.actor, event.outcome, event.channel) == (
        "dimse:INTRUDER@127.0.0.1", "failure", "dicom-in")
    assert refused.is_rejected
    assert (refused.acceptor.primitive.result, refused.acceptor.primitive.result_source,
            refused.acceptor.primitive.diagnostic) == (1, 1, 3)
    assert admitted


async def test_associations_over_the_limit_are_rejected_transiently(tmp_path, sqlite_url):
    def two_at_once() -> tuple[bool, tuple[int, int, int]]:
        first = scu(port, [(CT, [EXPLICIT])])
        try:
            second = scu(port, [(CT, [EXPLICIT])])
            answer = second.acceptor.primitive
            return first.is_established, (answer.result, answer.result_source,
                                          answer.diagnostic)
        finally:
            first.release()

    async with running_scp(tmp_path, sqlite_url, max_associations=1) as (_, port):
        established, rejection = await asyncio.to_thread(two_at_once)
    assert established
    assert rejection == (2, 3, 2)  # transient, service provider (presentation), local limit


async def test_several_associations_in_parallel_are_all_stored(tmp_path, sqlite_url):
    files = [make_ct_series(tmp_path / f"s{n}", 3, rows=32, columns=32, seed=n)
             for n in range(4)]
    async with running_scp(tmp_path, sqlite_url) as (node, port):
        statuses = await asyncio.gather(*(asyncio.to_thread(store_files, port, series)
                                          for series in files))
        assert statuses == [[0, 0, 0]] * 4
        assert len(received(node.database)) == 12


# --- content ---------------------------------------------------------------------------


def _bad_files(folder: Path) -> dict[str, Path]:
    """One file per kind of bad content, each with its own SOP Instance UID."""
    folder.mkdir()
    made: dict[str, Path] = {}

    def save(name: str, ds: Dataset) -> Path:
        made[name] = folder / f"{name}.dcm"
        ds.save_as(made[name], enforce_file_format=True)
        return made[name]

    raw = save("truncated", make_instance(seed=11)).read_bytes()
    made["truncated"].write_bytes(raw[:len(raw) - 3000])
    explicit = save("wrong-syntax", make_instance(seed=12)).read_bytes()
    # relabel the file meta as implicit VR (same length UID, padded), data set untouched
    made["wrong-syntax"].write_bytes(explicit.replace(
        b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2\x00\x00\x00", 1))
    save("missing-study-uid", make_instance(seed=13, StudyInstanceUID=None))
    short = make_instance(seed=14)
    short.Rows = 80  # pixel data stays 64 x 64
    save("pixel-length", short)
    other = make_instance(seed=15)
    other.SOPClassUID = MR
    mismatch = save("class-mismatch", other).read_bytes()
    # the file meta (and so the C-STORE) says CT, the data set MR
    made["class-mismatch"].write_bytes(mismatch.replace(
        MR.encode() + b"\x00", CT.encode() + b"\x00", 1))
    return made


async def test_bad_content_is_quarantined_answered_and_the_association_goes_on(
        tmp_path, sqlite_url, caplog):
    caplog.set_level(logging.DEBUG, logger="radbridge")
    bad = _bad_files(tmp_path / "bad")
    good = tmp_path / "good.dcm"
    make_instance(seed=20).save_as(good, enforce_file_format=True)
    async with running_scp(tmp_path, sqlite_url) as (node, port):
        statuses = await asyncio.to_thread(store_files, port, [*bad.values(), good])
        rows = received(node.database)
        rejected_events = audit_events(node.database, "message.rejected")
    assert dict(zip([*bad, "good"], statuses, strict=True)) == {
        "truncated": 0xC000, "wrong-syntax": 0xC000, "missing-study-uid": 0xC000,
        "pixel-length": 0xC000, "class-mismatch": 0xA900, "good": 0}
    assert [m.status for m, _ in rows] == ["rejected"] * len(bad) + [rows[-1][0].status]
    assert rows[-1][0].status != "rejected"
    for (_message, stage), path in zip(rows, bad.values(), strict=False):
        assert data_set_of(content(node, stage)) == data_set_of(path), path.name
    assert sorted(e.message_id for e in rejected_events) == [m.id for m, _ in rows[:-1]]
    reasons = [json.loads(e.detail)["reason"] if isinstance(e.detail, str)
               else e.detail["reason"] for e in rejected_events]
    assert any("truncated" in r for r in reasons)
    assert any("StudyInstanceUID" in r for r in reasons)
    assert not any("TEST^PATIENT" in r or "RB-TEST-1" in r for r in reasons)
    logged = [r.getMessage() for r in caplog.records]
    assert any("rejected (0xc000)" in line for line in logged)
    assert not any("TEST^PATIENT" in line or "RB-TEST-1" in line for line in logged)


async def test_the_same_instance_twice_is_one_message_and_new_bytes_a_second(
        tmp_path, database_url):
    first = tmp_path / "first.dcm"
    ds = make_instance(seed=30)
    ds.save_as(first, enforce_file_format=True)
    changed = tmp_path / "changed.dcm"
    ds.SeriesDescription = "corrected"
    ds.save_as(changed, enforce_file_format=True)
    async with running_scp(tmp_path, database_url) as (node, port):
        statuses = await asyncio.to_thread(store_files, port, [first, first])
        assert statuses == [0, 0]
        assert len(received(node.database)) == 1
        assert await asyncio.to_thread(store_files, port, [changed]) == [0]
        rows = received(node.database)
    assert len(rows) == 2
    assert {m.meta["sop_instance_uid"] for m, _ in rows} == {ds.SOPInstanceUID}


async def test_an_instance_over_the_size_limit_is_refused_with_out_of_resources(
        tmp_path, sqlite_url):
    small, large = tmp_path / "small.dcm", tmp_path / "large.dcm"
    make_instance(seed=40).save_as(small, enforce_file_format=True)
    make_instance(seed=41, rows=256, columns=256).save_as(large, enforce_file_format=True)
    async with running_scp(tmp_path, sqlite_url, max_instance_size="64KiB") as (node, port):
        assert await asyncio.to_thread(store_files, port, [large, small]) == [0xA700, 0]
        assert len(received(node.database)) == 1


async def test_a_store_that_cannot_commit_gets_out_of_resources_and_keeps_nothing(
        tmp_path, sqlite_url):
    path = tmp_path / "one.dcm"
    make_instance(seed=42).save_as(path, enforce_file_format=True)

    def session() -> tuple[int, int]:
        assoc = scu(port, [(CT, [EXPLICIT]), ("1.2.840.10008.1.1", [IMPLICIT])])
        try:
            return assoc.send_c_store(path).Status, assoc.send_c_echo().Status
        finally:
            assoc.release()

    async with running_scp(tmp_path, sqlite_url) as (node, port):
        node.receiver.stop()  # the store goes away: nothing can be committed
        assert await asyncio.to_thread(session) == (0xA700, 0)
        assert received(node.database) == []
        node.receiver.start()


# --- raw bytes: what a well-behaved SCU never sends ----------------------------------------


class RawScu:
    """A blocking socket speaking PDUs built here (commands encoded by pynetdicom)."""

    def __init__(self, port: int, contexts: list[tuple[str, list[str]]]) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        primitive = A_ASSOCIATE()
        primitive.application_context_name = "1.2.840.10008.3.1.1.1"
        primitive.calling_ae_title, primitive.called_ae_title = "RAW", AET
        for number, (syntax, transfers) in enumerate(contexts):
            context = build_context(syntax, transfers)
            context.context_id = 2 * number + 1
            primitive.presentation_context_definition_list.append(context)
        maximum = MaximumLengthNotification()
        maximum.maximum_length_received = 0
        primitive.user_information = [maximum]
        request = RequestPdu()
        request.from_primitive(primitive)
        self.sock.sendall(request.encode())
        kind, _ = self.read_pdu()
        assert kind == 0x02, "expected A-ASSOCIATE-AC"

    def read_pdu(self) -> tuple[int, bytes]:
        header = self._exactly(6)
        if not header:
            return 0, b""
        kind, length = struct.unpack(">BxL", header)
        return kind, self._exactly(length)

    def _exactly(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                return data
            data += chunk
        return data

    def send_pdv(self, context_id: int, control: int, value: bytes) -> None:
        pdv = struct.pack(">LBB", len(value) + 2, context_id, control) + value
        self.sock.sendall(struct.pack(">BxL", 0x04, len(pdv)) + pdv)

    def c_store(self, context_id: int, sop_class: str, sop_instance: str, data: bytes) -> int:
        command = Dataset()
        command.AffectedSOPClassUID = sop_class
        command.CommandField = 0x0001
        command.MessageID = 1
        command.Priority = 0
        command.CommandDataSetType = 0
        command.AffectedSOPInstanceUID = sop_instance
        self.send_pdv(context_id, 0x03, encode(command, True, True) or b"")
        half = len(data) // 2
        self.send_pdv(context_id, 0x00, data[:half])
        self.send_pdv(context_id, 0x02, data[half:])
        kind, body = self.read_pdu()
        assert kind == 0x04, f"expected P-DATA-TF, got {kind}"
        return int(decode(BytesIO(body[6:]), True, True).Status)

    def close(self) -> None:
        self.sock.close()


def _instance_bytes(tmp_path: Path, seed: int) -> tuple[Dataset, bytes]:
    path = tmp_path / f"raw{seed}.dcm"
    ds = make_instance(seed=seed)
    ds.save_as(path, enforce_file_format=True)
    return ds, data_set_of(path)


async def test_a_sop_class_outside_its_context_gets_0122_and_is_quarantined(
        tmp_path, sqlite_url):
    ds, data = _instance_bytes(tmp_path, 50)
    good, good_data = _instance_bytes(tmp_path, 51)

    def session() -> list[int]:
        client = RawScu(port, [(CT, [EXPLICIT])])
        try:
            return [client.c_store(1, MR, ds.SOPInstanceUID, data),
                    client.c_store(1, CT, good.SOPInstanceUID, good_data)]
        finally:
            client.close()

    async with running_scp(tmp_path, sqlite_url) as (node, port):
        assert await asyncio.to_thread(session) == [0x0122, 0]
        rows = received(node.database)
    assert [m.status == "rejected" for m, _ in rows] == [True, False]
    assert data_set_of(content(node, rows[0][1])) == data


async def test_an_unknown_pdu_type_is_answered_with_an_a_abort(tmp_path, sqlite_url):
    def session() -> tuple[int, bytes]:
        client = RawScu(port, [(CT, [EXPLICIT])])
        try:
            client.sock.sendall(b"\x0b\x00\x00\x00\x00\x02\x00\x00")
            return client.read_pdu()
        finally:
            client.close()

    async with running_scp(tmp_path, sqlite_url) as (_, port):
        kind, body = await asyncio.to_thread(session)
    assert (kind, body) == (0x07, bytes([0, 0, 2, 1]))  # provider abort, unrecognized PDU


async def test_an_idle_association_is_aborted(tmp_path, sqlite_url):
    def session() -> tuple[int, bytes]:
        client = RawScu(port, [(CT, [EXPLICIT])])
        try:
            return client.read_pdu()
        finally:
            client.close()

    async with running_scp(tmp_path, sqlite_url, idle_timeout="0.5s") as (_, port):
        kind, _ = await asyncio.to_thread(session)
    assert kind == 0x07


async def test_a_release_is_answered_and_a_peer_abort_loses_the_partial_instance(
        tmp_path, sqlite_url):
    ds, data = _instance_bytes(tmp_path, 60)

    def session() -> int:
        client = RawScu(port, [(CT, [EXPLICIT])])
        command = Dataset()
        command.AffectedSOPClassUID, command.CommandField, command.MessageID = CT, 1, 1
        command.CommandDataSetType, command.AffectedSOPInstanceUID = 0, ds.SOPInstanceUID
        command.Priority = 0
        client.send_pdv(1, 0x03, encode(command, True, True) or b"")
        client.send_pdv(1, 0x00, data[:1000])
        client.sock.sendall(bytes.fromhex("07 00 00000004 00 00 00 00"))  # A-ABORT
        client.close()
        again = RawScu(port, [(CT, [EXPLICIT])])
        again.sock.sendall(bytes.fromhex("05 00 00000004 00000000"))  # A-RELEASE-RQ
        kind, _ = again.read_pdu()
        again.close()
        return kind

    async with running_scp(tmp_path, sqlite_url) as (node, port):
        assert await asyncio.to_thread(session) == 0x06
        assert received(node.database) == []
    assert list((tmp_path / "data").rglob("blob-*")) == []


# --- TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a server certificate for localhost, made by openssl."""
    return make_pki(tmp_path_factory.mktemp("pki"))


async def test_tls_associations_store_instances(pki, tmp_path, sqlite_url):
    path = tmp_path / "tls.dcm"
    make_instance(seed=70).save_as(path, enforce_file_format=True)
    client = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    tls = {"cert": str(pki / "server.pem"), "key": str(pki / "server.key")}
    async with running_scp(tmp_path, sqlite_url, tls=tls) as (node, port):
        statuses = await asyncio.to_thread(store_files, port, [path],
                                           tls_args=(client, "localhost"))
        plain = await asyncio.to_thread(scu, port, [(CT, [EXPLICIT])])
        assert statuses == [0]
        assert not plain.is_established
        assert len(received(node.database)) == 1


# --- MPPS and storage commitment -------------------------------------------------------------


def _mpps_create(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.PatientID = "RB-TEST-1"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = "CT"
    ds.PerformedProcedureStepID = "PPS-1"
    attributes = Dataset()
    attributes.StudyInstanceUID = study_uid
    attributes.AccessionNumber = "ACC-1"
    ds.ScheduledStepAttributesSequence = [attributes]
    return ds


async def test_mpps_n_create_and_n_set_are_stored_as_messages(tmp_path, sqlite_url):
    study, mpps_uid = generate_uid(), generate_uid()

    def session() -> list[int]:
        assoc = scu(port, [(MPPS, [EXPLICIT])])
        try:
            created, _ = assoc.send_n_create(_mpps_create(study), MPPS, mpps_uid)
            done = Dataset()
            done.PerformedProcedureStepStatus = "COMPLETED"
            updated, _ = assoc.send_n_set(done, MPPS, mpps_uid)
            broken = Dataset()
            broken.PerformedProcedureStepStatus = "SOMETHING ELSE"
            refused, _ = assoc.send_n_set(broken, MPPS, mpps_uid)
            return [created.Status, updated.Status, refused.Status]
        finally:
            assoc.release()

    async with running_scp(tmp_path, sqlite_url) as (node, port):
        assert await asyncio.to_thread(session) == [0, 0, 0x0106]
        rows = received(node.database)
        with node.database.read() as db:
            steps = db.execute(select(DICOM_MPPS)).mappings().all()
    assert [(m.content_type, m.status == "rejected", m.meta["operation"]) for m, _ in rows] == [
        (MPPS_CONTENT_TYPE, False, "create"), (MPPS_CONTENT_TYPE, False, "set"),
        (MPPS_CONTENT_TYPE, True, "set")]
    assert rows[0][0].study_uid == study
    assert len(steps) == 1


async def test_storage_commitment_reports_what_is_stored_on_the_same_association(
        tmp_path, sqlite_url):
    files = make_ct_series(tmp_path / "ct", 2, rows=32, columns=32)
    instances = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    missing = generate_uid()
    reports: list[Dataset] = []

    def on_report(event: Any) -> int:
        reports.append(event.event_information)
        reports[-1].EventTypeID = event.request.EventTypeID
        return 0x0000

    def session() -> int:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(COMMITMENT, [EXPLICIT])
        assoc = ae.associate("127.0.0.1", port, ae_title=AET,
                             ext_neg=[build_role(COMMITMENT, scu_role=True, scp_role=True)],
                             evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
        try:
            request = Dataset()
            request.TransactionUID = generate_uid()
            request.ReferencedSOPSequence = []
            for sop_class, sop_instance in [*((CT, i.SOPInstanceUID) for i in instances),
                                            (CT, missing)]:
                item = Dataset()
                item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_instance
                request.ReferencedSOPSequence.append(item)
            status, _ = assoc.send_n_action(request, 1, COMMITMENT, "1.2.840.10008.1.20.1.1")
            for _ in range(100):
                if reports:
                    break
                time.sleep(0.05)
            return int(status.Status)
        finally:
            assoc.release()

    async with running_scp(tmp_path, sqlite_url) as (_node, port):
        assert (await asyncio.to_thread(storescu, "127.0.0.1", port, files, AET)).returncode == 0
        assert await asyncio.to_thread(session) == 0
    assert len(reports) == 1
    report = reports[0]
    assert report.EventTypeID == 2  # some failed
    assert {i.ReferencedSOPInstanceUID for i in report.ReferencedSOPSequence} == {
        i.SOPInstanceUID for i in instances}
    assert [i.ReferencedSOPInstanceUID for i in report.FailedSOPSequence] == [missing]


async def test_storage_commitment_result_goes_on_a_new_association_to_a_listed_requester(
        tmp_path, sqlite_url):
    """The modality releases right after its N-ACTION and listens for the result."""
    files = make_ct_series(tmp_path / "ct", 2, rows=32, columns=32)
    instances = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    reports: list[tuple[int, Dataset, str]] = []

    def on_report(event: Any) -> tuple[int, None]:
        reports.append((event.request.EventTypeID, event.event_information,
                        event.assoc.requestor.ae_title))
        return 0x0000, None

    modality = AE(ae_title="MODALITY")
    modality.add_supported_context(COMMITMENT, [EXPLICIT, "1.2.840.10008.1.2"],
                                   scu_role=False, scp_role=True)
    listening_port = closed_port()  # free now; the modality listens on it next
    server = modality.start_server(("127.0.0.1", listening_port), block=False,
                                   evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])

    def ask() -> int:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(COMMITMENT, [EXPLICIT])
        assoc = ae.associate("127.0.0.1", port, ae_title=AET)
        try:
            request = Dataset()
            request.TransactionUID = generate_uid()
            request.ReferencedSOPSequence = []
            for instance in instances:
                item = Dataset()
                item.ReferencedSOPClassUID = CT
                item.ReferencedSOPInstanceUID = instance.SOPInstanceUID
                request.ReferencedSOPSequence.append(item)
            status, _ = assoc.send_n_action(request, 1, COMMITMENT, "1.2.840.10008.1.20.1.1")
            return int(status.Status)
        finally:
            assoc.release()

    peers = [{"ae_title": "MODALITY", "host": "127.0.0.1", "port": listening_port,
              "calling_ae": AET}]
    try:
        async with running_scp(tmp_path, sqlite_url, commitment_peers=peers) as (node, port):
            assert (await asyncio.to_thread(storescu, "127.0.0.1", port, files, AET)
                    ).returncode == 0
            assert await asyncio.to_thread(ask) == 0
            for _ in range(100):
                if audit_events(node.database, "dicom.commitment-reported"):
                    break
                await asyncio.sleep(0.05)
            [event] = audit_events(node.database, "dicom.commitment-reported")
    finally:
        server.shutdown()
    [(event_type, report, sender)] = reports
    assert (event_type, sender) == (1, AET)  # all stored, from our AE on its own association
    assert {i.ReferencedSOPInstanceUID for i in report.ReferencedSOPSequence} == {
        i.SOPInstanceUID for i in instances}
    assert (event.outcome, json.loads(event.detail)["requester"]) == ("success", "MODALITY")


# --- a 1 GB instance ---------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_1_gb_multiframe_instance_streams_to_disk_in_bounded_memory(
        tmp_path, sqlite_url):
    source = big_multiframe(tmp_path / "big.dcm", 2**30)
    measure: Callable[[], tuple[int, int]] = tracemalloc.get_traced_memory
    async with running_scp(tmp_path, sqlite_url, role="ingest") as (node, port):
        tracemalloc.start()
        try:
            result = await asyncio.to_thread(storescu, "127.0.0.1", port, [source], AET)
            _, peak = measure()
        finally:
            tracemalloc.stop()
        assert result.returncode == 0, result.stderr
        rows = received(node.database)
    assert len(rows) == 1 and rows[0][0].status != "rejected"
    stage = rows[0][1]
    assert (stage.content_size or 0) > 2**30
    assert peak < 64 * 2**20, f"peak traced memory {peak / 2**20:.0f} MiB"
    assert UID(rows[0][0].meta["sop_class_uid"]) == UID("1.2.840.10008.5.1.4.1.1.7.3")
