"""`radbridge models list` and `radbridge infer` on a study folder, with a real ONNX model."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml

from radbridge.interfaces.cli import main
from tests import dicom_data
from tests.test_model_cards import card
from tests.test_onnx_backend import mean_sigmoid_model

TRITON_PARITY = 2e-6
"""Largest difference between the probabilities printed by the two backends."""


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


def cli_study(tmp_path: Path) -> tuple[Path, Path]:
    """A card folder (model `cli-ich`, its ONNX file) and a study folder it takes."""
    cards = tmp_path / "cards"
    cards.mkdir()
    mean_sigmoid_model(cards / "cli-ich.onnx", [1, 8, 16, 16], scale=10.0)
    document = card(name="cli-ich", backend={"kind": "onnx", "path": "cli-ich.onnx"},
                    preprocessing={"kind": "volume", "size": [8, 16, 16],
                                   "window": {"min": -1100, "max": -900}},
                    inputs={"volume": [1, 8, 16, 16]},
                    series={"modalities": ["CT"], "min_instances": 10})
    (cards / "cli-ich.yaml").write_text(yaml.safe_dump(document))
    study = tmp_path / "study"
    dicom_data.make_ct_series(study / "axial", 12, rows=32, columns=32, seed=8)
    return cards, study


def test_export_triton_writes_a_model_repository(tmp_path, capsys):
    cards, _ = cli_study(tmp_path)
    out = tmp_path / "repository"
    assert main(["models", "export-triton", str(out), "--cards", str(cards)]) == 0
    assert "cli-ich" in capsys.readouterr().out
    config = (out / "cli-ich" / "config.pbtxt").read_text()
    assert 'backend: "onnxruntime"' in config and "priority_levels: 2" in config
    assert main(["models", "export-triton", str(out), "--cards", str(cards),
                 "--backend", "python"]) == 0
    assert (out / "cli-ich" / "1" / "model.py").is_file()


def test_the_shipped_cards_are_the_default(capsys):
    assert main(["models", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["models"]
    assert all(Path(row["file"]).parent.name == "models" for row in listed)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_infer_on_triton_gives_the_findings_of_onnxruntime(triton_server, tmp_path, capsys,
                                                           protocol):
    """Same study, same card: the probability on Triton equals the in-process one
    within TRITON_PARITY (absolute, after the JSON's rounding to 6 decimals)."""
    cards, study = cli_study(tmp_path)
    assert main(["models", "export-triton", str(triton_server.repository), "--cards",
                 str(cards), "--backend", "python"]) == 0
    triton_server.load("cli-ich")
    capsys.readouterr()
    assert main(["infer", str(study), "--model", "cli-ich", "--cards", str(cards)]) == 0
    local = json.loads(capsys.readouterr().out)
    url = triton_server.http_url if protocol == "http" else triton_server.grpc_url
    assert main(["infer", str(study), "--model", "cli-ich", "--cards", str(cards),
                 "--backend", "triton", "--triton-url", url, "--protocol", protocol]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert (local["backend"], remote["backend"]) == ("onnxruntime", f"triton-{protocol}")
    [here], [there] = local["findings"], remote["findings"]
    assert abs(here.pop("probability") - there.pop("probability")) <= TRITON_PARITY
    assert here == there


def test_infer_on_a_triton_that_is_down_says_so(tmp_path, capsys):
    cards, study = cli_study(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["infer", str(study), "--model", "cli-ich", "--cards", str(cards),
                 "--backend", "triton", "--triton-url", f"127.0.0.1:{port}",
                 "--protocol", "grpc"]) == 1
    assert "liveness failed" in capsys.readouterr().err
