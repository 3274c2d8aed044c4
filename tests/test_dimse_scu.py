"""The DIMSE SCU side against real peers: dcmtk's storescp and Orthanc.

C-STORE (files arrive byte for byte in their own transfer syntax), C-FIND, C-MOVE and
C-GET on Orthanc, and the `dimse` and `dicom-retrieve` destinations through the engine.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

import radbridge.interfaces.adapters  # noqa: F401  (registers the destinations)
from radbridge.engine.adapters import AdapterContext
from radbridge.engine.config import ChannelConfig, DicomRetrieveDestination
from radbridge.engine.db import Database
from radbridge.engine.lifecycle import DeliveryStatus
from radbridge.engine.migrate import upgrade
from radbridge.engine.models import Delivery, DicomInstance, Message
from radbridge.engine.outbox import OutboundDelivery
from radbridge.engine.runtime import Node
from radbridge.engine.settings import Settings
from radbridge.errors import PermanentDeliveryError, TransientDeliveryError
from radbridge.interfaces.dimse.query import StudyQuery, find_series, find_studies
from radbridge.interfaces.dimse.retrieve import RetrievedInstance, get, move
from radbridge.interfaces.dimse.retrieve_destination import DicomRetriever
from radbridge.interfaces.dimse.scu import (
    AssociationFailed,
    DicomClient,
    DimseStatusError,
    NoAcceptedContext,
    echo,
)
from radbridge.interfaces.dimse.store_destination import (
    StoreClient,
    StoreOutcome,
    judge,
    read_meta,
)
from radbridge.mappings.dicom.records import CONTENT_TYPE
from tests.dicom_data import compressed_samples, make_ct_series, real_files
from tests.dimse_support import (
    client_for,
    closed_port,
    data_set_bytes,
    make_pki,
    our_scp,
    peer_config,
    sop_uid_of,
)
from tests.engine_harness import channel, harness
from tests.peers.dcmtk import Storescp
from tests.peers.orthanc import OrthancPeer

# -- C-STORE ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _dcmtk_installed(dcmtk: object) -> None:
    """storescp and friends come from tests/peers, which skips (or fails in CI) without them."""


def test_every_file_arrives_byte_for_byte_in_its_own_syntax_on_one_association(tmp_path):
    files = [*make_ct_series(tmp_path / "ct", 3, rows=64, columns=64, seed=501),
             *compressed_samples(tmp_path / "compressed").values(), *real_files()]
    with Storescp("STORESCP", tmp_path / "received", bit_preserving=True) as scp:
        store = StoreClient(client_for(scp))
        store.prepare(read_meta(path) for path in files)
        outcomes = [store.store(path) for path in files]
        store.close()
        received = {sop_uid_of(path): path for path in scp.wait_for(len(files))}
    assert [o.status for o in outcomes] == [0] * len(files)
    assert store.associations == 1
    for path in files:
        assert data_set_bytes(received[sop_uid_of(path)]) == data_set_bytes(path), path.name


def test_little_endian_fallback_and_no_transcoding_of_compressed_files(tmp_path):
    ct = make_ct_series(tmp_path / "ct", 1, rows=32, columns=32, seed=502)[0]
    jpeg = next(p for uid, p in compressed_samples(tmp_path / "c").items()
                if uid == pydicom.uid.JPEGBaseline8Bit)
    with Storescp("IMPLICIT", accept_all=False, extra_args=["+xi"]) as scp:
        store = StoreClient(client_for(scp))
        assert store.store(ct).status == 0x0000
        with pytest.raises(NoAcceptedContext, match="does not transcode"):
            store.store(jpeg)
        store.close()
        (arrived,) = scp.wait_for(1)
        sent, got = pydicom.dcmread(ct), pydicom.dcmread(arrived)
    assert got.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian
    assert (got.SOPInstanceUID, got.PixelData) == (sent.SOPInstanceUID, sent.PixelData)


def test_the_association_is_opened_again_after_the_peer_aborts(tmp_path):
    ct = make_ct_series(tmp_path, 2, rows=32, columns=32, seed=503)
    with Storescp("ABORTS", extra_args=["--abort-after"]) as scp:
        store = StoreClient(client_for(scp, response_timeout="5s"))
        with pytest.raises(AssociationFailed, match=r"ABORTS@127\.0\.0\.1"):
            store.store(ct[0])
        with pytest.raises(AssociationFailed):
            store.store(ct[1])
        store.close()
    assert store.associations == 2


@pytest.mark.parametrize(("status", "error"), [
    (0xA700, TransientDeliveryError), (0xA701, TransientDeliveryError),
    (0xA900, PermanentDeliveryError), (0xC123, PermanentDeliveryError),
    (0x0122, PermanentDeliveryError), (0x0124, PermanentDeliveryError),
    (0x0210, TransientDeliveryError), (0x1234, TransientDeliveryError),
])
def test_failure_statuses_map_to_the_outbox_errors(status, error):
    with pytest.raises(error) as raised:
        judge("PACS@h:1", StoreOutcome(status, "1.2.3", "why"))
    assert type(raised.value) is error
    assert f"0x{status:04X}" in str(raised.value) and "PACS@h:1" in str(raised.value)


@pytest.mark.parametrize("status", [0x0000, 0xB000, 0xB006, 0xB007])
def test_success_and_warnings_are_sent(status):
    assert "stored 1.2.3 on PACS@h:1" in judge("PACS@h:1", StoreOutcome(status, "1.2.3")).detail


def test_a_peer_that_is_down_names_itself():
    client = DicomClient(peer_config("DOWN", closed_port(), connect_timeout="2s"))
    with pytest.raises(AssociationFailed, match=r"DOWN@127.0.0.1:\d+: cannot connect"):
        echo(client)


# -- the dimse destination through a node --------------------------------------------------


def mismatched_file(folder: Path) -> Path:
    """A CT whose file meta names another SOP instance than its data set: storescp answers
    0xA900 (data set does not match SOP class)."""
    path = make_ct_series(folder, 1, rows=32, columns=32, seed=504)[0]
    uid = pydicom.dcmread(path).SOPInstanceUID.encode()
    other = uid[:-1] + (b"1" if uid[-1:] != b"1" else b"2")
    path.write_bytes(path.read_bytes().replace(uid, other, 1))
    return path


async def settle(node: Node, expected: int, timeout: float = 30.0) -> list[Delivery]:
    """Deliveries once `expected` of them are final (sent or dead)."""
    deliveries: list[Delivery] = []
    for _ in range(int(timeout / 0.1)):
        with node.database.read() as session:
            deliveries = list(session.execute(select(Delivery).order_by(Delivery.id)).scalars())
        final = [d for d in deliveries
                 if d.status in (DeliveryStatus.SENT, DeliveryStatus.DEAD)]
        if len(final) >= expected:
            break
        await asyncio.sleep(0.1)
    return deliveries


async def test_dimse_destination_sends_retries_and_dead_letters(database_url, tmp_path):
    good = make_ct_series(tmp_path / "src", 2, rows=32, columns=32, seed=505)
    bad = mismatched_file(tmp_path / "bad")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    fast = {"max_attempts": 2, "backoff": {"initial": "0.2s", "jitter": "0s"}}
    with Storescp("PACS", tmp_path / "orthanc") as scp:
        config = ChannelConfig.model_validate({
            "name": "images",
            "source": {"type": "directory", "path": str(inbox), "min_age": "0s",
                       "poll_interval": "0.1s", "content_type": CONTENT_TYPE},
            "destinations": [
                {"name": "orthanc", "type": "dimse", "queue": fast,
                 "peer": {"ae_title": "PACS", "host": "127.0.0.1", "port": scp.port}},
                {"name": "down", "type": "dimse", "queue": fast,
                 "peer": {"ae_title": "DOWN", "host": "127.0.0.1", "port": closed_port(),
                          "connect_timeout": "1s"}},
            ]})
        settings = Settings.resolve(data_dir=str(tmp_path / "data"), database_url=database_url,
                                    node_id="test-node", api_port=0, environ={})
        node = Node(settings, [config], poll_interval=0.1)
        await node.start()
        try:
            for path in good:
                shutil.copy(path, inbox / path.name)
            shutil.copy(bad, inbox / "mismatched.dcm")
            deliveries = await settle(node, 6)
        finally:
            await node.stop()
        received = {sop_uid_of(path) for path in scp.files()}
    by_key = {(d.destination, d.status, d.attempts) for d in deliveries}
    assert by_key == {("orthanc", DeliveryStatus.SENT, 1), ("orthanc", DeliveryStatus.DEAD, 1),
                      ("down", DeliveryStatus.DEAD, 2)}
    dead_pacs = next(d for d in deliveries if d.destination == "orthanc" and d.status == "dead")
    assert "0xA900" in (dead_pacs.last_error or "")
    down = [d for d in deliveries if d.destination == "down"]
    assert all("cannot connect" in (d.last_error or "") for d in down)
    assert {sop_uid_of(path) for path in good} <= received  # storescp keeps the bad one too


def test_a_full_peer_is_a_transient_error(tmp_path):
    ct = make_ct_series(tmp_path / "ct", 1, rows=32, columns=32, seed=506)[0]
    with Storescp("FULL", tmp_path / "gone") as scp:
        shutil.rmtree(scp.output_dir)  # storescp cannot write: 0xA700 out of resources
        store = StoreClient(client_for(scp))
        outcome = store.store(ct)
        store.close()
    with pytest.raises(TransientDeliveryError, match="0xA700"):
        judge(store.peer, outcome)


# -- Orthanc: C-FIND, C-MOVE, C-GET ---------------------------------------------------------


@pytest.fixture(scope="module")
def study(orthanc: OrthancPeer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One two-series CT study uploaded to the PACS (unique patient and accession)."""
    folder = tmp_path_factory.mktemp("study")
    study_uid = pydicom.uid.generate_uid(entropy_srcs=["scu-study"])
    first = make_ct_series(folder / "a", 3, rows=32, columns=32, seed=511, study_uid=study_uid,
                           patient_id="RB-SCU-1", accession="RB-ACC-SCU", SeriesNumber=1)
    second = make_ct_series(folder / "b", 2, rows=32, columns=32, seed=512,
                            study_uid=study_uid, patient_id="RB-SCU-1",
                            accession="RB-ACC-SCU", SeriesNumber=2)
    jpeg = compressed_samples(folder / "c")[pydicom.uid.JPEGBaseline8Bit]
    for path in [*first, *second, jpeg]:
        orthanc.upload(path)
    return {"uid": study_uid, "files": [*first, *second], "jpeg": jpeg}


