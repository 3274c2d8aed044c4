"""`radbridge dicom echo|find|retrieve|store --peer AE@HOST:PORT`: an operator's DIMSE tools.

What a PACS answers (names, patient IDs) is printed for the operator on stdout and never
logged. Exit status 0 when the peer did what was asked, 1 when it refused or failed, 2
for bad usage (a --peer that is not AE@HOST:PORT, a file that cannot be read).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path

from pydantic import ValidationError

from radbridge.engine.config import DicomPeerConfig
from radbridge.errors import RadbridgeError
from radbridge.interfaces.cli.common import print_json
from radbridge.interfaces.dimse.query import (
    SeriesMatch,
    StudyMatch,
    StudyQuery,
    find_series,
    find_studies,
)
from radbridge.interfaces.dimse.retrieve import RetrievedInstance, RetrieveOutcome, get, move
from radbridge.interfaces.dimse.scu import DicomClient, echo
from radbridge.interfaces.dimse.store_destination import (
    NotPart10,
    Part10Meta,
    StoreClient,
    read_meta,
    status_meaning,
)

OK_STORE = (0x0000, 0x0001)
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"
Command = Callable[[DicomClient, argparse.Namespace], int]


class UsageError(Exception):
    """Bad command-line input: exit status 2."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("dicom", help="talk DIMSE to a PACS or modality (echo, find, ...)")
    actions = parser.add_subparsers(dest="dicom_action", required=True, metavar="ACTION")
    echo_cmd = _action(actions, "echo", "C-ECHO: is the peer there and does it accept us?")
    echo_cmd.set_defaults(handler=_guarded(_echo))
    find_cmd = _action(actions, "find", "C-FIND studies or series (prints PHI to stdout)")
    find_cmd.add_argument("--patient-id")
    find_cmd.add_argument("--accession")
    find_cmd.add_argument("--study-uid")
    find_cmd.add_argument("--date", metavar="FROM-TO", help="StudyDate YYYYMMDD or a range")
    find_cmd.add_argument("--modality", action="append", default=[],
                          help="ModalitiesInStudy (repeat for several)")
    find_cmd.add_argument("--level", choices=("study", "series"), default="study")
    find_cmd.add_argument("--json", action="store_true", help="print JSON instead of a table")
    find_cmd.set_defaults(handler=_guarded(_find))
    retrieve_cmd = _action(actions, "retrieve", "C-MOVE a study to an AE, or C-GET it here")
    retrieve_cmd.add_argument("--study-uid", required=True)
    retrieve_cmd.add_argument("--series-uid", help="only this series of the study")
    how = retrieve_cmd.add_mutually_exclusive_group(required=True)
    how.add_argument("--move-to", metavar="AE", help="C-MOVE destination AE title")
    how.add_argument("--get-into", metavar="DIR", type=Path,
                     help="C-GET, writing SOPInstanceUID.dcm files into DIR")
    retrieve_cmd.set_defaults(handler=_guarded(_retrieve))
    store_cmd = _action(actions, "store", "C-STORE files (folders are scanned recursively)")
    store_cmd.add_argument("paths", nargs="+", type=Path, metavar="FILE_OR_DIR")
    store_cmd.set_defaults(handler=_guarded(_store))


def _action(actions: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
            summary: str) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=summary, description=summary)
    parser.add_argument("--peer", required=True, metavar="AE@HOST:PORT")
    parser.add_argument("--calling-ae", default="RADBRIDGE", help="our AE title")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for the connection and for each response")
    parser.add_argument("--ca", help="connect with TLS, verifying the peer with this CA")
    parser.add_argument("--cert", help="client certificate (mutual TLS)")
    parser.add_argument("--key", help="client key (mutual TLS)")
    return parser


def parse_peer(text: str, *, calling_ae: str = "RADBRIDGE", timeout: float = 30.0,
               tls: dict[str, str] | None = None) -> DicomPeerConfig:
    """AE@HOST:PORT as a peer config (UsageError naming what is wrong)."""
    ae_title, at, address = text.partition("@")
    host, _, port = address.rpartition(":")
    if not at or not ae_title or not host or not port.isdigit():
        raise UsageError(f"--peer {text!r}: expected AE@HOST:PORT")
    try:
        return DicomPeerConfig.model_validate({
            "ae_title": ae_title, "host": host, "port": int(port), "calling_ae": calling_ae,
            "connect_timeout": timeout, "response_timeout": timeout, "tls": tls})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors())
        raise UsageError(f"--peer {text!r}: {problems}") from exc


