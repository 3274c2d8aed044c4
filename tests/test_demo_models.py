"""The shipped demonstration models load against their cards, rank fresh synthetic
studies (positives above negatives) through the real preprocessing and ONNX Runtime,
point their heat maps at the lesion, and can be retrained; the synthetic generator makes
valid, distinct, geometrically consistent DICOM."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmwrite

from radbridge.inference.backends import OnnxRuntimeBackend
from radbridge.inference.cards import ModelCard, load_cards
from radbridge.inference.demo import train
from radbridge.inference.demo.locate import to_point
from radbridge.inference.demo.synthetic import (
    USE_CASES,
    PatientInfo,
    Scanner,
    UnknownUseCase,
    generate_study,
)
from radbridge.inference.demo.validation import auc, wilson
from radbridge.inference.preprocess import order_slices, to_tensor
from tests.peers.fixtures import peer_unavailable

MODELS = train.MODELS
FRESH_SEED = 900_000
"""Seeds far from the training (1000...) and validation (500000...) ranges."""
NEAR_MM = {"ich-ct": 25.0, "lvo-cta": 25.0, "pe-ctpa": 30.0, "mammo-mass": 15.0,
           "fracture-xr": 20.0, "dr-fundus": 2.0}
"""How close the heat map's peak must come to the lesion (a few tensor voxels)."""


@pytest.fixture(scope="module")
def cards() -> dict[str, ModelCard]:
    return {card.name: card for _, card in load_cards([MODELS])}


def test_the_six_shipped_cards_load_and_their_models_fit_them(cards):
    assert sorted(cards) == sorted(USE_CASES)
    total = 0
    for name, card in cards.items():
        assert card.demonstration and "not for clinical use" in card.intended_use
        assert card.device_identifier == f"RADBRIDGE-DEMO-{name.upper()}"
        assert all(f.heatmap == "heatmap" for f in card.findings)
        OnnxRuntimeBackend(card, MODELS)  # BackendMismatch if the graph disagrees
        record = json.loads((MODELS / f"{name}.validation.json").read_text())
        assert record["onnx"]["bytes"] == (MODELS / f"{name}.onnx").stat().st_size
        total += record["onnx"]["bytes"]
    assert total < 5 * 2 ** 20


@pytest.mark.parametrize("name", USE_CASES)
def test_fresh_studies_rank_and_the_heatmap_finds_the_lesion(cards, name):
    card = cards[name]
    backend = OnnxRuntimeBackend(card, MODELS)
    rule, input_name = card.preprocessing, next(iter(card.inputs))
    scores, labels, misses = [], [], []
    for seed in range(FRESH_SEED, FRESH_SEED + 6):
        for positive in (True, False):
            study = generate_study(name, positive=positive, seed=seed)
            tensor = to_tensor(rule, study.datasets)
            outputs = backend.run({input_name: tensor[np.newaxis]})
            heatmap = outputs["heatmap"][0]
            assert heatmap.shape == tuple(rule.size) and heatmap.min() >= 0
            scores.append(float(outputs["probability"][0, 0]))
            labels.append(positive)
            if positive and study.lesion_centre is not None:
                peak = np.unravel_index(int(heatmap.argmax()), heatmap.shape)
                where = to_point(rule, study.datasets, [int(i) for i in peak])
                misses.append(float(np.linalg.norm(np.subtract(where,
                                                               study.lesion_centre))))
    assert auc(scores, labels) >= 0.8, scores
    assert np.median(misses) <= NEAR_MM[name], misses


def test_quick_training_writes_loadable_models_and_reports(tmp_path):
    assert train.main(["--quick", "--out", str(tmp_path), "--only", "mammo-mass",
                       "--only", "lvo-cta", "--jobs", "1"]) == 0
    loaded = {card.name: card for _, card in load_cards([tmp_path])}
    assert sorted(loaded) == ["lvo-cta", "mammo-mass"]
    for name, card in loaded.items():
        OnnxRuntimeBackend(card, tmp_path)
        record = json.loads((tmp_path / f"{name}.validation.json").read_text())
        figures = record["validation"]
        assert figures["positives"] == figures["negatives"] == train.QUICK.validation
        low, high = figures["auc_ci95"]
        assert 0.0 <= low <= figures["auc"] <= high <= 1.0
        assert len(record["onnx"]["sha256"]) == 64
        assert record["training"]["places"] == (8 if name == "lvo-cta" else 1)
    assert "| mammo-mass |" in (tmp_path / "README.md").read_text()


