"""`radbridge models list` and `radbridge infer` on a study folder, with a real ONNX model."""

from __future__ import annotations

import json

import yaml

from radbridge.interfaces.cli import main
from tests import dicom_data
from tests.test_model_cards import card
from tests.test_onnx_backend import mean_sigmoid_model


def test_infer_prints_the_findings_of_the_series_the_card_takes(tmp_path, capsys):
    cards = tmp_path / "cards"
    cards.mkdir()
    mean_sigmoid_model(cards / "ich-ct.onnx", [1, 8, 16, 16], scale=10.0)
    document = card(preprocessing={"kind": "volume", "size": [8, 16, 16],
                                   "window": {"min": -1100, "max": -900}},
                    inputs={"volume": [1, 8, 16, 16]},
                    series={"modalities": ["CT"], "min_instances": 10})
    (cards / "ich.yaml").write_text(yaml.safe_dump(document))
    study = tmp_path / "study"
    dicom_data.make_ct_series(study / "axial", 12, rows=32, columns=32, seed=8)
    dicom_data.make_ct_series(study / "scout", 2, rows=32, columns=32, seed=9)
    (study / "notes.txt").write_text("not DICOM")

    assert main(["models", "list", "--cards", str(cards), "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)["models"]
    assert (listed["name"], listed["demonstration"], listed["backend"]) == (
        "ich-ct", True, "onnx")

    assert main(["infer", str(study), "--model", "ich-ct", "--cards", str(cards)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["model"], result["instances"], result["demonstration"]) == (
        "ich-ct", 12, True)
    [finding] = result["findings"]
    assert finding["code"] == "274100004" and 0.0 <= finding["probability"] <= 1.0
    assert finding["positive"] == (finding["probability"] >= 0.5)

    assert main(["infer", str(study / "scout"), "--model", "ich-ct", "--cards",
                 str(cards)]) == 1
    assert "fewer than 10" in capsys.readouterr().err
    assert main(["infer", str(study), "--model", "nope", "--cards", str(cards)]) == 1
    assert "no card nope" in capsys.readouterr().err
