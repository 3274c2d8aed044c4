"""The DICOM test peers themselves: namespaces, bridges, Orthanc, dcmtk and generated data.

Every DICOM test leans on these, so they are checked against the real tools here.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import ModuleType

import pydicom
import pytest
from dicomweb_client import DICOMwebClient

from tests import dicom_data
from tests.peers import netns
from tests.peers.bridge import TcpBridge
from tests.peers.dcmtk import Storescp
from tests.peers.fixtures import peer_unavailable
from tests.peers.netns import NetworkNamespace
from tests.peers.orthanc import OrthancPeer, orthanc_binary


def _netns_names() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}


@pytest.fixture
def namespaces_ok() -> None:
    reason = netns.available()
    if reason is not None:
        peer_unavailable(reason)


# -- namespaces and bridges -------------------------------------------------------------

@pytest.mark.usefixtures("namespaces_ok")
def test_namespace_is_removed_with_everything_inside() -> None:
    with NetworkNamespace() as ns:
        assert ns.name in _netns_names()
        links = ns.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
        assert [line.split(":")[1].strip() for line in links.stdout.splitlines()] == ["lo"]
        sleeper = ns.popen(["sleep", "60"])
        deadline = time.monotonic() + 5  # ip netns exec joins the namespace, then execs
        while sleeper.pid not in netns.namespace_pids(ns.name) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sleeper.pid in netns.namespace_pids(ns.name)
    assert sleeper.wait(timeout=10) != 0
    assert ns.name not in _netns_names()


@pytest.mark.usefixtures("namespaces_ok")
def test_enter_switches_only_the_calling_thread_and_back() -> None:
    home = os.readlink("/proc/thread-self/ns/net")
    with socket.socket() as host_listener:
        host_listener.bind(("127.0.0.1", 0))
        host_listener.listen()
        port = host_listener.getsockname()[1]
        with NetworkNamespace() as ns:
            with ns.enter():
                inside = os.readlink("/proc/thread-self/ns/net")
                probe = socket.socket()
            assert inside != home
            with probe, pytest.raises(ConnectionRefusedError):
                probe.connect(("127.0.0.1", port))  # the host's listener is not there
    assert os.readlink("/proc/thread-self/ns/net") == home


def _sink(listener: socket.socket, digests: list[str]) -> None:
    connection, _ = listener.accept()
    digest = hashlib.sha256()
    with connection:
        while chunk := connection.recv(1 << 20):
            digest.update(chunk)
        digests.append(digest.hexdigest())


@pytest.mark.usefixtures("namespaces_ok")
@pytest.mark.parametrize("direction", ["host-to-namespace", "namespace-to-host"])
def test_bridge_carries_a_large_stream_intact(direction: str) -> None:
    payload = os.urandom(1 << 20) * 64
    with NetworkNamespace() as ns:
        into_ns = direction == "host-to-namespace"
        with netns.entered(ns if into_ns else None):
            listener = socket.socket()
        with listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            digests: list[str] = []
            sink = threading.Thread(target=_sink, args=(listener, digests))
            sink.start()
            bridge = TcpBridge(listener.getsockname()[1], connect_ns=ns if into_ns else None,
                               listen_ns=None if into_ns else ns)
            with bridge:
                with netns.entered(None if into_ns else ns):
                    client = socket.socket()
                with client:
                    client.connect(("127.0.0.1", bridge.port))
                    client.sendall(payload)
                sink.join(timeout=30)
    assert digests == [hashlib.sha256(payload).hexdigest()]


# -- dcmtk ------------------------------------------------------------------------------

def test_echo_through_the_bridge(orthanc: OrthancPeer, dcmtk: ModuleType) -> None:
    result = dcmtk.echoscu(orthanc.host, orthanc.dicom_port, orthanc.ae_title)
    assert result.returncode == 0, result.stderr


def test_series_stored_with_storescu_is_found_by_rest_and_qido(
        orthanc: OrthancPeer, dcmtk: ModuleType, tmp_path: Path) -> None:
    orthanc.clear()
    paths = dicom_data.make_ct_series(tmp_path / "series", 5, rows=64, columns=64, seed=11)
    first = pydicom.dcmread(paths[0])
    result = dcmtk.storescu(orthanc.host, orthanc.dicom_port, [tmp_path / "series"],
                            orthanc.ae_title)
    assert result.returncode == 0, result.stderr
    assert len(orthanc.studies()) == 1
    assert len(orthanc.instances()) == 5
    found = orthanc.find_instance(first.SOPInstanceUID)
    assert found is not None
    assert orthanc.instance_tags(found)["AccessionNumber"] == "ACC-1"
    client = DICOMwebClient(url=orthanc.dicomweb_url)
    studies = client.search_for_studies()
    assert [s["0020000D"]["Value"][0] for s in studies] == [first.StudyInstanceUID]
    assert len(client.search_for_instances(study_instance_uid=first.StudyInstanceUID)) == 5


def test_compressed_samples_keep_their_transfer_syntax(
        orthanc: OrthancPeer, dcmtk: ModuleType, tmp_path: Path) -> None:
    orthanc.clear()
    samples = dicom_data.compressed_samples(tmp_path / "samples")
    assert {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
            "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.1.99",
            } <= set(samples)
    result = dcmtk.storescu(orthanc.host, orthanc.dicom_port, samples.values(),
                            orthanc.ae_title)
    assert result.returncode == 0, result.stderr
    for syntax, path in samples.items():
        found = orthanc.find_instance(pydicom.dcmread(path).SOPInstanceUID)
        assert found is not None, syntax
        assert orthanc.instance_metadata(found, "TransferSyntax") == syntax


def test_find_and_get_from_orthanc(orthanc: OrthancPeer, dcmtk: ModuleType,
                                   tmp_path: Path) -> None:
    orthanc.clear()
    paths = dicom_data.make_ct_series(tmp_path / "series", 3, rows=32, columns=32, seed=12)
    study_uid = pydicom.dcmread(paths[0]).StudyInstanceUID
    for path in paths:
        orthanc.upload(path)
    answers = dcmtk.find(orthanc.host, orthanc.dicom_port, orthanc.ae_title,
                         {"StudyInstanceUID": "", "AccessionNumber": "ACC-1"})
    assert [a.StudyInstanceUID for a in answers] == [study_uid]
    result = dcmtk.getscu(orthanc.host, orthanc.dicom_port, orthanc.ae_title,
                          {"StudyInstanceUID": study_uid}, output_dir=tmp_path / "got")
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "got").iterdir())) == 3


def test_orthanc_stores_and_moves_to_a_host_storescp(
        orthanc: OrthancPeer, storescp: Storescp, dcmtk: ModuleType, tmp_path: Path) -> None:
    orthanc.clear()
    [ct_small] = [p for p in dicom_data.real_files() if p.name == "CT_small.dcm"]
    orthanc_id = orthanc.upload(ct_small)
    orthanc.add_modality("rbscp", storescp.ae_title, storescp.port)
    job = orthanc.request("POST", "/modalities/rbscp/store", json={"Resources": [orthanc_id]})
    assert job["InstancesCount"] == 1
    received = storescp.wait_for(1)
    assert [pydicom.dcmread(p).SOPInstanceUID for p in received] == [
        pydicom.dcmread(ct_small).SOPInstanceUID]

    storescp.clear()
    series = dicom_data.make_ct_series(tmp_path / "series", 2, rows=32, columns=32, seed=13)
    for path in series:
        orthanc.upload(path)
    moved = dcmtk.movescu(orthanc.host, orthanc.dicom_port, orthanc.ae_title,
                          {"StudyInstanceUID": pydicom.dcmread(series[0]).StudyInstanceUID},
                          destination_ae=storescp.ae_title)
    assert moved.returncode == 0, moved.stderr
    assert len(storescp.wait_for(2)) == 2


def test_storescu_carries_a_big_multiframe(storescp: Storescp, dcmtk: ModuleType,
                                           tmp_path: Path) -> None:
    big = dicom_data.big_multiframe(tmp_path / "big.dcm", 48 << 20, seed=5)
    result = dcmtk.storescu(storescp.host, storescp.port, [big], storescp.ae_title)
    assert result.returncode == 0, result.stderr
    [received] = storescp.files()
    assert received.stat().st_size >= 48 << 20
    assert pydicom.dcmread(received, stop_before_pixels=True).NumberOfFrames == 96


@pytest.mark.usefixtures("namespaces_ok")
def test_orthanc_peer_leaves_nothing_behind() -> None:
    if orthanc_binary() is None:
        peer_unavailable("Orthanc is not installed")
    with OrthancPeer() as peer:
        name, folder = peer.namespace.name, peer.folder
        assert netns.namespace_pids(name)
        assert peer.request("GET", "/system")["DicomAet"] == "ORTHANC"
    assert name not in _netns_names()
    assert not folder.exists()


# -- generated data ---------------------------------------------------------------------

def test_seeded_series_are_reproducible_and_valid(tmp_path: Path) -> None:
    first = dicom_data.make_ct_series(tmp_path / "a", 3, rows=64, columns=64, seed=1)
    again = dicom_data.make_ct_series(tmp_path / "b", 3, rows=64, columns=64, seed=1)
    other = dicom_data.make_ct_series(tmp_path / "c", 3, rows=64, columns=64, seed=2)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    assert pydicom.dcmread(first[0]).StudyInstanceUID != pydicom.dcmread(
        other[0]).StudyInstanceUID
    positions = [pydicom.dcmread(p).ImagePositionPatient[2] for p in first]
    assert positions == [0, -1.25, -2.5]
    if shutil.which("dciodvfy") is None:
        peer_unavailable("dciodvfy (dicom3tools) is not installed")
    check = subprocess.run(["dciodvfy", str(first[0])], capture_output=True, text=True)
    assert "Error" not in check.stderr, check.stderr


def test_make_instance_can_drop_attributes() -> None:
    ds = dicom_data.make_instance(StudyInstanceUID=None, PatientID="X-1")
    assert "StudyInstanceUID" not in ds
    assert ds.PatientID == "X-1"
    assert ds.pixel_array.shape == (64, 64)


def test_big_multiframe_is_written_frame_by_frame(tmp_path: Path) -> None:
    path = dicom_data.big_multiframe(tmp_path / "mf.dcm", 3 << 20, rows=256, columns=256)
    ds = pydicom.dcmread(path)
    assert ds.NumberOfFrames == 24
    assert ds.pixel_array.shape == (24, 256, 256)
    assert ds.pixel_array[23, 0, 0] == 23
