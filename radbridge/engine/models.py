"""The store's tables as SQLAlchemy 2.x models; Alembic migrations mirror them.

Small content lives inline in `message_stages.content`; content above the inline limit
lives in the blob store and the row keeps its hash. Times are stored as UTC.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
Id = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """Now, in UTC, timezone-aware."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware.

    SQLite has no time zones and would hand back naive values; PostgreSQL stores
    `timestamptz`. Both come back as aware UTC so comparisons never mix the two kinds.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC time")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Message(Base):
    """One message received by one channel, with its processing state."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    uid: Mapped[str] = mapped_column(String(32), unique=True)
    channel: Mapped[str] = mapped_column(String(63))
    status: Mapped[str] = mapped_column(String(16))
    generation: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source: Mapped[str] = mapped_column(String(255), default="")
    content_type: Mapped[str] = mapped_column(String(127))
    dedup_key: Mapped[str | None] = mapped_column(String(255))
    patient_id: Mapped[str | None] = mapped_column(String(64))
    accession: Mapped[str | None] = mapped_column(String(64))
    study_uid: Mapped[str | None] = mapped_column(String(64))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("channel", "dedup_key"),
        Index(None, "channel", "status", "id"),
        Index(None, "status", "id"),
        Index(None, "received_at"),
        Index(None, "patient_id"),
        Index(None, "accession"),
        Index(None, "study_uid"),
    )


class MessageStage(Base):
    """What happened to a message at one stage, with the content at that point."""

    __tablename__ = "message_stages"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    generation: Mapped[int] = mapped_column(Integer, default=0)
    stage: Mapped[str] = mapped_column(String(16))
    destination: Mapped[str | None] = mapped_column(String(63))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    content_type: Mapped[str | None] = mapped_column(String(127))
    content: Mapped[bytes | None] = mapped_column(LargeBinary)
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    content_size: Mapped[int | None] = mapped_column(BigInteger)
    in_blob: Mapped[bool] = mapped_column(Boolean, default=False)
    detail: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index(None, "message_id", "id"),
        Index(None, "content_sha256"),
    )


class Delivery(Base):
    """One message owed to one destination: the outbox row that workers lease."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(63))
    destination: Mapped[str] = mapped_column(String(63))
    generation: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ordering_key: Mapped[str | None] = mapped_column(String(255))
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    content_stage_id: Mapped[int] = mapped_column(
        ForeignKey("message_stages.id", ondelete="CASCADE")
    )
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index(None, "channel", "destination", "status", "next_attempt_at"),
        Index(None, "channel", "destination", "ordering_key", "id"),
        Index(None, "message_id"),
        Index(None, "status", "lease_expires_at"),
    )


class AuditEvent(Base):
    """One append-only audit event; `hash` chains it to the event before it."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    chain: Mapped[str] = mapped_column(String(128), server_default="default")
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str | None] = mapped_column(String(63))
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    patient_id: Mapped[str | None] = mapped_column(String(64))
    accession: Mapped[str | None] = mapped_column(String(64))
    study_uid: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="{}")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index(None, "patient_id", "seq"),
        Index(None, "accession", "seq"),
        Index(None, "study_uid", "seq"),
        Index(None, "channel", "seq"),
        Index(None, "actor", "seq"),
        Index(None, "message_id"),
        Index(None, "at"),
        Index(None, "chain", "seq"),
    )


class AuditHead(Base):
    """The last event of one chain, kept apart so that cutting off a tail is detected.

    Each writer (a node's receiver, processor and outbox writer, the API, the CLI)
    appends to a chain of its own, so appenders never wait for each other's locks.
    """

    __tablename__ = "audit_head"

    chain: Mapped[str] = mapped_column(String(128), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hash: Mapped[str] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(BigInteger, default=0)


# The tables themselves, for Core statements on hot paths (see receiver, audit, outbox).
MESSAGES = cast(Table, Message.__table__)
STAGES = cast(Table, MessageStage.__table__)
DELIVERIES = cast(Table, Delivery.__table__)
AUDIT_EVENTS = cast(Table, AuditEvent.__table__)
AUDIT_HEAD = cast(Table, AuditHead.__table__)


# --- the registry: patients, encounters and orders fed by HL7 ADT/ORM/OMI ----------------
# Demographics (name, birth date, sex) are PHI: logs and audit details carry row ids only.


class Patient(Base):
    """A patient by one identifier and its issuer; a merged patient points at its survivor.

    `issuer` is '' rather than NULL when unknown, so that the unique constraint holds.
    """

    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    identifier: Mapped[str] = mapped_column(String(64))
    issuer: Mapped[str] = mapped_column(String(64), default="")
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    name: Mapped[str | None] = mapped_column(String(255))
    birth_date: Mapped[date | None] = mapped_column(Date)
    sex: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("identifier", "issuer"),
        Index(None, "merged_into_id"),
    )


class Encounter(Base):
    """A visit (PV1-19 visit number) of a patient, with its status and where it is."""

    __tablename__ = "encounters"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    visit_number: Mapped[str] = mapped_column(String(64))
    visit_issuer: Mapped[str] = mapped_column(String(64), default="")
    patient_class: Mapped[str | None] = mapped_column(String(8))
    location: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    admitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    discharged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_message_uid: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("visit_number", "visit_issuer"),
        Index(None, "patient_id"),
    )


class Order(Base):
    """An imaging order as the placer and filler know it, with its current status."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    placer_number: Mapped[str | None] = mapped_column(String(64))
    filler_number: Mapped[str | None] = mapped_column(String(64))
    accession: Mapped[str | None] = mapped_column(String(64))
    accession_issuer: Mapped[str | None] = mapped_column(String(64))
    study_uid: Mapped[str | None] = mapped_column(String(64))
    procedure_code: Mapped[str | None] = mapped_column(String(64))
    procedure_system: Mapped[str | None] = mapped_column(String(64))
    procedure_display: Mapped[str | None] = mapped_column(String(255))
    modality: Mapped[str | None] = mapped_column(String(16))
    priority: Mapped[str | None] = mapped_column(String(16))
    ordering_provider_id: Mapped[str | None] = mapped_column(String(64))
    ordering_provider_name: Mapped[str | None] = mapped_column(String(255))
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))
    last_message_uid: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index(None, "accession"),
        Index(None, "placer_number"),
        Index(None, "filler_number"),
        Index(None, "study_uid"),
        Index(None, "patient_id"),
    )


