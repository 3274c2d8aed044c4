"""`radbridge audit verify|query|export|study|forwarding|forward`: the audit ledger for
compliance.

    verify      recompute the hash chains; exit 1 when broken, printing where and why
    query       events matching all filters, newest first, one keyset page (JSON)
    export      every matching event as csv, json, ndjson, fhir (AuditEvent NDJSON) or
                atna (DICOM audit messages), to a file or stdout, streamed
    study UID   one study's cycle from receipt to report (text, or --json)
    forwarding  how far each syslog collector has the ledger
    forward     send what a collector lacks now (what `radbridge run --atna-syslog` does
                continuously), then exit

Reads of the ledger by query, export and study are themselves audit events naming the
operator (`cli:<os user>`). `add_syslog_options_to` and `with_syslog` give `radbridge
run` its --atna-* options.
"""

from __future__ import annotations

import argparse
import dataclasses
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from radbridge.engine import audit
from radbridge.engine.audit_export import formats, queries
from radbridge.engine.audit_export.cycle import study_cycle
from radbridge.engine.audit_export.errors import SyslogTargetError
from radbridge.engine.audit_export.event_map import AuditSource
from radbridge.engine.audit_export.forwarder import (
    AuditForwarder,
    ForwardingOptions,
    forwarding_status,
)
from radbridge.engine.audit_export.syslog import SyslogTarget
from radbridge.engine.db import Database
from radbridge.engine.settings import Settings
from radbridge.errors import AuditChainBroken, RadbridgeError
from radbridge.interfaces.cli.common import add_store_options_to, open_store, print_json
from radbridge.interfaces.cli.messages_cmd import cli_actor

QUERY_TEXT_FILTERS = queries.TEXT_FILTERS


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("audit", help="verify, search and export the audit ledger")
    actions = parser.add_subparsers(dest="audit_command", required=True, metavar="ACTION")

    verify = actions.add_parser("verify", help="recompute the hash chain (exit 1 if broken)")
    add_store_options_to(verify)
    verify.add_argument("--json", action="store_true", help="print JSON")
    verify.set_defaults(handler=_verify)

    query = actions.add_parser("query", help="events matching all filters, newest first (JSON)")
    _add_filters(query)
    query.add_argument("--before-seq", type=int, help="the page before this event number")
    query.add_argument("--after-seq", type=int, help="the page after this event number "
                       "(oldest first)")
    query.add_argument("--limit", type=int, default=100, help="events per page (default 100)")
    query.set_defaults(handler=_query)

    export = actions.add_parser("export", help="matching events as CSV, JSON, FHIR or ATNA")
    _add_filters(export)
    export.add_argument("--format", choices=sorted(formats.FORMATS), default="csv",
                        help="csv (default), json, ndjson, fhir (AuditEvent NDJSON), atna "
                        "(DICOM audit messages)")
    export.add_argument("--out", type=Path, help="write here (default: stdout)")
    export.add_argument("--order", choices=["asc", "desc"], default="asc",
                        help="asc: oldest first (default); desc: newest first")
    export.add_argument("--limit", type=int, help="at most this many events")
    export.add_argument("--source-id", default=socket.gethostname(),
                        help="the audit source named in FHIR and ATNA (default: host name)")
    export.set_defaults(handler=_export)

    study = actions.add_parser("study", help="a study's cycle from receipt to report")
    add_store_options_to(study)
    study.add_argument("study_uid", metavar="STUDY_UID")
    study.add_argument("--json", action="store_true", help="print the whole cycle as JSON")
    study.set_defaults(handler=_study)

    status = actions.add_parser("forwarding", help="how far each syslog collector has the "
                                "ledger")
    add_store_options_to(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=_forwarding)

    forward = actions.add_parser("forward", help="send a syslog collector what it lacks, "
                                 "then exit")
    add_store_options_to(forward)
    add_syslog_options_to(forward)
    forward.add_argument("--node-id", default=f"cli:{socket.gethostname()}",
                         help="the audit source and lease holder (default cli:<host>)")
    forward.set_defaults(handler=_forward)


