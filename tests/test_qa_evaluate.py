"""`radbridge qa evaluate`: the shipped fracture and fundus demonstration models on a small
held-out set generated with two scanner models, known labels (two of them contradicting
the generated truth, as a radiologist may) and a `site` column; every expectation is
recounted here from the labels written and the per-study records the JSON holds."""

from __future__ import annotations

import csv
import json
import socket
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmwrite

from radbridge.inference.cards import shipped_folder
from radbridge.inference.demo.synthetic import PatientInfo, Scanner, generate_study
from radbridge.interfaces.cli import main

FRACTURE, RETINOPATHY = "72704001", "4855003"
ACME = Scanner(manufacturer="Acme Imaging", model="AX-100", station="ROOM1")
BOREALIS = Scanner(manufacturer="Borealis Medical", model="BX-7", station="ROOM2")
PATIENT_NAME, PATIENT_ID, BIRTH_DATE = "DOE^JANE", "QA-MRN-7731", "19480229"
FLIPPED = {3, 4, 6}
"""Fracture studies whose label contradicts what was generated: one false negative and
two false positives for the model, so that neither the table nor the AUC is trivially
perfect and a table with AI and label swapped would differ."""


@dataclass(frozen=True)
class HeldOut:
    folder: Path
    labels: Path
    truth: dict[tuple[str, str], bool]
    """(study UID, finding code) -> the label written."""
    scanner: dict[str, str]
    """study UID -> ManufacturerModelName."""
    accession: dict[str, str]
    not_taken: str
    """A fundus study labelled for fracture too: the fracture model does not take it."""


def _write(folder: Path, datasets: list[Any], shelf: int) -> None:
    """Studies mixed across nested folders: grouping must come from the headers."""
    for ds in datasets:
        target = folder / f"shelf{shelf % 3}" / ("deep" if shelf % 2 else "")
        target.mkdir(parents=True, exist_ok=True)
        dcmwrite(target / f"{ds.SOPInstanceUID}.dcm", ds, enforce_file_format=True)


def build_held_out(root: Path) -> HeldOut:
    folder = root / "studies"
    rows: list[dict[str, str]] = []
    truth: dict[tuple[str, str], bool] = {}
    scanner: dict[str, str] = {}
    accession: dict[str, str] = {}
    for i in range(12):
        generated = i % 2 == 0
        study = generate_study(
            "fracture-xr", positive=generated, seed=300 + i,
            scanner=ACME if i < 6 else BOREALIS,
            patient=PatientInfo(patient_id=PATIENT_ID, name=PATIENT_NAME,
                                sex="FM"[i % 2], birth_date=BIRTH_DATE))
        _write(folder, study.datasets, i)
        uid = str(study.datasets[0].StudyInstanceUID)
        label = generated != (i in FLIPPED)
        truth[(uid, FRACTURE)] = label
        scanner[uid] = study.datasets[0].ManufacturerModelName
        accession[uid] = study.datasets[0].AccessionNumber
        rows.append({"study_uid": uid, "accession": "", "finding": FRACTURE,
                     "label": ("positive", "1", "TRUE")[i % 3] if label
                     else ("negative", "0", "false")[i % 3],
                     "site": "north" if i % 3 else "south"})
    for i in range(4):
        study = generate_study("dr-fundus", positive=i % 2 == 0, seed=400 + i,
                               scanner=ACME if i < 2 else BOREALIS)
        _write(folder, study.datasets, i)
        uid = str(study.datasets[0].StudyInstanceUID)
        truth[(uid, RETINOPATHY)] = i % 2 == 0
        scanner[uid] = study.datasets[0].ManufacturerModelName
        accession[uid] = study.datasets[0].AccessionNumber
        rows.append({"study_uid": "", "accession": accession[uid], "finding": RETINOPATHY,
                     "label": str(int(i % 2 == 0)), "site": "north"})
    not_taken = next(uid for (uid, code) in truth if code == RETINOPATHY)
    rows.append({"study_uid": not_taken, "accession": "", "finding": FRACTURE, "label": "0",
                 "site": "north"})
    unlabelled = generate_study("fracture-xr", positive=True, seed=399, scanner=ACME)
    _write(folder, unlabelled.datasets, 1)
    (folder / "README.txt").write_text("not DICOM")
    labels = root / "labels.csv"
    write_csv(labels, rows)
    return HeldOut(folder, labels, truth, scanner, accession, not_taken)


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> HeldOut:
    return build_held_out(tmp_path_factory.mktemp("held-out"))


