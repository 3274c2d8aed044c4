"""One C-STORE: the data set streamed into a Part-10 blob, examined, stored, answered.

The file is written as the data PDVs arrive (preamble, our File Meta Information, then
the data set bytes exactly as received, never transcoded), so memory stays bounded
whatever the instance size. When the last fragment is in, one worker thread commits the
blob (fsync) while another walks the file's elements (truncation, wrong transfer
syntax, pixel data length) and reads the header with pydicom up to the pixel data, and
the event loop hands the record to `receive`; the status goes back only after both the
blob and the message are committed.
Bad content is stored anyway as a rejected message (our quarantine) and answered with
a failure status; a store that cannot write gets 0xA700 and nothing is kept.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import zlib
from dataclasses import dataclass
from io import BytesIO
from typing import BinaryIO

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID

from radbridge.engine.adapters import AdapterContext
from radbridge.engine.blobstore import BlobRef, BlobWriter
from radbridge.engine.receiver import Inbound
from radbridge.errors import StoreUnavailable
from radbridge.interfaces.dicom_inbound import instance_inbound
from radbridge.interfaces.dimse.association import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    AcceptedContext,
)
from radbridge.interfaces.dimse.commands import Command, Status
from radbridge.interfaces.dimse.layout import PIXEL_TAGS, Layout, LayoutError, walk
from radbridge.mappings.dicom.checks import instance_problems, looks_like_wrong_syntax
from radbridge.mappings.dicom.errors import DicomContentError
from radbridge.mappings.dicom.index import read_instance
from radbridge.mappings.dicom.records import InstanceRecord

log = logging.getLogger(__name__)

PREAMBLE = bytes(128) + b"DICM"
HEAD = 16
"""Bytes of the data set kept in memory to judge its encoding at the first element."""
EARLY = 64 * 1024
"""Bytes of the data set after which its header is examined while the rest arrives
(a CT header is a few kB; the pixel data is the rest)."""
PARSE_ERRORS = (ValueError, TypeError, KeyError, IndexError, LookupError, EOFError,
                NotImplementedError, OverflowError, struct.error, zlib.error)
"""What pydicom raises on a header it cannot read (NotImplementedError included: pydicom
raises it for encodings it does not support, which for us means 'cannot understand')."""


@dataclass(frozen=True)
class Sender:
    """Who is sending on this association: for the message source and the file meta."""

    channel: str
    calling_ae: str
    peer_ip: str

    @property
    def source(self) -> str:
        return f"dimse:{self.calling_ae}@{self.peer_ip}"


@dataclass(frozen=True)
class Outcome:
    """What the examination found: the record when fine, else the status and reason."""

    status: int
    reason: str | None = None
    record: InstanceRecord | None = None


class InstanceUpload:
    """One C-STORE's data set on its way to the blob store; see the module docstring."""

    def __init__(self, command: Command, context: AcceptedContext, sender: Sender,
                 adapter: AdapterContext, max_size: int,
                 writer: BlobWriter | StoreUnavailable | None = None) -> None:
        """`writer`: the blob file opened ahead (or why it could not be); None opens one."""
        self.command = command
        self._context = context
        self._sender = sender
        self._adapter = adapter
        self._max_size = max_size
        self._received = 0
        self._head = b""
        self._failure: str | None = None
        self._writer: BlobWriter | None = None
        self._early_head: bytearray | None = bytearray()
        self._early: asyncio.Future[tuple[Outcome, Layout] | None] | None = None
        meta = file_meta(command.sop_class, command.sop_instance, context.transfer_syntax,
                         sender.calling_ae)
        self._data_start = len(meta)
        try:
            if isinstance(writer, StoreUnavailable):
                raise writer
            self._writer = writer or adapter.blobs.writer()
            self._writer.write(meta)
        except StoreUnavailable as exc:
            self._fail(f"cannot write: {exc}")

    def feed(self, fragment: memoryview) -> None:
        """Append one data PDV's fragment to the file (hot path: no copy, no log)."""
        self._received += len(fragment)
        writer = self._writer
        if writer is None:
            return
        if len(self._head) < HEAD:
            self._head += bytes(fragment[:HEAD - len(self._head)])
        if self._early_head is not None:
            self._early_head += fragment
            if len(self._early_head) >= EARLY:
                head, self._early_head = bytes(self._early_head), None
                self._early = asyncio.ensure_future(
                    asyncio.to_thread(self._examine_head, head))
        if self._received > self._max_size:
            self._fail(f"the data set exceeds the {self._max_size} bytes this channel takes")
            return
        try:
            writer.write(fragment)
        except StoreUnavailable as exc:
            self._fail(f"cannot write: {exc}")

    def abort(self) -> None:
        """The association ended before the last fragment: keep nothing."""
        if self._writer is not None:
            self._writer.abort()
            self._writer = None

    async def finish(self) -> tuple[int, str | None]:
        """Store the instance (or quarantine it); the C-STORE-RSP status and comment."""
        writer = self._writer
        if writer is None:
            log.warning("channel %s: C-STORE of %s from %s refused: %s", self._sender.channel,
                        self.command.sop_instance, self._sender.calling_ae, self._failure)
            return Status.OUT_OF_RESOURCES, self._failure
        self._writer = None
        with writer:  # removes the temporary file unless committed
            try:
                outcome = await self._settle(writer)
            except StoreUnavailable as exc:
                log.warning("channel %s: could not store %s: %s", self._sender.channel,
                            self.command.sop_instance, type(exc).__name__)
                return Status.OUT_OF_RESOURCES, "the store is unavailable"
        if outcome.status != Status.SUCCESS:
            log.info("channel %s: instance %s from %s rejected (0x%04x): %s",
                     self._sender.channel, self.command.sop_instance, self._sender.calling_ae,
                     outcome.status, outcome.reason)
        return outcome.status, outcome.reason

    def _fail(self, reason: str) -> None:
        self._failure = reason
        self.abort()

    async def _settle(self, writer: BlobWriter) -> Outcome:
        """Make the blob durable while the header is examined and the message committed.

        The blob's fsync runs in one worker thread from the start; the examination, then
        `receive` (the store's own commit) run meanwhile; the status waits for both.
        A crash between the two commits may leave a stored message whose blob never
        reached its name: it was not acknowledged, so the sender sends it again, the
        same bytes dedup to that message, and this upload's commit puts the blob in
        place. The two fsyncs overlap instead of adding up.
        """
        writer.flush()
        try:
            fp = writer.temp_path.open("rb")  # stays readable when the commit renames it
        except OSError as exc:
            raise StoreUnavailable(f"cannot read back {writer.temp_path}: {exc}") from exc
        ref = writer.pending_ref()
        committing = asyncio.ensure_future(asyncio.to_thread(writer.commit))
        try:
            with fp:
                outcome = await self._early_verdict()
                if outcome is None:
                    outcome = await asyncio.to_thread(self._examine, fp)
            await self._adapter.receive(self._inbound(ref, outcome))
        finally:
            committed = await asyncio.gather(committing, return_exceptions=True)
        if isinstance(committed[0], BaseException):
            raise committed[0]
        return outcome

    async def _early_verdict(self) -> Outcome | None:
        """The verdict on the header examined while the data arrived, when it settles the
        matter: the Pixel Data ends exactly where the data set did. None: examine the file."""
        if self._early is None:
            return None
        early = await self._early
        if early is None:
            return None
        outcome, layout = early
        if outcome.status != Status.SUCCESS:
            return outcome
        if layout.value_offset is None or layout.pixel_length is None:
            return None
        if layout.value_offset + layout.pixel_length != self._received:
            return None  # trailing elements, or cut short: the full walk says which
        return outcome

    def _examine_head(self, head: bytes) -> tuple[Outcome, Layout] | None:
        """Examine the first bytes of the data set (worker thread); None when they do not
        hold the whole header (then the file is examined at the end)."""
        uid = UID(self._context.transfer_syntax)
        if not uid.is_transfer_syntax or uid.is_deflated or self._precheck() is not None:
            return None
        try:
            layout = walk(BytesIO(head), 0, len(head), implicit=uid.is_implicit_VR,
                          little=uid.is_little_endian, up_to_pixels=True)
        except LayoutError:
            return None
        if layout.value_offset is None or layout.pixel_length is None:
            return None
        source = BytesIO(head[:layout.pixel_offset])
        try:
            dataset = read_dataset(source, uid.is_implicit_VR, uid.is_little_endian)
        except PARSE_ERRORS:
            return None
        return self._verdict(dataset, layout), layout

    def _precheck(self) -> Outcome | None:
        """What is wrong before the header is even read, if anything."""
        if self.command.sop_class != self._context.abstract_syntax:
            return Outcome(Status.SOP_CLASS_NOT_SUPPORTED,
                           "the SOP class is not the presentation context's")
        wrong = looks_like_wrong_syntax(self._head, self._context.transfer_syntax)
        if wrong is not None:
            return Outcome(Status.CANNOT_UNDERSTAND, wrong)
        return None

    def _examine(self, fp: BinaryIO) -> Outcome:
        syntax = self._context.transfer_syntax
        failed = self._precheck()
        if failed is not None:
            return failed
        try:
            dataset, layout = read_header(fp, self._data_start, syntax)
        except LayoutError as exc:
            return Outcome(Status.CANNOT_UNDERSTAND, str(exc))
        except PARSE_ERRORS as exc:
            return Outcome(Status.CANNOT_UNDERSTAND,
                           f"the header cannot be parsed ({type(exc).__name__})")
        return self._verdict(dataset, layout)

    def _verdict(self, dataset: Dataset, layout: Layout) -> Outcome:
        """What the header says of the instance: its record, or the failure status."""
        syntax = self._context.transfer_syntax
        try:
            record = read_instance(dataset, syntax)
        except DicomContentError as exc:
            return Outcome(Status.CANNOT_UNDERSTAND, str(exc))
        except PARSE_ERRORS as exc:
            return Outcome(Status.CANNOT_UNDERSTAND,
                           f"the header cannot be parsed ({type(exc).__name__})")
        if record.sop_class_uid != self.command.sop_class:
            return Outcome(Status.DATA_SET_DOES_NOT_MATCH,
                           "SOPClassUID differs from the C-STORE's", record)
        if record.sop_instance_uid != self.command.sop_instance:
            return Outcome(Status.DATA_SET_DOES_NOT_MATCH,
                           "SOPInstanceUID differs from the C-STORE's", record)
        problems = instance_problems(dataset, pixel_data_length=layout.pixel_length,
                                     transfer_syntax_uid=syntax,
                                     has_pixel_data=layout.pixel_offset is not None)
        if problems:
            return Outcome(Status.CANNOT_UNDERSTAND, "; ".join(problems), record)
        return Outcome(Status.SUCCESS, None, record)

    def _inbound(self, ref: BlobRef, outcome: Outcome) -> Inbound:
        ok = outcome.status == Status.SUCCESS
        metadata = {"calling_ae": self._sender.calling_ae}
        if outcome.record is None:
            metadata.update(sop_class_uid=self.command.sop_class,
                            transfer_syntax=self._context.transfer_syntax)
        return instance_inbound(
            channel=self._sender.channel, source=self._sender.source, blob=ref,
            record=outcome.record, rejected=None if ok else outcome.reason or "rejected",
            sop_instance_uid=self.command.sop_instance, metadata=metadata)