def test_echo_and_find_studies_by_patient_accession_date_and_modality(orthanc, study):
    client = client_for(orthanc)
    assert echo(client) == 0x0000
    (match,) = find_studies(client, StudyQuery(patient_id="RB-SCU-1"))
    assert match.study_uid == study["uid"]
    assert (match.accession, match.modalities) == ("RB-ACC-SCU", ("CT",))
    assert (match.series_count, match.instance_count) == (2, 5)
    assert match.patient_name == "TEST^PATIENT" and match.study_date == "20240115"
    assert find_studies(client, StudyQuery(accession="RB-ACC-SCU")) == [match]
    assert find_studies(client, StudyQuery(study_uid=study["uid"])) == [match]
    in_range = StudyQuery(patient_id="RB-SCU-1", date_from="20240101", date_to="20240131")
    assert find_studies(client, in_range) == [match]
    later = StudyQuery(patient_id="RB-SCU-1", date_from="20240116")
    assert find_studies(client, later) == []
    assert find_studies(client, StudyQuery(patient_id="RB-SCU-1", modalities=("MR",))) == []
    assert find_studies(client, StudyQuery(patient_id="RB-SCU-1",
                                           modalities=("MR", "CT"))) == [match]


def test_find_series_of_a_study(orthanc, study):
    series = find_series(client_for(orthanc), study["uid"])
    assert sorted((s.series_number, s.modality, s.instance_count) for s in series) == [
        (1, "CT", 3), (2, "CT", 2)]
    assert {s.study_uid for s in series} == {study["uid"]}


