"""Orders over MLLP and studies over C-STORE meet in a real `radbridge run` with the
shipped channels (hl7-in, dicom-in, study-ready): whichever arrives first, each study
ends linked to its order, and a study nobody ordered waits in the reconciliation queue.

1. Order first: ORM^O01 NW (its ZDS assigns the Study UID), then the modality sends that
   study: linked by study_uid when it is ready.
2. Study first: the modality invents its own Study UID but carries the order's
   accession; nothing to link when it is ready (queued), linked when the order arrives.
3. A study with an accession no order has stays queued; an analyst rejects it by CLI.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from radbridge.channels import DEFAULT_DIR
from tests import dicom_data
from tests.e2e.conftest import Spawn, assert_audit_verifies, free_port, wait_until
from tests.peers import dcmtk

pytestmark = pytest.mark.slow

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7"
ORDERED_STUDY = "1.2.826.0.1.3680043.10.1234.26120001"  # ZDS-1 of orm_o01_nw.hl7
RESULT_CHANNELS = ("study-ready", "inference-done", "ai-results", "ris-priority", "ris-oru",
                   "ehr-fhir", "pacs-out")
"""The shipped channels downstream of dicom-in: study-ready feeds inference-done, which
feeds the result channels; each names the next, so they deploy together."""


def shipped(hl7_port: int, dicom_port: int) -> str:
    hl7 = (DEFAULT_DIR / "hl7-in.yaml").read_text().replace(
        "${RADBRIDGE_HL7_PORT:-2575}", str(hl7_port))
    dicom = (DEFAULT_DIR / "dicom-in.yaml").read_text().replace(
        "${RADBRIDGE_DICOM_PORT:-11112}", str(dicom_port)).replace(
        "quiet_period: {default: 30s,", "quiet_period: {default: 1s,")
    rest = [(DEFAULT_DIR / f"{name}.yaml").read_text() for name in RESULT_CHANNELS]
    return "\n---\n".join((hl7, dicom, *rest))


def send_hl7(port: int, *names: str, tmp: Path, **replace: str) -> None:
    files = []
    for name in names:
        text = (SAMPLES / f"{name}.hl7").read_text()
        for old, new in replace.items():
            text = text.replace(old, new)
        path = tmp / f"{name}.hl7"
        path.write_text(text)
        files.append(str(path))
    sent = subprocess.run([sys.executable, "-m", "radbridge", "send", "hl7", *files, "--to",
                           f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stdout + sent.stderr


def study(node, uid: str) -> dict:
    answer = node.client.get(f"/api/studies/{uid}")
    return answer.json() if answer.status_code == 200 else {}


def push(port: int, folder: Path, seed: int, **attributes: str) -> str:
    """Two CT slices of one study from the modality; returns its Study Instance UID."""
    files = dicom_data.make_ct_series(folder, 2, rows=32, columns=32, seed=seed,
                                      patient_id="MRN100999", **attributes)
    sent = dcmtk.storescu("127.0.0.1", port, files, "RADBRIDGE")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


def test_orders_and_studies_meet_whichever_comes_first(spawn: Spawn, tmp_path: Path) -> None:
    hl7_port, dicom_port = free_port(), free_port()
    node = spawn(channel_yaml=shipped(hl7_port, dicom_port),
                 database_url=f"sqlite:///{tmp_path / 'store.db'}", node_id="corr").start()

    # 1. order first
    send_hl7(hl7_port, "orm_o01_nw", tmp=tmp_path)
    push(dicom_port, tmp_path / "a", 21, study_uid=ORDERED_STUDY,
         AccessionNumber="ACC26120001", StudyDate="20261201")
    wait_until(lambda: study(node, ORDERED_STUDY).get("orders"), 30, "study 1 linked")
    [link] = study(node, ORDERED_STUDY)["orders"]
    assert (link["rule"], link["confidence"]) == ("study_uid", 1.0)

    # 2. study first (an order the RIS sends later, accession ACC26129999); the order
    #    of step 1 has its study already, so the patient and date alone do not claim it
    late_uid = push(dicom_port, tmp_path / "b", 22, AccessionNumber="ACC26129999",
                    StudyDate="20261201")
    wait_until(lambda: node.client.get("/api/reconciliation").json()["items"], 30,
               "study 2 queued")
    [queued] = node.client.get("/api/reconciliation").json()["items"]
    assert (queued["study_uid"], queued["kind"]) == (late_uid, "unmatched")
    send_hl7(hl7_port, "orm_o01_nw", tmp=tmp_path, ACC26120001="ACC26129999",
             PLC5001="PLC9901", FIL9001="FIL9901", PLC5002="PLC9902", FIL9002="FIL9902",
             ACC26120002="ACC26129998", **{"NW-ORM-0001": "NW-ORM-9901",
                                           ORDERED_STUDY: "1.2.826.0.1.3680043.10.1234.9901"})
    wait_until(lambda: study(node, late_uid).get("orders"), 30, "study 2 linked")
    assert [o["rule"] for o in study(node, late_uid)["orders"]] == ["accession"]
    assert node.client.get("/api/reconciliation").json()["items"] == []

    # 3. nobody ordered this one: queued, then rejected by an analyst
    stray = push(dicom_port, tmp_path / "c", 23, AccessionNumber="NO-SUCH-ORDER",
                 PatientID="SOMEONE-ELSE", StudyDate="20261201")
    wait_until(lambda: node.client.get("/api/reconciliation").json()["items"], 30,
               "study 3 queued")
    [item] = node.client.get("/api/reconciliation").json()["items"]
    assert item["study_uid"] == stray
    rejected = node.cli("reconcile", "reject", str(item["id"]), "--note", "phantom", "--json")
    assert rejected.returncode == 0, rejected.stderr
    assert json.loads(rejected.stdout)["state"] == "rejected"
    assert_audit_verifies(node)
