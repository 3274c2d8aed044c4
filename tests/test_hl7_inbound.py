"""Reading ADT and order messages into registry records (radbridge.mappings.hl7.inbound)."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from radbridge.mappings.hl7.errors import Hl7ContentError
from radbridge.mappings.hl7.inbound import (
    AdtTrigger,
    Demographics,
    Identifier,
    MessageHeader,
    OrderControl,
    OrderDetails,
    OrderEvent,
    PatientEvent,
    Unhandled,
    parse_message,
)
from radbridge.mappings.hl7.reading import decode, hl7_date, hl7_datetime, unescape

SAMPLES = Path(__file__).parent.parent / "samples" / "hl7"
MSH = "MSH|^~\\&|EHR|NORTHWIND|RADBRIDGE|NORTHWIND|20261201090000-0500||{type}|C1|P|2.5.1"
PID = "PID|1||MRN1^^^NORTHWIND^MR||DOE^JANE||19610203|F"


def sample(name: str) -> PatientEvent | OrderEvent | Unhandled:
    return parse_message(decode((SAMPLES / name).read_bytes()))


def message(kind: str, *segments: str) -> str:
    return "\r".join([MSH.format(type=kind), *segments]) + "\r"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize(("name", "trigger"), [
    ("adt_a01_admit.hl7", "A01"), ("adt_a02_transfer.hl7", "A02"),
    ("adt_a03_discharge.hl7", "A03"), ("adt_a04_register.hl7", "A04"),
    ("adt_a08_update.hl7", "A08"), ("adt_a11_cancel_admit.hl7", "A11"),
    ("adt_a13_cancel_discharge.hl7", "A13"), ("adt_a40_merge.hl7", "A40"),
])
def test_every_adt_sample_reads_as_its_trigger(name, trigger):
    event = sample(name)
    assert isinstance(event, PatientEvent)
    assert event.trigger == AdtTrigger(trigger)
    assert event.header.version == "2.5.1" and event.header.control_id.startswith("NW-ADT")


@pytest.mark.parametrize(("name", "controls"), [
    ("orm_o01_nw.hl7", ["NW", "NW"]), ("orm_o01_xo.hl7", ["XO"]), ("orm_o01_ca.hl7", ["CA"]),
    ("orm_o01_dc.hl7", ["DC"]), ("orm_o01_sc.hl7", ["SC"]), ("omi_o23_nw.hl7", ["NW"]),
])
def test_every_order_sample_reads_as_its_control_codes(name, controls):
    event = sample(name)
    assert isinstance(event, OrderEvent)
    assert [o.control for o in event.orders] == [OrderControl(c) for c in controls]


def test_admit_reads_patient_visit_and_times_in_the_senders_offset():
    event = sample("adt_a01_admit.hl7")
    assert isinstance(event, PatientEvent)
    patient = event.patient
    assert patient.identifiers == (Identifier("HC998877", "ONTARIO-HC", "HC"),
                                   Identifier("MRN100234", "NORTHWIND", "MR"))
    assert patient.primary == Identifier("MRN100234", "NORTHWIND", "MR")  # MR, though second
    assert (patient.name, patient.birth_date, patient.sex) == (
        "MORGAN^ALEX^Q", date(1972, 4, 15), "F")
    assert event.visit is not None
    assert event.visit.visit_number == Identifier("V7001", "NORTHWIND")
    assert (event.visit.patient_class, event.visit.location) == ("I", "4W^401^A^NORTHWIND")
    assert event.visit.admitted_at == at("2026-12-01T14:00:00+00:00")
    assert event.event_at == at("2026-12-01T09:00:00-05:00")
    assert event.header.sent_at == at("2026-12-01T14:00:00+00:00")


def test_merge_reads_the_prior_identifiers_from_mrg():
    event = sample("adt_a40_merge.hl7")
    assert isinstance(event, PatientEvent)
    assert event.prior_identifiers == (Identifier("MRN100999", "NORTHWIND", "MR"),)
    assert event.patient.primary.value == "MRN100234"
    assert event.visit is None


def test_new_orm_reads_both_orders_with_every_field():
    event = sample("orm_o01_nw.hl7")
    assert isinstance(event, OrderEvent)
    ct, xr = event.orders
    assert ct == OrderDetails(
        control=OrderControl.NEW, status_code="SC", placer_number="PLC5001",
        filler_number="FIL9001", accession="ACC26120001", accession_issuer=None,
        study_uid="1.2.826.0.1.3680043.10.1234.26120001", procedure_code="CTHEADWO",
        procedure_system="NWRAD", procedure_display="CT HEAD W/O CONTRAST & CTA NECK",
        modality="CT", priority="R", provider_id="4455", provider_name="KOVACS^ANNA^^^DR",
        scheduled_at=at("2026-12-01T07:30:00-05:00"),
    )
    assert (xr.placer_number, xr.accession, xr.study_uid, xr.modality) == (
        "PLC5002", "ACC26120002", None, "RX")
    assert event.patient.primary == Identifier("MRN100999", "NORTHWIND", "MR")


def test_omi_reads_accession_uid_and_modality_from_ipc_and_timing_from_tq1():
    event = sample("omi_o23_nw.hl7")
    assert isinstance(event, OrderEvent)
    (order,) = event.orders
    assert (order.accession, order.accession_issuer) == ("ACC26120003", "NW_RIS")
    assert order.study_uid == "1.2.826.0.1.3680043.10.1234.26120003"
    assert (order.modality, order.priority) == ("MR", "R")
    assert order.scheduled_at == at("2026-12-02T08:00:00-05:00")
    assert order.filler_number is None


def test_change_and_status_messages_carry_what_changed():
    xo = sample("orm_o01_xo.hl7")
    sc = sample("orm_o01_sc.hl7")
    assert isinstance(xo, OrderEvent) and isinstance(sc, OrderEvent)
    assert (xo.orders[0].priority, xo.orders[0].scheduled_at) == (
        "S", at("2026-12-01T07:20:00-05:00"))
    assert sc.orders[0].status_code == "IP"


def test_msh18_utf8_is_honoured():
    event = sample("adt_a08_update.hl7")
    assert isinstance(event, PatientEvent)
    assert event.patient.name == "MORGAN-LÓPEZ^ALEXIS^Q"
    assert event.patient.birth_date == date(1972, 5, 14)


def test_undeclared_content_falls_back_from_utf8_to_latin1():
    text = message("ADT^A08", PID.replace("DOE", "MÜLLER"))
    assert decode(text.encode("utf-8")) == text
    assert decode(text.encode("latin-1")) == text


def test_a_declared_8859_charset_is_used_and_a_false_declaration_is_an_error():
    header = MSH.format(type="ADT^A08") + "||||||8859/1"
    text = "\r".join([header, PID.replace("DOE", "MÜLLER")])
    assert decode(text.encode("latin-1")) == text
    lying = text.replace("8859/1", "UNICODE UTF-8").encode("latin-1")
    with pytest.raises(Hl7ContentError, match=r"MSH-18 \(character set\)"):
        decode(lying)


def test_lf_or_crlf_between_segments_is_accepted():
    text = message("ADT^A08", PID).replace("\r", "\r\n")
    event = parse_message(text)
    assert isinstance(event, PatientEvent) and event.patient.primary.value == "MRN1"
    assert isinstance(parse_message(text.replace("\r\n", "\n")), PatientEvent)


def test_without_an_mr_identifier_the_first_is_the_key_and_all_are_kept():
    text = message("ADT^A08", "PID|1||A1^^^X^PI~B2^^^Y^PN~~C3||DOE^JANE")
    event = parse_message(text)
    assert isinstance(event, PatientEvent)
    assert [i.value for i in event.patient.identifiers] == ["A1", "B2", "C3"]
    assert event.patient.primary == Identifier("A1", "X", "PI")


def test_assigning_authority_falls_back_to_its_universal_id():
    event = parse_message(message("ADT^A08", "PID|1||M7^^^&1.2.3.4&ISO^MR"))
    assert isinstance(event, PatientEvent)
    assert event.patient.primary.issuer == "1.2.3.4"


def test_the_legal_name_is_chosen_among_repeats():
    event = parse_message(message("ADT^A08", "PID|1||M1||ALIAS^AL^^^^^A~REAL^NAME^^^^^L"))
    assert isinstance(event, PatientEvent)
    assert event.patient.name == "REAL^NAME"


def test_escape_sequences_are_unescaped():
    text = message("ADT^A08", PID, r"PV1|1|I|W\F\1^R\S\2^B\T\3\R\4\E\||||||||||||||||V\X41\9")
    event = parse_message(text)
    assert isinstance(event, PatientEvent) and event.visit is not None
    assert event.visit.location == "W|1^R^2^B&3~4\\"
    assert event.visit.visit_number == Identifier("VA9")


def test_unknown_or_formatting_escapes_are_dropped_and_nothing_is_logged(caplog):
    caplog.set_level(logging.DEBUG)
    assert unescape(r"A\H\B\N\C\Zfoo\D\.br\E", "\\", "\r|~^&") == "ABCD\nE"
    assert unescape(r"bad \Xzz\ hex", "\\", "\r|~^&") == "bad  hex"
    assert caplog.records == []


def test_explicit_null_reads_as_not_given():
    event = parse_message(message("ADT^A08", 'PID|1||M1||""||""|""'))
    assert isinstance(event, PatientEvent)
    assert (event.patient.name, event.patient.birth_date, event.patient.sex) == (
        None, None, None)


def test_an_oru_is_unhandled_not_an_error():
    event = parse_message(message("ORU^R01", PID, "OBR|1||F1|X"))
    assert isinstance(event, Unhandled)
    assert (event.header.message_type, event.header.trigger) == ("ORU", "R01")


@pytest.mark.parametrize(("text", "expected"), [
    (message("ADT^A01", "EVN|A01", "PV1|1|I"), r"^PID segment is missing"),
    (message("ADT^A01", "PID|1||^^^NORTHWIND^MR"),
     r"^PID-3 \(patient identifier list\) is empty$"),
    (message("ADT^A31", PID), r"^MSH-9 \(message type\) ADT\^A31 is not an ADT trigger"),
    (message("ADT^A40", PID), r"^MRG segment is missing"),
    (message("ADT^A40", PID, "MRG|"), r"^MRG-1 \(prior patient identifier list\) is empty"),
    (message("ORM^O01", PID), r"^ORC segment is missing"),
    (message("ORM^O02", PID, "ORC|NW|P1"), r"^MSH-9 \(message type\) ORM\^O02 is not an"),
    (message("ORM^O01", PID, "ORC|OC|P1"), r"^ORC-1 \(order control\) 'OC' is not one"),
    (message("ORM^O01", PID, "ORC||P1"), r"^ORC-1 \(order control\) is empty"),
    (message("ORM^O01", PID, "ORC|SC|P1"), r"^ORC-5 \(order status\) is empty: SC needs"),
    (message("ORM^O01", PID, "ORC|NW|P1|||ZZ"), r"^ORC-5 \(order status\) 'ZZ' is not in"),
    (message("ORM^O01", PID, "ORC|NW", "OBR|1"), r"are all empty: the order cannot be"),
    (message("ORM^O01", PID, "ORC|NW|P1", "OBR|1|P1", "ZDS|1.2.x"),
     r"^ZDS-1 \(study instance UID\) is not a DICOM UID"),
    (message("ORM^O01", "ORC|NW|P1"), r"^PID segment is missing"),
    ("PID|1||M1", r"^MSH segment is missing"),
    (message("ADT^A08", PID) + message("ADT^A08", PID), r"^MSH appears 2 times"),
    (message("", PID), r"^MSH-9 \(message type\) is empty"),
])
def test_content_errors_name_the_field(text, expected):
    with pytest.raises(Hl7ContentError, match=expected):
        parse_message(text)


def test_a_bad_birth_date_is_named_without_quoting_it():
    with pytest.raises(Hl7ContentError) as caught:
        parse_message(message("ADT^A08", "PID|1||M1||DOE||19611302"))
    assert str(caught.value) == "PID-7 (birth date) is not a valid date"
    with pytest.raises(Hl7ContentError, match=r"^PV1-44 \(admit date/time\) is not an HL7"):
        parse_message(message("ADT^A01", PID, "PV1|1|I" + "|" * 42 + "2026-12-01"))


@pytest.mark.parametrize(("value", "expected"), [
    ("2026", "2026-01-01T00:00:00+00:00"),
    ("202612", "2026-12-01T00:00:00+00:00"),
    ("20261202", "2026-12-02T00:00:00+00:00"),
    ("2026120213", "2026-12-02T13:00:00+00:00"),
    ("202612021314", "2026-12-02T13:14:00+00:00"),
    ("20261202131415", "2026-12-02T13:14:15+00:00"),
    ("20261202131415.5", "2026-12-02T13:14:15.500000+00:00"),
    ("20261202131415.1234-0330", "2026-12-02T16:44:15.123400+00:00"),
    ("202612021314+0100", "2026-12-02T12:14:00+00:00"),
])
def test_hl7_datetimes_at_every_precision(value, expected):
    assert hl7_datetime(value, "X-1 (t)", UTC) == datetime.fromisoformat(expected)


def test_a_time_without_offset_takes_the_default_offset():
    minus_five = timezone(timedelta(hours=-5))
    assert hl7_datetime("202612020900", "X-1 (t)", minus_five) == at("2026-12-02T14:00:00+00:00")


@pytest.mark.parametrize("value", ["2026-12-02", "20261", "20261302", "202612021360",
                                   "20261202+2500", "x"])
def test_malformed_datetimes_are_content_errors(value):
    with pytest.raises(Hl7ContentError, match=r"^X-1 \(t\) is not"):
        hl7_datetime(value, "X-1 (t)", UTC)


def test_a_birth_date_keeps_the_calendar_date_as_written():
    assert hl7_date("197204152330-1000", "PID-7 (birth date)") == date(1972, 4, 15)


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),
                    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5)),
                                               timezone(timedelta(hours=5, minutes=30))])))
def test_hl7_datetime_round_trips_any_instant(moment):
    written = moment.strftime("%Y%m%d%H%M%S.%f") + moment.strftime("%z")
    assert hl7_datetime(written, "X-1 (t)", UTC) == moment


ESCAPES = {"|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\", "\\": "\\E\\"}


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1,
               max_size=40).filter(lambda v: v.strip() == v and v != '""'))
def test_any_family_name_survives_escaping_and_parsing(value):
    escaped = "".join(ESCAPES.get(c, c) for c in value)
    event = parse_message(message("ADT^A08", f"PID|1||M1||{escaped}^JO"))
    assert isinstance(event, PatientEvent)
    assert event.patient.name == f"{value}^JO"


def test_records_are_valid_when_built():
    with pytest.raises(ValueError, match="identifier needs a value"):
        Identifier("")
    with pytest.raises(ValueError, match="at least one identifier"):
        Demographics(())
    with pytest.raises(ValueError, match="placer number, a filler number or an accession"):
        OrderDetails(OrderControl.NEW)
    with pytest.raises(ValueError, match="status change"):
        OrderDetails(OrderControl.STATUS_CHANGED, placer_number="P1")
    with pytest.raises(ValueError, match="table 0038"):
        OrderDetails(OrderControl.NEW, status_code="ZZ", placer_number="P1")
    header = MessageHeader("ADT", "A40", "C1")
    with pytest.raises(ValueError, match="merge"):
        PatientEvent(header, AdtTrigger.MERGE, Demographics((Identifier("M1"),)))
    with pytest.raises(ValueError, match="at least one order"):
        OrderEvent(header, Demographics((Identifier("M1"),)), ())
