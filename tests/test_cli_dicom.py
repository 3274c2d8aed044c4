"""`radbridge dicom echo|find|retrieve|store` as an operator runs them, against Orthanc and
dcmtk's storescp."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from radbridge.interfaces.cli.dicom_cmd import UsageError, parse_peer
from tests.dicom_data import make_ct_series
from tests.dimse_support import closed_port, data_set_bytes, sop_uid_of
from tests.peers.dcmtk import Storescp
from tests.peers.orthanc import OrthancPeer


@pytest.fixture(autouse=True)
def _dcmtk_installed(dcmtk: object) -> None:
    """storescp and friends come from tests/peers, which skips (or fails in CI) without them."""


def dicom(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "radbridge", "dicom", *args],
                          capture_output=True, text=True, timeout=120)


def address(peer: OrthancPeer | Storescp) -> str:
    port = peer.dicom_port if isinstance(peer, OrthancPeer) else peer.port
    return f"{peer.ae_title}@127.0.0.1:{port}"


@pytest.fixture(scope="module")
def stored(orthanc: OrthancPeer, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A CT series put into the PACS with `radbridge dicom store` (plus a non-DICOM file)."""
    folder = tmp_path_factory.mktemp("cli-series")
    files = make_ct_series(folder / "series", 3, rows=32, columns=32, seed=601,
                           patient_id="RB-CLI-1", accession="RB-ACC-CLI")
    (folder / "series" / "notes.txt").write_text("not DICOM")
    result = dicom("store", "--peer", address(orthanc), str(folder / "series"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "notes.txt: skipped (not a DICOM Part 10 file)" in result.stdout
    assert result.stdout.count(": 0x0000 (success)") == 3
    assert f"3 of 3 stored on {address(orthanc)}" in result.stdout
    return files


def test_parse_peer() -> None:
    peer = parse_peer("PACS@pacs.example:104", calling_ae="ME", timeout=5)
    assert (peer.ae_title, peer.host, peer.port, peer.calling_ae) == (
        "PACS", "pacs.example", 104, "ME")
    assert peer.response_timeout == 5
    for bad in ("PACS", "PACS@host", "@host:104", "PACS@host:port"):
        with pytest.raises(UsageError, match="expected AE@HOST:PORT"):
            parse_peer(bad)
    with pytest.raises(UsageError, match="ae_title"):
        parse_peer("A-TITLE-FAR-TOO-LONG@host:104")


def test_echo_answers_exit_0_and_a_peer_that_is_down_exit_1(orthanc) -> None:
    result = dicom("echo", "--peer", address(orthanc), "--calling-ae", "OPERATOR")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"C-ECHO {address(orthanc)}: status 0x0000" in result.stdout
    down = dicom("echo", "--peer", f"NOBODY@127.0.0.1:{closed_port()}", "--timeout", "2")
    assert down.returncode == 1 and "cannot connect" in down.stdout
    assert dicom("echo", "--peer", "no-port").returncode == 2


def test_find_studies_as_json_and_series_as_a_table(orthanc, stored) -> None:
    result = dicom("find", "--peer", address(orthanc), "--patient-id", "RB-CLI-1", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    (study,) = json.loads(result.stdout)
    assert study["accession"] == "RB-ACC-CLI" and study["patient_name"] == "TEST^PATIENT"
    assert (study["modalities"], study["instance_count"]) == (["CT"], 3)
    series = dicom("find", "--peer", address(orthanc), "--accession", "RB-ACC-CLI",
                   "--level", "series")
    assert series.returncode == 0, series.stdout + series.stderr
    header, row, count = series.stdout.splitlines()
    assert header.split() == ["study_uid", "series_uid", "modality", "series_number",
                              "series_description", "instance_count"]
    assert row.split()[0] == study["study_uid"] and row.split()[-1] == "3"
    assert count == "(1 match)"
    none = dicom("find", "--peer", address(orthanc), "--patient-id", "RB-CLI-NOBODY")
    assert none.returncode == 0 and none.stdout.splitlines()[-1] == "(0 matches)"


def test_retrieve_by_c_get_into_a_folder_and_by_c_move(orthanc, stored, tmp_path) -> None:
    found = dicom("find", "--peer", address(orthanc), "--accession", "RB-ACC-CLI", "--json")
    study_uid = json.loads(found.stdout)[0]["study_uid"]
    got = dicom("retrieve", "--peer", address(orthanc), "--study-uid", study_uid,
                "--get-into", str(tmp_path / "got"))
    assert got.returncode == 0, got.stdout + got.stderr
    assert "3 completed, 0 failed" in got.stdout
    sent = {sop_uid_of(p): p for p in stored}
    files = sorted((tmp_path / "got").iterdir())
    assert {p.name for p in files} == {f"{uid}.dcm" for uid in sent}
    for path in files:
        assert data_set_bytes(path) == data_set_bytes(sent[path.stem])
    with Storescp("CLIDEST", tmp_path / "moved") as scp:
        orthanc.add_modality("clidest", "CLIDEST", scp.port)
        try:
            moved = dicom("retrieve", "--peer", address(orthanc), "--study-uid", study_uid,
                          "--move-to", "CLIDEST")
            arrived = scp.wait_for(3)
        finally:
            orthanc.remove_modality("clidest")
        assert {sop_uid_of(p) for p in arrived} == set(sent)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "C-MOVE to CLIDEST: status 0x0000, 3 completed" in moved.stdout
    unknown = dicom("retrieve", "--peer", address(orthanc), "--study-uid", study_uid,
                    "--move-to", "NOBODY")
    assert unknown.returncode == 1 and "C-MOVE failed" in unknown.stdout


def test_store_reports_a_refusal_with_exit_1(tmp_path) -> None:
    ct = make_ct_series(tmp_path / "ct", 1, rows=32, columns=32, seed=602)
    with Storescp("FULL", tmp_path / "gone") as scp:
        # An association first, so storescp is past its start-up (which checks the
        # output folder) before the folder goes; failed once under a loaded full run.
        echoed = dicom("echo", "--peer", address(scp))
        assert echoed.returncode == 0, echoed.stdout + echoed.stderr
        shutil.rmtree(scp.output_dir)  # storescp cannot write: 0xA700
        result = dicom("store", "--peer", address(scp), str(ct[0]))
    assert result.returncode == 1
    assert "0xA700 (out of resources)" in result.stdout and "0 of 1 stored" in result.stdout
    missing = dicom("store", "--peer", "X@127.0.0.1:1", str(tmp_path / "missing.dcm"))
    assert missing.returncode == 2 and "no such file" in missing.stdout