def read_header(fp: BinaryIO, start: int, syntax: str) -> tuple[Dataset, Layout]:
    """The data set that begins at `start` in `fp`, up to its pixel data, and where the
    pixel data is. Raises LayoutError when the bytes do not fit (truncated, not the
    declared encoding)."""
    uid = UID(syntax)
    known = uid.is_transfer_syntax
    implicit = known and uid.is_implicit_VR
    little = not known or uid.is_little_endian
    end = os.fstat(fp.fileno()).st_size
    source = fp
    if known and uid.is_deflated:
        fp.seek(start)
        source = BytesIO(zlib.decompress(fp.read(), -zlib.MAX_WBITS))
        start, end = 0, len(source.getbuffer())
    layout = walk(source, start, end, implicit=implicit, little=little)
    source.seek(start)
    dataset = read_dataset(source, implicit, little, stop_when=_at_pixel_data)
    return dataset, layout


def _at_pixel_data(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag in PIXEL_TAGS


def file_meta(sop_class: str, sop_instance: str, transfer_syntax: str, source_ae: str) -> bytes:
    """Preamble, 'DICM' and the File Meta Information group (explicit VR little endian)."""
    elements = b"".join((
        _element(0x0001, b"OB", b"\x00\x01"),
        _element(0x0002, b"UI", _uid(sop_class)),
        _element(0x0003, b"UI", _uid(sop_instance)),
        _element(0x0010, b"UI", _uid(transfer_syntax)),
        _element(0x0012, b"UI", _uid(IMPLEMENTATION_CLASS_UID)),
        _element(0x0013, b"SH", _text(IMPLEMENTATION_VERSION_NAME)),
        _element(0x0016, b"AE", _text(source_ae)),
    ))
    group_length = _element(0x0000, b"UL", struct.pack("<L", len(elements)))
    return PREAMBLE + group_length + elements


def _element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":
        return struct.pack("<HH2sHL", 2, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 2, element, vr, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii", "replace")
    return raw + b"\x00" if len(raw) % 2 else raw


def _text(value: str) -> bytes:
    raw = value.encode("ascii", "replace")
    return raw + b" " if len(raw) % 2 else raw
