"""MPPS N-CREATE/N-SET and Storage Commitment data sets, as a modality would send them.

Each data set is encoded in implicit VR little endian (the default DIMSE transfer
syntax) and decoded again before reading, so values arrive raw as they do at the SCP.
"""

from __future__ import annotations

import io

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from radbridge.mappings.dicom.commitment import (
    NO_SUCH_OBJECT_INSTANCE,
    commitment_event_type,
    commitment_result,
    read_commitment,
)
from radbridge.mappings.dicom.errors import DicomContentError
from radbridge.mappings.dicom.mpps import mpps_is_final, read_mpps
from radbridge.mappings.dicom.records import CommitmentRequest, PerformedSeries

CT = "1.2.840.10008.5.1.4.1.1.2"
SR = "1.2.840.10008.5.1.4.1.1.88.22"
MPPS_UID = "1.2.826.0.1.3680043.8.498.1"


def over_the_wire(ds: Dataset) -> Dataset:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, ds)
    return read_dataset(io.BytesIO(buffer.getvalue()), True, True)


def item(**attributes: object) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def performed_series(series_uid: str, images: list[str], others: list[str]) -> Dataset:
    return item(
        SeriesInstanceUID=series_uid, Modality="CT", SeriesDescription="AXIAL",
        PerformingPhysicianName="Doe^Jane", ProtocolName="CHEST",
        ReferencedImageSequence=Sequence(
            item(ReferencedSOPClassUID=CT, ReferencedSOPInstanceUID=uid) for uid in images),
        ReferencedNonImageCompositeSOPInstanceSequence=Sequence(
            item(ReferencedSOPClassUID=SR, ReferencedSOPInstanceUID=uid) for uid in others),
    )


def n_create(study_uid: str) -> Dataset:
    scheduled = item(StudyInstanceUID=study_uid, AccessionNumber=" ACC123 ",
                     RequestedProcedureID="RP1", ScheduledProcedureStepID="SPS1",
                     ReferencedStudySequence=Sequence())
    return item(
        SpecificCharacterSet="ISO_IR 100", Modality="CT", PatientName="Roe^Richard",
        PatientID="MRN-77", PatientBirthDate="19700101", PatientSex="M",
        ScheduledStepAttributesSequence=Sequence([scheduled]),
        PerformedProcedureStepID="PPS1", PerformedStationAETitle="CT01",
        PerformedProcedureStepStartDate="20240101", PerformedProcedureStepStartTime="101500",
        PerformedProcedureStepStatus="IN PROGRESS", PerformedSeriesSequence=Sequence(),
    )


def test_create() -> None:
    study = generate_uid()
    record = read_mpps(over_the_wire(n_create(study)), operation="create", mpps_uid=MPPS_UID)
    assert record.mpps_uid == MPPS_UID
    assert record.operation == "create"
    assert record.status == "IN PROGRESS"
    assert record.study_uid == study
    assert record.accession == "ACC123"
    assert record.patient_id == "MRN-77"
    assert record.modality == "CT"
    assert record.performed_series == ()
    assert not mpps_is_final(record)


def test_set_completed_with_series() -> None:
    series_a, series_b = generate_uid(), generate_uid()
    images = [generate_uid() for _ in range(3)]
    report = generate_uid()
    ds = item(PerformedProcedureStepStatus="COMPLETED",
              PerformedProcedureStepEndDate="20240101",
              PerformedSeriesSequence=Sequence([
                  performed_series(series_a, images, [report]),
                  performed_series(series_b, [], []),
              ]))
    record = read_mpps(over_the_wire(ds), operation="set", mpps_uid=MPPS_UID + "\x00")
    assert record.mpps_uid == MPPS_UID
    assert record.status == "COMPLETED"
    assert record.study_uid is None and record.patient_id is None
    assert record.performed_series == (
        PerformedSeries(series_a, (*images, report)), PerformedSeries(series_b, ()))
    assert mpps_is_final(record)


def test_set_without_status_leaves_it() -> None:
    ds = item(PerformedProcedureStepDescription="more")
    record = read_mpps(over_the_wire(ds), operation="set", mpps_uid=MPPS_UID)
    assert record.status is None and not mpps_is_final(record)


def test_discontinued_is_final() -> None:
    ds = item(PerformedProcedureStepStatus="DISCONTINUED")
    assert mpps_is_final(read_mpps(ds, operation="set", mpps_uid=MPPS_UID))


