"""Clinical QA end to end, through the production paths: six months of wrist X-rays from
two scanner models, ordered over MLLP (ORM^O01 with the Study Instance UID), sent over
C-STORE, read by the fracture model, then reported final by "the radiologists" over MLLP
(ORU^R01, OBR-25 F, text only: the call comes from the report text). From April on,
scanner model B writes its pixels 200 higher (a calibration change); the model starts
calling B's normal wrists fractured.

The checks: the agreement per scanner model equals a count made here from the same
data (each study's AI call from the API, the truth the generator was given); the drift
view flags B's score distribution and its input pixel statistics and leaves A alone; a
monitor pass raises one alert per drifted measure, and a second pass none."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from radbridge.inference.demo.synthetic import PatientInfo, Scanner, generate_study
from tests.e2e.conftest import Spawn, free_port, wait_until
from tests.e2e.test_correlation_flows import shipped
from tests.peers import dcmtk

pytestmark = pytest.mark.slow

MONTHS = ("20260115", "20260216", "20260316", "20260415", "20260515", "20260615")
SHIFTED_FROM = 3  # April: scanner B's calibration changes
PER_MONTH = 8  # studies per scanner model per month, half with a fracture
SCANNERS = {
    "NW-DX-A": Scanner(manufacturer="Northwind Imaging", model="NW-DX-A", station="XR1"),
    "NW-DX-B": Scanner(manufacturer="Northwind Imaging", model="NW-DX-B", station="XR2"),
}
MODEL = "fracture-xr"
FRACTURE = "72704001"


@dataclass(frozen=True)
class Case:
    number: int
    scanner: str
    month: int
    positive: bool

    @property
    def accession(self) -> str:
        return f"QA{self.number:05d}"

    @property
    def patient_id(self) -> str:
        return f"QAP{self.number:05d}"

    @property
    def shifted(self) -> bool:
        return self.scanner == "NW-DX-B" and self.month >= SHIFTED_FROM


def cases() -> list[Case]:
    made, number = [], 0
    for month in range(len(MONTHS)):
        for scanner in SCANNERS:
            for index in range(PER_MONTH):
                number += 1
                made.append(Case(number, scanner, month, positive=index % 2 == 0))
    return made


def channels(hl7_port: int, dicom_port: int) -> str:
    """The shipped channels, and one that archives drift alerts."""
    alerts = "name: qa-alerts\nsource: {type: channel}\ndestinations:\n" \
             "  - {name: archive, type: file, directory: outbox/qa-alerts}\n"
    return shipped(hl7_port, dicom_port) + "\n---\n" + alerts


def segment(name: str, fields: dict[int, str]) -> str:
    values = [fields.get(i, "") for i in range(1, max(fields) + 1)]
    return "MSH|" + "|".join(values[1:]) if name == "MSH" else "|".join([name, *values])


def msh(kind: str, control: str, when: str) -> str:
    return segment("MSH", {1: "|", 2: "^~\\&", 3: "NW_RIS", 4: "NORTHWIND", 5: "RADBRIDGE",
                           6: "NORTHWIND", 7: when, 9: kind, 10: control, 11: "P",
                           12: "2.5.1"})


def pid(case: Case) -> str:
    sex = "F" if case.number % 3 else "M"
    return segment("PID", {1: "1", 3: f"{case.patient_id}^^^NORTHWIND^MR",
                           5: f"QAPATIENT^{case.number}", 7: f"19{40 + case.number % 50}0101",
                           8: sex})


def order(case: Case, study_uid: str) -> str:
    when = f"{MONTHS[case.month]}0800"
    placer, filler = f"QPL{case.number:05d}^NW_EHR", f"QFI{case.number:05d}^NW_RIS"
    return "\r".join([
        msh("ORM^O01^ORM_O01", f"QA-ORM-{case.number}", when), pid(case),
        segment("ORC", {1: "NW", 2: placer, 3: filler, 5: "SC", 7: f"^^^{when}^^R"}),
        segment("OBR", {1: "1", 2: placer, 3: filler, 4: "XRWRIST^XR WRIST 2 VIEWS^NWRAD",
                        18: case.accession, 24: "DX"}),
        segment("ZDS", {1: f"{study_uid}^NW_RIS^Application^DICOM"})]) + "\r"


def final_report(case: Case) -> str:
    """The radiologist's final report: the truth, in words only (no coded finding)."""
    when = f"{MONTHS[case.month]}1500"
    impression = ("Acute nondisplaced fracture of the distal radius." if case.positive
                  else "No acute fracture or dislocation.")
    lines = ["EXAMINATION: XR wrist, two views.", f"IMPRESSION: {impression}"]
    placer, filler = f"QPL{case.number:05d}^NW_EHR", f"QFI{case.number:05d}^NW_RIS"
    return "\r".join([
        msh("ORU^R01^ORU_R01", f"QA-ORU-{case.number}", when), pid(case),
        segment("ORC", {1: "RE", 2: placer, 3: filler}),
        segment("OBR", {1: "1", 2: placer, 3: filler, 4: "XRWRIST^XR WRIST 2 VIEWS^NWRAD",
                        7: when, 18: case.accession, 22: when, 24: "DX", 25: "F"}),
        *(segment("OBX", {1: str(n), 2: "TX", 3: "18782-3^Radiology report^LN", 5: line,
                          11: "F"}) for n, line in enumerate(lines, 1))]) + "\r"