class OrderStatusHistory(Base):
    """One order message applied to an order: the status before and after, and why."""

    __tablename__ = "order_status_history"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    control_code: Mapped[str] = mapped_column(String(2))
    message_uid: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index(None, "order_id", "id"),)


class Study(Base):
    """An imaging study known to the registry; the DICOM work adds to it."""

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    accession: Mapped[str | None] = mapped_column(String(64))
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index(None, "accession"),
        Index(None, "patient_id"),
    )


class RegistryApplied(Base):
    """A message the registry has applied: applying the same message again changes nothing."""

    __tablename__ = "registry_applied"

    message_uid: Mapped[str] = mapped_column(String(32), primary_key=True)
    message_type: Mapped[str] = mapped_column(String(16))
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# --- the DICOM index: what was received, by study, series and instance -------------------
# Written in the same transaction as the message carrying the instance (receiver), so a
# success status is sent only for an instance that is both stored and indexed. Patient
# names and birth dates are PHI like the registry's: logs carry UIDs only.


class DicomStudy(Base):
    """A study as its instances describe it, and where study assembly stands with it."""

    __tablename__ = "dicom_studies"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    channel: Mapped[str] = mapped_column(String(63))
    patient_id: Mapped[str | None] = mapped_column(String(64))
    issuer_of_patient_id: Mapped[str | None] = mapped_column(String(64))
    patient_name: Mapped[str | None] = mapped_column(String(255))
    patient_birth_date: Mapped[str | None] = mapped_column(String(16))
    patient_sex: Mapped[str | None] = mapped_column(String(16))
    accession: Mapped[str | None] = mapped_column(String(64))
    accession_issuer: Mapped[str | None] = mapped_column(String(64))
    study_date: Mapped[str | None] = mapped_column(String(16))
    study_time: Mapped[str | None] = mapped_column(String(32))
    study_description: Mapped[str | None] = mapped_column(String(255))
    referring_physician: Mapped[str | None] = mapped_column(String(255))
    modalities: Mapped[str] = mapped_column(String(255), default="")
    series_count: Mapped[int] = mapped_column(Integer, default=0)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    first_received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    state: Mapped[str] = mapped_column(String(16), default="collecting")
    """'collecting' until assembly declares it ready; a late instance makes it collect again."""
    ready_version: Mapped[int] = mapped_column(Integer, default=0)
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ready_reason: Mapped[str | None] = mapped_column(String(32))

    __table_args__ = (
        Index(None, "state", "channel"),
        Index(None, "accession"),
        Index(None, "patient_id"),
    )


