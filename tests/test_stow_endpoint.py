"""The STOW-RS endpoint on the real API server (uvicorn on 127.0.0.1, real receiver).

Uploads go through dicomweb-client (via our client) and raw httpx; what the store holds
is read right after the response, which is sent only once every part was committed.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select

from radbridge.engine.blobstore import BlobStore
from radbridge.engine.config import ChannelConfig
from radbridge.engine.db import Database
from radbridge.engine.lifecycle import MessageStatus, StageKind
from radbridge.engine.models import AuditEvent, DicomInstance, Message, MessageStage
from radbridge.engine.receiver import GroupCommitter, Inbound, Receipt
from radbridge.errors import StoreUnavailable
from radbridge.interfaces.api import ApiContext, create_app
from radbridge.interfaces.dicomweb.client import DicomWebClient, StowRejected
from radbridge.interfaces.dicomweb.stow_response import FailureReason, StowResponse

BOUNDARY = "radbridge-test-boundary"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def _channel(name: str, source: dict[str, Any]) -> ChannelConfig:
    return ChannelConfig.model_validate({
        "name": name, "source": source, "destinations": [{"name": "out", "type": "null"}]})


CHANNELS = {
    "imaging": _channel("imaging", {"type": "stow-rs"}),
    "tiny": _channel("tiny", {"type": "stow-rs", "max_size": 20_000}),
    "orders": _channel("orders", {"type": "http"}),
}


# --- instances -------------------------------------------------------------------------


def ct_instance(study_uid: str | None = None, series_uid: str | None = None) -> Dataset:
    """pydicom's real CT_small.dcm (128x128, 16 bit, explicit VR LE) under new UIDs."""
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    dataset.StudyInstanceUID = study_uid or generate_uid()
    dataset.SeriesInstanceUID = series_uid or generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    return dataset


def encode(dataset: Dataset, *, enforce_file_format: bool = True) -> bytes:
    """Part 10 bytes; without enforcing, the file meta is written as it is (even wrong)."""
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=enforce_file_format)
    return buffer.getvalue()


def multipart(*parts: bytes, content_type: str = "application/dicom") -> bytes:
    body = b""
    for part in parts:
        body += f"--{BOUNDARY}\r\nContent-Type: {content_type}\r\n\r\n".encode() + part + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


# --- the server ------------------------------------------------------------------------


class SwitchableReceive:
    """The real group committer, or StoreUnavailable while `failing` is set."""

    def __init__(self, committer: GroupCommitter) -> None:
        self.committer = committer
        self.failing = False

    async def __call__(self, inbound: Inbound) -> Receipt:
        if self.failing:
            raise StoreUnavailable("disk full")
        return await self.committer.receive(inbound)


@dataclass
class StowServer:
    url: str
    database: Database
    blobs: BlobStore
    receive: SwitchableReceive

    def messages(self) -> list[Message]:
        with self.database.read() as session:
            return list(session.execute(select(Message).order_by(Message.id)).scalars())

    def received_stage(self, message_id: int) -> MessageStage:
        with self.database.read() as session:
            return session.execute(select(MessageStage).where(
                MessageStage.message_id == message_id,
                MessageStage.stage == StageKind.RECEIVED)).scalar_one()

    def content(self, message_id: int) -> bytes:
        stage = self.received_stage(message_id)
        assert stage.in_blob and stage.content_sha256 is not None
        return self.blobs.read_bytes(stage.content_sha256)

    def audit(self, action: str) -> list[AuditEvent]:
        with self.database.read() as session:
            return list(session.execute(select(AuditEvent).where(
                AuditEvent.action == action).order_by(AuditEvent.seq)).scalars())

    def indexed(self) -> set[str]:
        with self.database.read() as session:
            return set(session.execute(select(DicomInstance.sop_instance_uid)).scalars())

    def post(self, body: bytes, *, path: str = "/dicomweb/imaging/studies",
             content_type: str = MULTIPART) -> httpx.Response:
        return httpx.post(self.url + path, content=body,
                          headers={"Content-Type": content_type}, timeout=30)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def server(database: Database, tmp_path: Path) -> Iterator[StowServer]:
    blobs = BlobStore(tmp_path / "blobs")
    committer = GroupCommitter(database, blobs, inline_limit=1024)
    committer.start()
    receive = SwitchableReceive(committer)
    context = ApiContext(database=database, blobs=blobs, channels=CHANNELS, node_id="test",
                         inline_limit=1024, receive=receive, registry=CollectorRegistry(),
                         store_metrics=False)
    port = free_port()
    uvicorn_server = uvicorn.Server(uvicorn.Config(
        create_app(context), host="127.0.0.1", port=port, log_level="warning",
        lifespan="on"))
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uvicorn_server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield StowServer(f"http://127.0.0.1:{port}", database, blobs, receive)
    finally:
        uvicorn_server.should_exit = True
        thread.join(10)
        committer.stop()


