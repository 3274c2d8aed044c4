"""DICOM through a real `radbridge run`, with dcmtk as the modality and Orthanc as the PACS.

1. dcmtk's storescu pushes a CT series: every instance is indexed, the study is
   announced ready after its quiet period, a late instance re-announces it as version 2.
2. A study whose modality announced an MPPS is held (its quiet period is long) until the
   MPPS N-SET COMPLETED names instances that have all arrived, then announced at once.
3. A study in Orthanc is pulled by C-MOVE to our SCP (`radbridge dicom retrieve`).
4. A DICOM SR made with highdicom goes back to the PACS through the outbox by C-STORE
   and by STOW-RS, and Orthanc finds it by QIDO-RS.
Everything is in the audit ledger, which verifies.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import highdicom
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep

from tests import dicom_data
from tests.e2e.conftest import Spawn, assert_audit_verifies, free_port, wait_until
from tests.peers import dcmtk
from tests.peers.orthanc import OrthancPeer

pytestmark = pytest.mark.slow


def channels(dicom_port: int, orthanc: OrthancPeer) -> str:
    return f"""\
name: dicom-in
source:
  type: dimse
  ae_title: RADBRIDGE
  port: {dicom_port}
  allowed_calling_aes: [STORESCU, MODALITY, ORTHANC]
assembly:
  ready_channel: study-ready
  quiet_period: {{default: 2s, MR: 10m}}
  mpps_timeout: 10m
destinations:
  - {{name: archive, type: "null"}}
---
name: study-ready
source: {{type: channel}}
destinations:
  - {{name: log, type: "null"}}
---
name: results-out
source: {{type: http}}
destinations:
  - name: pacs-dimse
    type: dimse
    peer: {{ae_title: {orthanc.ae_title}, host: 127.0.0.1, port: {orthanc.dicom_port}}}
  - name: pacs-web
    type: stow-rs
    url: {orthanc.dicomweb_url}
"""


def study(node, uid: str) -> dict:
    response = node.client.get(f"/api/studies/{uid}")
    return response.json() if response.status_code == 200 else {}


def ready_events(node) -> list[dict]:
    rows = node.client.get("/api/messages", params={"channel": "study-ready"}).json()
    events = []
    for row in rows["messages"]:
        detail = node.client.get(f"/api/messages/{row['id']}", params={"content": "true"}).json()
        events.append(json.loads(detail["stages"][0]["content"]))
    return events


def mpps(port: int, step_uid: str, study_uid: str, status: str,
         instances: list[Path] | None = None) -> int:
    """N-CREATE (IN PROGRESS) or N-SET (COMPLETED, naming the instances) from a modality."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", port, ae_title="RADBRIDGE")
    assert assoc.is_established
    try:
        ds = Dataset()
        if instances is None:
            scheduled = Dataset()
            scheduled.StudyInstanceUID = study_uid
            scheduled.AccessionNumber = "ACC-MR"
            ds.ScheduledStepAttributesSequence = [scheduled]
            ds.PatientID = "RB-MPPS"
            ds.Modality = "MR"
            ds.PerformedProcedureStepStatus = status
            answer, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, step_uid)
        else:
            series = Dataset()
            first = pydicom.dcmread(instances[0], stop_before_pixels=True)
            series.SeriesInstanceUID = first.SeriesInstanceUID
            refs = []
            for path in instances:
                header = pydicom.dcmread(path, stop_before_pixels=True)
                ref = Dataset()
                ref.ReferencedSOPClassUID = header.SOPClassUID
                ref.ReferencedSOPInstanceUID = header.SOPInstanceUID
                refs.append(ref)
            series.ReferencedImageSequence = refs
            ds.PerformedSeriesSequence = [series]
            ds.PerformedProcedureStepStatus = status
            answer, _ = assoc.send_n_set(ds, ModalityPerformedProcedureStep, step_uid)
        return int(answer.Status)
    finally:
        assoc.release()


def make_sr(source: Path, out: Path) -> pydicom.Dataset:
    image = pydicom.dcmread(source)
    finding = highdicom.sr.QualitativeEvaluation(
        name=highdicom.sr.CodedConcept("ICHFinding", "99RADBRIDGE", "Intracranial hemorrhage"),
        value=highdicom.sr.CodedConcept("373068000", "SCT", "Undetermined"))
    observer = highdicom.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=highdicom.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name="radbridge-demo-ich", model_name="demo 0.1"))
    group = highdicom.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=highdicom.sr.TrackingIdentifier(uid=generate_uid(),
                                                                identifier="AI finding 1"),
        qualitative_evaluations=[finding],
        referenced_real_world_value_map=None)
    report = highdicom.sr.MeasurementReport(
        observation_context=highdicom.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=highdicom.sr.CodedConcept("24627-2", "LN", "CT Chest"),
        imaging_measurements=[group])
    sr = highdicom.sr.Comprehensive3DSR(
        evidence=[image], content=report[0], series_number=99, series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="Radbridge")
    sr.save_as(out, enforce_file_format=True)
    return sr


