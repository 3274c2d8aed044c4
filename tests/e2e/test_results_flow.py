"""The whole flow in a real `radbridge run` with the shipped channels: an ADT and an order
over MLLP, the ordered head CT (with a haemorrhage) over C-STORE; the study is linked to
its order, the demonstration model finds the haemorrhage, and what the RIS, the EHR and
the PACS would receive is written under outbox/: the worklist priority update and the
ORU (HL7 v2.5.1, passing hl7apy's strict validation), one FHIR transaction Bundle, and
the DICOM SR and SEG (passing dciodvfy). The patient's audit trail has every step."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import hl7
import pydicom
import pytest

from radbridge.inference.demo.synthetic import PatientInfo, generate_study
from tests.e2e.conftest import Spawn, free_port, wait_until
from tests.e2e.test_correlation_flows import ORDERED_STUDY, send_hl7, shipped
from tests.peers import dcmtk

pytestmark = pytest.mark.slow



def send_ordered_head_ct(port: int, folder: Path) -> None:
    """The head CT (with a haemorrhage) that orm_o01_nw.hl7 orders, over C-STORE."""
    study = generate_study("ich-ct", positive=True, seed=4242, study_uid=ORDERED_STUDY,
                           accession="ACC26120001",
                           patient=PatientInfo(patient_id="MRN100999", issuer="NORTHWIND",
                                               name="TRAUMA^ZULU", sex="U",
                                               birth_date="19700101"))
    folder.mkdir()
    files = []
    for index, dataset in enumerate(study.datasets):
        path = folder / f"{index:04d}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        files.append(path)
    sent = dcmtk.storescu("127.0.0.1", port, files, "RADBRIDGE")
    assert sent.returncode == 0, sent.stdout + sent.stderr


def outbox(node, folder: str, pattern: str) -> list[Path]:
    return sorted((node.data_dir / "outbox" / folder).glob(pattern))


def test_an_ordered_head_ct_reaches_the_ris_the_ehr_and_the_pacs(spawn: Spawn,
                                                                  tmp_path: Path) -> None:
    hl7_port, dicom_port = free_port(), free_port()
    node = spawn(channel_yaml=shipped(hl7_port, dicom_port),
                 database_url=f"sqlite:///{tmp_path / 'store.db'}", node_id="flow").start()
    send_hl7(hl7_port, "adt_a04_register", "orm_o01_nw", tmp=tmp_path)
    send_ordered_head_ct(dicom_port, tmp_path / "study")

    wait_until(lambda: len(outbox(node, "pacs", "*.dcm")) >= 2, 120, "the SR and the SEG")
    wait_until(lambda: outbox(node, "ehr", "*.json") and len(outbox(node, "ris", "*.hl7")) >= 2,
               30, "the HL7 and FHIR outputs")

    [priority] = outbox(node, "ris", "priority-*.hl7")
    [oru] = outbox(node, "ris", "oru-*.hl7")
    bump = hl7.parse(priority.read_text().replace("\n", "\r"))
    assert str(bump.segment("MSH")(9)).startswith("ORM^O01")
    report = hl7.parse(oru.read_text().replace("\n", "\r"))
    assert str(report.segment("MSH")(9)).startswith("ORU^R01")
    assert "ACC26120001" in oru.read_text() and "DEMONSTRATION" in oru.read_text()
    assert priority.stat().st_mtime <= oru.stat().st_mtime + 1.0

    [bundle_file] = outbox(node, "ehr", "*.json")
    bundle = json.loads(bundle_file.read_text())
    kinds = [entry["resource"]["resourceType"] for entry in bundle["entry"]]
    assert bundle["type"] == "transaction" and "DiagnosticReport" in kinds
    report_resource = next(e["resource"] for e in bundle["entry"]
                           if e["resource"]["resourceType"] == "DiagnosticReport")
    assert report_resource["status"] == "preliminary"

    objects = [pydicom.dcmread(path) for path in outbox(node, "pacs", "*.dcm")]
    assert sorted(o.Modality for o in objects) == ["SEG", "SR"]
    for path, made in zip(outbox(node, "pacs", "*.dcm"), objects, strict=True):
        assert made.StudyInstanceUID == ORDERED_STUDY
        checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        errors = [line for line in checked.stderr.splitlines() if line.startswith("Error")]
        assert errors == [], errors

    trail = node.cli("audit", "query", "--patient-id", "MRN100999", "--limit", "500")
    actions = {event["action"] for event in json.loads(trail.stdout)["events"]}
    assert {"registry.order.created", "correlation.linked", "dicom.study-ready",
            "inference.run"} <= actions, actions