class DicomSeries(Base):
    """A series of a study, with the equipment that made it."""

    __tablename__ = "dicom_series"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("dicom_studies.id", ondelete="CASCADE"))
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    series_number: Mapped[int | None] = mapped_column(Integer)
    series_description: Mapped[str | None] = mapped_column(String(255))
    body_part: Mapped[str | None] = mapped_column(String(64))
    manufacturer: Mapped[str | None] = mapped_column(String(64))
    manufacturer_model: Mapped[str | None] = mapped_column(String(64))
    station_name: Mapped[str | None] = mapped_column(String(64))
    institution_name: Mapped[str | None] = mapped_column(String(64))
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    first_received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index(None, "study_id"),)


class DicomInstance(Base):
    """One version of one SOP instance: new content under a known UID is a new version."""

    __tablename__ = "dicom_instances"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("dicom_series.id", ondelete="CASCADE"))
    study_uid: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)
    current: Mapped[bool] = mapped_column(Boolean, default=True)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    blob_sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer)
    acquisition_datetime: Mapped[str | None] = mapped_column(String(32))
    content_datetime: Mapped[str | None] = mapped_column(String(32))
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    number_of_frames: Mapped[int | None] = mapped_column(Integer)
    samples_per_pixel: Mapped[int | None] = mapped_column(Integer)
    bits_allocated: Mapped[int | None] = mapped_column(Integer)
    photometric_interpretation: Mapped[str | None] = mapped_column(String(16))
    pixel_spacing: Mapped[str | None] = mapped_column(String(64))
    slice_thickness: Mapped[float | None] = mapped_column(Float)
    image_position: Mapped[str | None] = mapped_column(String(128))
    image_orientation: Mapped[str | None] = mapped_column(String(255))
    image_type: Mapped[str | None] = mapped_column(String(255))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("sop_instance_uid", "version"),
        Index(None, "series_id"),
        Index(None, "study_uid", "current"),
        Index(None, "message_id"),
    )


class DicomMpps(Base):
    """A Modality Performed Procedure Step: what the modality says it did for a study."""

    __tablename__ = "dicom_mpps"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    mpps_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_uid: Mapped[str | None] = mapped_column(String(64))
    accession: Mapped[str | None] = mapped_column(String(64))
    patient_id: Mapped[str | None] = mapped_column(String(64))
    modality: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    performed: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Series UID -> the SOP instance UIDs the step referenced in it."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index(None, "study_uid"),)


class DicomCommitment(Base):
    """A Storage Commitment request: the requester considers these instances complete."""

    __tablename__ = "dicom_commitments"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    transaction_uid: Mapped[str] = mapped_column(String(64), unique=True)
    requester_ae: Mapped[str] = mapped_column(String(16))
    sop_instance_uids: Mapped[list[str]] = mapped_column(JSON, default=list)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    settled: Mapped[bool] = mapped_column(Boolean, default=False)
    """True once every referenced instance was stored and its studies were declared ready."""

    __table_args__ = (Index(None, "settled"),)


DICOM_STUDIES = cast(Table, DicomStudy.__table__)
DICOM_SERIES = cast(Table, DicomSeries.__table__)
DICOM_INSTANCES = cast(Table, DicomInstance.__table__)
DICOM_MPPS = cast(Table, DicomMpps.__table__)
DICOM_COMMITMENTS = cast(Table, DicomCommitment.__table__)


# --- correlation: which order(s) each study belongs to, and what a person must decide ----


class StudyOrderLink(Base):
    """A study linked to an order, by which rule (or by whom), and how sure."""

    __tablename__ = "study_order_links"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    study_uid: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    rule: Mapped[str] = mapped_column(String(32))
    confidence: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text)
    decided_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("study_uid", "order_id"),
        Index(None, "order_id"),
    )


class ReconciliationItem(Base):
    """A study the rules could not place (unmatched) or would not (conflict), waiting for
    a new order or a person; `rules` and `window_seconds` say how it was tried."""

    __tablename__ = "reconciliation_items"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    study_uid: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    candidates: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    rules: Mapped[list[str]] = mapped_column(JSON, default=list)
    window_seconds: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_by: Mapped[str | None] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index(None, "state", "id"),
        Index(None, "study_uid"),
    )

ORDERS = cast(Table, Order.__table__)


