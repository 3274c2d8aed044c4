"""Export formats: a stream of ledger events becomes a stream of text, event by event,
so an export of any size is written (or sent over HTTP) without being held in memory.

    csv     a header row, then one row per event (detail as compact JSON); a cell that a
            spreadsheet would run as a formula (= + - @ at its start) gets a leading '
    json    one JSON array of events
    ndjson  one JSON event per line
    fhir    one FHIR R4 AuditEvent per line (NDJSON, as FHIR bulk data writes it)
    atna    one XML document <AuditMessages> holding one DICOM AuditMessage per event
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from radbridge.engine.audit_export import atna, fhir_audit
from radbridge.engine.audit_export.errors import AuditFilterError
from radbridge.engine.audit_export.event_map import AuditSource
from radbridge.engine.audit_export.events import COLUMNS, LedgerEvent

Render = Callable[[Iterable[LedgerEvent], AuditSource], Iterator[str]]
CHUNK = 64 * 1024
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class ExportFormat:
    name: str
    media_type: str
    extension: str
    render: Render


def _csv(events: Iterable[LedgerEvent], source: AuditSource) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for event in events:
        row = event.as_json()
        row["detail"] = json.dumps(row["detail"], sort_keys=True, separators=(",", ":"),
                                   ensure_ascii=False, default=str)
        writer.writerow([_cell(row[column]) for column in COLUMNS])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(_FORMULA_START) else text


def _json_array(events: Iterable[LedgerEvent], source: AuditSource) -> Iterator[str]:
    separator = "[\n"
    for event in events:
        yield separator + _dumps(event.as_json())
        separator = ",\n"
    yield "[]\n" if separator == "[\n" else "\n]\n"


def _ndjson(events: Iterable[LedgerEvent], source: AuditSource) -> Iterator[str]:
    for event in events:
        yield _dumps(event.as_json()) + "\n"


def _fhir(events: Iterable[LedgerEvent], source: AuditSource) -> Iterator[str]:
    for event in events:
        yield _dumps(fhir_audit.audit_event(event, source)) + "\n"


def _atna(events: Iterable[LedgerEvent], source: AuditSource) -> Iterator[str]:
    yield atna.XML_DECLARATION.decode() + "\n<AuditMessages>\n"
    for event in events:
        message = atna.audit_message(event, source).removeprefix(atna.XML_DECLARATION)
        yield message.decode() + "\n"
    yield "</AuditMessages>\n"


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


FORMATS = {f.name: f for f in (
    ExportFormat("csv", "text/csv; charset=utf-8", "csv", _csv),
    ExportFormat("json", "application/json", "json", _json_array),
    ExportFormat("ndjson", "application/x-ndjson", "ndjson", _ndjson),
    ExportFormat("fhir", "application/fhir+ndjson", "ndjson", _fhir),
    ExportFormat("atna", "application/xml", "xml", _atna),
)}


def export_format(name: str) -> ExportFormat:
    """The format called `name`, or AuditFilterError naming the ones there are."""
    found = FORMATS.get(name)
    if found is None:
        raise AuditFilterError("format", f"one of {', '.join(FORMATS)}")
    return found


def chunked(parts: Iterable[str], size: int = CHUNK) -> Iterator[bytes]:
    """UTF-8 chunks of about `size` bytes: fewer, larger writes to a socket or a file."""
    pending: list[str] = []
    held = 0
    for part in parts:
        pending.append(part)
        held += len(part)
        if held >= size:
            yield "".join(pending).encode()
            pending, held = [], 0
    if pending:
        yield "".join(pending).encode()
