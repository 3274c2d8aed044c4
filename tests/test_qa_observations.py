"""QA observations: a done inference run leaves one row per finding, with the strata, the
acquisition and the input tensor's pixel statistics, in the run's own transaction; runs
that are skipped or failed leave none, and a run recorded again adds nothing."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from sqlalchemy import select

from radbridge.engine.inference_runs import service as service_module
from radbridge.engine.inference_runs.service import RunStatus
from radbridge.engine.models import InferenceRun, QaObservation
from radbridge.engine.qa.observations import (
    RunInput,
    observation_rows,
    record_observations,
)
from radbridge.inference.cards import ModelCard, load_cards
from tests.engine_harness import Harness, channel, harness
from tests.inference_support import index_series, make_cards, service
from tests.test_inference_runs import Flaky


@pytest.fixture
def cards_dir(tmp_path) -> Path:
    return make_cards(tmp_path)


@pytest.fixture
def h(database, tmp_path):
    with harness(database, tmp_path, [channel("dicom-in")]) as made:
        yield made


def observations(h: Harness) -> list[QaObservation]:
    with h.database.read() as session:
        return list(session.execute(select(QaObservation).order_by(QaObservation.id))
                    .scalars())


def run_row(h: Harness, model: str) -> InferenceRun:
    with h.database.read() as session:
        return session.execute(select(InferenceRun).where(
            InferenceRun.model_name == model)).scalar_one()


def run_all(h: Harness, cards_dir: Path, study_uid: str, version: int = 1,
            **options) -> None:
    runner = service(h, cards_dir, **options)
    plan = runner.plan(study_uid, version)
    runner.record_skipped(plan)
    for assignment in plan.routing.assignments:
        runner.run(plan, assignment)


def test_a_done_run_records_each_finding_with_its_strata_and_pixel_statistics(
        h, cards_dir, tmp_path):
    study_uid = index_series(h, tmp_path / "study", AccessionNumber="ACC-QA-1")
    run_all(h, cards_dir, study_uid)
    run = run_row(h, "toy-ct")
    [row] = observations(h)
    [finding] = run.findings
    # the test series (tests/dicom_data.py): Radbridge Test / Synthetic CT on RBCT01 at
    # Radbridge Test Hospital, sex O, born 1970-01-01, study 2024-01-15 (54 years),
    # 120 kVp, 1.25 mm slices, 0.7 mm pixels, kernel STANDARD
    assert (row.run_id, row.study_uid, row.accession) == (run.id, study_uid, "ACC-QA-1")
    assert (row.model_name, row.model_version) == ("toy-ct", "0.1.0")
    assert (row.finding_system, row.finding_code) == ("SCT", "274100004")
    assert (row.score, row.ai_positive, row.threshold) == (finding["probability"], True, 0.0001)
    assert row.study_date == date(2024, 1, 15)
    assert (row.manufacturer, row.scanner_model, row.station, row.site) == (
        "Radbridge Test", "Synthetic CT", "RBCT01", "Radbridge Test Hospital")
    assert (row.sex, row.age_band) == ("other", "40-64")
    assert (row.kvp, row.slice_thickness, row.pixel_spacing, row.kernel) == (
        120.0, 1.25, 0.7, "STANDARD")
    # The toy model's score is sigmoid(mean(input) - 0.5): the stored mean of the
    # preprocessed tensor must be the one the model saw.
    assert row.pixel_mean == pytest.approx(math.log(row.score / (1 - row.score)) + 0.5,
                                           abs=1e-4)
    assert row.pixel_std is not None and 0.0 < row.pixel_std < 1.0  # windowed to 0..1
    assert row.recorded_at.tzinfo is not None


def test_a_header_without_equipment_or_demographics_counts_as_unknown(h, cards_dir,
                                                                      tmp_path):
    study_uid = index_series(h, tmp_path / "study", Manufacturer=None,
                             ManufacturerModelName=None, StationName=None,
                             InstitutionName=None, PatientSex=None, PatientBirthDate=None,
                             StudyDate=None, KVP=None, ConvolutionKernel=None)
    run_all(h, cards_dir, study_uid)
    [row] = observations(h)
    assert (row.manufacturer, row.scanner_model, row.station, row.site, row.sex,
            row.age_band) == ("unknown",) * 6
    assert (row.kvp, row.kernel) == (None, None)
    assert row.study_date == run_row(h, "toy-ct").updated_at.date()  # the run's date


def test_a_newer_study_version_replaces_the_rows_of_the_earlier_run(h, cards_dir,
                                                                    tmp_path):
    study_uid = index_series(h, tmp_path / "study")
    run_all(h, cards_dir, study_uid)
    [first] = observations(h)
    run_all(h, cards_dir, study_uid, version=2)  # late images: the study's version 2
    [latest] = observations(h)
    assert latest.run_id > first.run_id and latest.study_uid == study_uid


def test_the_strata_a_site_configured_are_kept_with_each_observation(h, cards_dir,
                                                                    tmp_path):
    study_uid = index_series(h, tmp_path / "study", BodyPartExamined="HEAD")
    run_all(h, cards_dir, study_uid, qa_strata=("BodyPartExamined", "ProtocolName"))
    [row] = observations(h)
    assert row.strata == {"BodyPartExamined": "HEAD", "ProtocolName": "unknown"}


def test_skipped_and_failed_runs_record_nothing(h, cards_dir, tmp_path):
    study_uid = index_series(h, tmp_path / "study")
    run_all(h, cards_dir, study_uid, budget=1024)  # toy-mr skipped, toy-ct over budget
    assert run_row(h, "toy-mr").status == RunStatus.SKIPPED
    assert run_row(h, "toy-ct").status == RunStatus.FINAL
    assert observations(h) == []


def test_a_run_retried_until_done_records_once_and_a_rerun_adds_nothing(h, cards_dir,
                                                                       tmp_path):
    study_uid = index_series(h, tmp_path / "study")

    def flaky(card_: ModelCard, folder: Path) -> Flaky:
        return Flaky(card_, folder, down=1)

    runner = service(h, cards_dir, flaky)
    plan = runner.plan(study_uid, 1)
    [assignment] = plan.routing.assignments
    assert runner.run(plan, assignment).status == RunStatus.RETRYABLE
    assert observations(h) == []
    assert runner.run(plan, assignment).status == RunStatus.DONE
    assert runner.run(plan, assignment).status == RunStatus.DONE  # settled: not run again
    [row] = observations(h)
    assert row.run_id == run_row(h, "toy-ct").id
    # recording the same run directly again adds nothing either
    header = pydicom.dcmread(sorted((tmp_path / "study").glob("*.dcm"))[0])
    with h.database.write() as session:
        run = session.get(InferenceRun, row.run_id)
        assert run is not None
        assert record_observations(session, run, toy_ct(cards_dir),
                                   RunInput(header, 0.5, 0.1)) == 0
    assert len(observations(h)) == 1


def test_the_rows_commit_with_the_run_or_not_at_all(h, cards_dir, tmp_path, monkeypatch):
    study_uid = index_series(h, tmp_path / "study")

    def broken(*args, **kwargs):
        raise RuntimeError("QA rows could not be built")

    monkeypatch.setattr(service_module, "record_observations", broken)
    runner = service(h, cards_dir)
    plan = runner.plan(study_uid, 1)
    with pytest.raises(RuntimeError):
        runner.run(plan, plan.routing.assignments[0])
    with h.database.read() as session:
        assert session.execute(select(InferenceRun)).first() is None


def test_pixel_statistics_of_a_tensor_and_none_when_not_finite():
    header = header_with(StudyDate="20250301")
    stats = RunInput.of([header], np.array([[0.0, 1.0], [2.0, 3.0]], dtype=np.float32))
    assert (stats.header, stats.pixel_mean, stats.pixel_std) == (
        header, 1.5, pytest.approx(math.sqrt(1.25)))
    broken = RunInput.of([header], np.array([np.nan, 1.0], dtype=np.float32))
    assert (broken.pixel_mean, broken.pixel_std) == (None, None)


def test_a_code_named_twice_by_a_card_is_recorded_once(cards_dir):
    card_ = toy_ct(cards_dir)
    finding = {"code": "274100004", "system": "SCT", "probability": 0.7, "positive": True}
    run = InferenceRun(id=7, study_uid="1.2.3", model_name="toy-ct", model_version="0.1.0",
                       status="done", findings=[finding, {**finding, "probability": 0.2}])
    [row] = observation_rows(run, card_, RunInput(header_with(StudyDate="20250301"), None,
                                                  None))
    assert (row.score, row.threshold, row.study_uid, row.study_date) == (
        0.7, 0.0001, "1.2.3", date(2025, 3, 1))


def toy_ct(cards_dir: Path) -> ModelCard:
    return next(c for _, c in load_cards([cards_dir]) if c.name == "toy-ct")


def header_with(**attributes: str) -> Dataset:
    header = Dataset()
    for keyword, value in attributes.items():
        setattr(header, keyword, value)
    return header
