"""The DICOM index is written with the message that carries each instance, versions new
content under a known SOP Instance UID, and feeds study assembly (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy import select, update

from radbridge.engine import audit
from radbridge.engine.assembly import READY_CONTENT_TYPE, StudyAssembler
from radbridge.engine.blobstore import BlobRef
from radbridge.engine.dicom_index import COLLECTING, stored_instances
from radbridge.engine.models import (
    DicomCommitment,
    DicomInstance,
    DicomMpps,
    DicomSeries,
    DicomStudy,
    Message,
    MessageStage,
    utcnow,
)
from radbridge.engine.receiver import Inbound, Receipt
from radbridge.mappings.dicom.records import (
    CONTENT_TYPE,
    MPPS_CONTENT_TYPE,
    CommitmentRequest,
    InstanceRecord,
    MppsRecord,
    PerformedSeries,
)
from tests.engine_harness import Harness, channel, harness

STUDY = "1.2.826.0.1.3680043.8.498.1"
CT_SERIES = "1.2.826.0.1.3680043.8.498.1.1"
SR_SERIES = "1.2.826.0.1.3680043.8.498.1.2"


def _channels(**assembly: object) -> list:
    return [
        channel("dicom-in", assembly={"ready_channel": "study-ready",
                                      "quiet_period": {"default": 30, "CT": 10},
                                      **assembly}),
        channel("study-ready"),
    ]


def _record(sop: str, series: str = CT_SERIES, modality: str = "CT", **fields) -> InstanceRecord:
    return InstanceRecord(
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2", sop_instance_uid=sop, study_uid=STUDY,
        series_uid=series, transfer_syntax_uid="1.2.840.10008.1.2.1", patient_id="RB-1",
        patient_name="DOE^JANE", accession="ACC-9", modality=modality,
        manufacturer="ACME", instance_number=int(sop.rsplit(".", 1)[1]),
        image_position="0\\0\\1", extra={"KVP": "120"}, **fields)


def _store(h: Harness, item: InstanceRecord, content: bytes, channel_name: str = "dicom-in"
           ) -> Receipt:
    ref: BlobRef = h.blobs.put_bytes(content)
    return h.receiver.receive_sync(Inbound(
        channel=channel_name, content_type=CONTENT_TYPE, source="test", blob=ref,
        dedup_key=f"{item.sop_instance_uid}/{ref.sha256}", patient_id=item.patient_id,
        accession=item.accession, study_uid=item.study_uid, dicom=item))


def _study(h: Harness) -> DicomStudy:
    with h.database.read() as session:
        return session.execute(select(DicomStudy)).scalar_one()


def _instances(h: Harness) -> list[DicomInstance]:
    with h.database.read() as session:
        return list(session.execute(select(DicomInstance).order_by(DicomInstance.id)).scalars())


def test_instances_are_indexed_by_study_series_and_instance(database, tmp_path):
    with harness(database, tmp_path, _channels()) as h:
        _store(h, _record(f"{CT_SERIES}.1"), b"ct one")
        _store(h, _record(f"{CT_SERIES}.2"), b"ct two")
        receipt = _store(h, _record(f"{SR_SERIES}.1", SR_SERIES, "SR"), b"sr one")
        study = _study(h)
        with h.database.read() as session:
            series = list(session.execute(select(DicomSeries).order_by(DicomSeries.id)).scalars())
        instances = _instances(h)
    assert (study.instance_count, study.series_count, study.modalities) == (3, 2, "CT\\SR")
    assert (study.patient_id, study.accession, study.state) == ("RB-1", "ACC-9", "collecting")
    assert [(s.series_uid, s.modality, s.instance_count) for s in series] == [
        (CT_SERIES, "CT", 2), (SR_SERIES, "SR", 1)]
    assert [(i.version, i.current, i.instance_number) for i in instances] == [
        (1, True, 1), (1, True, 2), (1, True, 1)]
    assert instances[2].message_id == receipt.message_id
    assert instances[0].attributes == {"KVP": "120", "AccessionNumber": "ACC-9"}
    assert instances[0].size == len(b"ct one")
    assert stored_instances(h.database, [f"{CT_SERIES}.2", "1.2.3.404"]) == {f"{CT_SERIES}.2"}


def test_same_instance_same_bytes_is_a_no_op(database, tmp_path):
    with harness(database, tmp_path, _channels()) as h:
        first = _store(h, _record(f"{CT_SERIES}.1"), b"same bytes")
        again = _store(h, _record(f"{CT_SERIES}.1"), b"same bytes")
        # the same bytes through another channel are a new message but no new version
        _store(h, _record(f"{CT_SERIES}.1"), b"same bytes", channel_name="study-ready")
        instances, study = _instances(h), _study(h)
    assert again.duplicate and again.message_id == first.message_id
    assert [(i.version, i.current) for i in instances] == [(1, True)]
    assert study.instance_count == 1


def test_new_bytes_under_a_known_uid_become_the_next_version(database, tmp_path):
    with harness(database, tmp_path, _channels()) as h:
        first = _store(h, _record(f"{CT_SERIES}.1"), b"original")
        second = _store(h, _record(f"{CT_SERIES}.1"), b"corrected")
        instances, study = _instances(h), _study(h)
        with h.database.read() as session:
            events = audit.query(session, audit.AuditQuery(action="dicom.instance-versioned"))
            kept = session.execute(select(MessageStage.content_sha256).where(
                MessageStage.message_id == first.message_id)).scalar_one()
    assert not second.duplicate and second.message_id != first.message_id
    assert [(i.version, i.current, i.message_id) for i in instances] == [
        (1, False, first.message_id), (2, True, second.message_id)]
    assert kept == instances[0].blob_sha256  # the first version's bytes are still there
    assert study.instance_count == 1
    assert [json.loads(e.detail)["version"] for e in events] == [2]


def test_mpps_and_commitment_records_are_kept(database, tmp_path):
    with harness(database, tmp_path, _channels()) as h:
        h.receiver.receive_sync(Inbound(
            channel="dicom-in", content_type=MPPS_CONTENT_TYPE, source="test", content=b"c",
            dicom=MppsRecord("1.2.3.9", "create", "IN PROGRESS", study_uid=STUDY)))
        h.receiver.receive_sync(Inbound(
            channel="dicom-in", content_type=MPPS_CONTENT_TYPE, source="test", content=b"s",
            dicom=MppsRecord("1.2.3.9", "set", "COMPLETED", performed_series=(
                PerformedSeries(CT_SERIES, (f"{CT_SERIES}.1",)),))))
        h.receiver.receive_sync(Inbound(
            channel="dicom-in", content_type="x", source="test", content=b"n",
            dicom=CommitmentRequest("1.2.3.10", "MODALITY", (("1.2", f"{CT_SERIES}.1"),))))
        with h.database.read() as session:
            step = session.execute(select(DicomMpps)).scalar_one()
            commitment = session.execute(select(DicomCommitment)).scalar_one()
    assert (step.study_uid, step.status) == (STUDY, "COMPLETED")
    assert step.performed == {CT_SERIES: [f"{CT_SERIES}.1"]}
    assert commitment.sop_instance_uids == [f"{CT_SERIES}.1"] and not commitment.settled


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _assembler(h: Harness, clock: Clock) -> StudyAssembler:
    return StudyAssembler(h.database, h.channels, h.receiver.receive_sync, clock=clock)


def _ready_messages(h: Harness) -> list[dict]:
    with h.database.read() as session:
        rows = session.execute(select(Message).where(Message.channel == "study-ready")
                               .order_by(Message.id)).scalars().all()
        contents = []
        for row in rows:
            assert row.content_type == READY_CONTENT_TYPE
            stage = session.execute(select(MessageStage.content).where(
                MessageStage.message_id == row.id)).scalar_one()
            contents.append(json.loads(stage))
    return contents


def test_quiet_period_then_late_instance_supersedes(database, tmp_path):
    clock = Clock()
    with harness(database, tmp_path, _channels()) as h:
        assembler = _assembler(h, clock)
        _store(h, _record(f"{CT_SERIES}.1"), b"one")
        clock.now = _study(h).last_received_at
        clock.advance(9)
        assert assembler.run_once() == []  # CT's quiet period is 10 s
        clock.advance(2)
        assert assembler.run_once() == [(STUDY, 1, "quiet-period")]
        assert assembler.run_once() == []
        assert _study(h).state == "ready"
        _store(h, _record(f"{CT_SERIES}.2"), b"two")  # late
        assert _study(h).state == "collecting"
        clock.now = _study(h).last_received_at + timedelta(seconds=11)
        assert assembler.run_once() == [(STUDY, 2, "quiet-period")]
        ready = _ready_messages(h)
        with h.database.read() as session:
            reopened = audit.query(session, audit.AuditQuery(action="dicom.study-reopened"))
    assert [(m["version"], m["supersedes"], m["instance_count"]) for m in ready] == [
        (1, None, 1), (2, 1, 2)]
    assert ready[0]["series"][0]["series_uid"] == CT_SERIES
    assert ready[0]["accession"] == "ACC-9" and len(reopened) == 1


def test_open_mpps_holds_the_study_and_completed_mpps_releases_it(database, tmp_path):
    clock = Clock()
    with harness(database, tmp_path, _channels(mpps_timeout=600)) as h:
        assembler = _assembler(h, clock)
        h.receiver.receive_sync(Inbound(
            channel="dicom-in", content_type=MPPS_CONTENT_TYPE, source="test", content=b"c",
            dicom=MppsRecord("1.2.3.9", "create", "IN PROGRESS", study_uid=STUDY)))
        _store(h, _record(f"{CT_SERIES}.1"), b"one")
        clock.now = _study(h).last_received_at + timedelta(seconds=60)
        assert assembler.run_once() == []  # quiet for 60 s, but the step is open
        h.receiver.receive_sync(Inbound(
            channel="dicom-in", content_type=MPPS_CONTENT_TYPE, source="test", content=b"s",
            dicom=MppsRecord("1.2.3.9", "set", "COMPLETED", performed_series=(
                PerformedSeries(CT_SERIES, (f"{CT_SERIES}.1", f"{CT_SERIES}.2")),))))
        assert assembler.run_once() == []  # the step names an instance not yet here
        _store(h, _record(f"{CT_SERIES}.2"), b"two")
        clock.now = _study(h).last_received_at  # no quiet time at all
        assert assembler.run_once() == [(STUDY, 1, "mpps")]


def test_open_mpps_gives_way_to_the_quiet_period_after_its_timeout(database, tmp_path):
    clock = Clock()
    with harness(database, tmp_path, _channels(mpps_timeout=120)) as h:
        assembler = _assembler(h, clock)
        h.receiver.receive_sync(Inbound(
            channel="dicom-in", content_type=MPPS_CONTENT_TYPE, source="test", content=b"c",
            dicom=MppsRecord("1.2.3.9", "create", "IN PROGRESS", study_uid=STUDY)))
        _store(h, _record(f"{CT_SERIES}.1"), b"one")
        clock.now = _study(h).last_received_at + timedelta(seconds=119)
        assert assembler.run_once() == []
        clock.advance(2)
        assert assembler.run_once() == [(STUDY, 1, "quiet-period")]


def test_storage_commitment_of_every_instance_makes_the_study_ready(database, tmp_path):
    clock = Clock()
    with harness(database, tmp_path, _channels()) as h:
        assembler = _assembler(h, clock)
        _store(h, _record(f"{CT_SERIES}.1"), b"one")
        refs = (("1.2.840.10008.5.1.4.1.1.2", f"{CT_SERIES}.1"),
                ("1.2.840.10008.5.1.4.1.1.2", f"{CT_SERIES}.2"))
        h.receiver.receive_sync(Inbound(
            channel="dicom-in", content_type="x", source="test", content=b"n",
            dicom=CommitmentRequest("1.2.3.10", "MODALITY", refs)))
        clock.now = _study(h).last_received_at
        assert assembler.run_once() == []  # one referenced instance is missing
        _store(h, _record(f"{CT_SERIES}.2"), b"two")
        clock.now = _study(h).last_received_at
        assert assembler.run_once() == [(STUDY, 1, "storage-commitment")]
        with h.database.read() as session:
            assert session.execute(select(DicomCommitment.settled)).scalar_one() is True


def test_an_announcement_is_never_repeated_for_one_version(database, tmp_path):
    """A node that announced and crashed before marking the study ready (or a second node
    deciding at the same time) announces the same version again: it is deduplicated."""
    clock = Clock()
    with harness(database, tmp_path, _channels()) as h:
        _store(h, _record(f"{CT_SERIES}.1"), b"one")
        clock.now = _study(h).last_received_at + timedelta(seconds=60)
        assert _assembler(h, clock).run_once() == [(STUDY, 1, "quiet-period")]
        with h.database.write() as session:  # as if the state change never happened
            session.execute(update(DicomStudy).values(state=COLLECTING, ready_version=0))
        assert _assembler(h, clock).run_once() == [(STUDY, 1, "quiet-period")]
        assert len(_ready_messages(h)) == 1


def test_the_orders_expected_series_make_the_study_ready_without_waiting(database, tmp_path):
    """CTHEADWO makes 2 series here: ready as soon as the second arrives, no quiet time."""
    from radbridge.engine.models import Order, Patient

    clock = Clock()
    with harness(database, tmp_path, _channels(expected_series={"CTHEADWO": 2})) as h:
        with h.database.write() as session:
            patient = Patient(identifier="RB-1", issuer="")
            session.add(patient)
            session.flush()
            session.add(Order(patient_id=patient.id, accession="ACC-9",
                              procedure_code="CTHEADWO", status="scheduled"))
        assembler = _assembler(h, clock)
        _store(h, _record(f"{CT_SERIES}.1"), b"one")
        clock.now = _study(h).last_received_at
        assert assembler.run_once() == []  # one series of two
        _store(h, _record(f"{SR_SERIES}.1", SR_SERIES, "CT"), b"two")
        clock.now = _study(h).last_received_at
        assert assembler.run_once() == [(STUDY, 1, "order")]