def stow(response: httpx.Response) -> StowResponse:
    assert response.headers["content-type"].startswith("application/dicom+json")
    return StowResponse.from_json(response.json())


# --- storing -------------------------------------------------------------------------------


def test_dicomweb_client_stores_a_series(server: StowServer) -> None:
    study, series = generate_uid(), generate_uid()
    instances = [ct_instance(study, series) for _ in range(3)]
    with DicomWebClient(server.url + "/dicomweb/imaging") as client:
        result = client.store_instances(instances)
    uids = {i.SOPInstanceUID for i in instances}
    assert result.stored_uids() == uids and not result.failed
    # dicomweb-client sends Host without the port, so only the path can be compared
    assert result.retrieve_url is not None
    assert result.retrieve_url.endswith(f"/dicomweb/imaging/studies/{study}")
    messages = server.messages()
    assert [m.status for m in messages] == [MessageStatus.RECEIVED] * 3
    for message, instance in zip(messages, instances, strict=True):
        assert message.channel == "imaging"
        assert message.content_type == "application/dicom"
        assert message.source == "stow-rs:127.0.0.1"
        assert message.study_uid == study and message.patient_id == instance.PatientID
        assert message.meta == {"sop_instance_uid": instance.SOPInstanceUID,
                                "sop_class_uid": instance.SOPClassUID,
                                "series_uid": series,
                                "transfer_syntax": "1.2.840.10008.1.2.1"}
        assert message.dedup_key is not None
        assert message.dedup_key.startswith(instance.SOPInstanceUID + "/")
        assert pydicom.dcmread(BytesIO(server.content(message.id))).SOPInstanceUID \
            == instance.SOPInstanceUID
    assert server.indexed() == uids
    assert len(server.audit("message.received")) == 3


def test_raw_httpx_upload_is_byte_exact_and_repeats_are_harmless(server: StowServer) -> None:
    instance = ct_instance()
    data = encode(instance)
    response = server.post(multipart(data), path=f"/dicomweb/imaging/studies/"
                                                  f"{instance.StudyInstanceUID}")
    assert response.status_code == 200
    body = response.json()
    assert body["00081199"]["Value"][0]["00081155"] == {
        "vr": "UI", "Value": [instance.SOPInstanceUID]}
    assert body["00081198"] == {"vr": "SQ"}
    assert body["00081190"]["vr"] == "UR"
    (message,) = server.messages()
    assert server.content(message.id) == data  # exactly the part's bytes
    again = server.post(multipart(data))
    assert again.status_code == 200
    assert stow(again).stored_uids() == {instance.SOPInstanceUID}
    assert len(server.messages()) == 1  # the same instance again is the same message


# --- bad parts -----------------------------------------------------------------------------


def _without(keyword: str) -> bytes:
    dataset = ct_instance()
    delattr(dataset, keyword)
    return encode(dataset)


