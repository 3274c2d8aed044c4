"""The study-to-report cycle of one study, in one read: what came in, which order it was
linked to and by whom, what the models made of it, each result revision and where every
message about the study went, and who looked at it, then all of it as one timeline.

Everything is found by Study Instance UID on indexed columns: the DICOM index for the
instances received (grouped by channel and sender), the links and the reconciliation
queue for orders, the runs, the published results (their revisions from the ledger),
the messages that carry the study's UID (the result JSON, the ORU and FHIR renderings,
the SR/SEG objects, the internal study-ready and inference-done events) with their
deliveries, and the ledger's events by people (actors token:, oidc:, api:, cli:, user:).
A message handed from one channel to another names the message it became
(`handed_to`), so the chain from the result to the RIS, the EHR and the PACS can be read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from radbridge.engine.audit_export import codes, event_map
from radbridge.engine.audit_export.events import LedgerEvent
from radbridge.engine.models import (
    AUDIT_EVENTS,
    DELIVERIES,
    DICOM_INSTANCES,
    DICOM_STUDIES,
    INFERENCE_RUNS,
    MESSAGES,
    PUBLISHED_RESULTS,
    Order,
    ReconciliationItem,
    StudyOrderLink,
)

PERSON_PREFIXES = ("token:", "oidc:", "api:", "cli:", "user:")
MESSAGE_LIMIT = 500
PEOPLE_LIMIT = 1000
_META_KEYS = ("result_id", "revision", "status", "kind", "model", "model_version",
              "sop_instance_uid", "version")


def study_cycle(session: Session, study_uid: str) -> dict[str, Any] | None:
    """The cycle of `study_uid` (JSON-ready), or None when the store knows nothing of it."""
    study = _study(session, study_uid)
    received = _received(session, study_uid, study)
    orders, reconciliation = _orders(session, study_uid), _reconciliation(session, study_uid)
    runs = _runs(session, study_uid)
    messages, truncated = _messages(session, study_uid)
    results = _results(session, study_uid)
    revisions = _revisions(session, study_uid, messages)
    people, people_truncated = _people(session, study_uid)
    if not any((study, received, orders, reconciliation, runs, results, messages, people)):
        return None
    cycle = {
        "study_uid": study_uid, "study": study, "received": received, "orders": orders,
        "reconciliation": reconciliation, "inference": runs, "results": results,
        "revisions": revisions, "messages": messages, "people": people,
        "truncated": {"messages": truncated, "people": people_truncated},
    }
    cycle["timeline"] = timeline(cycle)
    return cycle


def _study(session: Session, study_uid: str) -> dict[str, Any] | None:
    table = DICOM_STUDIES
    row = session.execute(select(
        table.c.study_uid, table.c.channel, table.c.patient_id, table.c.accession,
        table.c.modalities, table.c.state, table.c.ready_version, table.c.ready_at,
        table.c.series_count, table.c.instance_count, table.c.first_received_at,
        table.c.last_received_at).where(table.c.study_uid == study_uid)).first()
    return None if row is None else _plain(row._mapping)


def _received(session: Session, study_uid: str,
              study: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The instances received, per channel and sender: counts, first and last."""
    instances, messages = DICOM_INSTANCES, MESSAGES
    rows = session.execute(
        select(messages.c.channel, messages.c.source,
               func.count().label("instances"),
               func.count(func.distinct(instances.c.series_id)).label("series"),
               func.sum(instances.c.size).label("bytes"),
               func.sum(case((instances.c.version > 1, 1), else_=0)).label("new_versions"),
               func.min(instances.c.received_at).label("first"),
               func.max(instances.c.received_at).label("last"))
        .select_from(instances.outerjoin(messages, messages.c.id == instances.c.message_id))
        .where(instances.c.study_uid == study_uid)
        .group_by(messages.c.channel, messages.c.source)
        .order_by(func.min(instances.c.received_at)))
    fallback = study["channel"] if study else None
    return [{**_plain(row._mapping), "channel": row.channel or fallback,
             "source": row.source or "(message pruned)", "bytes": int(row.bytes or 0),
             "new_versions": int(row.new_versions or 0)} for row in rows]


