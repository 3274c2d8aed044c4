"""HL7 v2 ADT and order messages read into registry records: pure functions, no I/O.

`parse_message` turns one message's text into a `PatientEvent` (ADT A01, A02, A03, A04,
A08, A11, A13, A40), an `OrderEvent` (ORM^O01, OMI^O23: one `OrderDetails` per ORC
group) or `Unhandled` (any other message type, which the registry ignores). A message
of a handled type that cannot be read raises `Hl7ContentError` naming the field.

Conventions: values are unescaped; HL7's explicit null `""` reads as empty, i.e. "not
given", so the registry keeps what it has. Times without an offset are taken in the
offset of MSH-7, else UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum

from radbridge.mappings.hl7.errors import Hl7ContentError
from radbridge.mappings.hl7.reading import (
    Reader,
    Segment,
    dicom_uid,
    hl7_date,
    hl7_datetime,
    read_message,
)


class AdtTrigger(StrEnum):
    """The ADT trigger events the registry applies (HL7 table 0003)."""

    ADMIT = "A01"
    TRANSFER = "A02"
    DISCHARGE = "A03"
    REGISTER = "A04"
    UPDATE = "A08"
    CANCEL_ADMIT = "A11"
    CANCEL_DISCHARGE = "A13"
    MERGE = "A40"


class OrderControl(StrEnum):
    """The ORC-1 order control codes the registry applies (HL7 table 0119)."""

    NEW = "NW"
    CHANGE = "XO"
    CANCEL = "CA"
    DISCONTINUE = "DC"
    STATUS_CHANGED = "SC"


ORDER_STATUS_CODES = frozenset({"A", "CA", "CM", "DC", "ER", "HD", "IP", "RP", "SC"})
"""ORC-5 order status codes (HL7 table 0038)."""

ORDER_TYPES = {"ORM": "O01", "OMI": "O23"}
"""Order message types and the one trigger of each that the registry reads."""


@dataclass(frozen=True)
class Identifier:
    """A CX identifier: the value, its assigning authority (CX.4) and type code (CX.5)."""

    value: str
    issuer: str = ""
    type_code: str = ""

    def __post_init__(self) -> None:
        if not self.value:
            raise ValueError("an identifier needs a value")


@dataclass(frozen=True)
class MessageHeader:
    """What MSH says about the message."""

    message_type: str
    trigger: str
    control_id: str
    sent_at: datetime | None = None
    version: str = ""


@dataclass(frozen=True)
class Demographics:
    """The patient of PID: every PID-3 identifier, and name (XPN, '^'-joined), sex, birth date."""

    identifiers: tuple[Identifier, ...]
    name: str | None = None
    birth_date: date | None = None
    sex: str | None = None

    def __post_init__(self) -> None:
        if not self.identifiers:
            raise ValueError("a patient needs at least one identifier")

    @property
    def primary(self) -> Identifier:
        """The medical record number (type MR) if there is one, else the first identifier."""
        return primary_identifier(self.identifiers)


@dataclass(frozen=True)
class Visit:
    """PV1: the encounter an ADT event is about; no visit number means no encounter."""

    visit_number: Identifier | None = None
    patient_class: str | None = None
    location: str | None = None
    admitted_at: datetime | None = None
    discharged_at: datetime | None = None


@dataclass(frozen=True)
class PatientEvent:
    """One ADT message. For A40, `prior_identifiers` (MRG-1) name the patient merged away."""

    header: MessageHeader
    trigger: AdtTrigger
    patient: Demographics
    visit: Visit | None = None
    event_at: datetime | None = None
    prior_identifiers: tuple[Identifier, ...] = ()

    def __post_init__(self) -> None:
        if self.trigger is AdtTrigger.MERGE and not self.prior_identifiers:
            raise ValueError("a merge (A40) needs the prior patient's identifiers")


@dataclass(frozen=True)
class OrderDetails:
    """One ORC group (ORC, TQ1, OBR, IPC, ZDS) of an order message."""

    control: OrderControl
    status_code: str | None = None
    placer_number: str | None = None
    filler_number: str | None = None
    accession: str | None = None
    accession_issuer: str | None = None
    study_uid: str | None = None
    procedure_code: str | None = None
    procedure_system: str | None = None
    procedure_display: str | None = None
    modality: str | None = None
    priority: str | None = None
    provider_id: str | None = None
    provider_name: str | None = None
    scheduled_at: datetime | None = None

    def __post_init__(self) -> None:
        if not (self.placer_number or self.filler_number or self.accession):
            raise ValueError("an order needs a placer number, a filler number or an accession")
        if self.status_code is not None and self.status_code not in ORDER_STATUS_CODES:
            raise ValueError(f"order status {self.status_code!r} is not in HL7 table 0038")
        if self.control is OrderControl.STATUS_CHANGED and self.status_code is None:
            raise ValueError("a status change (SC) needs the new order status")


@dataclass(frozen=True)
class OrderEvent:
    """One ORM^O01 or OMI^O23 message: the patient and each order it carries."""

    header: MessageHeader
    patient: Demographics
    orders: tuple[OrderDetails, ...]

    def __post_init__(self) -> None:
        if not self.orders:
            raise ValueError("an order message needs at least one order")


@dataclass(frozen=True)
class Unhandled:
    """A message of a type the registry does not keep (ORU, ACK, ...)."""

    header: MessageHeader


def primary_identifier(identifiers: tuple[Identifier, ...]) -> Identifier:
    """The MR-typed identifier if any, else the first: the one the registry keys on."""
    return next((i for i in identifiers if i.type_code == "MR"), identifiers[0])


def parse_message(text: str) -> PatientEvent | OrderEvent | Unhandled:
    """Read one HL7 v2 message; `Hl7ContentError` names the first unreadable field."""
    reader = read_message(text)
    header = _header(reader)
    if header.message_type == "ADT":
        return _patient_event(reader, header)
    if header.message_type in ORDER_TYPES:
        if header.trigger != ORDER_TYPES[header.message_type]:
            raise Hl7ContentError("MSH-9 (message type)", f"{header.message_type}^"
                                  f"{header.trigger[:8]} is not an order the registry reads")
        return OrderEvent(header, _demographics(reader), _orders(reader))
    return Unhandled(header)


def _header(reader: Reader) -> MessageHeader:
    msh = reader.segment("MSH")
    message_type, trigger = msh.text(9, 1), msh.text(9, 2)
    if not message_type:
        raise Hl7ContentError("MSH-9 (message type)", "is empty")
    return MessageHeader(
        message_type=message_type, trigger=trigger, control_id=msh.text(10),
        sent_at=hl7_datetime(msh.text(7), "MSH-7 (message date/time)", UTC),
        version=msh.text(12),
    )


def _patient_event(reader: Reader, header: MessageHeader) -> PatientEvent:
    try:
        trigger = AdtTrigger(header.trigger)
    except ValueError:
        raise Hl7ContentError("MSH-9 (message type)", f"ADT^{header.trigger[:8]} is not an"
                              " ADT trigger the registry applies") from None
    evn = reader.optional("EVN")
    event_at = None
    if evn is not None:
        event_at = (reader.datetime(evn, 6, "EVN-6 (event occurred)")
                    or reader.datetime(evn, 2, "EVN-2 (recorded date/time)"))
    prior: tuple[Identifier, ...] = ()
    if trigger is AdtTrigger.MERGE:
        mrg = reader.required("MRG", "A40 needs the prior patient")
        prior = _identifiers(mrg, 1, "MRG-1 (prior patient identifier list)")
    pv1 = reader.optional("PV1")
    return PatientEvent(header, trigger, _demographics(reader),
                        None if pv1 is None else _visit(reader, pv1), event_at, prior)


def _demographics(reader: Reader) -> Demographics:
    pid = reader.required("PID", "the registry needs the patient")
    legal = next((r for r in range(1, pid.repeats(5) + 1) if pid.text(5, 7, rep=r) == "L"), 1)
    name = pid.joined(5, 5, rep=legal)
    birth = hl7_date(pid.text(7), "PID-7 (birth date)")
    return Demographics(_identifiers(pid, 3, "PID-3 (patient identifier list)"),
                        name or None, birth, pid.text(8) or None)


def _identifiers(segment: Segment, field: int, label: str) -> tuple[Identifier, ...]:
    found = tuple(
        Identifier(value, segment.hd(field, 4, rep), segment.text(field, 5, rep=rep))
        for rep in range(1, segment.repeats(field) + 1)
        if (value := segment.text(field, 1, rep=rep))
    )
    if not found:
        raise Hl7ContentError(label, "is empty")
    return found


def _visit(reader: Reader, pv1: Segment) -> Visit:
    number = pv1.text(19, 1)
    return Visit(
        visit_number=Identifier(number, pv1.hd(19, 4)) if number else None,
        patient_class=pv1.text(2) or None,
        location=pv1.joined(3, 4) or None,
        admitted_at=reader.datetime(pv1, 44, "PV1-44 (admit date/time)"),
        discharged_at=reader.datetime(pv1, 45, "PV1-45 (discharge date/time)"),
    )


def _orders(reader: Reader) -> tuple[OrderDetails, ...]:
    groups = reader.groups("ORC")
    if not groups:
        raise Hl7ContentError("ORC", "segment is missing: an order message needs one")
    return tuple(_order(reader, group) for group in groups)


def _order(reader: Reader, group: dict[str, Segment]) -> OrderDetails:
    orc = group["ORC"]
    empty = Segment.empty
    obr, tq1, ipc, zds = (group.get(n, empty(n)) for n in ("OBR", "TQ1", "IPC", "ZDS"))
    code = orc.text(1)
    try:
        control = OrderControl(code)
    except ValueError:
        raise Hl7ContentError("ORC-1 (order control)", "is empty" if not code else
                              f"{code[:8]!r} is not one the registry applies"
                              " (NW, XO, CA, DC, SC)") from None
    status = orc.text(5) or None
    if status is not None and status not in ORDER_STATUS_CODES:
        raise Hl7ContentError("ORC-5 (order status)", f"{status[:8]!r} is not in HL7 table 0038")
    if control is OrderControl.STATUS_CHANGED and status is None:
        raise Hl7ContentError("ORC-5 (order status)", "is empty: SC needs the new status")
    accession = ipc.text(1, 1) or obr.text(18)
    uid_field = ("IPC-3", ipc.text(3, 1)) if ipc.text(3, 1) else ("ZDS-1", zds.text(1, 1))
    placer, filler = orc.text(2, 1) or obr.text(2, 1), orc.text(3, 1) or obr.text(3, 1)
    if not (placer or filler or accession):
        raise Hl7ContentError("ORC-2, ORC-3 and OBR-18/IPC-1 (placer, filler, accession)",
                              "are all empty: the order cannot be identified")
    provider = orc if orc.text(12, 1) or orc.text(12, 2) else obr
    provider_field = 12 if provider is orc else 16
    return OrderDetails(
        control=control, status_code=status, placer_number=placer or None,
        filler_number=filler or None, accession=accession or None,
        accession_issuer=(ipc.text(1, 2) or ipc.text(1, 3) if ipc.text(1, 1) else "") or None,
        study_uid=dicom_uid(uid_field[1], f"{uid_field[0]} (study instance UID)"),
        procedure_code=obr.text(4, 1) or None, procedure_system=obr.text(4, 3) or None,
        procedure_display=obr.text(4, 2) or None,
        modality=ipc.text(5, 1) or obr.text(24) or None,
        priority=orc.text(7, 6) or tq1.text(9, 1) or obr.text(5) or None,
        provider_id=provider.text(provider_field, 1) or None,
        provider_name=provider.joined(provider_field, 6, start=2) or None,
        scheduled_at=(reader.datetime(obr, 36, "OBR-36 (scheduled date/time)")
                      or reader.datetime(tq1, 7, "TQ1-7 (start date/time)")
                      or reader.datetime(orc, 7, "ORC-7.4 (start date/time)", component=4)),
    )