@pytest.mark.parametrize(("change", "attribute"), [
    ({"PerformedProcedureStepStatus": ""}, "PerformedProcedureStepStatus"),
    ({"PerformedProcedureStepStatus": "DONE"}, "PerformedProcedureStepStatus"),
])
def test_create_status_errors(change: dict[str, str], attribute: str) -> None:
    ds = n_create(generate_uid())
    for keyword, value in change.items():
        setattr(ds, keyword, value)
    with pytest.raises(DicomContentError) as caught:
        read_mpps(over_the_wire(ds), operation="create", mpps_uid=MPPS_UID)
    assert caught.value.attribute == attribute


def test_create_without_status_element() -> None:
    ds = n_create(generate_uid())
    del ds.PerformedProcedureStepStatus
    with pytest.raises(DicomContentError, match="PerformedProcedureStepStatus is missing"):
        read_mpps(ds, operation="create", mpps_uid=MPPS_UID)


def test_bad_operation_and_uid() -> None:
    ds = n_create(generate_uid())
    with pytest.raises(DicomContentError, match="operation"):
        read_mpps(ds, operation="delete", mpps_uid=MPPS_UID)
    with pytest.raises(DicomContentError, match="AffectedSOPInstanceUID"):
        read_mpps(ds, operation="create", mpps_uid="not-a-uid")


def test_series_without_uid_is_named() -> None:
    series = performed_series(generate_uid(), [generate_uid()], [])
    del series.SeriesInstanceUID
    ds = item(PerformedProcedureStepStatus="COMPLETED",
              PerformedSeriesSequence=Sequence([series]))
    with pytest.raises(DicomContentError) as caught:
        read_mpps(over_the_wire(ds), operation="set", mpps_uid=MPPS_UID)
    assert caught.value.attribute == "PerformedSeriesSequence[0].SeriesInstanceUID"


def commitment_request(references: list[tuple[str, str]]) -> Dataset:
    return item(TransactionUID="1.2.3.99", ReferencedSOPSequence=Sequence(
        item(ReferencedSOPClassUID=c, ReferencedSOPInstanceUID=i) for c, i in references))


def test_read_commitment() -> None:
    refs = [(CT, generate_uid()) for _ in range(3)]
    request = read_commitment(over_the_wire(commitment_request(refs)), requester_ae="CT01 ")
    assert request == CommitmentRequest("1.2.3.99", "CT01", tuple(refs))


@pytest.mark.parametrize("broken", ["transaction", "empty", "instance"])
def test_read_commitment_errors(broken: str) -> None:
    ds = commitment_request([(CT, generate_uid())])
    expected = "TransactionUID"
    if broken == "transaction":
        del ds.TransactionUID
    elif broken == "empty":
        ds.ReferencedSOPSequence = Sequence()
        expected = "ReferencedSOPSequence"
    else:
        del ds.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        expected = "ReferencedSOPSequence[0].ReferencedSOPInstanceUID"
    with pytest.raises(DicomContentError) as caught:
        read_commitment(over_the_wire(ds), requester_ae="CT01")
    assert caught.value.attribute == expected


def test_result_all_stored() -> None:
    refs = tuple((CT, generate_uid()) for _ in range(2))
    request = CommitmentRequest("1.2.3.99", "CT01", refs)
    result = over_the_wire(commitment_result(request, {uid for _, uid in refs} | {"1.2"}))
    assert commitment_event_type(result) == 1
    assert result.TransactionUID == "1.2.3.99"
    assert "FailedSOPSequence" not in result
    assert [(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID)
            for i in result.ReferencedSOPSequence] == list(refs)


def test_result_some_failed() -> None:
    refs = tuple((CT, generate_uid()) for _ in range(3))
    request = CommitmentRequest("1.2.3.99", "CT01", refs)
    result = over_the_wire(commitment_result(request, {refs[1][1]}))
    assert commitment_event_type(result) == 2
    assert [i.ReferencedSOPInstanceUID for i in result.ReferencedSOPSequence] == [refs[1][1]]
    failed = result.FailedSOPSequence
    assert [(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in failed] == [
        refs[0], refs[2]]
    assert all(i.FailureReason == NO_SUCH_OBJECT_INSTANCE == 0x0112 for i in failed)


def test_result_none_stored() -> None:
    request = CommitmentRequest("1.2.3.99", "CT01", ((CT, "1.2.3.4"),))
    result = commitment_result(request, set())
    assert commitment_event_type(result) == 2
    assert "ReferencedSOPSequence" not in result