@pytest.fixture(scope="module")
def evaluated(held_out: HeldOut, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("qa-out")
    code = main(["qa", "evaluate", str(held_out.folder), "--labels", str(held_out.labels),
                 "--out", str(out), "--min-group", "5", "--json"])
    assert code == 0
    return out, json.loads((out / "evaluation.json").read_text())


def _finding(document: dict[str, Any], model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    [entry] = [m for m in document["models"] if m["name"] == model]
    [finding] = entry["findings"]
    return entry, finding


def _recount(records: list[dict[str, Any]]) -> dict[str, int]:
    pairs = [(r["ai_positive"], r["label"]) for r in records]
    return {"tp": pairs.count((True, True)), "fp": pairs.count((True, False)),
            "tn": pairs.count((False, False)), "fn": pairs.count((False, True)),
            "total": len(pairs)}


def _pair_auc(records: list[dict[str, Any]]) -> float:
    positives = [r["score"] for r in records if r["label"]]
    negatives = [r["score"] for r in records if not r["label"]]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0
               for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def test_every_labelled_study_is_run_and_recorded_with_its_label(held_out, evaluated):
    _, document = evaluated
    assert document["held_out"]["studies"] == 17  # 16 labelled and one without labels
    assert document["held_out"]["labelled_studies"] == 16
    assert {m["name"] for m in document["models"]} == {"fracture-xr", "dr-fundus"}
    for model, code in (("fracture-xr", FRACTURE), ("dr-fundus", RETINOPATHY)):
        _, finding = _finding(document, model)
        assert finding["code"] == code
        recorded = {(r["study_uid"], code): r["label"] for r in finding["records"]}
        assert recorded == {k: v for k, v in held_out.truth.items() if k[1] == code}
        for record in finding["records"]:
            assert record["ai_positive"] == (record["score"] >= finding["threshold"])
            assert record["scanner_model"] == held_out.scanner[record["study_uid"]]
    fracture, _ = _finding(document, "fracture-xr")
    [skipped] = fracture["skipped"]
    assert skipped["study_uid"] == held_out.not_taken
    assert "modality OP is not DX" in skipped["reason"]
    assert _finding(document, "dr-fundus")[0]["skipped"] == []


def test_counts_auc_and_breakdowns_match_a_recount(held_out, evaluated):
    _, document = evaluated
    _, finding = _finding(document, "fracture-xr")
    records = finding["records"]
    assert finding["metrics"]["counts"] == _recount(records)
    counts = finding["metrics"]["counts"]
    assert counts["fp"] != counts["fn"]  # the flipped labels: swapped columns would show
    assert finding["auc"]["value"] == pytest.approx(_pair_auc(records), abs=1e-12)
    assert finding["auc"]["value"] < 1.0
    sensitivity = finding["metrics"]["sensitivity"]
    assert (sensitivity["numerator"], sensitivity["denominator"]) == (
        counts["tp"], counts["tp"] + counts["fn"])

    by_model = {g["value"]: g for g in finding["breakdowns"]["model"]}
    assert set(by_model) == {"AX-100", "BX-7"}
    for value, group in by_model.items():
        members = [r for r in records if r["scanner_model"] == value]
        assert group["metrics"]["counts"] == _recount(members)
        assert group["studies"] == len(members) == 6
        assert group["small"] is False  # --min-group 5
    summed = {cell: sum(g["metrics"]["counts"][cell] for g in by_model.values())
              for cell in ("tp", "fp", "tn", "fn", "total")}
    assert summed == counts
    by_site = {g["value"]: g["studies"] for g in finding["breakdowns"]["site"]}
    assert by_site == {"north": 8, "south": 4}
    assert {g["value"] for g in finding["breakdowns"]["sex"]} == {"female", "male"}
    assert {g["value"] for g in finding["breakdowns"]["age_band"]} == {"65-79"}

    _, fundus = _finding(document, "dr-fundus")
    assert all(g["small"] for g in fundus["breakdowns"]["model"])  # 2 studies each


def test_the_results_carry_no_patient_identifiers(held_out, evaluated):
    out, _ = evaluated
    for name in ("evaluation.json", "report.html"):
        written = (out / name).read_text()
        for value in (PATIENT_NAME, PATIENT_ID, BIRTH_DATE, *held_out.accession.values()):
            assert value not in written, (name, value)


class _Outline(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_the_report_is_one_page_with_plots_and_every_model(held_out, evaluated):
    out, document = evaluated
    page = (out / "report.html").read_text()
    outline = _Outline()
    outline.feed(page)
    outline.close()
    text = " ".join(outline.text)
    findings = sum(len(m["findings"]) for m in document["models"])
    assert outline.tags.count("svg") == 3 * findings  # ROC, histogram, scanner bars
    assert outline.tags.count("polyline") == findings  # one ROC curve each
    assert outline.tags.count("figcaption") == 3 * findings
    assert not {"script", "link", "img", "iframe"} & set(outline.tags)
    for model in document["models"]:
        assert f"{model['name']} {model['version']}" in text
        assert model["card_sha256"] in text
    assert "Demonstration model" in text and "small" in text
    assert "did not run on" in text and held_out.not_taken in text


def evaluate_with(rows, held_out, tmp_path, capsys):
    """Run the CLI on the held-out folder with `rows` as the labels: (file, code, stderr)."""
    bad = tmp_path / "labels.csv"
    write_csv(bad, rows)
    code = main(["qa", "evaluate", str(held_out.folder), "--labels", str(bad),
                 "--out", str(tmp_path / "out")])
    return bad, code, capsys.readouterr().err


def test_bad_rows_are_refused_with_their_line_and_column(held_out, tmp_path, capsys):
    rows = read_csv(held_out.labels)
    rows[2]["label"] = "maybe"  # line 4: the header is line 1
    rows[5]["finding"] = "999999"
    bad, code, err = evaluate_with(rows, held_out, tmp_path, capsys)
    assert code == 2
    assert f"{bad}:4: column label: 'maybe'" in err
    assert f"{bad}:7: column finding: '999999'" in err
    assert not (tmp_path / "out").exists()


def test_a_label_for_a_study_not_in_the_folder_is_an_error(held_out, tmp_path, capsys):
    rows = read_csv(held_out.labels)
    by_accession = next(row for row in rows if row["accession"])
    rows.append({**rows[0], "study_uid": "1.2.3.4.5"})
    rows.append({**by_accession, "accession": "NO-SUCH-ACC"})
    bad, code, err = evaluate_with(rows, held_out, tmp_path, capsys)
    assert code == 2
    assert f"{bad}:{len(rows)}: column study_uid: no study 1.2.3.4.5" in err
    assert f"{bad}:{len(rows) + 1}: column accession: no study with accession" in err


def test_a_second_label_for_one_study_and_finding_is_an_error(held_out, tmp_path, capsys):
    rows = read_csv(held_out.labels)
    rows.append(dict(rows[1]))
    bad = tmp_path / "labels.csv"
    write_csv(bad, rows)
    assert main(["qa", "evaluate", str(held_out.folder), "--labels", str(bad),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:{len(rows) + 1}: column finding:" in err
    assert "already (line 3)" in err


def test_a_header_without_the_label_column_is_refused(held_out, tmp_path, capsys):
    bad = tmp_path / "labels.csv"
    bad.write_text("study_uid,finding,patient_name\n1.2.3,72704001,DOE^JOHN\n")
    assert main(["qa", "evaluate", str(held_out.folder), "--labels", str(bad),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:1: no label column" in err
    assert f"{bad}:1: column patient_name: identifies the patient" in err
    assert "DOE^JOHN" not in err


def test_models_selects_cards_and_the_summary_table_is_printed(held_out, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["qa", "evaluate", str(held_out.folder), "--labels", str(held_out.labels),
                 "--out", str(out), "--models", "fracture-xr"]) == 0
    printed = capsys.readouterr().out
    assert "fracture-xr:0.1.0" in printed and "dr-fundus" not in printed
    assert str(out / "report.html") in printed
    document = json.loads((out / "evaluation.json").read_text())
    assert [m["name"] for m in document["models"]] == ["fracture-xr"]
    assert main(["qa", "evaluate", str(held_out.folder), "--labels", str(held_out.labels),
                 "--out", str(out), "--models", "no-such-model"]) == 2
    assert "no card no-such-model" in capsys.readouterr().err


TRITON_PARITY = 2e-6
"""Largest difference between a score on Triton and the in-process one."""


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_on_triton_the_scores_are_those_of_onnxruntime(held_out, evaluated, triton_server,
                                                       tmp_path, protocol):
    card = shipped_folder() / "fracture-xr.yaml"
    assert main(["models", "export-triton", str(triton_server.repository), "--cards",
                 str(card), "--backend", "python"]) == 0
    triton_server.load("fracture-xr")
    url = triton_server.http_url if protocol == "http" else triton_server.grpc_url
    out = tmp_path / "out"
    assert main(["qa", "evaluate", str(held_out.folder), "--labels", str(held_out.labels),
                 "--out", str(out), "--models", "fracture-xr", "--backend", "triton",
                 "--triton-url", url, "--protocol", protocol, "--json"]) == 0
    remote, here = (_finding(json.loads((folder / "evaluation.json").read_text()),
                             "fracture-xr") for folder in (out, evaluated[0]))
    assert remote[0]["backend"] == f"triton-{protocol}" and here[0]["backend"] == "onnxruntime"
    local_scores = {r["study_uid"]: r["score"] for r in here[1]["records"]}
    for record in remote[1]["records"]:
        assert abs(record["score"] - local_scores[record["study_uid"]]) <= TRITON_PARITY


def test_a_triton_that_is_down_fails_the_run_with_exit_1(held_out, tmp_path, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["qa", "evaluate", str(held_out.folder), "--labels", str(held_out.labels),
                 "--out", str(tmp_path / "out"), "--backend", "triton",
                 "--triton-url", f"127.0.0.1:{port}"]) == 1
    assert "liveness failed" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_values_from_the_labels_are_escaped_in_the_report(held_out, tmp_path):
    rows = read_csv(held_out.labels)
    for row in rows:
        row["site"] = '<script>alert("x")</script> & co'
    labels = tmp_path / "labels.csv"
    write_csv(labels, rows)
    out = tmp_path / "out"
    assert main(["qa", "evaluate", str(held_out.folder), "--labels", str(labels),
                 "--out", str(out), "--models", "dr-fundus", "--json"]) == 0
    page = (out / "report.html").read_text()
    assert "<script" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in page