def test_bad_parts_fail_and_are_quarantined(server: StowServer) -> None:
    good = ct_instance()
    short_pixels = ct_instance()
    short_pixels.Rows = 256  # the pixel data is for 128 rows
    parts = {
        "good": encode(good),
        "not DICOM": b"this is a text file, not a DICOM Part 10 file",
        "no study UID": _without("StudyInstanceUID"),
        "pixel length": encode(short_pixels),
    }
    response = server.post(multipart(*parts.values()))
    assert response.status_code == 202
    result = stow(response)
    assert result.stored_uids() == {good.SOPInstanceUID}
    reasons = [failed.reason for failed in result.failed]
    assert reasons == [FailureReason.CANNOT_UNDERSTAND, FailureReason.CANNOT_UNDERSTAND,
                       FailureReason.SOP_CLASS_MISMATCH]
    assert result.failure_for(short_pixels.SOPInstanceUID) == FailureReason.SOP_CLASS_MISMATCH
    messages = server.messages()
    assert [m.status for m in messages] == [MessageStatus.RECEIVED] + [MessageStatus.REJECTED] * 3
    for message, content in zip(messages, parts.values(), strict=True):
        assert server.content(message.id) == content  # the bad bytes are kept as they came
    rejected = server.audit("message.rejected")
    assert [event.message_id for event in rejected] == [m.id for m in messages[1:]]
    details = [json.loads(event.detail)["reason"] for event in rejected]
    assert "not a readable DICOM Part 10 file" in details[0]
    assert "StudyInstanceUID" in details[1]
    assert "pixel data is 32768 bytes, shorter than the 65536" in details[2]
    assert server.indexed() == {good.SOPInstanceUID}  # rejected parts are never indexed


def _cut_points(data: bytes) -> dict[str, int]:
    """Where to cut a CT_small instance: inside an element, at Pixel Data, inside it."""
    raw = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
    spacing = raw.get_item(0x00280030)
    assert spacing is not None
    pixel_tag = data.rindex(b"\xe0\x7f\x10\x00OW")
    return {"inside PixelSpacing": spacing.value_tell + 3, "at Pixel Data": pixel_tag,
            "inside the pixel data": pixel_tag + 12 + 1000}


@pytest.mark.parametrize(("where", "words"), [
    ("inside PixelSpacing", "the file ends inside a data element"),
    ("at Pixel Data", "Pixel Data is not"),
    ("inside the pixel data", "31768 bytes before the end of its pixel data"),
])
def test_truncated_instances_are_rejected(server: StowServer, where: str, words: str) -> None:
    instance = ct_instance()
    data = encode(instance)
    response = server.post(multipart(data[:_cut_points(data)[where]]))
    assert response.status_code == 409
    (failed,) = stow(response).failed
    assert failed.reason == FailureReason.SOP_CLASS_MISMATCH
    assert failed.sop_instance_uid == instance.SOPInstanceUID
    (event,) = server.audit("message.rejected")
    assert words in json.loads(event.detail)["reason"]


def test_file_meta_that_disagrees_with_the_data_set_is_a_mismatch(server: StowServer) -> None:
    instance = ct_instance()
    instance.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    response = server.post(multipart(encode(instance, enforce_file_format=False)))
    assert response.status_code == 409
    assert stow(response).failure_for(instance.SOPInstanceUID) \
        == FailureReason.SOP_CLASS_MISMATCH
    (event,) = server.audit("message.rejected")
    assert "SOPInstanceUID in the data set differs" in json.loads(event.detail)["reason"]


def test_all_parts_failing_answers_409(server: StowServer) -> None:
    other_study = ct_instance()
    response = server.post(multipart(encode(other_study), b"junk"),
                           path="/dicomweb/imaging/studies/1.2.3.4")
    assert response.status_code == 409
    result = stow(response)
    assert not result.stored
    assert [f.reason for f in result.failed] == [FailureReason.STUDY_UID_MISMATCH,
                                                 FailureReason.CANNOT_UNDERSTAND]
    assert result.failed[0].sop_instance_uid == other_study.SOPInstanceUID
    assert [m.status for m in server.messages()] == [MessageStatus.REJECTED] * 2
    with pytest.raises(StowRejected) as raised, \
            DicomWebClient(server.url + "/dicomweb/imaging") as client:
        client.store_instances([ct_instance()], study_uid="1.2.3.4")
    assert raised.value.response.failed[0].reason == FailureReason.STUDY_UID_MISMATCH


def test_part_of_another_media_type_fails(server: StowServer) -> None:
    response = server.post(multipart(b'{"a": 1}', content_type="application/json"))
    assert response.status_code == 409
    (message,) = server.messages()
    assert message.status == MessageStatus.REJECTED
    (event,) = server.audit("message.rejected")
    assert "Content-Type 'application/json'" in json.loads(event.detail)["reason"]