def test_c_move_to_a_storescp_the_pacs_knows(orthanc, study, tmp_path):
    with Storescp("MOVEDEST", tmp_path / "moved") as scp:
        orthanc.add_modality("movedest", "MOVEDEST", scp.port)
        try:
            outcome = move(client_for(orthanc), "MOVEDEST", study["uid"])
            arrived = scp.wait_for(5)
        finally:
            orthanc.remove_modality("movedest")
    assert (outcome.status, outcome.completed, outcome.failed, outcome.warning) == (0, 5, 0, 0)
    assert {sop_uid_of(p) for p in arrived} == {sop_uid_of(p) for p in study["files"]}


def test_c_move_to_an_unknown_ae_is_a_failure_status(orthanc, study):
    with pytest.raises(DimseStatusError, match="C-MOVE failed") as raised:
        move(client_for(orthanc), "NOBODY", study["uid"])
    assert raised.value.status != 0


def test_c_get_hands_each_instance_over_in_its_stored_syntax(orthanc, study):
    got: list[RetrievedInstance] = []
    client = client_for(orthanc)
    outcome = get(client, study["uid"], got.append)
    assert (outcome.completed, outcome.failed) == (5, 0)
    sent = {sop_uid_of(p): p for p in study["files"]}
    assert {g.sop_instance_uid for g in got} == set(sent)
    for instance in got:
        path = Path(f"/dev/shm/rb-get-{instance.sop_instance_uid}.dcm")
        path.write_bytes(instance.data)
        try:
            assert data_set_bytes(path)[0] == instance.transfer_syntax_uid
            assert pydicom.dcmread(path).PixelData == pydicom.dcmread(
                sent[instance.sop_instance_uid]).PixelData
        finally:
            path.unlink()
    jpeg_study = str(pydicom.dcmread(study["jpeg"], stop_before_pixels=True).StudyInstanceUID)
    compressed: list[RetrievedInstance] = []
    get(client, jpeg_study, compressed.append)
    assert [c.transfer_syntax_uid for c in compressed] == [pydicom.uid.JPEGBaseline8Bit]


