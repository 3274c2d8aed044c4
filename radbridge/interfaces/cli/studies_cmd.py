"""`radbridge studies list|show`: what the DICOM index holds and where assembly stands.

The views carry patient identifiers and accessions (to find a study), never names or
birth dates; `--json` prints JSON instead of tables.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table
from rich.text import Text

from radbridge.engine import study_queries
from radbridge.interfaces.cli.common import add_store_options_to, open_store, print_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("studies", help="list and show DICOM studies received")
    actions = parser.add_subparsers(dest="studies_command", required=True, metavar="ACTION")
    list_ = actions.add_parser("list", help="studies, most recently received first")
    list_.add_argument("--state", choices=["collecting", "ready"])
    list_.add_argument("--accession")
    list_.add_argument("--patient-id")
    list_.add_argument("--modality")
    list_.add_argument("--channel")
    list_.add_argument("--limit", type=int, default=50)
    list_.add_argument("--offset", type=int, default=0)
    show = actions.add_parser("show", help="one study with its series (and instances)")
    show.add_argument("study_uid", metavar="STUDY_UID")
    show.add_argument("--instances", action="store_true", help="list every instance")
    for action, handler in ((list_, _list), (show, _show)):
        add_store_options_to(action)
        action.add_argument("--json", action="store_true", help="print JSON instead of tables")
        action.set_defaults(handler=handler)


def _list(args: argparse.Namespace) -> int:
    _, database = open_store(args)
    try:
        with database.read() as session:
            rows = study_queries.list_studies(session, study_queries.StudyFilter(
                state=args.state, accession=args.accession, patient_id=args.patient_id,
                modality=args.modality, channel=args.channel, limit=args.limit,
                offset=args.offset))
    finally:
        database.dispose()
    if args.json:
        print_json({"studies": rows})
        return 0
    table = Table("study UID", "accession", "modalities", "series", "instances", "state",
                  "version", "last received", title=f"{len(rows)} studies")
    for row in rows:
        table.add_row(*(Text(str(v)) for v in (
            row["study_uid"], row["accession"] or "", row["modalities"], row["series_count"],
            row["instance_count"], row["state"], row["ready_version"],
            str(row["last_received_at"])[:19])))
    Console().print(table)
    return 0


def _show(args: argparse.Namespace) -> int:
    _, database = open_store(args)
    try:
        with database.read() as session:
            detail = study_queries.study_detail(session, args.study_uid,
                                                with_instances=args.instances)
    finally:
        database.dispose()
    if detail is None:
        print(f"radbridge: error: no study {args.study_uid}", file=sys.stderr)
        return 1
    if args.json:
        print_json(detail)
        return 0
    console = Console()
    fields = Table("field", "value", show_header=False, title=f"study {args.study_uid}")
    for key, value in detail.items():
        if key not in ("series", "mpps"):
            fields.add_row(Text(key), Text("" if value is None else str(value)))
    console.print(fields)
    series = Table("series UID", "number", "modality", "description", "equipment",
                   "instances", title="series")
    for item in detail["series"]:
        equipment = " ".join(filter(None, (item["manufacturer"], item["manufacturer_model"])))
        series.add_row(*(Text(str(v)) for v in (
            item["series_uid"], item["series_number"] or "", item["modality"] or "",
            item["series_description"] or "", equipment, item["instance_count"])))
    console.print(series)
    return 0
