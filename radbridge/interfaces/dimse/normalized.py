"""The normalized services of the SCP: MPPS (N-CREATE, N-SET) and Storage Commitment
Push (N-ACTION, answered by an N-EVENT-REPORT on the same association, or on a new one
for the requesters listed in `commitment_peers`: see commitment_report).

Each request's data set is small and arrives whole; it is stored as the message content
exactly as received, with the record the DICOM index learns from it. Content that
cannot be read is kept as a rejected message and answered with 0106H (invalid
attribute value) and an ErrorComment naming the attribute, never its value.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID, generate_uid
from pynetdicom.dsutils import encode

from radbridge.engine.adapters import AdapterContext
from radbridge.engine.config import DicomPeerConfig
from radbridge.engine.dicom_index import stored_instances
from radbridge.engine.receiver import Inbound
from radbridge.errors import StoreUnavailable
from radbridge.interfaces.dimse import commands
from radbridge.interfaces.dimse.association import (
    MPPS,
    STORAGE_COMMITMENT,
    AcceptedContext,
    Association,
)
from radbridge.interfaces.dimse.commands import Command, Status
from radbridge.interfaces.dimse.commitment_report import deliver
from radbridge.interfaces.dimse.storage import PARSE_ERRORS, Sender
from radbridge.mappings.dicom.commitment import (
    STORAGE_COMMITMENT_SOP_INSTANCE,
    commitment_event_type,
    commitment_result,
    read_commitment,
)
from radbridge.mappings.dicom.errors import DicomContentError
from radbridge.mappings.dicom.mpps import read_mpps
from radbridge.mappings.dicom.records import (
    COMMITMENT_CONTENT_TYPE,
    MPPS_CONTENT_TYPE,
    CommitmentRequest,
    MppsRecord,
)

log = logging.getLogger(__name__)

_OPERATIONS = {commands.N_CREATE_RQ: "create", commands.N_SET_RQ: "set"}


@dataclass(frozen=True)
class NormalizedReply:
    """The response command, and an N-EVENT-REPORT (command, data set) to send after it."""

    response: bytes
    event: tuple[bytes, bytes] | None = None


class _Refused(Exception):
    """A request answered with a failure status (internal to this module)."""

    def __init__(self, status: int, comment: str) -> None:
        self.status = status
        self.comment = comment
        super().__init__(comment)


class Normalized:
    """Handles N-CREATE/N-SET on MPPS and N-ACTION on Storage Commitment for a channel."""

    def __init__(self, channel: str, context: AdapterContext,
                 commitment_peers: Mapping[str, DicomPeerConfig] | None = None) -> None:
        self._channel = channel
        self._context = context
        self._peers = dict(commitment_peers or {})
        self._reports: set[asyncio.Task[bool]] = set()

    async def close(self) -> None:
        """Give up on reports still waiting to go out (the requester will ask again)."""
        for task in list(self._reports):
            task.cancel()
        await asyncio.gather(*self._reports, return_exceptions=True)

    async def handle(self, command: Command, context: AcceptedContext, data: bytes,
                     sender: Sender, association: Association) -> NormalizedReply:
        field = command.command_field
        try:
            if field in _OPERATIONS and context.abstract_syntax == MPPS:
                return await self._mpps(command, context, data, sender)
            if field == commands.N_ACTION_RQ and context.abstract_syntax == STORAGE_COMMITMENT:
                return await self._commitment(command, context, data, sender)
        except _Refused as exc:
            return NormalizedReply(commands.response(command, exc.status, comment=exc.comment))
        return NormalizedReply(commands.response(
            command, Status.UNRECOGNIZED_OPERATION,
            comment="operation not supported on this SOP class"))

    async def _mpps(self, command: Command, context: AcceptedContext, data: bytes,
                    sender: Sender) -> NormalizedReply:
        operation = _OPERATIONS[command.command_field]
        uid = command.sop_instance or (generate_uid() if operation == "create" else "")
        if not uid:
            raise _Refused(Status.INVALID_ATTRIBUTE_VALUE, "N-SET without an MPPS UID")
        dataset = self._decode(data, context)
        digest = hashlib.sha256(data).hexdigest()
        record: MppsRecord | None = None
        reason: str | None = None
        try:
            record = read_mpps(dataset, operation=operation, mpps_uid=uid)
        except DicomContentError as exc:
            reason = str(exc)
        await self._store(Inbound(
            channel=self._channel, content_type=MPPS_CONTENT_TYPE, source=sender.source,
            content=data, dedup_key=f"mpps/{uid}/{operation}/{digest}",
            patient_id=record.patient_id if record else None,
            accession=record.accession if record else None,
            study_uid=record.study_uid if record else None,
            metadata={"mpps_uid": uid, "operation": operation,
                      "calling_ae": sender.calling_ae,
                      "transfer_syntax": context.transfer_syntax},
            rejected=reason, dicom=record))
        if reason is not None:
            raise _Refused(Status.INVALID_ATTRIBUTE_VALUE, reason)
        return NormalizedReply(commands.response(command, Status.SUCCESS, sop_instance=uid))

    async def _commitment(self, command: Command, context: AcceptedContext, data: bytes,
                          sender: Sender) -> NormalizedReply:
        dataset = self._decode(data, context)
        request: CommitmentRequest | None = None
        reason: str | None = None
        try:
            request = read_commitment(dataset, requester_ae=sender.calling_ae)
        except DicomContentError as exc:
            reason = str(exc)
        digest = hashlib.sha256(data).hexdigest()
        transaction = request.transaction_uid if request else "unknown"
        await self._store(Inbound(
            channel=self._channel, content_type=COMMITMENT_CONTENT_TYPE,
            source=sender.source, content=data,
            dedup_key=f"commitment/{transaction}/{digest}",
            metadata={"transaction_uid": transaction, "calling_ae": sender.calling_ae,
                      "transfer_syntax": context.transfer_syntax},
            rejected=reason, dicom=request))
        if request is None:
            raise _Refused(Status.INVALID_ATTRIBUTE_VALUE, reason or "unreadable request")
        response = commands.response(command, Status.SUCCESS,
                                     sop_instance=STORAGE_COMMITMENT_SOP_INSTANCE,
                                     action_type=command.number(commands.ACTION_TYPE_ID) or 1)
        uids = [sop_instance for _, sop_instance in request.references]
        stored = await asyncio.to_thread(stored_instances, self._context.database, uids)
        result = commitment_result(request, stored)
        log.info("channel %s: storage commitment for %s: %d of %d stored", self._channel,
                 sender.calling_ae, len(stored), len(uids))
        peer = self._peers.get(sender.calling_ae)
        if peer is not None:  # on a new association, once this one has answered
            task = asyncio.ensure_future(deliver(
                peer, result, commitment_event_type(result), channel=self._channel,
                context=self._context))
            self._reports.add(task)
            task.add_done_callback(self._reports.discard)
            return NormalizedReply(response)
        event = commands.event_report(STORAGE_COMMITMENT, STORAGE_COMMITMENT_SOP_INSTANCE,
                                      command.message_id + 1 & 0xFFFF,
                                      commitment_event_type(result))
        return NormalizedReply(response, (event, _encode(result, context)))

    async def _store(self, inbound: Inbound) -> None:
        try:
            await self._context.receive(inbound)
        except StoreUnavailable as exc:
            log.warning("channel %s: could not store an N-service request from %s: %s",
                        self._channel, inbound.source, type(exc).__name__)
            raise _Refused(Status.PROCESSING_FAILURE, "the store is unavailable") from exc

    def _decode(self, data: bytes, context: AcceptedContext) -> Dataset:
        syntax = UID(context.transfer_syntax)
        try:
            raw = zlib.decompress(data, -zlib.MAX_WBITS) if syntax.is_deflated else data
            dataset = read_dataset(BytesIO(raw), syntax.is_implicit_VR, syntax.is_little_endian)
        except PARSE_ERRORS as exc:
            raise _Refused(Status.PROCESSING_FAILURE,
                           f"the data set cannot be parsed ({type(exc).__name__})") from exc
        return dataset


def _encode(dataset: Dataset, context: AcceptedContext) -> bytes:
    """A data set in the presentation context's transfer syntax."""
    syntax = UID(context.transfer_syntax)
    encoded = encode(dataset, syntax.is_implicit_VR, syntax.is_little_endian,
                     syntax.is_deflated)
    if encoded is None:
        raise _Refused(Status.PROCESSING_FAILURE, "the event report cannot be encoded")
    return encoded
