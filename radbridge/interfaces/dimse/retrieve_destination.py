"""The `dicom-retrieve` destination: fetch the study an order names from a PACS.

The study is the message's study UID, else every study C-FIND (or QIDO-RS) finds for its
accession number. It is retrieved by C-MOVE to `move_destination` (our own SCP stores and
indexes what arrives), by C-GET, or by WADO-RS; with the last two each instance is written
to the blob store and handed to `into_channel` through `receive`, deduplicated by SOP
Instance UID and content hash, so a retried retrieval adds nothing twice. Nothing found
is a transient error: the study may not have reached the PACS yet, and the queue's
retry policy decides how long to wait for it.
"""

from __future__ import annotations

import asyncio
import logging
from io import BytesIO
from typing import Any

from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from radbridge.engine.adapters import AdapterContext, Destination, SendResult, destination_type
from radbridge.engine.config import DicomRetrieveDestination
from radbridge.engine.outbox import OutboundDelivery
from radbridge.engine.receiver import Inbound, Receipt
from radbridge.errors import PermanentDeliveryError, RadbridgeError, TransientDeliveryError
from radbridge.interfaces.dicom_inbound import instance_inbound
from radbridge.interfaces.dicomweb.client import (
    DicomWebClient,
    DicomWebError,
    DicomWebRejected,
)
from radbridge.interfaces.dimse.query import StudyQuery, find_studies
from radbridge.interfaces.dimse.retrieve import RetrievedInstance, RetrieveOutcome, get, move
from radbridge.interfaces.dimse.scu import AssociationFailed, DicomClient, DimseStatusError
from radbridge.mappings.dicom.errors import DicomContentError
from radbridge.mappings.dicom.index import read_instance
from radbridge.mappings.dicom.records import InstanceRecord

log = logging.getLogger(__name__)

STUDY_UID_TAG = "0020000D"


class InstanceIngest:
    """Writes retrieved instances to blobs and hands each to one channel's `receive`.

    Called from a worker thread (pynetdicom's, or `asyncio.to_thread`'s) while the event
    loop runs `receive`; it returns once the instance is committed, so the peer's
    C-STORE status (C-GET) means stored.
    """

    def __init__(self, context: AdapterContext, channel: str, source: str,
                 metadata: dict[str, str], loop: asyncio.AbstractEventLoop,
                 timeout: float = 120.0) -> None:
        self._context = context
        self._channel = channel
        self._source = source
        self._metadata = metadata
        self._loop = loop
        self._timeout = timeout
        self.received = 0
        self.rejected = 0

    def retrieved(self, instance: RetrievedInstance) -> None:
        self.part10(instance.data)

    def dataset(self, dataset: Dataset) -> None:
        buffer = BytesIO()
        dcmwrite(buffer, dataset, enforce_file_format=True)
        self.part10(buffer.getvalue())

    def part10(self, data: bytes) -> None:
        """Store one Part 10 file and receive it (rejected, but kept, when unreadable)."""
        with self._context.blobs.writer() as writer:
            writer.write(data)
            ref = writer.commit()
        record, problem = _index(data)
        inbound = instance_inbound(channel=self._channel, source=self._source, blob=ref,
                                   record=record, rejected=problem, metadata=self._metadata)
        future = asyncio.run_coroutine_threadsafe(self._receive(inbound), self._loop)
        future.result(self._timeout)
        if problem is not None:
            self.rejected += 1
            raise DicomContentError("", problem)
        self.received += 1


    async def _receive(self, inbound: Inbound) -> Receipt:
        return await self._context.receive(inbound)


def _index(data: bytes) -> tuple[InstanceRecord | None, str | None]:
    try:
        dataset = dcmread(BytesIO(data), stop_before_pixels=True)
        syntax = str(dataset.file_meta.TransferSyntaxUID)
        return read_instance(dataset, syntax), None
    except DicomContentError as exc:
        return None, f"retrieved instance unusable: {exc}"
    except (InvalidDicomError, AttributeError, ValueError, EOFError) as exc:
        return None, f"retrieved instance is not readable DICOM: {type(exc).__name__}"