class InferenceRun(Base):
    """One model on one version of a ready study: what ran on which series, the outcome
    and the findings, with the provenance every output must carry (model name, version,
    card digest, device identifier, the demonstration flag) and its timing.

    `status`: done, skipped (routing: no series fits; `reason` says why),
    failed-retryable (the backend was unavailable; tried again), failed-final (the series
    or the model cannot work; `reason` says why)."""

    __tablename__ = "inference_runs"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    study_uid: Mapped[str] = mapped_column(String(64))
    study_version: Mapped[int] = mapped_column(Integer)
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(32))
    card_sha256: Mapped[str] = mapped_column(String(64))
    device_identifier: Mapped[str] = mapped_column(String(128))
    demonstration: Mapped[bool] = mapped_column(Boolean)
    intended_use: Mapped[str] = mapped_column(Text, default="")
    use_case: Mapped[str] = mapped_column(String(64), default="")
    backend: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    series_uid: Mapped[str | None] = mapped_column(String(64))
    instances: Mapped[int] = mapped_column(Integer, default=0)
    positive: Mapped[bool] = mapped_column(Boolean, default=False)
    emergent: Mapped[bool] = mapped_column(Boolean, default=False)
    findings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    heatmap_sha256: Mapped[str | None] = mapped_column(String(64))
    grid: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """How the heat map's grid samples the source images (inference.preprocess.Grid as
    JSON): what maps it back onto the images for a SEG or an overlay."""
    preprocess_ms: Mapped[float | None] = mapped_column(Float)
    inference_ms: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("study_uid", "study_version", "model_name", "model_version",
                         name="uq_inference_runs_run"),
        Index(None, "model_name", "model_version", "created_at"),
        Index(None, "status", "id"),
    )


INFERENCE_RUNS = cast(Table, InferenceRun.__table__)


# --- results: what was sent, so that later changes can correct or withdraw it ---------


class PublishedResult(Base):
    """One AI result (per study, order and model) as its receivers hold it: the run
    last sent, the revision, whether it stands or was withdrawn, the DICOM objects the
    PACS was sent, and the channels its revisions go to.

    `pending` ('withdraw' or 'correct', with `pending_reason`) is set in the transaction
    that changed the facts (an order cancelled, a patient updated or merged) and cleared
    when the revision has been handed on: a crash in between leaves it set, and the next
    pass sends the same revision (same ids), so a change is never lost or sent twice.
    `patient_digest` is a SHA-256 of the identity the result was sent with, so that a
    demographic update that changes nothing sent is not a correction."""

    __tablename__ = "published_results"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    result_key: Mapped[str] = mapped_column(String(200), unique=True)
    result_id: Mapped[str] = mapped_column(String(64))
    study_uid: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"))
    """None for a result sent before its study was linked (`unlinked: study-only`)."""
    model_name: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[int] = mapped_column(ForeignKey("inference_runs.id"))
    revision: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default="sent")
    pending: Mapped[str | None] = mapped_column(String(16))
    pending_reason: Mapped[str | None] = mapped_column(String(200))
    patient_digest: Mapped[str] = mapped_column(String(64))
    results_channel: Mapped[str] = mapped_column(String(64))
    pacs_channel: Mapped[str | None] = mapped_column(String(64))
    pacs_endpoint: Mapped[str | None] = mapped_column(Text)
    correct_on_patient_change: Mapped[bool] = mapped_column(Boolean, default=True)
    dicom_objects: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    """The SR/SEG of the current revision: kind, SOP class and instance UIDs, blob."""
    superseded_objects: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    """The SR/SEG of the revision before, which the current one replaces (the new SR
    names them as predecessors; a rejection note tells the PACS to hide them)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index(None, "order_id"),
        Index(None, "study_uid"),
        Index(None, "pending", "id"),
    )


PUBLISHED_RESULTS = cast(Table, PublishedResult.__table__)


# --- QA: what the model said and what the radiologist said, per study and finding --------
# Joined on (study_uid, finding_system, finding_code); either side may arrive first and
# waits for the other. Strata are labels (sex, an age band), never identifiers.


class QaObservation(Base):
    """One finding of one done inference run, with what QA breaks it down by: the study
    date (the time axis of every window), the equipment and demographics as strata
    ("unknown" when absent), the acquisition and the input tensor's pixel statistics."""

    __tablename__ = "qa_observations"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("inference_runs.id"))
    study_uid: Mapped[str] = mapped_column(String(64))
    accession: Mapped[str | None] = mapped_column(String(64))
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(32))
    finding_code: Mapped[str] = mapped_column(String(64))
    finding_system: Mapped[str] = mapped_column(String(32))
    score: Mapped[float] = mapped_column(Float)
    ai_positive: Mapped[bool] = mapped_column(Boolean)
    threshold: Mapped[float] = mapped_column(Float)
    study_date: Mapped[date] = mapped_column(Date)
    """The study's StudyDate; the run's date when the header has none."""
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    manufacturer: Mapped[str] = mapped_column(String(64))
    scanner_model: Mapped[str] = mapped_column(String(64))
    station: Mapped[str] = mapped_column(String(64))
    site: Mapped[str] = mapped_column(String(64))
    """InstitutionName."""
    sex: Mapped[str] = mapped_column(String(64))
    age_band: Mapped[str] = mapped_column(String(64))
    kvp: Mapped[float | None] = mapped_column(Float)
    slice_thickness: Mapped[float | None] = mapped_column(Float)
    pixel_spacing: Mapped[float | None] = mapped_column(Float)
    """The first value of PixelSpacing (ImagerPixelSpacing for projection images)."""
    kernel: Mapped[str | None] = mapped_column(String(64))
    pixel_mean: Mapped[float | None] = mapped_column(Float)
    pixel_std: Mapped[float | None] = mapped_column(Float)
    """Of the model's input tensor after preprocessing: what input drift is measured on."""
    strata: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    """The site's own strata (the inference destination's `qa_strata`): DICOM keyword ->
    the value in the series' header ("unknown" when absent)."""

    __table_args__ = (
        UniqueConstraint("run_id", "finding_system", "finding_code"),
        Index(None, "model_name", "model_version", "study_date"),
        Index(None, "study_uid"),
    )


