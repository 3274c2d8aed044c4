"""Findings from outputs: a heat map's peak becomes a slice, a pixel and a point in
patient space, and the region above half its peak is measured in the images' units."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from radbridge.inference.backends import BackendError
from radbridge.inference.cards import ModelCard, Preprocessing
from radbridge.inference.findings import findings
from radbridge.inference.preprocess import prepare
from tests import dicom_data
from tests.test_model_cards import card

SIZE = [6, 16, 16]


@pytest.fixture
def prepared(tmp_path):
    paths = dicom_data.make_ct_series(tmp_path, 12, rows=32, columns=32, seed=7)
    rule = Preprocessing(kind="volume", size=SIZE)
    return prepare(rule, [pydicom.dcmread(p) for p in paths])


@pytest.fixture
def model_card() -> ModelCard:
    document = card(inputs={"volume": [1, *SIZE]},
                    preprocessing={"kind": "volume", "size": SIZE})
    document["findings"][0]["heatmap"] = "heatmap"
    return ModelCard.model_validate(document)


def outputs(probability: float, heatmap: np.ndarray) -> dict[str, np.ndarray]:
    return {"probability": np.asarray([[probability]], dtype=np.float32),
            "heatmap": heatmap[np.newaxis].astype(np.float32)}


def test_a_positive_finding_is_located_at_the_heat_map_peak_and_measured(model_card,
                                                                         prepared):
    heatmap = np.zeros(SIZE, dtype=np.float32)
    heatmap[3, 8, 4] = 1.0
    heatmap[3, 8, 5] = 0.6   # above half the peak: counted
    heatmap[3, 9, 4] = 0.4   # below: not
    [finding] = findings(model_card, outputs(0.9, heatmap), grid=prepared.grid)
    expected = prepared.grid.locate((3, 8, 4))
    assert finding.positive and finding.emergent
    assert finding.location == expected
    assert expected.sop_instance_uid == prepared.grid.planes[round(3 * 11 / 5)].sop_instance_uid
    [measurement] = finding.measurements
    element = np.prod(prepared.grid.element_size())
    assert measurement.unit == "mL"
    assert measurement.value == pytest.approx(2 * element / 1000)
    record = finding.as_record()
    assert record["location"]["sop_instance_uid"] == expected.sop_instance_uid
    assert record["measurements"][0]["unit"] == "mL"


def test_a_negative_finding_has_no_location(model_card, prepared):
    heatmap = np.zeros(SIZE, dtype=np.float32)
    heatmap[1, 1, 1] = 1.0
    [finding] = findings(model_card, outputs(0.2, heatmap), grid=prepared.grid)
    assert not finding.positive and finding.location is None and not finding.measurements


def test_a_heat_map_off_the_input_grid_or_not_finite_is_an_error(model_card, prepared):
    with pytest.raises(BackendError, match="heat map"):
        findings(model_card, outputs(0.9, np.zeros([6, 16, 15])), grid=prepared.grid)
    broken = np.zeros(SIZE, dtype=np.float32)
    broken[0, 0, 0] = np.nan
    with pytest.raises(BackendError, match="NaN"):
        findings(model_card, outputs(0.9, broken), grid=prepared.grid)