def add_syslog_options_to(parser: argparse.ArgumentParser) -> None:
    """--atna-syslog and its TLS files (for `radbridge run` and `audit forward`)."""
    parser.add_argument("--atna-syslog", metavar="URL", help="forward the audit ledger as "
                        "IHE ATNA messages to udp://HOST:PORT or tls://HOST:PORT (RFC 5425) "
                        "(default $RADBRIDGE_ATNA_SYSLOG; none: no forwarding)")
    parser.add_argument("--atna-ca", metavar="PEM", help="the CA of the collector's "
                        "certificate (default $RADBRIDGE_ATNA_CA, else the system's CAs)")
    parser.add_argument("--atna-cert", metavar="PEM", help="a client certificate for a "
                        "collector that asks for one ($RADBRIDGE_ATNA_CERT)")
    parser.add_argument("--atna-key", metavar="PEM", help="its key ($RADBRIDGE_ATNA_KEY)")


def syslog_target_from(args: argparse.Namespace) -> SyslogTarget | None:
    return SyslogTarget.resolve(url=args.atna_syslog, ca=args.atna_ca, cert=args.atna_cert,
                                key=args.atna_key)


def with_syslog(settings: Settings, args: argparse.Namespace) -> Settings:
    """`settings` with the --atna-* options; exits (status 1) when they are unusable."""
    try:
        return dataclasses.replace(settings, audit_syslog=syslog_target_from(args))
    except SyslogTargetError as exc:
        raise SystemExit(f"radbridge run: {exc}; nothing started") from exc


def _add_filters(parser: argparse.ArgumentParser) -> None:
    add_store_options_to(parser)
    for name in QUERY_TEXT_FILTERS:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name,
                            help="an action, or a prefix such as registry.*"
                            if name == "action" else None)
    parser.add_argument("--message-id", type=int)
    parser.add_argument("--since", type=_iso_time, help="ISO 8601 time, inclusive")
    parser.add_argument("--until", type=_iso_time, help="ISO 8601 time, exclusive")


def _iso_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2025-01-31T08:00:00Z, got {value!r}"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _filters(args: argparse.Namespace) -> queries.AuditFilter:
    return queries.AuditFilter(**{name: getattr(args, name) for name in QUERY_TEXT_FILTERS},
                               message_id=args.message_id, since=args.since,
                               until=args.until)


@contextmanager
def _store(args: argparse.Namespace) -> Iterator[Database]:
    """The store, disposed of afterwards; a Radbridge error is printed, exit status 1."""
    _, database = open_store(args)
    try:
        yield database
    finally:
        database.dispose()


def _fail(exc: Exception) -> int:
    print(f"radbridge: error: {exc}", file=sys.stderr)
    return 1


def _verify(args: argparse.Namespace) -> int:
    _, database = open_store(args)
    try:
        report = audit.verify(database)
    except AuditChainBroken as exc:
        if args.json:
            print_json({"ok": False, "seq": exc.seq, "reason": exc.reason})
        else:
            print(f"audit chain BROKEN: {exc}")
        return 1
    except RadbridgeError as exc:
        return _fail(exc)
    finally:
        database.dispose()
    if args.json:
        print_json({"ok": True, "events": report.events, "chains": report.chains,
                    "head_seq": report.head_seq, "head_hash": report.head_hash})
    else:
        print(f"audit chains verified: {report.events} events in {report.chains} chain(s), "
              f"newest {report.head_seq} {report.head_hash}")
    return 0


def _query(args: argparse.Namespace) -> int:
    if args.before_seq is not None and args.after_seq is not None:
        return _fail(ValueError("give --before-seq or --after-seq, not both"))
    try:
        filters = _filters(args)
        with _store(args) as database:
            with database.read() as session:
                found = queries.page(session, filters, limit=args.limit,
                                     before_seq=args.before_seq, after_seq=args.after_seq,
                                     newest_first=args.after_seq is None)
            _record(database, "audit.queried", filters, {"returned": len(found.events)})
    except RadbridgeError as exc:
        return _fail(exc)
    key = "next_after_seq" if args.after_seq is not None else "next_before_seq"
    print_json({"events": [event.as_json() for event in found.events], key: found.next_seq})
    return 0


