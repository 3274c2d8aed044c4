"""Studies over real C-STORE into a real `radbridge run` with the shipped channels run
through the shipped demonstration models on ONNX Runtime: a head CT with a haemorrhage
ends as a positive, emergent, located finding with its provenance; one without as a
negative; a series with a slice missing as a final failure that says why; a chest
radiograph goes to no stroke model (skipped, with the reason). Every run is an audit
event, and `radbridge inference list|show` and /api/inference show the same runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from radbridge.channels import DEFAULT_DIR
from radbridge.inference.cards import load_cards, shipped_folder
from radbridge.inference.demo.synthetic import generate_study
from tests.e2e.conftest import Spawn, free_port, wait_until
from tests.e2e.test_correlation_flows import RESULT_CHANNELS
from tests.peers import dcmtk

pytestmark = pytest.mark.slow


def channels(dicom_port: int) -> str:
    dicom = (DEFAULT_DIR / "dicom-in.yaml").read_text().replace(
        "${RADBRIDGE_DICOM_PORT:-11112}", str(dicom_port)).replace(
        "quiet_period: {default: 30s,", "quiet_period: {default: 1s,")
    rest = [(DEFAULT_DIR / f"{name}.yaml").read_text() for name in RESULT_CHANNELS]
    return "\n---\n".join((dicom, *rest))


def push(port: int, folder: Path, datasets: list[Dataset]) -> str:
    folder.mkdir(parents=True)
    files = []
    for index, dataset in enumerate(datasets):
        path = folder / f"{index:04d}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        files.append(path)
    sent = dcmtk.storescu("127.0.0.1", port, files, "RADBRIDGE")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    return str(datasets[0].StudyInstanceUID)


def runs(node, study_uid: str) -> list[dict]:
    answer = node.client.get("/api/inference", params={"study_uid": study_uid})
    return answer.json()["runs"] if answer.status_code == 200 else []


SHIPPED_MODELS = {card.name for _folder, card in load_cards([shipped_folder()])}


def settled(node, study_uid: str) -> list[dict]:
    """The study's runs once every shipped model has one (skipped runs are recorded
    before the others run) and none is waiting to be tried again."""
    found = runs(node, study_uid)
    complete = {r["model_name"] for r in found} == SHIPPED_MODELS
    return found if complete and all(r["status"] != "failed-retryable" for r in found) else []


def test_studies_run_through_the_demonstration_models(spawn: Spawn, tmp_path: Path) -> None:
    port = free_port()
    node = spawn(channel_yaml=channels(port), database_url=f"sqlite:///{tmp_path / 's.db'}",
                 node_id="infer").start()
    positive = generate_study("ich-ct", positive=True, seed=9101)
    negative = generate_study("ich-ct", positive=False, seed=9102)
    gap = generate_study("ich-ct", positive=True, seed=9103)
    chest = generate_study("fracture-xr", positive=False, seed=9104)
    uids = {
        "positive": push(port, tmp_path / "pos", positive.datasets),
        "negative": push(port, tmp_path / "neg", negative.datasets),
        "gap": push(port, tmp_path / "gap", gap.datasets[:8] + gap.datasets[9:]),
        "xr": push(port, tmp_path / "xr", chest.datasets),
    }
    for name, uid in uids.items():
        wait_until(lambda uid=uid: settled(node, uid), 90, f"inference on the {name} study")

    [ich] = [r for r in settled(node, uids["positive"]) if r["model_name"] == "ich-ct"]
    assert (ich["status"], ich["positive"], ich["emergent"]) == ("done", True, True)
    detail = node.client.get(f"/api/inference/{ich['id']}").json()
    [finding] = detail["findings"]
    assert finding["location"]["sop_instance_uid"] in {
        str(d.SOPInstanceUID) for d in positive.datasets}
    assert detail["demonstration"] and detail["device_identifier"]
    assert len(detail["card_sha256"]) == 64 and detail["heatmap_sha256"]

    [calm] = [r for r in settled(node, uids["negative"]) if r["model_name"] == "ich-ct"]
    assert (calm["status"], calm["positive"]) == ("done", False)

    [broken] = [r for r in settled(node, uids["gap"]) if r["model_name"] == "ich-ct"]
    assert broken["status"] == "failed-final" and "missing" in broken["reason"]

    xr = {r["model_name"]: r for r in settled(node, uids["xr"])}
    assert xr["ich-ct"]["status"] == "skipped" and "modality" in xr["ich-ct"]["reason"]
    assert xr["fracture-xr"]["status"] == "done"

    shown = node.cli("inference", "show", str(ich["id"]), "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["findings"][0]["positive"] is True
    listed = node.cli("inference", "list", "--positive", "--json")
    assert ich["id"] in [r["id"] for r in json.loads(listed.stdout)["runs"]]
    audit = node.cli("audit", "query", "--study-uid", uids["positive"], "--action",
                     "inference.run")
    assert audit.returncode == 0 and json.loads(audit.stdout)["events"], audit.stderr
    done = list((node.data_dir / "outbox" / "inference-done").glob("*"))
    assert len(done) >= 4  # one message per settled study version
