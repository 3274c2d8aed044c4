"""The registry on SQLite and PostgreSQL: the sample story, merges, idempotency, audit,
and the `registry` destination fed the way the outbox feeds it."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

import radbridge.engine.registry.destination  # noqa: F401  (registers the destination type)
from radbridge.engine import audit
from radbridge.engine.adapters import AdapterContext, build_destination
from radbridge.engine.db import Database
from radbridge.engine.lifecycle import DeliveryStatus
from radbridge.engine.models import (
    AuditEvent,
    Encounter,
    Order,
    OrderStatusHistory,
    Patient,
    RegistryApplied,
    Study,
)
from radbridge.engine.outbox import DeliveryResult, Outcome
from radbridge.engine.registry import queries
from radbridge.engine.registry.apply import ApplyResult, MessageRef, apply_event
from radbridge.engine.registry.status import OrderStatus, order_status_after
from radbridge.engine.retry import RetryPolicy
from radbridge.errors import PermanentDeliveryError
from radbridge.mappings.hl7.errors import Hl7ContentError
from radbridge.mappings.hl7.inbound import OrderControl, parse_message
from radbridge.mappings.hl7.reading import decode
from tests.engine_harness import channel, harness

SAMPLES = Path(__file__).parent.parent / "samples" / "hl7"
STORY = [
    "adt_a04_register", "orm_o01_nw", "orm_o01_xo", "orm_o01_sc", "adt_a01_admit",
    "adt_a40_merge", "adt_a11_cancel_admit", "orm_o01_ca", "omi_o23_nw", "adt_a02_transfer",
    "adt_a08_update", "orm_o01_dc", "adt_a03_discharge", "adt_a13_cancel_discharge",
]
CHAIN = "node-a/registry/adt/registry"
PHI = ("MORGAN", "ALEX", "TRAUMA", "ZULU", "1972", "19700101", "ELM")
MSH = "MSH|^~\\&|EHR|NORTHWIND|RADBRIDGE|NORTHWIND|20261201090000-0500||{type}|C1|P|2.5.1"


@pytest.fixture
def store(database: Database) -> Database:
    """The `database` fixture (conftest empties every table, the registry's too)."""
    return database


def apply(database: Database, name: str, uid: str | None = None,
          default_issuer: str = "") -> ApplyResult:
    event = parse_message(decode((SAMPLES / f"{name}.hl7").read_bytes()))
    return apply_text_event(database, event, uid or name, default_issuer)


def apply_text(database: Database, content: str, uid: str, default_issuer: str = "") -> ApplyResult:
    return apply_text_event(database, parse_message(content), uid, default_issuer)


def apply_text_event(database, event, uid, default_issuer) -> ApplyResult:
    ref = MessageRef(uid=uid, message_id=None, channel="adt", default_issuer=default_issuer)
    with database.write() as session:
        return apply_event(session, event, ref, CHAIN)


def hl7(kind: str, *segments: str) -> str:
    return "\r".join([MSH.format(type=kind), *segments]) + "\r"


def snapshot(database: Database) -> dict[str, list[tuple]]:
    """Every registry row and the audit event count, to compare before and after."""
    tables = {"patients": Patient, "encounters": Encounter, "orders": Order,
              "history": OrderStatusHistory, "studies": Study, "applied": RegistryApplied}
    with database.read() as session:
        rows: dict[str, list[tuple]] = {
            name: [tuple(getattr(row, c.key) for c in model.__table__.columns)
                   for row in session.execute(select(model)).scalars()]
            for name, model in tables.items()}
        rows["audit"] = [(session.execute(select(func.count(AuditEvent.seq))).scalar_one(),)]
    return {name: sorted(values, key=repr) for name, values in rows.items()}


def audit_events(database: Database) -> list[AuditEvent]:
    with database.read() as session:
        return list(session.execute(select(AuditEvent).where(AuditEvent.chain == CHAIN)
                                    .order_by(AuditEvent.seq)).scalars())


def test_the_sample_story_ends_in_the_expected_registry(store):
    for name in STORY:
        assert apply(store, name).applied, name
    with store.read() as session:
        patient = queries.patient_by_identifier(session, "MRN100234", "NORTHWIND")
        assert patient is not None and patient.merged_into_id is None
        assert (patient.name, patient.birth_date, patient.sex) == (
            "MORGAN-LÓPEZ^ALEXIS^Q", date(1972, 5, 14), "F")
        prior = queries.patient_by_identifier(session, "MRN100999", "NORTHWIND")
        assert prior is not None and prior.id == patient.id  # follows the merge
        assert [p.identifier for p in queries.merged_patients(session, patient.id)] == [
            "MRN100999"]
        encounters = {e.visit_number: e for e in queries.patient_encounters(session, patient.id)}
        assert encounters["V7000"].status == "cancelled"
        v7001 = encounters["V7001"]
        assert (v7001.status, v7001.location, v7001.patient_class) == (
            "admitted", "ICU^12^B^NORTHWIND", "I")
        assert v7001.admitted_at == datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
        assert v7001.discharged_at is None  # the A13 took the A03's discharge back
        orders = {o.placer_number: o for o in queries.patient_orders(session, patient.id)}
        assert {p: o.status for p, o in orders.items()} == {
            "PLC5001": "in_progress", "PLC5002": "cancelled", "PLC5003": "discontinued"}
        ct = orders["PLC5001"]
        assert (ct.filler_number, ct.accession, ct.priority, ct.modality) == (
            "FIL9001", "ACC26120001", "S", "CT")
        assert ct.study_uid == "1.2.826.0.1.3680043.10.1234.26120001"
        assert (ct.procedure_code, ct.procedure_system, ct.procedure_display) == (
            "CTHEADWO", "NWRAD", "CT HEAD W/O CONTRAST & CTA NECK")
        assert (ct.ordering_provider_id, ct.ordering_provider_name) == (
            "4455", "KOVACS^ANNA^^^DR")
        assert ct.scheduled_at == datetime(2026, 12, 1, 12, 20, tzinfo=UTC)
        assert ct.last_message_uid == "orm_o01_sc"
        mr = queries.order_by_accession(session, "ACC26120003", "NW_RIS")
        assert mr is not None and mr.id == orders["PLC5003"].id
        assert (mr.filler_number, mr.modality, mr.study_uid) == (
            "FIL9003", "MR", "1.2.826.0.1.3680043.10.1234.26120003")
        assert queries.order_by_filler(session, "FIL9002").id == orders["PLC5002"].id
        assert queries.order_by_placer(session, "nope") is None


def test_order_status_changes_are_kept_as_history(store):
    for name in STORY:
        apply(store, name)
    with store.read() as session:
        ct = queries.order_by_placer(session, "PLC5001")
        history = [(h.from_status, h.to_status, h.control_code, h.message_uid)
                   for h in queries.order_history(session, ct.id)]
        assert history == [
            (None, "scheduled", "NW", "orm_o01_nw"),
            ("scheduled", "scheduled", "XO", "orm_o01_xo"),
            ("scheduled", "in_progress", "SC", "orm_o01_sc"),
        ]
        xr = queries.order_by_placer(session, "PLC5002")
        assert [h.to_status for h in queries.order_history(session, xr.id)] == [
            "scheduled", "cancelled"]


def test_applying_the_same_message_twice_changes_nothing(store):
    for name in STORY:
        apply(store, name)
    before = snapshot(store)
    for name in STORY:
        result = apply(store, name)
        assert not result.applied and "before" in result.summary
    assert snapshot(store) == before
    assert apply(store, "orm_o01_xo", uid="another-uid").applied  # a new message still applies


def test_a_merge_moves_orders_encounters_and_studies_to_the_survivor(store):
    for name in ("adt_a04_register", "orm_o01_nw", "adt_a01_admit"):
        apply(store, name)
    with store.write() as session:
        prior = queries.patient_by_identifier(session, "MRN100999", "NORTHWIND")
        session.add(Study(study_uid="1.2.3.4.5", accession="ACC26120001", patient_id=prior.id))
        prior_id = prior.id
    apply(store, "adt_a40_merge")
    with store.read() as session:
        survivor = queries.patient_by_identifier(session, "MRN100234", "NORTHWIND")
        merged = session.get(Patient, prior_id)
        assert merged.merged_into_id == survivor.id
        assert queries.patient_orders(session, prior_id) == []
        assert queries.patient_encounters(session, prior_id) == []
        assert [o.placer_number for o in queries.patient_orders(session, survivor.id)] == [
            "PLC5001", "PLC5002"]
        assert [e.visit_number for e in queries.patient_encounters(session, survivor.id)] == [
            "V7000", "V7001"]
        assert [s.study_uid for s in queries.patient_studies(session, survivor.id)] == [
            "1.2.3.4.5"]
    merges = [e for e in audit_events(store) if e.action == "registry.patient.merged"]
    assert {e.patient_id for e in merges} == {"MRN100999", "MRN100234"}
    detail = json.loads(merges[0].detail)
    assert detail["moved"] == {"orders": 2, "encounters": 1, "studies": 1}
    assert (detail["prior_patient"], detail["survivor_patient"]) == (prior_id, survivor.id)


def test_a_merge_of_an_unknown_prior_keeps_its_identifier_for_late_messages(store):
    apply(store, "adt_a40_merge")
    late = hl7("ORM^O01", "PID|1||MRN100999^^^NORTHWIND^MR", "ORC|NW|LATE1|||SC",
               "OBR|1|LATE1||X^Y^Z")
    apply_text(store, late, "late")
    with store.read() as session:
        survivor = queries.patient_by_identifier(session, "MRN100234", "NORTHWIND")
        assert queries.patient_by_identifier(session, "MRN100999", "NORTHWIND").id == survivor.id
        assert [o.placer_number for o in queries.patient_orders(session, survivor.id)] == [
            "LATE1"]


def test_a_merge_chain_is_flattened(store):
    apply_text(store, hl7("ADT^A04", "EVN|A04", "PID|1||P1^^^H^MR"), "a")
    apply_text(store, hl7("ADT^A40", "EVN|A40", "PID|1||P2^^^H^MR", "MRG|P1^^^H^MR"), "b")
    apply_text(store, hl7("ADT^A40", "EVN|A40", "PID|1||P3^^^H^MR", "MRG|P2^^^H^MR"), "c")
    with store.read() as session:
        p3 = queries.patient_by_identifier(session, "P3", "H")
        assert {p.identifier for p in queries.merged_patients(session, p3.id)} == {"P1", "P2"}
        assert queries.patient_by_identifier(session, "P1", "H").id == p3.id


@pytest.mark.parametrize(("segments", "expected"), [
    (("EVN|A40", "PID|1||P1^^^H^MR", "MRG|P1^^^H^MR"), "names the surviving patient itself"),
    (("EVN|A03", "PID|1||P1^^^H^MR", "PV1|1|I"), r"PV1-19 \(visit number\) is empty"),
])
def test_content_the_registry_cannot_apply_is_refused_and_rolled_back(store, segments,
                                                                      expected):
    kind = "ADT^" + segments[0].split("|")[1]
    with pytest.raises(Hl7ContentError, match=expected):
        apply_text(store, hl7(kind, *segments), "bad")
    with store.read() as session:
        assert session.get(RegistryApplied, "bad") is None
        assert session.execute(select(func.count(Patient.id))).scalar_one() == 0


def test_a_visit_number_of_another_patient_is_refused(store):
    apply(store, "adt_a01_admit")
    other = hl7("ADT^A02", "EVN|A02", "PID|1||OTHER^^^NORTHWIND^MR",
                "PV1|1|I|X" + "|" * 16 + "V7001^^^NORTHWIND^VN")
    with pytest.raises(Hl7ContentError, match="belongs to another patient"):
        apply_text(store, other, "other")


def test_an_accession_shared_by_two_orders_does_not_pick_one(store):
    for placer in ("P1", "P2"):
        apply_text(store, hl7("ORM^O01", "PID|1||M1", f"ORC|NW|{placer}|||SC",
                              "OBR|1|||X" + "|" * 14 + "ACC1"), placer)
    with store.read() as session:  # a new placer number is a new order, accession or not
        assert [o.placer_number for o in queries.orders_by_accession(session, "ACC1")] == [
            "P1", "P2"]
    by_accession_only = hl7("ORM^O01", "PID|1||M1", "ORC|SC||||IP",
                            "OBR|1|||X" + "|" * 14 + "ACC1")
    with pytest.raises(Hl7ContentError, match="matches several orders"):
        apply_text(store, by_accession_only, "sc")


def test_default_issuer_fills_an_empty_assigning_authority(store):
    apply_text(store, hl7("ADT^A01", "EVN|A01", "PID|1||M5", "PV1|1|I" + "|" * 17 + "V5"),
               "m5", default_issuer="NORTHWIND")
    with store.read() as session:
        patient = queries.patient_by_identifier(session, "M5", "NORTHWIND")
        assert patient is not None
        assert queries.encounter_by_visit(session, "V5", "NORTHWIND").patient_id == patient.id


def test_orders_create_a_patient_but_never_overwrite_demographics(store):
    apply(store, "adt_a01_admit")
    stale = hl7("ORM^O01", "PID|1||MRN100234^^^NORTHWIND^MR||OLD^NAME||19000101|M",
                "ORC|NW|P9|||SC", "OBR|1|P9||X^Y^Z")
    apply_text(store, stale, "stale")
    with store.read() as session:
        patient = queries.patient_by_identifier(session, "MRN100234", "NORTHWIND")
        assert (patient.name, patient.birth_date) == ("MORGAN^ALEX^Q", date(1972, 4, 15))


def test_over_long_identifiers_are_refused_and_free_text_is_cut(store):
    with pytest.raises(Hl7ContentError, match=r"patients.identifier is longer than 64"):
        apply_text(store, hl7("ADT^A08", "EVN|A08", f"PID|1||{'9' * 65}"), "long")
    apply_text(store, hl7("ADT^A08", "EVN|A08", f"PID|1||M1||{'N' * 300}"), "name")
    with store.read() as session:
        assert len(queries.patient_by_identifier(session, "M1").name) == 255


def test_audit_events_describe_every_change_without_demographics(store):
    for name in STORY:
        apply(store, name)
    events = audit_events(store)
    actions = [e.action for e in events]
    for action in ("registry.patient.created", "registry.patient.updated",
                   "registry.patient.merged", "registry.encounter.created",
                   "registry.encounter.status", "registry.encounter.updated",
                   "registry.order.created", "registry.order.status", "registry.order.updated"):
        assert action in actions
    assert actions.count("registry.order.created") == 3
    assert all(e.patient_id in ("MRN100234", "MRN100999") for e in events)
    assert {e.accession for e in events if e.action.startswith("registry.order")} == {
        "ACC26120001", "ACC26120002", "ACC26120003"}
    updated = next(e for e in events if e.action == "registry.patient.updated")
    assert json.loads(updated.detail)["fields"] == ["name", "birth_date"]
    for event in events:
        assert not any(word in event.detail for word in PHI), event.detail
    assert audit.verify(store).events == len(events)


@pytest.mark.parametrize(("control", "code", "current", "expected"), [
    ("NW", None, None, "ordered"),
    ("NW", "SC", None, "scheduled"),
    ("XO", None, "in_progress", "in_progress"),
    ("XO", "HD", "scheduled", "on_hold"),
    ("SC", "CM", "in_progress", "completed"),
    ("SC", "A", "in_progress", "in_progress"),
    ("CA", "IP", "in_progress", "cancelled"),  # the control code's own meaning wins
    ("DC", None, "scheduled", "discontinued"),
])
def test_order_status_transition_table(control, code, current, expected):
    now = None if current is None else OrderStatus(current)
    assert order_status_after(OrderControl(control), code, now) == OrderStatus(expected)


# --- the destination, fed by the real outbox --------------------------------------------


def registry_channel(default_issuer: str | None = None):
    destination = {"name": "registry", "type": "registry"}
    if default_issuer is not None:
        destination["default_issuer"] = default_issuer
    return channel("adt", destinations=[destination])


def registry_sink(h, tmp_path: Path):
    """The destination as a node builds it, from the channel's config."""

    async def refuse(inbound):
        raise AssertionError("the registry destination never receives")

    context = AdapterContext(data_dir=tmp_path, blobs=h.blobs, inline_limit=64,
                             receive=refuse, database=h.database, node_id="node-a")
    return build_destination(h.channels["adt"].destinations[0], context)


async def deliver(h, tmp_path: Path, contents: list[bytes]) -> list[DeliveryResult]:
    """Receive and process each content, claim its delivery, send it, record the outcome."""
    for content in contents:
        h.receive(content, channel="adt", content_type="x-application/hl7-v2+er7")
    h.process_all()
    sink = registry_sink(h, tmp_path)
    policy = RetryPolicy(h.channels["adt"].destinations[0].queue)
    results = []
    for delivery in h.outbox.claim("adt", "registry", limit=100, lease_seconds=30,
                                   ordered=False):
        try:
            sent = await sink.send(delivery)
            result = DeliveryResult(delivery, Outcome.SENT, detail=sent.detail)
        except PermanentDeliveryError as exc:
            result = DeliveryResult(delivery, Outcome.FAILED, policy=policy, detail=str(exc),
                                    permanent=True)
        h.writer.record(result).result(timeout=10)
        results.append(result)
    return results


async def test_the_destination_applies_outbox_deliveries_inline_and_from_blobs(
        store, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    contents = [(SAMPLES / f"{name}.hl7").read_bytes() for name in STORY]
    with harness(store, tmp_path, [registry_channel()], inline_limit=512) as h:
        # content over 512 bytes goes to the blob store: both paths are taken
        results = await deliver(h, tmp_path, contents)
        assert [r.outcome for r in results] == [Outcome.SENT] * len(STORY)
        assert "ADT^A04 applied to the registry: patient.created" in results[0].detail
        assert {d.status for d in h.deliveries()} == {DeliveryStatus.SENT}
    with store.read() as session:
        patient = queries.patient_by_identifier(session, "MRN100234", "NORTHWIND")
        assert patient.name == "MORGAN-LÓPEZ^ALEXIS^Q"
        assert len(queries.patient_orders(session, patient.id)) == 3
    events = audit_events(store)
    assert events and all(e.message_id is not None and e.channel == "adt" for e in events)
    audit.verify(store)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "registry" in logged and not any(word in logged for word in PHI)


async def test_the_destination_dead_letters_content_it_cannot_read(store, tmp_path):
    no_pid = hl7("ADT^A01", "EVN|A01", "PV1|1|I").encode()
    unknown = hl7("ADT^A31", "EVN|A31", "PID|1||M1").encode()
    with harness(store, tmp_path, [registry_channel()]) as h:
        results = await deliver(h, tmp_path, [no_pid, unknown])
        assert [r.outcome for r in results] == [Outcome.FAILED, Outcome.FAILED]
        assert results[0].detail == ("HL7 content rejected by the registry: PID segment is "
                                     "missing: the registry needs the patient")
        assert "ADT^A31 is not an ADT trigger" in results[1].detail
        assert {d.status for d in h.deliveries()} == {DeliveryStatus.DEAD}
    with store.read() as session:
        assert session.execute(select(func.count(RegistryApplied.message_uid))).scalar_one() == 0


async def test_the_destination_ignores_messages_the_registry_does_not_keep(store, tmp_path):
    oru = hl7("ORU^R01", "PID|1||M1", "OBR|1||F1|X", "OBX|1|TX|X||text").encode()
    with harness(store, tmp_path, [registry_channel()]) as h:
        (result,) = await deliver(h, tmp_path, [oru])
        assert result.outcome is Outcome.SENT
        assert result.detail == "ORU^R01 is not a message the registry keeps; ignored"
    with store.read() as session:
        assert session.execute(select(func.count(Patient.id))).scalar_one() == 0


async def test_the_destination_decodes_latin1_and_uses_the_default_issuer(store, tmp_path):
    latin1 = hl7("ADT^A08", "EVN|A08", "PID|1||M8||MÜLLER^JO").encode("latin-1")
    with harness(store, tmp_path, [registry_channel("NORTHWIND")]) as h:
        (result,) = await deliver(h, tmp_path, [latin1])
        assert result.outcome is Outcome.SENT
    with store.read() as session:
        assert queries.patient_by_identifier(session, "M8", "NORTHWIND").name == "MÜLLER^JO"
