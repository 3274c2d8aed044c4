"""DICOMweb against the real Orthanc (tests/peers): our client (QIDO, WADO, STOW) and the
stow-rs destination delivering through a node's outbox."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from sqlalchemy import select

from radbridge.engine.adapters import AdapterContext
from radbridge.engine.blobstore import BlobStore
from radbridge.engine.config import ChannelConfig, StowRsDestination
from radbridge.engine.db import Database
from radbridge.engine.lifecycle import DeliveryStatus
from radbridge.engine.models import Delivery
from radbridge.engine.outbox import OutboundDelivery
from radbridge.engine.receiver import Inbound
from radbridge.engine.runtime import Node
from radbridge.engine.settings import Settings
from radbridge.errors import PermanentDeliveryError, TransientDeliveryError
from radbridge.interfaces.dicomweb.client import (
    DicomWebClient,
    DicomWebRejected,
    DicomWebUnavailable,
)
from radbridge.interfaces.dicomweb.destination import StowRsSender
from radbridge.mappings.dicom.records import CONTENT_TYPE
from tests.dicom_data import make_ct_series, make_instance
from tests.peers.orthanc import OrthancPeer


@pytest.fixture
def pacs(orthanc: OrthancPeer) -> OrthancPeer:
    orthanc.clear()
    return orthanc


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# --- the client ----------------------------------------------------------------------------


def test_stow_qido_wado_with_our_client(pacs: OrthancPeer, tmp_path: Path) -> None:
    paths = make_ct_series(tmp_path / "series", 3, rows=64, columns=64)
    first = pydicom.dcmread(paths[0])
    study, series = first.StudyInstanceUID, first.SeriesInstanceUID
    uids = {pydicom.dcmread(p).SOPInstanceUID for p in paths}
    with DicomWebClient(pacs.dicomweb_url) as client:
        stored = client.store_instances(paths)
        assert stored.stored_uids() == uids and not stored.failed
        assert len(pacs.instances()) == 3

        studies = client.search_studies(StudyInstanceUID=study)
        assert [s["0020000D"]["Value"][0] for s in studies] == [study]
        assert client.search_studies(PatientID="NOBODY-HERE") == []
        (found_series,) = client.search_series(study)
        assert found_series["0020000E"]["Value"][0] == series
        instances = client.search_instances(study, series)
        assert {i["00080018"]["Value"][0] for i in instances} == uids

        streamed: list[Dataset] = []
        assert client.retrieve_study_to(study, streamed.append) == 3
        assert {d.SOPInstanceUID for d in streamed} == uids
        assert client.retrieve_study_to(study, tmp_path / "copy") == 3
        assert {p.stem for p in (tmp_path / "copy").iterdir()} == uids
        copy = pydicom.dcmread(tmp_path / "copy" / f"{first.SOPInstanceUID}.dcm")
        assert copy.PixelData == first.PixelData

        (frame,) = client.retrieve_frames(study, series, first.SOPInstanceUID, [1])
        assert frame == first.PixelData  # 64 x 64 x 16 bit, uncompressed

        again = client.store_instances(paths[:1])  # the same instance twice is harmless
        assert again.stored_uids() == {first.SOPInstanceUID}
        assert len(pacs.instances()) == 3


def test_client_errors_are_our_own(pacs: OrthancPeer) -> None:
    with DicomWebClient(f"http://127.0.0.1:{free_port()}/dicom-web", timeout=5) as client, \
            pytest.raises(DicomWebUnavailable, match="unreachable") as down:
        client.search_studies()
    assert isinstance(down.value.__cause__, Exception)
    with DicomWebClient(pacs.http_url + "/no-such-root") as client, \
            pytest.raises(DicomWebRejected) as refused:
        client.search_studies()
    assert refused.value.status == 404


# --- the destination, one delivery at a time ---------------------------------------------


def _sender(url: str, tmp_path: Path, **options: Any) -> tuple[StowRsSender, BlobStore]:
    config = StowRsDestination.model_validate({"name": "pacs", "type": "stow-rs", "url": url,
                                               **options})
    blobs = BlobStore(tmp_path / "blobs")

    async def no_receive(_inbound: Inbound) -> Any:
        raise AssertionError("a destination does not receive")

    context = AdapterContext(tmp_path, blobs, 1024, no_receive,
                             Database(f"sqlite:///{tmp_path / 'unused.db'}"))
    return StowRsSender(config, context), blobs


def _delivery(blobs: BlobStore, dataset: Dataset, number: int = 1,
              content_type: str = CONTENT_TYPE) -> OutboundDelivery:
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    ref = blobs.put_bytes(buffer.getvalue())
    now = datetime.now(UTC)
    return OutboundDelivery(
        delivery_id=number, message_id=number, message_uid=f"uid{number}", channel="ai",
        destination="pacs", generation=0, attempt=1, idempotency_key=f"k{number}",
        content_type=content_type, content=None, blob_sha256=ref.sha256, size=ref.size,
        created_at=now, received_at=now,
        metadata={"sop_instance_uid": str(dataset.SOPInstanceUID)})


async def test_destination_stores_and_repeats_are_success(pacs: OrthancPeer,
                                                          tmp_path: Path) -> None:
    sender, blobs = _sender(pacs.dicomweb_url, tmp_path)
    instance = make_instance()
    delivery = _delivery(blobs, instance)
    try:
        first = await sender.send(delivery)
        again = await sender.send(delivery)
    finally:
        await sender.close()
    assert first.detail == again.detail == f"HTTP 200: stored {instance.SOPInstanceUID}"
    assert pacs.find_instance(instance.SOPInstanceUID) is not None
    assert len(pacs.instances()) == 1


async def test_destination_failures(pacs: OrthancPeer, tmp_path: Path) -> None:
    sender, blobs = _sender(pacs.dicomweb_url, tmp_path)
    try:
        with pytest.raises(PermanentDeliveryError, match="is not application/dicom"):
            await sender.send(_delivery(blobs, make_instance(), content_type="text/plain"))
        not_dicom = _delivery(blobs, make_instance())
        ref = blobs.put_bytes(b"not a DICOM file at all")
        broken = OutboundDelivery(**{**not_dicom.__dict__, "blob_sha256": ref.sha256,
                                     "size": ref.size})
        with pytest.raises(PermanentDeliveryError, match="HTTP 4"):
            await sender.send(broken)
    finally:
        await sender.close()
    unreachable, blobs = _sender(f"http://127.0.0.1:{free_port()}/dicom-web", tmp_path)
    try:
        with pytest.raises(TransientDeliveryError, match="ConnectError"):
            await unreachable.send(_delivery(blobs, make_instance()))
    finally:
        await unreachable.close()


# --- through a node's outbox ---------------------------------------------------------------


@asynccontextmanager
async def running_node(tmp_path: Path, url: str, channel: ChannelConfig,
                       ) -> AsyncIterator[Node]:
    settings = Settings.resolve(data_dir=str(tmp_path / "data"), database_url=url,
                                node_id="test-node", api_port=0, environ={})
    node = Node(settings, [channel], poll_interval=0.05)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


def _channel(url: str) -> ChannelConfig:
    return ChannelConfig.model_validate({
        "name": "ai-results", "source": {"type": "channel"},
        "destinations": [{"name": "pacs", "type": "stow-rs", "url": url, "timeout": 10,
                          "queue": {"backoff": {"initial": 0.1, "jitter": 0.0}}}],
    })


async def _deliveries(node: Node) -> list[Delivery]:
    def read() -> list[Delivery]:
        with node.database.read() as session:
            return list(session.execute(select(Delivery).order_by(Delivery.id)).scalars())
    return await asyncio.to_thread(read)


async def _wait_for(node: Node, done: Any, what: str, timeout: float = 30) -> list[Delivery]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = await _deliveries(node)
        if done(rows):
            return rows
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: {[(r.status, r.attempts, r.last_error) for r in rows]}")
        await asyncio.sleep(0.05)


async def _receive_series(node: Node, folder: Path, count: int) -> set[str]:
    uids = set()
    for path in make_ct_series(folder, count, rows=64, columns=64):
        dataset = pydicom.dcmread(path)
        ref = await asyncio.to_thread(node.blobs.put_bytes, path.read_bytes())
        await node.receive(Inbound(
            channel="ai-results", content_type=CONTENT_TYPE, source="test", blob=ref,
            study_uid=dataset.StudyInstanceUID,
            metadata={"sop_instance_uid": dataset.SOPInstanceUID}))
        uids.add(str(dataset.SOPInstanceUID))
    return uids


async def test_outbox_delivers_to_orthanc(pacs: OrthancPeer, database_url: str,
                                          tmp_path: Path) -> None:
    async with running_node(tmp_path, database_url, _channel(pacs.dicomweb_url)) as node:
        uids = await _receive_series(node, tmp_path / "series", 4)
        rows = await _wait_for(node, lambda rows: len(rows) == 4 and all(
            r.status == DeliveryStatus.SENT for r in rows), "all 4 sent")
    assert [r.attempts for r in rows] == [1] * 4
    with DicomWebClient(pacs.dicomweb_url) as client:
        (study,) = client.search_studies()
        found = client.search_instances(study["0020000D"]["Value"][0])
    assert {i["00080018"]["Value"][0] for i in found} == uids


async def test_unreachable_pacs_is_retried(database_url: str, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    async with running_node(tmp_path, database_url, _channel(url)) as node:
        await _receive_series(node, tmp_path / "series", 1)
        (row,) = await _wait_for(node, lambda rows: len(rows) == 1 and rows[0].attempts >= 2,
                                 "two attempts")
    # transient: not dead-lettered (it may already be out on its next attempt)
    assert row.status in (DeliveryStatus.PENDING, DeliveryStatus.IN_FLIGHT)
    assert row.last_error is not None and "ConnectError" in row.last_error


def test_stow_into_radbridge_run_is_forwarded_to_orthanc(pacs: OrthancPeer,
                                                          tmp_path: Path) -> None:
    """The whole path: STOW-RS into `radbridge run`, out by the stow-rs destination."""
    import time

    import yaml

    from tests.e2e.conftest import RadbridgeNode

    node = RadbridgeNode(tmp_path, channel_yaml=yaml.safe_dump({
        "name": "imaging", "source": {"type": "stow-rs"},
        "destinations": [{"name": "pacs", "type": "stow-rs", "url": pacs.dicomweb_url}]}),
        database_url=f"sqlite:///{tmp_path / 'store.db'}", name="relay")
    paths = make_ct_series(tmp_path / "series", 3, rows=64, columns=64)
    uids = {str(pydicom.dcmread(p).SOPInstanceUID) for p in paths}
    try:
        node.start()
        with DicomWebClient(f"{node.base_url}/dicomweb/imaging",
                            headers=node.auth_headers()) as ours:
            assert ours.store_instances(paths).stored_uids() == uids
        deadline = time.monotonic() + 30
        with DicomWebClient(pacs.dicomweb_url) as theirs:
            while (found := {i["00080018"]["Value"][0] for i in theirs.search_instances(
                    str(pydicom.dcmread(paths[0]).StudyInstanceUID))}) != uids:
                assert time.monotonic() < deadline, f"only {len(found)} of 3 reached Orthanc"
                time.sleep(0.1)
    finally:
        node.close()
        print(node.log_tail())