class QaRead(Base):
    """The radiologist's call on one finding of one study, from its final report (coded
    OBX values, else rules on the text); a later final or corrected report replaces it.

    `call` is the reading before the rule's mapping ("positive", "negative", "uncertain",
    "not_mentioned"); `radiologist_positive` is after it, None leaving the study out of
    the 2x2 table. `message_id` names the stored message, not a foreign key: retention
    may purge messages while the read stays."""

    __tablename__ = "qa_reads"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    study_uid: Mapped[str] = mapped_column(String(64))
    accession: Mapped[str | None] = mapped_column(String(64))
    finding_code: Mapped[str] = mapped_column(String(64))
    finding_system: Mapped[str] = mapped_column(String(32))
    call: Mapped[str] = mapped_column(String(16))
    radiologist_positive: Mapped[bool | None] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(8))
    """'coded' (an OBX value said it) or 'text' (the report's words, by rule)."""
    report_status: Mapped[str] = mapped_column(String(1))
    """'F' final or 'C' corrected final."""
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime)
    message_id: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        UniqueConstraint("study_uid", "finding_system", "finding_code"),
        Index(None, "accession"),
    )


QA_OBSERVATIONS = cast(Table, QaObservation.__table__)
QA_READS = cast(Table, QaRead.__table__)


# --- access control: API tokens (radbridge.interfaces.auth) ------------------------------


class ApiToken(Base):
    """A bearer token for the HTTP API. The secret is shown once, when it is made; only its
    SHA-256 is kept (the secret is 32 random bytes, so a salt would add nothing). `name`
    is what audit events call the caller ("token:<name>"), hence unique."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


API_TOKENS = cast(Table, ApiToken.__table__)


# --- audit forwarding: how far each syslog destination has the ledger (audit_export) ------


class AuditForwarding(Base):
    """The store-and-forward cursor of one audit destination (a syslog collector): every
    event up to `last_seq` was sent to it; the events after it wait in the ledger itself,
    however long the collector is away. One node at a time forwards to a destination:
    the one holding the lease, renewed with each batch."""

    __tablename__ = "audit_forwarding"

    destination: Mapped[str] = mapped_column(String(255), primary_key=True)
    """The target's name, e.g. tls://collector.example:6514."""
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    forwarded: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


AUDIT_FORWARDING = cast(Table, AuditForwarding.__table__)


# --- operations: alert incidents (radbridge.engine.alerts) -------------------------------


class AlertIncident(Base):
    """One incident an `alerts` channel's rules found: open while its rule holds, then
    resolved. `open_key` is the key while open and NULL after, so that one key has at
    most one open incident (nodes sharing a store race to open it; one wins) while its
    resolved ones stay as history. The message ids say the raise and the resolution
    were received on the alerts channel (NULL: not yet, so the next pass does it)."""

    __tablename__ = "alert_incidents"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    alert_channel: Mapped[str] = mapped_column(String(63))
    rule: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(255))
    open_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    state: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text)
    channel: Mapped[str | None] = mapped_column(String(63))
    destination: Mapped[str | None] = mapped_column(String(63))
    peer: Mapped[str | None] = mapped_column(String(255))
    figures: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    node: Mapped[str] = mapped_column(String(128))
    """The node that opened it."""
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    raised_message_id: Mapped[int | None] = mapped_column(BigInteger)
    resolved_message_id: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        Index(None, "alert_channel", "state"),
        Index(None, "key", "id"),
    )


ALERT_INCIDENTS = cast(Table, AlertIncident.__table__)