def _orders(session: Session, study_uid: str) -> list[dict[str, Any]]:
    rows = session.execute(
        select(StudyOrderLink, Order).join(Order, Order.id == StudyOrderLink.order_id)
        .where(StudyOrderLink.study_uid == study_uid).order_by(StudyOrderLink.id)).all()
    return [{"order_id": order.id, "accession": order.accession,
             "placer_number": order.placer_number, "filler_number": order.filler_number,
             "status": order.status, "rule": link.rule, "confidence": link.confidence,
             "reason": link.reason, "decided_by": link.decided_by,
             "linked_at": _iso(link.created_at)} for link, order in rows]


def _reconciliation(session: Session, study_uid: str) -> list[dict[str, Any]]:
    items = session.execute(select(ReconciliationItem)
                            .where(ReconciliationItem.study_uid == study_uid)
                            .order_by(ReconciliationItem.id)).scalars()
    return [{"item_id": item.id, "kind": item.kind, "state": item.state,
             "reason": item.reason, "created_at": _iso(item.created_at),
             "updated_at": _iso(item.updated_at), "resolved_by": item.resolved_by}
            for item in items]


def _runs(session: Session, study_uid: str) -> list[dict[str, Any]]:
    runs = INFERENCE_RUNS
    return [_plain(row._mapping) for row in session.execute(
        select(runs.c.id, runs.c.study_version, runs.c.model_name, runs.c.model_version,
               runs.c.status, runs.c.reason, runs.c.positive, runs.c.emergent,
               runs.c.backend, runs.c.attempts, runs.c.created_at, runs.c.updated_at)
        .where(runs.c.study_uid == study_uid).order_by(runs.c.id))]


def _results(session: Session, study_uid: str) -> list[dict[str, Any]]:
    results = PUBLISHED_RESULTS
    return [_plain(row._mapping) for row in session.execute(
        select(results.c.result_id, results.c.model_name, results.c.run_id,
               results.c.order_id, results.c.revision, results.c.state, results.c.pending,
               results.c.created_at, results.c.updated_at)
        .where(results.c.study_uid == study_uid).order_by(results.c.id))]