def test_push_assemble_pull_and_send_results_back(spawn: Spawn, orthanc: OrthancPeer,
                                                   tmp_path: Path) -> None:
    orthanc.clear()
    port = free_port()
    node = spawn(channel_yaml=channels(port, orthanc),
                 database_url=f"sqlite:///{tmp_path / 'store.db'}", node_id="dicom").start()

    # 1. push, quiet period, late instance
    ct = dicom_data.make_ct_series(tmp_path / "ct", 6, rows=64, columns=64, seed=11)
    first_five, late = ct[:5], ct[5]
    sent = dcmtk.storescu("127.0.0.1", port, first_five, "RADBRIDGE")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    ct_uid = str(pydicom.dcmread(ct[0], stop_before_pixels=True).StudyInstanceUID)
    assert study(node, ct_uid)["instance_count"] == 5  # indexed before the success status
    wait_until(lambda: study(node, ct_uid).get("state") == "ready", 30, "the CT study ready")
    assert study(node, ct_uid)["ready_reason"] == "quiet-period"
    assert dcmtk.storescu("127.0.0.1", port, [late], "RADBRIDGE").returncode == 0
    wait_until(lambda: study(node, ct_uid).get("ready_version") == 2
               and study(node, ct_uid).get("state") == "ready", 30, "version 2")
    versions = sorted((e["version"], e["supersedes"], e["instance_count"])
                      for e in ready_events(node) if e["study_uid"] == ct_uid)
    assert versions == [(1, None, 5), (2, 1, 6)]

    # 2. MPPS: held past the quiet period, released by N-SET COMPLETED
    mr = dicom_data.make_ct_series(tmp_path / "mr", 3, rows=64, columns=64, seed=12,
                                   Modality="MR")
    mr_uid = str(pydicom.dcmread(mr[0], stop_before_pixels=True).StudyInstanceUID)
    step = generate_uid()
    assert mpps(port, step, mr_uid, "IN PROGRESS") == 0
    assert dcmtk.storescu("127.0.0.1", port, mr, "RADBRIDGE", calling_ae="MODALITY"
                          ).returncode == 0
    time.sleep(3)  # longer than the default quiet period: MR waits for its step
    assert study(node, mr_uid)["state"] == "collecting"
    began = time.monotonic()
    assert mpps(port, step, mr_uid, "COMPLETED", mr) == 0
    wait_until(lambda: study(node, mr_uid).get("state") == "ready", 30, "the MR study ready")
    assert study(node, mr_uid)["ready_reason"] == "mpps"
    assert time.monotonic() - began < 10

    # 3. pull from the PACS by C-MOVE
    pacs = dicom_data.make_ct_series(tmp_path / "pacs", 3, rows=64, columns=64, seed=13)
    for path in pacs:
        orthanc.upload(path)
    pacs_uid = str(pydicom.dcmread(pacs[0], stop_before_pixels=True).StudyInstanceUID)
    orthanc.add_modality("radbridge", "RADBRIDGE", port)
    moved = subprocess.run(
        [sys.executable, "-m", "radbridge", "dicom", "retrieve", "--peer",
         f"{orthanc.ae_title}@127.0.0.1:{orthanc.dicom_port}", "--study-uid", pacs_uid,
         "--move-to", "RADBRIDGE"], capture_output=True, text=True, timeout=120)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    wait_until(lambda: study(node, pacs_uid).get("instance_count") == 3, 30, "moved study")

    # 4. an SR back to the PACS by C-STORE and STOW-RS
    orthanc.clear()
    sr = make_sr(ct[0], tmp_path / "sr.dcm")
    posted = node.client.post("/api/channels/results-out/messages",
                              content=(tmp_path / "sr.dcm").read_bytes(),
                              headers={"Content-Type": "application/dicom"})
    assert posted.status_code == 202, posted.text
    message_id = posted.json()["message_id"]

    def delivered() -> bool:
        detail = node.client.get(f"/api/messages/{message_id}").json()
        return sorted(d["status"] for d in detail["deliveries"]) == ["sent", "sent"]

    wait_until(delivered, 60, "the SR delivered to both destinations")
    found = DICOMwebClient(url=orthanc.dicomweb_url).search_for_instances(
        search_filters={"SOPInstanceUID": sr.SOPInstanceUID})
    assert [item["00080018"]["Value"][0] for item in found] == [sr.SOPInstanceUID]
    stored = pydicom.dcmread(io.BytesIO(orthanc.instance_file(
        orthanc.find_instance(sr.SOPInstanceUID))))
    assert stored.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert stored.SOPInstanceUID == sr.SOPInstanceUID

    assert_audit_verifies(node)