def _export(args: argparse.Namespace) -> int:
    chosen = formats.export_format(args.format)
    try:
        filters = _filters(args)
        with _store(args) as database:
            _record(database, "audit.exported", filters, {"format": chosen.name})
            events = queries.stream(database, filters, newest_first=args.order == "desc",
                                    max_events=args.limit)
            with _output(args.out) as out:
                for part in chosen.render(events, AuditSource(args.source_id)):
                    out.write(part)
    except RadbridgeError as exc:
        return _fail(exc)
    return 0


@contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    with path.open("w", encoding="utf-8", newline="") as handle:
        yield handle


def _study(args: argparse.Namespace) -> int:
    try:
        with _store(args) as database:
            with database.read() as session:
                cycle = study_cycle(session, args.study_uid)
            if cycle is not None:
                study = cycle["study"] or {}
                _record(database, "audit.study-cycle-viewed", queries.AuditFilter(
                    study_uid=args.study_uid, patient_id=study.get("patient_id"),
                    accession=study.get("accession")), {})
    except RadbridgeError as exc:
        return _fail(exc)
    if cycle is None:
        print(f"radbridge: no study {args.study_uid}: nothing in the store names it",
              file=sys.stderr)
        return 1
    if args.json:
        print_json(cycle)
    else:
        print(render_cycle(cycle))
    return 0


def render_cycle(cycle: dict[str, Any]) -> str:
    """The cycle as text: a header, then one line per step of the timeline."""
    study = cycle["study"] or {}
    lines = [f"study {cycle['study_uid']}",
             f"  patient {study.get('patient_id') or '-'}  accession "
             f"{study.get('accession') or '-'}  state {study.get('state') or '-'}  "
             f"instances {study.get('instance_count', 0)}"]
    for step in cycle["timeline"]:
        facts = "  ".join(f"{k}={v}" for k, v in step.items()
                          if k not in ("at", "step") and v is not None)
        lines.append(f"{step['at']}  {step['step']:<24} {facts}")
    if any(cycle["truncated"].values()):
        lines.append("(some messages or views are left out; --json shows the counts)")
    return "\n".join(lines)


def _forwarding(args: argparse.Namespace) -> int:
    try:
        with _store(args) as database:
            rows = forwarding_status(database)
    except RadbridgeError as exc:
        return _fail(exc)
    if args.json:
        print_json({"destinations": rows})
        return 0
    if not rows:
        print("no audit forwarding destination has been used")
    for row in rows:
        error = f"  last error {row['last_error_at']}: {row['last_error']}" \
            if row["last_error"] else ""
        print(f"{row['destination']}  sent up to {row['last_seq']} ({row['forwarded']} "
              f"events), {row['backlog']} waiting, lease {row['lease_owner'] or '-'}{error}")
    return 0


def _forward(args: argparse.Namespace) -> int:
    try:
        target = syslog_target_from(args)
        if target is None:
            return _fail(ValueError("--atna-syslog (or $RADBRIDGE_ATNA_SYSLOG) is required"))
        with _store(args) as database:
            forwarder = AuditForwarder.to_target(database, target, args.node_id,
                                                 ForwardingOptions())
            try:
                sent = forwarder.drain()
            finally:
                forwarder.close()
    except RadbridgeError as exc:  # CollectorError included: the cursor stays where it was
        return _fail(exc)
    print(f"{sent} audit events sent to {target.name}")
    return 0


def _record(database: Database, action: str, filters: queries.AuditFilter,
            detail: dict[str, Any]) -> None:
    audit.append_now(database, [audit.AuditRecord(
        action=action, actor=cli_actor(), channel=filters.channel,
        message_id=filters.message_id, patient_id=filters.patient_id,
        accession=filters.accession, study_uid=filters.study_uid,
        detail={"filters": filters.given(), **detail})])