def send_hl7(port: int, folder: Path, messages: list[str]) -> None:
    folder.mkdir()
    files = []
    for index, text in enumerate(messages):
        path = folder / f"{index:04d}.hl7"
        path.write_bytes(text.encode())
        files.append(str(path))
    sent = subprocess.run([sys.executable, "-m", "radbridge", "send", "hl7", *files, "--to",
                           f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=120)
    assert sent.returncode == 0, sent.stdout[-2000:] + sent.stderr[-2000:]


def send_studies(port: int, folder: Path, studies: dict[int, object]) -> None:
    folder.mkdir()
    files = []
    for number, study in studies.items():
        for index, dataset in enumerate(study.datasets):  # type: ignore[attr-defined]
            path = folder / f"{number:05d}-{index}.dcm"
            dataset.save_as(path, enforce_file_format=True)
            files.append(path)
    sent = dcmtk.storescu("127.0.0.1", port, files, "RADBRIDGE")
    assert sent.returncode == 0, sent.stdout + sent.stderr


def ai_calls(node, study_uids: dict[int, str]) -> dict[int, bool]:
    """Each study's fracture-xr call as the engine recorded it (API), by case number."""
    calls = {}
    for number, study_uid in study_uids.items():
        runs = node.client.get("/api/inference", params={"study_uid": study_uid}).json()["runs"]
        [run] = [r for r in runs if r["model_name"] == MODEL and r["status"] == "done"]
        calls[number] = bool(run["positive"])
    return calls


def cli_json(node, *args: str) -> dict:
    done = node.cli("qa", *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_months_of_traffic_with_a_scanner_that_drifts(spawn: Spawn, tmp_path: Path) -> None:
    hl7_port, dicom_port = free_port(), free_port()
    node = spawn(channel_yaml=channels(hl7_port, dicom_port),
                 database_url=f"sqlite:///{tmp_path / 'store.db'}", node_id="qa").start()
    traffic = cases()
    studies = {case.number: generate_study(
        MODEL, positive=case.positive, seed=7000 + case.number, accession=case.accession,
        study_date=MONTHS[case.month],
        patient=PatientInfo(patient_id=case.patient_id, issuer="NORTHWIND",
                            name=f"QAPATIENT^{case.number}"),
        scanner=replace(SCANNERS[case.scanner], shift=200.0 if case.shifted else 0.0))
        for case in traffic}
    study_uids = {n: str(s.datasets[0].StudyInstanceUID) for n, s in studies.items()}
    send_hl7(hl7_port, tmp_path / "orders", [order(c, study_uids[c.number]) for c in traffic])
    send_studies(dicom_port, tmp_path / "studies", studies)

    def observed() -> int:
        report = cli_json(node, "agreement", "--model", MODEL)
        return sum(row["n"] for row in report["rows"])

    wait_until(lambda: observed() == len(traffic), 240, "every study read by the model")
    send_hl7(hl7_port, tmp_path / "reports", [final_report(c) for c in traffic])

    def paired() -> int:
        report = cli_json(node, "agreement", "--model", MODEL)
        return sum(row["paired"] for row in report["rows"])

    wait_until(lambda: paired() == len(traffic), 120, "every final report read")

    # agreement per scanner model, against a count made here from the same data
    calls = ai_calls(node, study_uids)
    window = ("--since", "2026-04-01", "--until", "2026-06-30")
    report = cli_json(node, "agreement", "--model", MODEL, "--by", "model", *window)
    rows = {row["group"]: row["agreement"] for row in report["rows"]}
    by_scanner = {group: {cell: figures["counts"][cell] for cell in ("tp", "fp", "tn", "fn")}
                  for group, figures in rows.items()}
    for scanner in SCANNERS:
        mine = [c for c in traffic if c.scanner == scanner and c.month >= SHIFTED_FROM]
        expected = {
            "tp": sum(calls[c.number] and c.positive for c in mine),
            "fp": sum(calls[c.number] and not c.positive for c in mine),
            "tn": sum(not calls[c.number] and not c.positive for c in mine),
            "fn": sum(not calls[c.number] and c.positive for c in mine)}
        assert by_scanner[scanner] == expected, (scanner, by_scanner[scanner], expected)
        specificity = expected["tn"] / (expected["tn"] + expected["fp"])
        sensitivity = expected["tp"] / (expected["tp"] + expected["fn"])
        assert rows[scanner]["specificity"]["value"] == pytest.approx(specificity)
        assert rows[scanner]["sensitivity"]["value"] == pytest.approx(sensitivity)
    shifted_fp = by_scanner["NW-DX-B"]["fp"]
    assert shifted_fp >= PER_MONTH, "the shifted scanner's normal wrists read as fractures"
    assert by_scanner["NW-DX-A"]["fp"] <= 2

    # drift: B's scores and input pixels against the first quarter; A stays put
    drift = cli_json(node, "drift", "--model", MODEL, "--baseline", "2026-01-01..2026-03-31",
                     "--current", "2026-04-01..2026-06-30", "--by-scanner")
    [only] = drift["reports"]
    scanners = {row["scanner_model"]: row for row in only["scanners"]}
    assert scanners["NW-DX-B"]["judgement"]["verdict"] == "alert"
    assert scanners["NW-DX-A"]["judgement"]["verdict"] == "stable"
    pixels = {item["name"]: item for item in only["inputs"]}
    assert pixels["pixel_mean"]["judgement"]["verdict"] in ("warn", "alert")
    assert pixels["pixel_mean"]["current"]["mean"] > pixels["pixel_mean"]["baseline"]["mean"]

    # the monitor, as of the end of June: alerts once, then nothing new
    first = cli_json(node, "monitor", "--as-of", "2026-06-30", "--period-days", "91",
                     "--baseline-days", "90", "--min-group", "12", "--alert-channel", "qa-alerts")
    raised = [alert for alert in first["alerts"] if alert["new"]]
    measures = {alert["measure"] for alert in raised}
    assert "scanner:NW-DX-B" in measures and "scanner:NW-DX-A" not in measures
    again = cli_json(node, "monitor", "--as-of", "2026-06-30", "--period-days", "91",
                     "--baseline-days", "90", "--min-group", "12", "--alert-channel", "qa-alerts")
    assert again["alerts"] and not any(alert["new"] for alert in again["alerts"])
    wait_until(lambda: len(list((node.data_dir / "outbox" / "qa-alerts").glob("*"))) == len(
        raised), 30, "one alert message per drifted measure")
