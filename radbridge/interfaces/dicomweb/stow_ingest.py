"""One STOW-RS request body turned into stored instances, part by part.

Runs in a worker thread: each application/dicom part is streamed into a blob as it
arrives, its header read from the blob's file, checked, and handed to `receive` (which
commits the message and its index row) before the next part is read. A part that fails
a check is stored as rejected (quarantined, never processed) and reported in the
FailedSOPSequence; a body that breaks mid-way keeps what was received of the broken
part the same way, then raises `BrokenStowBody`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from radbridge.engine.blobstore import BlobRef, BlobStore, BlobWriter
from radbridge.engine.receiver import Inbound, Receipt
from radbridge.errors import RadbridgeError, StoreUnavailable
from radbridge.interfaces.dicom_inbound import instance_inbound
from radbridge.interfaces.dicomweb.multipart import (
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
)
from radbridge.interfaces.dicomweb.part10 import Part10Header, read_part10_header
from radbridge.interfaces.dicomweb.stow_response import (
    FailedInstance,
    FailureReason,
    StoredInstance,
    StowResponse,
)
from radbridge.mappings.dicom.checks import instance_problems
from radbridge.mappings.dicom.errors import DicomContentError
from radbridge.mappings.dicom.index import read_instance
from radbridge.mappings.dicom.records import CONTENT_TYPE, InstanceRecord

log = logging.getLogger(__name__)

RAW_PREFIX = 64 * 1024
"""Bytes of the raw body kept in memory, quarantined when it breaks before any part."""


class BrokenStowBody(RadbridgeError):
    """The multipart body broke; parts before the break were handled as usual."""

    def __init__(self, reason: str, response: StowResponse) -> None:
        super().__init__(reason)
        self.reason = reason
        self.response = response


class BodyTooLarge(RadbridgeError):
    """The body passed the channel's max_size."""


@dataclass
class StowRequest:
    """What one request is: where it goes and where it came from."""

    channel: str
    client: str
    boundary: bytes
    max_size: int
    study_uid: str | None
    study_url: Callable[[str], str]
    """The RetrieveURL of a study, from its UID."""

    @property
    def source(self) -> str:
        return f"stow-rs:{self.client}"


class _Rejected(Exception):
    """A part that is stored as rejected; internal to this module."""

    def __init__(self, reason: str, code: FailureReason) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass
class _Part:
    index: int
    content_type: str
    writer: BlobWriter | None
    failure: str | None = None
    """Set when the blob could not be written: the rest of the part is dropped."""


