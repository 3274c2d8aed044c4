"""`radbridge demo` as a user runs it: a real subprocess that starts its own engine, sends
over real MLLP and C-STORE, and reports JSON. First on the embedded defaults (every
output a file under outbox/), then with `--ris` pointing at a real MLLP listener (the
test RIS, python-hl7's own server) that must receive the priority update and the ORU."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hl7
import pydicom
import pytest

from tests.e2e.conftest import _child_environment, report
from tests.ris_listener import TestRis

pytestmark = pytest.mark.slow

DEMO_TIMEOUT = 120


def run_demo(data_dir: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], float]:
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "radbridge", "demo", "--data-dir", str(data_dir), "--json",
         "--timeout", "60", *extra],
        capture_output=True, text=True, timeout=DEMO_TIMEOUT, env=_child_environment(),
        stdin=subprocess.DEVNULL, check=False)
    return done, time.monotonic() - began


def summary_of(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, f"demo exited {done.returncode}:\n{done.stderr[-4000:]}"
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def test_the_demo_writes_every_output_and_reports_findings_and_latencies(
        tmp_path: Path) -> None:
    done, took = run_demo(tmp_path / "demo")
    summary = summary_of(done)
    report(f"radbridge demo (files): {took:.1f} s in all")
    assert summary["ok"] and summary["missing"] == []
    [finding] = [f for f in summary["findings"] if f["status"] == "done"]
    assert finding["model"] == "ich-ct" and finding["demonstration"] is True
    assert finding["positive"] is True and finding["probability"] >= 0.5
    assert finding["location_mm"] is not None
    assert summary["ready_to_answer_s"] is not None and summary["ready_to_answer_s"] >= 0

    outbox = tmp_path / "demo" / "data" / "outbox"
    outputs = summary["outputs"]
    assert set(outputs) == {"priority", "oru", "bundle", "sr", "seg"}
    for kind, seen in outputs.items():
        path = Path(seen["where"])
        assert path.is_file() and path.is_relative_to(outbox), (kind, path)
        assert seen["from_answer_s"] is not None and seen["from_ready_s"] is not None
        assert seen["from_ready_s"] >= seen["from_answer_s"] - 0.01, (kind, seen)
    accession = summary["case"]["accession"]
    priority = hl7.parse(Path(outputs["priority"]["where"]).read_text().replace("\n", "\r"))
    assert str(priority.segment("MSH")(9)).startswith("ORM^O01")
    oru_text = Path(outputs["oru"]["where"]).read_text()
    assert accession in oru_text and "DEMONSTRATION" in oru_text
    bundle = json.loads(Path(outputs["bundle"]["where"]).read_text())
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    for kind, modality in (("sr", "SR"), ("seg", "SEG")):
        made = pydicom.dcmread(outputs[kind]["where"], stop_before_pixels=True)
        assert made.Modality == modality
        assert made.StudyInstanceUID == summary["case"]["study_uid"]

    actions = {event["action"] for event in summary["audit"]}
    assert {"registry.order.created", "correlation.linked", "dicom.study-ready",
            "inference.run"} <= actions, actions
    assert "DEMO^SYNTHETIC" not in done.stdout, "the summary must not carry the name"


def test_the_demo_sends_the_priority_update_and_the_oru_to_a_real_ris(tmp_path: Path) -> None:
    with TestRis() as ris:
        done, took = run_demo(tmp_path / "demo", "--ris", f"127.0.0.1:{ris.port}")
        summary = summary_of(done)
        received = list(ris.received)
    report(f"radbridge demo (--ris): {took:.1f} s in all")
    kinds = sorted(str(hl7.parse(text).segment("MSH")(9)).split("^")[0] for text in received)
    assert kinds == ["ORM", "ORU"], kinds
    accession = summary["case"]["accession"]
    assert all(accession in text for text in received)
    for kind in ("priority", "oru"):
        seen = summary["outputs"][kind]
        assert seen["where"] == f"mllp://127.0.0.1:{ris.port}"
        assert seen["from_answer_s"] is not None
    assert set(summary["outputs"]) == {"priority", "oru", "bundle", "sr", "seg"}
    assert not list((tmp_path / "demo" / "data" / "outbox" / "ris").glob("*.hl7"))


def test_the_demo_against_a_real_ris_ehr_and_pacs(tmp_path: Path, fhir_server,
                                                  orthanc) -> None:
    """The full flow against real peers: the test RIS over MLLP, Medplum's FHIR engine
    (validation on) and Orthanc over C-STORE."""
    fhir_server.reset()
    with TestRis() as ris:
        done, took = run_demo(
            tmp_path / "demo", "--ris", f"127.0.0.1:{ris.port}",
            "--ehr", fhir_server.base_url,
            "--pacs", f"{orthanc.ae_title}@127.0.0.1:{orthanc.dicom_port}")
        summary = summary_of(done)
        received = list(ris.received)
    report(f"radbridge demo (--ris --ehr --pacs): {took:.1f} s in all")
    assert sorted(str(hl7.parse(t).segment("MSH")(9)).split("^")[0] for t in received) == [
        "ORM", "ORU"]
    accession = summary["case"]["accession"]
    [report_resource] = fhir_server.search("DiagnosticReport")
    assert report_resource["status"] == "preliminary"
    assert fhir_server.search("ServiceRequest", identifier=accession)
    study_uid = summary["case"]["study_uid"]
    series = orthanc.http.get(f"/dicom-web/studies/{study_uid}/series").json()
    modalities = {item["00080060"]["Value"][0] for item in series}
    assert {"SR", "SEG"} <= modalities, modalities