def test_wilson_interval_matches_a_worked_value():
    low, high = wilson(8, 10)  # p = 0.8, n = 10: 0.490 to 0.943
    assert (round(low, 3), round(high, 3)) == (0.49, 0.943)


@pytest.mark.parametrize("name", USE_CASES)
def test_studies_are_distinct_deterministic_and_the_flag_shows(name):
    patient = PatientInfo(patient_id="P-77", name="DOE^JANE", birth_date="19700615")
    first = generate_study(name, positive=True, seed=3, patient=patient, accession="A-1",
                           study_date="20240510")
    again = generate_study(name, positive=True, seed=3, patient=patient, accession="A-1",
                           study_date="20240510")
    negative = generate_study(name, positive=False, seed=3)
    sop = [ds.SOPInstanceUID for ds in first.datasets]
    assert len(set(sop)) == len(sop)
    assert sop == [ds.SOPInstanceUID for ds in again.datasets]
    assert not set(sop) & {ds.SOPInstanceUID for ds in negative.datasets}
    assert len({ds.StudyInstanceUID for ds in first.datasets}) == 1
    assert len({ds.SeriesInstanceUID for ds in first.datasets}) == 1
    ds = first.datasets[0]
    assert (ds.PatientID, ds.PatientName, ds.AccessionNumber, ds.PatientAge) == (
        "P-77", "DOE^JANE", "A-1", "053Y")
    assert first.lesion_centre is not None and negative.lesion_centre is None
    same = [a.PixelData == b.PixelData for a, b in zip(first.datasets, again.datasets,
                                                       strict=True)]
    assert all(same)
    assert any(a.PixelData != b.PixelData for a, b in zip(
        first.datasets, generate_study(name, positive=False, seed=3).datasets, strict=True))


def test_a_scanner_shift_moves_stored_values_by_that_much():
    shifted = generate_study("ich-ct", positive=False, seed=5, scanner=Scanner(shift=30))
    plain = generate_study("ich-ct", positive=False, seed=5)
    a = np.stack([ds.pixel_array for ds in plain.datasets]).astype(int)
    b = np.stack([ds.pixel_array for ds in shifted.datasets]).astype(int)
    inside = (a > 1024) & (a < 1024 + 200)  # brain, away from clipping
    assert np.all(b[inside] - a[inside] == 30)


@pytest.mark.parametrize("name", ["ich-ct", "lvo-cta", "pe-ctpa"])
def test_ct_slices_sort_along_the_normal_and_are_evenly_spaced(name):
    study = generate_study(name, positive=True, seed=2)
    ordered = order_slices(list(reversed(study.datasets)))
    z = [float(ds.ImagePositionPatient[2]) for ds in ordered]
    assert z == sorted(z) and len(set(np.round(np.diff(z), 3))) == 1
    assert float(ordered[0].SliceThickness) == pytest.approx(z[1] - z[0])
    lesion_z = study.lesion_centre[2]
    assert z[0] <= lesion_z <= z[-1]
    contrast = {ds.get("ContrastBolusAgent") for ds in study.datasets}
    assert (contrast == {None}) == (name == "ich-ct")


def test_mammograms_come_in_both_photometric_interpretations():
    kinds = {generate_study("mammo-mass", positive=False, seed=s).datasets[0]
             .PhotometricInterpretation for s in range(12)}
    assert kinds == {"MONOCHROME1", "MONOCHROME2"}


def test_an_unknown_use_case_is_refused():
    with pytest.raises(UnknownUseCase, match="one of ich-ct"):
        generate_study("knee-mri", positive=True, seed=1)


def test_dciodvfy_finds_no_error(tmp_path: Path):
    if shutil.which("dciodvfy") is None:
        peer_unavailable("dciodvfy (dicom3tools) is not installed")
    for name in USE_CASES:
        for positive in (True, False):
            study = generate_study(name, positive=positive, seed=11)
            path = tmp_path / f"{name}-{positive}.dcm"
            dcmwrite(path, study.datasets[0], enforce_file_format=True)
            run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True,
                                 check=False)
            errors = [line for line in (run.stdout + run.stderr).splitlines()
                      if line.startswith("Error")]
            assert errors == [], (name, errors)