@dataclass
class StowIngest:
    """Feeds one request body through the parser into blobs and `receive`."""

    request: StowRequest
    blobs: BlobStore
    receive: Callable[[Inbound], Receipt]
    """Stores an Inbound and returns once committed (called from this worker thread)."""
    response: StowResponse = field(default_factory=StowResponse)
    _part: _Part | None = None
    _prefix: bytearray = field(default_factory=bytearray)
    _studies: set[str] = field(default_factory=set)

    def run(self, chunks: Iterator[bytes]) -> StowResponse:
        """Consume the body; raises BrokenStowBody or BodyTooLarge (after handling the
        parts before the problem). A store that fails fails the parts, not the request."""
        parser = MultipartParser(self.request.boundary, max_part_size=self.request.max_size)
        try:
            for chunk in chunks:
                if parser.received + len(chunk) > self.request.max_size:
                    raise BodyTooLarge(f"the body is larger than this channel's max_size "
                                       f"({self.request.max_size} bytes)")
                if len(self._prefix) < RAW_PREFIX:
                    self._prefix += chunk[:RAW_PREFIX - len(self._prefix)]
                for event in parser.feed(chunk):
                    self._on(event)
            parser.close()
        except MultipartError as exc:
            self._quarantine_broken(str(exc), parser)
            raise BrokenStowBody(str(exc), self._finished()) from exc
        finally:
            if self._part is not None and self._part.writer is not None:
                self._part.writer.abort()
        return self._finished()

    def _finished(self) -> StowResponse:
        studies = {self.request.study_uid} if self.request.study_uid else self._studies
        if len(studies) == 1:
            self.response.retrieve_url = self.request.study_url(next(iter(studies)))
        return self.response

    # --- events --------------------------------------------------------------------

    def _on(self, event: PartStart | PartData | PartEnd) -> None:
        if isinstance(event, PartStart):
            self._start(event)
        elif isinstance(event, PartData):
            self._write(event.data)
        else:
            self._end()

    def _start(self, event: PartStart) -> None:
        try:
            writer: BlobWriter | None = self.blobs.writer()
            failure = None
        except StoreUnavailable as exc:
            writer, failure = None, str(exc)
        self._part = _Part(event.index, event.content_type, writer, failure)

    def _write(self, data: bytes) -> None:
        part = self._part
        if part is None or part.writer is None:
            return
        try:
            part.writer.write(data)
        except StoreUnavailable as exc:
            part.writer.abort()
            part.writer, part.failure = None, str(exc)

    def _end(self) -> None:
        part, self._part = self._part, None
        if part is None:
            return
        if part.writer is None:
            log.warning("STOW-RS part %d on channel %s not stored: %s", part.index + 1,
                        self.request.channel, part.failure)
            self._fail(None, FailureReason.OUT_OF_RESOURCES)
            return
        with part.writer as writer:
            self._handle(part, writer)

    # --- one complete part ---------------------------------------------------------

    def _handle(self, part: _Part, writer: BlobWriter) -> None:
        record: InstanceRecord | None = None
        try:
            if part.content_type != CONTENT_TYPE:
                raise _Rejected(f"part {part.index + 1} has Content-Type "
                                f"{part.content_type[:60]!r}, expected {CONTENT_TYPE}",
                                FailureReason.CANNOT_UNDERSTAND)
            writer.flush()
            header = _read(writer)
            record = _record(header)
            self._check(header, record)
            ref = writer.commit()
            receipt = self.receive(_accepted(self.request, ref, record))
        except _Rejected as rejected:
            self._quarantine(writer, rejected, record)
            return
        except StoreUnavailable as exc:
            log.warning("STOW-RS instance %s on channel %s not stored: %s",
                        record.sop_instance_uid if record else "?", self.request.channel, exc)
            self._fail(record, FailureReason.OUT_OF_RESOURCES)
            return
        log.info("STOW-RS stored instance %s on channel %s as message %d%s",
                 record.sop_instance_uid, self.request.channel, receipt.message_id,
                 " (duplicate)" if receipt.duplicate else "")
        self._studies.add(record.study_uid)
        self.response.stored.append(StoredInstance(record.sop_class_uid, record.sop_instance_uid))

    def _check(self, header: Part10Header, record: InstanceRecord) -> None:
        meta = header.dataset.file_meta
        problems = instance_problems(
            header.dataset, pixel_data_length=header.pixel_data_length,
            # the file meta's identity plays the part of the transport's (C-STORE's)
            sop_class_uid=_meta_uid(meta.get("MediaStorageSOPClassUID")),
            sop_instance_uid=_meta_uid(meta.get("MediaStorageSOPInstanceUID")),
            transfer_syntax_uid=header.transfer_syntax_uid,
            has_pixel_data=header.has_pixel_data)
        problems += header.problems()
        if problems:
            raise _Rejected("; ".join(problems), FailureReason.SOP_CLASS_MISMATCH)
        wanted = self.request.study_uid
        if wanted is not None and record.study_uid != wanted:
            raise _Rejected("StudyInstanceUID differs from the study in the request URL",
                            FailureReason.STUDY_UID_MISMATCH)

    def _quarantine(self, writer: BlobWriter, rejected: _Rejected,
                    record: InstanceRecord | None) -> None:
        try:
            ref = writer.commit()
            receipt = self.receive(_rejected(self.request, ref, record, rejected.reason))
        except StoreUnavailable as exc:
            log.warning("STOW-RS rejected part on channel %s not kept: %s",
                        self.request.channel, exc)
            self._fail(record, FailureReason.OUT_OF_RESOURCES)
            return
        log.info("STOW-RS part rejected on channel %s, kept as message %d: %s",
                 self.request.channel, receipt.message_id, rejected.reason)
        self._fail(record, rejected.code)

    def _quarantine_broken(self, reason: str, parser: MultipartParser) -> None:
        """Keep what arrived of the broken part as rejected: the part's bytes so far when
        one is open, else the body's first bytes (no part yet) or the unparsed rest."""
        part, self._part = self._part, None
        detail = f"broken multipart body: {reason}"
        try:
            if part is not None and part.writer is not None:
                with part.writer as writer:
                    ref = writer.commit()
                detail += f" (kept: the first {ref.size} bytes of part {part.index + 1})"
            elif parser.parts == 0:
                ref = self.blobs.put_bytes(bytes(self._prefix))
                detail += f" (kept: the first {ref.size} bytes of the body)"
            else:
                ref = self.blobs.put_bytes(parser.pending)
                detail += f" (kept: {ref.size} unparsed bytes after part {parser.parts})"
            receipt = self.receive(_rejected(self.request, ref, None, detail))
        except StoreUnavailable as exc:
            log.warning("broken STOW-RS body on channel %s not kept: %s",
                        self.request.channel, exc)
            return
        log.info("broken STOW-RS body on channel %s kept as message %d: %s",
                 self.request.channel, receipt.message_id, reason)

    def _fail(self, record: InstanceRecord | None, code: FailureReason) -> None:
        self.response.failed.append(FailedInstance(
            record.sop_class_uid if record else None,
            record.sop_instance_uid if record else None, int(code)))


def _meta_uid(value: object) -> str | None:
    return str(value) if value else None


def _read(writer: BlobWriter) -> Part10Header:
    try:
        return read_part10_header(writer.temp_path)
    except DicomContentError as exc:
        raise _Rejected(str(exc), FailureReason.CANNOT_UNDERSTAND) from exc


def _record(header: Part10Header) -> InstanceRecord:
    try:
        return read_instance(header.dataset, header.transfer_syntax_uid)
    except DicomContentError as exc:
        raise _Rejected(str(exc), FailureReason.CANNOT_UNDERSTAND) from exc


def _accepted(request: StowRequest, ref: BlobRef, record: InstanceRecord) -> Inbound:
    return instance_inbound(channel=request.channel, source=request.source, blob=ref,
                            record=record)


def _rejected(request: StowRequest, ref: BlobRef, record: InstanceRecord | None,
              reason: str) -> Inbound:
    return instance_inbound(channel=request.channel, source=request.source, blob=ref,
                            record=record, rejected=reason)