# -- the dicom-retrieve destination ----------------------------------------------------------


def order(accession: str | None, study_uid: str | None = None) -> OutboundDelivery:
    now = datetime.now(UTC)
    return OutboundDelivery(
        delivery_id=1, message_id=1, message_uid="order-1", channel="orders",
        destination="fetch", generation=0, attempt=1, idempotency_key="k1",
        content_type="application/hl7-v2", content=b"ORM", blob_sha256=None, size=3,
        created_at=now, received_at=now, accession=accession, study_uid=study_uid)


async def test_dicom_retrieve_by_accession_with_c_get_into_a_channel(database, orthanc, study,
                                                                      tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="radbridge")
    config = DicomRetrieveDestination.model_validate({
        "name": "fetch", "type": "dicom-retrieve", "method": "c-get", "into_channel": "images",
        "peer": {"ae_title": orthanc.ae_title, "host": "127.0.0.1", "port": orthanc.dicom_port}})
    with harness(database, tmp_path, [channel("images")]) as made:
        context = AdapterContext(tmp_path, made.blobs, 1024, made.receiver.receive, database)
        retriever = DicomRetriever(config, context)
        result = await retriever.send(order("RB-ACC-SCU"))
        again = await retriever.send(order(None, study["uid"]))
        with pytest.raises(TransientDeliveryError, match="no study for the order"):
            await retriever.send(order("RB-ACC-NOT-YET"))
        with pytest.raises(PermanentDeliveryError, match="neither a study UID nor"):
            await retriever.send(order(None))
        with database.read() as session:
            messages = list(session.execute(select(Message)).scalars())
            indexed = list(session.execute(select(DicomInstance)).scalars())
    assert result.detail == f"study {study['uid']}: 5 instances received into images"
    logged = " ".join(r.getMessage() for r in caplog.records if r.name.startswith("radbridge"))
    assert study["uid"] in logged  # UIDs are logged; names, patient IDs, accessions never
    assert not [phi for phi in ("RB-SCU-1", "TEST^PATIENT", "RB-ACC-SCU") if phi in logged]
    assert again.detail == result.detail
    assert len(messages) == 5  # the second retrieval was deduplicated
    assert {m.content_type for m in messages} == {CONTENT_TYPE}
    assert {m.study_uid for m in messages} == {study["uid"]}
    assert {i.sop_instance_uid for i in indexed} == {sop_uid_of(p) for p in study["files"]}
    assert {i.message_id for i in indexed} == {m.id for m in messages}
    for instance in indexed:
        assert made.blobs.exists(instance.blob_sha256)


async def test_dicom_retrieve_with_c_move_reports_the_move(orthanc, study, tmp_path):
    config = DicomRetrieveDestination.model_validate({
        "name": "fetch", "type": "dicom-retrieve", "move_destination": "MOVEDEST",
        "peer": {"ae_title": orthanc.ae_title, "host": "127.0.0.1", "port": orthanc.dicom_port}})

    async def no_receive(_inbound: object) -> object:
        raise AssertionError("c-move stores through our SCP, not receive")

    context = AdapterContext(tmp_path, None, 1024, no_receive, None)  # type: ignore[arg-type]
    with Storescp("MOVEDEST", tmp_path / "moved") as scp:
        orthanc.add_modality("movedest", "MOVEDEST", scp.port)
        try:
            result = await DicomRetriever(config, context).send(order("RB-ACC-SCU"))
        finally:
            orthanc.remove_modality("movedest")
        assert len(scp.wait_for(5)) == 5
    assert result.detail == f"study {study['uid']}: 5 instances moved to MOVEDEST"