def _revisions(session: Session, study_uid: str,
               messages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each result revision handed on: the first message that carried it (its result id,
    revision and status ride in the message's metadata), and the ledger's result.*
    events (corrections and withdrawals say why there)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for message in messages:
        meta = message["meta"]
        if not {"result_id", "revision", "status"} <= set(meta):
            continue
        key = (str(meta["result_id"]), str(meta["revision"]))
        if key not in found or str(message["received_at"]) < str(found[key]["at"]):
            found[key] = {"at": message["received_at"], "status": meta["status"],
                          "result_id": meta["result_id"], "revision": int(meta["revision"]),
                          "model": meta.get("model"), "reason": None,
                          "message_id": message["message_id"]}
    events = AUDIT_EVENTS
    for row in session.execute(select(events).where(
            events.c.study_uid == study_uid, events.c.action.like("result.%"))
            .order_by(events.c.seq)):
        event = LedgerEvent.from_row(row)
        detail = event.detail
        key = (str(detail.get("result_id")), str(detail.get("revision")))
        entry = found.setdefault(key, {"at": event.at.isoformat(), "message_id": None,
                                       "status": event.action.split(".", 1)[1],
                                       "result_id": detail.get("result_id"),
                                       "revision": detail.get("revision"),
                                       "model": detail.get("model")})
        entry["reason"] = detail.get("reason")
    return sorted(found.values(), key=lambda r: str(r["at"]))


def _messages(session: Session, study_uid: str) -> tuple[list[dict[str, Any]], bool]:
    """The messages about the study other than the received instances, with deliveries."""
    messages, instances = MESSAGES, DICOM_INSTANCES
    indexed = select(instances.c.message_id).where(instances.c.study_uid == study_uid,
                                                   instances.c.message_id.is_not(None))
    rows = session.execute(
        select(messages.c.id, messages.c.channel, messages.c.status, messages.c.source,
               messages.c.content_type, messages.c.received_at, messages.c.dedup_key,
               messages.c["metadata"].label("meta")).where(messages.c.study_uid == study_uid,
                                          messages.c.id.not_in(indexed))
        .order_by(messages.c.id).limit(MESSAGE_LIMIT + 1)).all()
    truncated = len(rows) > MESSAGE_LIMIT
    rows = rows[:MESSAGE_LIMIT]
    deliveries = _deliveries(session, [row.id for row in rows])
    by_key = {(row.source, row.dedup_key): row.id for row in rows if row.dedup_key}
    found = []
    for row in rows:
        meta = row.meta or {}
        sent = [{**delivery, "handed_to": by_key.get((f"channel:{row.channel}",
                                                      delivery.pop("idempotency_key")))}
                for delivery in deliveries.get(row.id, [])]
        found.append({"message_id": row.id, "channel": row.channel, "status": row.status,
                      "source": row.source, "content_type": row.content_type,
                      "received_at": _iso(row.received_at),
                      "output": "result_id" in meta,
                      "meta": {k: meta[k] for k in _META_KEYS if k in meta},
                      "deliveries": sent})
    return found, truncated


def _deliveries(session: Session, message_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    table = DELIVERIES
    found: dict[int, list[dict[str, Any]]] = {}
    if not message_ids:
        return found
    rows = session.execute(
        select(table.c.message_id, table.c.id, table.c.destination, table.c.status,
               table.c.attempts, table.c.created_at, table.c.updated_at, table.c.sent_at,
               table.c.last_error, table.c.idempotency_key)
        .where(table.c.message_id.in_(message_ids)).order_by(table.c.id))
    for row in rows:
        view = _plain(row._mapping)
        message_id = view.pop("message_id")
        view["delivery_id"] = view.pop("id")
        found.setdefault(message_id, []).append(view)
    return found


def _people(session: Session, study_uid: str) -> tuple[list[dict[str, Any]], bool]:
    """Every ledger event on the study by a person: views, searches, decisions."""
    events = AUDIT_EVENTS
    rows = session.execute(select(events).where(
        events.c.study_uid == study_uid,
        or_(*(events.c.actor.like(f"{prefix}%") for prefix in PERSON_PREFIXES)))
        .order_by(events.c.seq).limit(PEOPLE_LIMIT + 1)).all()
    found = []
    for row in rows[:PEOPLE_LIMIT]:
        event = LedgerEvent.from_row(row)
        kind = event_map.kind_of(event)
        found.append({"at": event.at.isoformat(), "seq": event.seq, "actor": event.actor,
                      "action": event.action, "outcome": event.outcome,
                      "read": kind.action == "R" or kind.event_id == codes.QUERY,
                      "message_id": event.message_id})
    return found, len(rows) > PEOPLE_LIMIT


def timeline(cycle: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every dated step of the cycle, oldest first."""
    steps: list[dict[str, Any]] = []
    for group in cycle["received"]:
        steps.append({"at": group["first"], "step": "received", "channel": group["channel"],
                      "source": group["source"], "instances": group["instances"],
                      "last": group["last"]})
    steps += [{"at": o["linked_at"], "step": "order-linked", "order_id": o["order_id"],
               "rule": o["rule"], "by": o["decided_by"]} for o in cycle["orders"]]
    for item in cycle["reconciliation"]:
        steps.append({"at": item["created_at"], "step": f"reconciliation-{item['kind']}",
                      "item_id": item["item_id"]})
        if item["resolved_by"]:
            steps.append({"at": item["updated_at"], "step": f"reconciliation-{item['state']}",
                          "item_id": item["item_id"], "by": item["resolved_by"]})
    steps += [{"at": r["created_at"], "step": f"inference-{r['status']}", "run": r["id"],
               "model": f"{r['model_name']}:{r['model_version']}",
               "study_version": r["study_version"]} for r in cycle["inference"]]
    steps += [{"at": r["at"], "step": f"result-{r['status']}", "result_id": r["result_id"],
               "revision": r["revision"]} for r in cycle["revisions"]]
    steps += list(_delivery_steps(cycle["messages"]))
    steps += [{"at": p["at"], "step": "viewed" if p["read"] else "person",
               "actor": p["actor"], "action": p["action"]} for p in cycle["people"]]
    return sorted((s for s in steps if s["at"]), key=lambda s: str(s["at"]))


def _delivery_steps(messages: Iterable[Mapping[str, Any]]) -> Iterable[dict[str, Any]]:
    for message in messages:
        yield {"at": message["received_at"], "step": "message", "channel": message["channel"],
               "message_id": message["message_id"], "output": message["output"]}
        for delivery in message["deliveries"]:
            yield {"at": delivery["sent_at"] or delivery["updated_at"],
                   "step": f"delivery-{delivery['status']}", "message_id":
                   message["message_id"], "channel": message["channel"],
                   "destination": delivery["destination"], "attempts": delivery["attempts"]}


def _plain(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {str(k): _iso(v) if isinstance(v, datetime) else v for k, v in row.items()}


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()

