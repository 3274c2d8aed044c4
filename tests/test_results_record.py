"""The AI result record keeps where each finding is and which series the model read,
and its JSON form gives back what was written."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from radbridge.mappings.results import (
    FindingLocation,
    ResultFormatError,
    result_from_json,
    result_to_json,
)

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "results" / "ich-positive-demo.json"


def test_locations_and_series_round_trip_through_json():
    result = result_from_json(json.loads(SAMPLE.read_text()))
    located = replace(result.findings[0], location=FindingLocation(
        "1.2.3.4.5", frame=2, row=10.5, column=20, patient_mm=(1.0, -2.5, 30.0)))
    changed = replace(result, findings=(located, *result.findings[1:]),
                      series_uids=("1.2.3.4",))
    again = result_from_json(json.loads(json.dumps(result_to_json(changed))))
    assert again == changed
    assert again.findings[0].location is not None
    assert again.findings[0].location.patient_mm == (1.0, -2.5, 30.0)


def test_a_bad_location_names_its_field():
    document = json.loads(SAMPLE.read_text())
    document["findings"][0]["location"] = {"sop_instance_uid": "not a uid"}
    with pytest.raises(ResultFormatError, match=r"location\.sop_instance_uid"):
        result_from_json(document)
    document["findings"][0]["location"] = {"sop_instance_uid": "1.2.3", "frame": 0}
    with pytest.raises(ResultFormatError, match="frame"):
        result_from_json(document)


def test_the_study_record_round_trips_and_checks_its_uids():
    from radbridge.mappings.results import InstanceRef, SeriesRecord, StudyRecord
    result = result_from_json(json.loads(SAMPLE.read_text()))
    study = StudyRecord(
        started=result.created_at, description="CT head", endpoint="http://pacs/dicom-web",
        series=(SeriesRecord("1.2.3.1", "CT", 2, "Head 5mm", "HEAD", (
            InstanceRef("1.2.840.10008.5.1.4.1.1.2", "1.2.3.1.1", 1),
            InstanceRef("1.2.840.10008.5.1.4.1.1.2", "1.2.3.1.2", 2))),))
    with_study = replace(result, study=study)
    assert result_from_json(json.loads(json.dumps(result_to_json(with_study)))) == with_study
    document = result_to_json(with_study)
    document["study"]["series"][0]["instances"][0]["sop_instance_uid"] = "x"
    with pytest.raises(ResultFormatError, match="sop_instance_uid"):
        result_from_json(document)