# -- Radbridge's own SCP as the peer: TLS, and C-MOVE into it --------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def test_c_store_over_tls_to_our_own_scp(pki, tmp_path):
    ct = make_ct_series(tmp_path / "ct", 2, rows=32, columns=32, seed=507)
    url = f"sqlite:///{tmp_path / 'scp.db'}"
    tls = {"cert": str(pki / "server.pem"), "key": str(pki / "server.key")}
    async with our_scp(tmp_path, url, tls=tls) as (node, port):
        secure = StoreClient(DicomClient(peer_config(
            "RADBRIDGE", port, tls={"ca": str(pki / "ca.pem")})))
        statuses = [(await asyncio.to_thread(secure.store, path)).status for path in ct]
        await asyncio.to_thread(secure.close)
        plain = StoreClient(DicomClient(peer_config("RADBRIDGE", port, connect_timeout="2s")))
        with pytest.raises(AssociationFailed):
            await asyncio.to_thread(plain.store, ct[0])
        with node.database.read() as session:
            indexed = set(session.execute(select(DicomInstance.sop_instance_uid)).scalars())
    assert statuses == [0, 0]
    assert indexed == {sop_uid_of(path) for path in ct}


async def test_dicom_retrieve_c_move_into_our_own_scp(orthanc, study, tmp_path):
    config = DicomRetrieveDestination.model_validate({
        "name": "fetch", "type": "dicom-retrieve", "move_destination": "RBMOVE",
        "peer": {"ae_title": orthanc.ae_title, "host": "127.0.0.1",
                 "port": orthanc.dicom_port}})

    async def no_receive(_inbound: object) -> object:
        raise AssertionError("c-move stores through our SCP, not receive")

    context = AdapterContext(tmp_path, None, 1024, no_receive, None)  # type: ignore[arg-type]
    url = f"sqlite:///{tmp_path / 'scp.db'}"
    async with our_scp(tmp_path, url, ae_title="RBMOVE") as (node, port):
        orthanc.add_modality("rbmove", "RBMOVE", port)
        try:
            result = await DicomRetriever(config, context).send(order(None, study["uid"]))
        finally:
            orthanc.remove_modality("rbmove")
        with node.database.read() as session:
            indexed = list(session.execute(select(DicomInstance)).scalars())
            messages = list(session.execute(select(Message)).scalars())
    assert result.detail == f"study {study['uid']}: 5 instances moved to RBMOVE"
    assert {i.sop_instance_uid for i in indexed} == {sop_uid_of(p) for p in study["files"]}
    assert {(m.channel, m.study_uid) for m in messages} == {("images", study["uid"])}


async def test_dicom_retrieve_by_accession_with_wado_rs(orthanc, study, tmp_path):
    config = DicomRetrieveDestination.model_validate({
        "name": "fetch", "type": "dicom-retrieve", "method": "wado-rs",
        "dicomweb_url": orthanc.dicomweb_url, "into_channel": "images"})
    url = f"sqlite:///{tmp_path / 'store.db'}"
    database = Database(url)
    upgrade(database)
    with harness(database, tmp_path, [channel("images")]) as made:
        context = AdapterContext(tmp_path, made.blobs, 1024, made.receiver.receive, database)
        result = await DicomRetriever(config, context).send(order("RB-ACC-SCU"))
        with pytest.raises(TransientDeliveryError, match="no study for the order"):
            await DicomRetriever(config, context).send(order("RB-ACC-NOT-YET"))
        with database.read() as session:
            indexed = list(session.execute(select(DicomInstance)).scalars())
    database.dispose()
    assert result.detail == f"study {study['uid']}: 5 instances received into images by WADO-RS"
    assert {i.sop_instance_uid for i in indexed} == {sop_uid_of(p) for p in study["files"]}


async def test_an_association_our_scp_closed_when_idle_is_opened_again(tmp_path):
    ct = make_ct_series(tmp_path / "ct", 2, rows=32, columns=32, seed=508)
    url = f"sqlite:///{tmp_path / 'scp.db'}"
    async with our_scp(tmp_path, url, idle_timeout="0.5s") as (_node, port):
        store = StoreClient(DicomClient(peer_config("RADBRIDGE", port)))
        first = await asyncio.to_thread(store.store, ct[0])
        await asyncio.sleep(1.5)
        second = await asyncio.to_thread(store.store, ct[1])
        await asyncio.to_thread(store.close)
    assert (first.status, second.status, store.associations) == (0, 0, 2)


def test_a_rejected_association_says_why():
    with Storescp("REFUSES", extra_args=["--refuse"]) as scp:
        client = client_for(scp)
        with pytest.raises(AssociationFailed, match=r"REFUSES@.*: association rejected \("):
            echo(client)