class DicomRetriever:
    """Destination of type 'dicom-retrieve'."""

    def __init__(self, config: DicomRetrieveDestination, context: AdapterContext) -> None:
        self._config = config
        self._context = context
        self._client = (None if config.peer is None
                        else DicomClient(config.peer, resolve=context.resolve))
        self._where = self._client.name if self._client else (config.dicomweb_url or "")

    async def send(self, delivery: OutboundDelivery) -> SendResult:
        if delivery.study_uid:
            studies = [delivery.study_uid]
        elif delivery.accession:
            studies = await self._studies_for(delivery.accession)
            if not studies:
                raise TransientDeliveryError(
                    f"{self._where} has no study for the order's accession number yet")
        else:
            raise PermanentDeliveryError("the message names neither a study UID nor an"
                                         " accession number: nothing to retrieve")
        details = [await self._retrieve(uid, delivery) for uid in studies]
        return SendResult(detail="; ".join(details))

    async def close(self) -> None:
        return None

    async def _studies_for(self, accession: str) -> list[str]:
        try:
            if self._client is not None:
                found = await asyncio.to_thread(find_studies, self._client,
                                                StudyQuery(accession=accession))
                return [match.study_uid for match in found if match.study_uid]
            return await asyncio.to_thread(self._qido_studies, accession)
        except (AssociationFailed, DimseStatusError, DicomWebError) as exc:
            raise _delivery_error(exc) from exc

    def _qido_studies(self, accession: str) -> list[str]:
        with self._dicomweb() as client:
            found = client.search_studies(fields=[STUDY_UID_TAG], AccessionNumber=accession)
        return [uid for item in found if (uid := _json_value(item, STUDY_UID_TAG))]

    async def _retrieve(self, study_uid: str, delivery: OutboundDelivery) -> str:
        config = self._config
        try:
            if config.method == "c-move" and self._client is not None:
                outcome = await asyncio.to_thread(move, self._client, config.move_destination,
                                                  study_uid)
                return _judge(study_uid, outcome, f"moved to {config.move_destination}")
            ingest = self._ingest(delivery)
            if config.method == "c-get" and self._client is not None:
                outcome = await asyncio.to_thread(get, self._client, study_uid,
                                                  ingest.retrieved)
                return _judge(study_uid, outcome, f"received into {config.into_channel}")
            count = await asyncio.to_thread(self._wado, study_uid, ingest)
        except (AssociationFailed, DimseStatusError, DicomWebError) as exc:
            raise _delivery_error(exc) from exc
        if count == 0:
            raise TransientDeliveryError(f"{self._where} has no instances of study"
                                         f" {study_uid} yet")
        return f"study {study_uid}: {ingest.received} instances received into" \
               f" {config.into_channel} by WADO-RS"

    def _wado(self, study_uid: str, ingest: InstanceIngest) -> int:
        with self._dicomweb() as client:
            return client.retrieve_study_to(study_uid, ingest.dataset)

    def _dicomweb(self) -> DicomWebClient:
        if self._config.dicomweb_url is None:
            raise PermanentDeliveryError("wado-rs retrieval needs dicomweb_url")
        return DicomWebClient(self._config.dicomweb_url,
                              timeout=self._config.peer.response_timeout
                              if self._config.peer else 60.0)

    def _ingest(self, delivery: OutboundDelivery) -> InstanceIngest:
        channel = self._config.into_channel
        if channel is None:
            raise PermanentDeliveryError(f"method {self._config.method} needs into_channel")
        return InstanceIngest(
            self._context, channel, f"dicom-retrieve:{self._where}"[:255],
            {"retrieved_from": self._where, "retrieved_for": delivery.message_uid},
            asyncio.get_running_loop())


def _judge(study_uid: str, outcome: RetrieveOutcome, how: str) -> str:
    """A detail for a complete retrieval; TransientDeliveryError for empty or partial."""
    if outcome.instances == 0 and outcome.failed == 0:
        raise TransientDeliveryError(f"study {study_uid}: nothing to retrieve yet"
                                     f" (status 0x{outcome.status:04X})")
    if outcome.failed:
        raise TransientDeliveryError(
            f"study {study_uid}: {outcome.failed} of"
            f" {outcome.failed + outcome.instances} instances failed (status"
            f" 0x{outcome.status:04X})")
    warned = f", {outcome.warning} with warnings" if outcome.warning else ""
    return f"study {study_uid}: {outcome.instances} instances {how}{warned}"


def _delivery_error(exc: RadbridgeError) -> RadbridgeError:
    if isinstance(exc, DimseStatusError) and (
            exc.status == 0xA801 or 0xA900 <= exc.status <= 0xA9FF):
        return PermanentDeliveryError(str(exc))  # unknown move destination, bad identifier
    if isinstance(exc, DicomWebRejected):
        return PermanentDeliveryError(str(exc))
    return TransientDeliveryError(str(exc))


def _json_value(item: dict[str, Any], tag: str) -> str | None:
    values = item.get(tag, {}).get("Value") or []
    return str(values[0]) if values else None


@destination_type("dicom-retrieve")
def _dicom_retrieve(config: DicomRetrieveDestination, context: AdapterContext) -> Destination:
    return DicomRetriever(config, context)