def test_store_unavailable_answers_out_of_resources(server: StowServer) -> None:
    server.receive.failing = True
    response = server.post(multipart(encode(ct_instance()), encode(ct_instance())))
    assert response.status_code == 409
    assert [f.reason for f in stow(response).failed] == [FailureReason.OUT_OF_RESOURCES] * 2
    server.receive.failing = False
    assert server.messages() == []


# --- broken bodies and refused requests ------------------------------------------------------


def test_broken_boundary_keeps_what_came(server: StowServer) -> None:
    good = encode(ct_instance())
    broken = encode(ct_instance())
    cut = len(broken) - 1000  # inside the pixel data
    body = (multipart(good)[:-len(f"--{BOUNDARY}--\r\n")]
            + f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + broken[:cut] + f"\r\n--{BOUNDARY}XX\r\n".encode() + broken[cut:])
    response = server.post(body)
    assert response.status_code == 400
    assert "broken multipart body" in response.json()["error"]
    # the parts before the break were answered for as usual
    result = StowResponse.from_json(response.json())
    assert len(result.stored) == 1 and len(result.failed) == 1
    first, truncated, rest = server.messages()
    assert first.status == MessageStatus.RECEIVED
    assert truncated.status == rest.status == MessageStatus.REJECTED
    assert server.content(truncated.id) == broken[:cut]
    assert server.content(rest.id) == b"XX\r\n" + broken[cut:]
    reason = json.loads(server.audit("message.rejected")[-1].detail)["reason"]
    assert "in part 3 is followed by something other than '--'" in reason


def test_body_broken_inside_a_part_keeps_that_part(server: StowServer) -> None:
    data = encode(ct_instance())
    body = (f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + data + f"\r\n--{BOUNDARY}\r\n\r\nno headers".encode())
    response = server.post(body)
    assert response.status_code == 400
    assert "part 2 has no headers" in response.json()["error"]
    assert [m.status for m in server.messages()] == [MessageStatus.RECEIVED,
                                                      MessageStatus.REJECTED]


def test_body_without_closing_delimiter(server: StowServer) -> None:
    data = encode(ct_instance())
    body = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data
    response = server.post(body)
    assert response.status_code == 400
    (message,) = server.messages()
    assert message.status == MessageStatus.REJECTED
    assert server.content(message.id) == data[:len(data) - len(BOUNDARY) - 3]


def test_body_without_any_delimiter(server: StowServer) -> None:
    response = server.post(b"plain bytes, no multipart at all")
    assert response.status_code == 400
    (message,) = server.messages()
    assert server.content(message.id) == b"plain bytes, no multipart at all"


@pytest.mark.parametrize(("content_type", "status"), [
    ("application/dicom", 415),
    ('multipart/related; type="application/dicom+json"; boundary=x', 415),
    ('multipart/related; type="application/dicom"', 400),
    ('multipart/related; type="application/dicom"; boundary="bad{}"', 400),
])
def test_wrong_content_types(server: StowServer, content_type: str, status: int) -> None:
    response = server.post(multipart(encode(ct_instance())), content_type=content_type)
    assert response.status_code == status
    assert "error" in response.json()
    assert server.messages() == []


@pytest.mark.parametrize(("method", "path", "status"), [
    ("POST", "/dicomweb/orders/studies", 404),
    ("POST", "/dicomweb/nowhere/studies", 404),
    ("GET", "/dicomweb/imaging/studies", 405),
])
def test_other_channels_and_methods(server: StowServer, method: str, path: str,
                                    status: int) -> None:
    response = httpx.request(method, server.url + path, content=multipart(b"x"),
                             headers={"Content-Type": MULTIPART})
    assert response.status_code == status
    assert response.json()["error"]


def test_body_over_max_size(server: StowServer) -> None:
    response = server.post(multipart(encode(ct_instance())), path="/dicomweb/tiny/studies")
    assert response.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: found while streaming
        yield multipart(encode(ct_instance()))

    response = httpx.post(server.url + "/dicomweb/tiny/studies", content=chunks(),
                          headers={"Content-Type": MULTIPART})
    assert response.status_code == 413
    assert server.messages() == []


# --- a 1 GiB instance through `radbridge run` ------------------------------------------------