def _guarded(command: Command) -> Callable[[argparse.Namespace], int]:
    """Run a command; usage errors exit 2, Radbridge errors (peer down, refused) exit 1."""

    def handler(args: argparse.Namespace) -> int:
        try:
            tls = None
            if args.ca or args.cert:
                tls = {k: v for k, v in (("ca", args.ca), ("cert", args.cert),
                                         ("key", args.key)) if v}
            peer = parse_peer(args.peer, calling_ae=args.calling_ae, timeout=args.timeout,
                              tls=tls)
            return command(DicomClient(peer), args)
        except UsageError as exc:
            print(exc)
            return 2
        except RadbridgeError as exc:
            print(f"failed: {exc}")
            return 1

    return handler


def _echo(client: DicomClient, args: argparse.Namespace) -> int:
    status = echo(client)
    print(f"C-ECHO {client.name}: status 0x{status:04X}")
    return 0 if status == 0x0000 else 1


def _find(client: DicomClient, args: argparse.Namespace) -> int:
    date_from, dash, date_to = (args.date or "").partition("-")
    query = StudyQuery(patient_id=args.patient_id, accession=args.accession,
                       study_uid=args.study_uid, date_from=date_from or None,
                       date_to=(date_to if dash else date_from) or None,
                       modalities=tuple(args.modality))
    if args.level == "study":
        studies = find_studies(client, query)
        _show(studies, args.json, ("study_uid", "patient_id", "patient_name", "accession",
                                   "study_date", "modalities", "series_count",
                                   "instance_count"))
        return 0
    uids = [args.study_uid] if args.study_uid and not (
        args.patient_id or args.accession or args.date or args.modality) else [
        match.study_uid for match in find_studies(client, query)]
    series = [s for uid in uids for s in find_series(client, uid)]
    _show(series, args.json, ("study_uid", "series_uid", "modality", "series_number",
                              "series_description", "instance_count"))
    return 0


def _show(matches: list[StudyMatch] | list[SeriesMatch], as_json: bool,
          columns: tuple[str, ...]) -> None:
    rows = [dataclasses.asdict(match) for match in matches]
    if as_json:
        print_json(rows)
        return
    table = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in table)]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row_cells in table:
        print("  ".join(v.ljust(w) for v, w in zip(row_cells, widths, strict=True)).rstrip())
    print(f"({len(rows)} {'match' if len(rows) == 1 else 'matches'})")


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        return "\\".join(map(str, value)) or "-"
    return str(value)


def _retrieve(client: DicomClient, args: argparse.Namespace) -> int:
    if args.move_to:
        outcome = move(client, args.move_to, args.study_uid, args.series_uid)
        what = f"C-MOVE to {args.move_to}"
    else:
        folder: Path = args.get_into
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--get-into {folder}: {exc}") from exc

        def write(instance: RetrievedInstance) -> None:
            (folder / f"{instance.sop_instance_uid}.dcm").write_bytes(instance.data)

        outcome = get(client, args.study_uid, write, series_uid=args.series_uid)
        what = f"C-GET into {folder}"
    return _report(what, outcome)


def _report(what: str, outcome: RetrieveOutcome) -> int:
    print(f"{what}: status 0x{outcome.status:04X}, {outcome.completed} completed,"
          f" {outcome.failed} failed, {outcome.warning} warning")
    return 0 if outcome.failed == 0 and outcome.instances > 0 else 1


def _store(client: DicomClient, args: argparse.Namespace) -> int:
    files = list(_files(args.paths))
    metas: list[tuple[Path, Part10Meta]] = []
    for path in files:
        try:
            meta = read_meta(path)
            if meta.sop_class_uid == MEDIA_DIRECTORY:
                print(f"{path}: skipped (a DICOMDIR is not sent)")
                continue
            metas.append((path, meta))
        except NotPart10:
            print(f"{path}: skipped (not a DICOM Part 10 file)")
        except OSError as exc:
            raise UsageError(f"{path}: cannot read: {exc}") from exc
    store = StoreClient(client)
    store.prepare(meta for _, meta in metas)
    failures = 0
    try:
        for path, _meta in metas:
            try:
                outcome = store.store(path)
            except RadbridgeError as exc:
                failures += 1
                print(f"{path}: failed: {exc}")
                continue
            failures += outcome.status not in OK_STORE and not 0xB000 <= outcome.status <= 0xBFFF
            comment = f": {outcome.comment}" if outcome.comment else ""
            print(f"{path}: 0x{outcome.status:04X} ({status_meaning(outcome.status)}){comment}")
    finally:
        store.close()
    print(f"{len(metas) - failures} of {len(metas)} stored on {client.name}")
    return 1 if failures or not metas else 0


def _files(paths: Iterable[Path]) -> Iterable[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        elif path.exists():
            yield path
        else:
            raise UsageError(f"{path}: no such file or folder")