LARGE_FRAMES = 2048
"""512 x 512 x 16 bit frames: 2048 of them make a 1 GiB Pixel Data element."""


def _vm_hwm_kib(pid: int) -> int:
    """The process's peak resident memory (VmHWM), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for process {pid}")


def _large_instance_chunks(frames: int, digest: Any) -> Iterator[bytes]:
    """A multipart body with one instance of `frames` 512x512 frames, made as it is sent."""
    header = ct_instance()
    header.Rows = header.Columns = 512
    header.NumberOfFrames = frames
    del header.PixelData
    frame = bytes(range(256)) * 2048  # 512 x 512 x 2 bytes
    length = len(frame) * frames
    start = (f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
             + encode(header) + b"\xe0\x7f\x10\x00OW\x00\x00" + length.to_bytes(4, "little"))
    digest.update(start[start.index(b"\r\n\r\n") + 4:])
    yield start
    for _ in range(frames):
        digest.update(frame)
        yield frame
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


@pytest.mark.slow
def test_a_1_gib_instance_is_streamed_with_bounded_memory(tmp_path: Path) -> None:
    import hashlib

    import yaml

    from tests.e2e.conftest import RadbridgeNode

    node = RadbridgeNode(tmp_path, channel_yaml=yaml.safe_dump({
        "name": "imaging", "source": {"type": "stow-rs"},
        "destinations": [{"name": "out", "type": "null"}]}),
        database_url=f"sqlite:///{tmp_path / 'store.db'}", name="stow")
    try:
        node.start()
        assert node.process is not None
        before = _vm_hwm_kib(node.process.pid)
        digest = hashlib.sha256()
        response = httpx.post(f"{node.base_url}/dicomweb/imaging/studies",
                              content=_large_instance_chunks(LARGE_FRAMES, digest),
                              headers={"Content-Type": MULTIPART, **node.auth_headers()},
                              timeout=600)
        assert response.status_code == 200, response.text
        peak = _vm_hwm_kib(node.process.pid)
        database = Database(node.database_url)
        try:
            with database.read() as session:
                stage = session.execute(select(MessageStage).where(
                    MessageStage.stage == StageKind.RECEIVED)).scalars().one()
        finally:
            database.dispose()
        assert stage.content_size is not None and stage.content_size > 2**30
        assert stage.content_sha256 == digest.hexdigest()
        assert peak - before < 100 * 1024, f"peak RSS grew {(peak - before) // 1024} MiB"
        print(f"1 GiB STOW-RS: peak RSS {before // 1024} -> {peak // 1024} MiB")
    finally:
        node.close()
        print(node.log_tail())


# --- what leaves the process -------------------------------------------------------------


def test_logs_carry_uids_not_phi(server: StowServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="radbridge")
    instances = [ct_instance() for _ in range(3)]
    for instance in instances:
        instance.PatientName, instance.PatientID = "DOE^JANE", "MRN-4471"
        instance.PatientBirthDate = "19610203"
    del instances[1].StudyInstanceUID
    data = [encode(i) for i in instances]
    response = server.post(multipart(data[0], data[1], data[2][:-5000]))
    assert response.status_code == 202
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert instances[0].SOPInstanceUID in logged  # the logs say what happened, by UID
    for phi in ("DOE^JANE", "MRN-4471", "19610203"):
        assert phi not in logged


def test_stow_response_round_trip() -> None:
    from radbridge.interfaces.dicomweb.stow_response import FailedInstance, StoredInstance

    response = StowResponse(
        retrieve_url="http://x/studies/1.2",
        stored=[StoredInstance("1.2.840.10008.5.1.4.1.1.2", "1.2.3", "http://x/i/1.2.3")],
        failed=[FailedInstance("1.2.840.10008.5.1.4.1.1.2", "1.2.4", 0xA900),
                FailedInstance(None, None, 0xC000)])
    body = json.loads(json.dumps(response.to_json()))
    assert body["00081198"]["Value"][1] == {"00081197": {"vr": "US", "Value": [0xC000]}}
    assert StowResponse.from_json(body) == response
    assert response.status_code == 202
    assert StowResponse().status_code == 200
    assert StowResponse(failed=response.failed).status_code == 409
