"""The `dimse` destination: C-STORE of each delivery's DICOM file on a reused association.

The file goes out as it is stored: pynetdicom reads the data set from the blob file in
chunks after the file meta, in the instance's own transfer syntax, so nothing is
transcoded or held in memory. When the peer accepts the SOP class only in little endian,
an uncompressed instance is re-encoded to it (no pixel change); a compressed one cannot
be, and is dead-lettered. The outbox keys deliveries by SOP Instance UID, so a resend
stores the same instance again, which a PACS treats as a harmless overwrite.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pynetdicom import _config as pynetdicom_config
from pynetdicom.association import Association

from radbridge.engine.adapters import AdapterContext, Destination, SendResult, destination_type
from radbridge.engine.config import DimseDestination
from radbridge.engine.outbox import OutboundDelivery
from radbridge.errors import (
    BlobNotFound,
    PermanentDeliveryError,
    RadbridgeError,
    TransientDeliveryError,
)
from radbridge.interfaces.dimse.scu import (
    UNCOMPRESSED,
    AssociationFailed,
    DicomClient,
    DimseError,
    NoAcceptedContext,
    SharedAssociation,
    check_status,
)

log = logging.getLogger(__name__)

STATUS_MEANINGS = {
    0x0000: "success",
    0xB000: "coercion of data elements",
    0xB006: "elements discarded",
    0xB007: "data set does not match SOP class",
    0x0117: "invalid SOP instance",
    0x0122: "SOP class not supported",
    0x0124: "not authorised",
    0x0210: "duplicate invocation",
    0x0211: "unrecognised operation",
    0x0212: "mistyped argument",
}
"""C-STORE statuses (PS3.4 B.2.3, PS3.7 C); ranges are named by `status_meaning`."""


class NotPart10(RadbridgeError):
    """The content is not a DICOM Part 10 file with SOP class, instance and transfer syntax."""


@dataclass(frozen=True)
class StoreOutcome:
    """What the peer answered to one C-STORE."""

    status: int
    sop_instance_uid: str
    comment: str | None = None


@dataclass(frozen=True)
class Part10Meta:
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


def status_meaning(status: int) -> str:
    if status in STATUS_MEANINGS:
        return STATUS_MEANINGS[status]
    for low, high, meaning in ((0xA700, 0xA7FF, "out of resources"),
                               (0xA900, 0xA9FF, "data set does not match SOP class"),
                               (0xC000, 0xCFFF, "cannot understand"),
                               (0xB000, 0xBFFF, "warning")):
        if low <= status <= high:
            return meaning
    return "unknown status"


def read_meta(source: Path | bytes) -> Part10Meta:
    """SOP class, instance and transfer syntax from the file meta (NotPart10 if absent)."""
    try:
        meta = (read_file_meta_info(source) if isinstance(source, Path)
                else dcmread(BytesIO(source), stop_before_pixels=True).file_meta)
        return Part10Meta(str(meta.MediaStorageSOPClassUID),
                          str(meta.MediaStorageSOPInstanceUID), str(meta.TransferSyntaxUID))
    except (InvalidDicomError, AttributeError, EOFError, ValueError) as exc:
        raise NotPart10(f"not a DICOM Part 10 file with complete file meta: {exc}") from exc


class StoreClient:
    """Sends Part 10 files by C-STORE on one shared association (blocking calls)."""

    def __init__(self, client: DicomClient) -> None:
        self.peer = client.name
        self._shared = SharedAssociation(client)
        self._message_ids = itertools.cycle(range(1, 65536))

    @property
    def associations(self) -> int:
        """Associations opened so far: 1 for a batch that `prepare` announced."""
        return self._shared.opened

    def prepare(self, metas: Iterable[Part10Meta]) -> None:
        """Announce a batch, so that one association proposes every context it needs."""
        for meta in metas:
            self._shared.want(meta.sop_class_uid, meta.transfer_syntax_uid)

    def store(self, source: Path | bytes) -> StoreOutcome:
        """C-STORE a file (streamed from disk) or in-memory Part 10 bytes."""
        if isinstance(source, bytes):
            # Small content stored inline: through a file too, so that it goes out as
            # stored, exactly like a blob (a Dataset would be re-encoded by pynetdicom).
            with tempfile.NamedTemporaryFile(prefix="radbridge-cstore-") as file:
                file.write(source)
                file.flush()
                return self.store(Path(file.name))
        meta = read_meta(source)
        opened = self._shared.opened
        try:
            return self._store_once(source, meta)
        except AssociationFailed:
            if self._shared.opened != opened:
                raise
            # The reused association had been closed by the peer (idle timeout) without
            # our noticing: once more on a fresh one. A repeated C-STORE is harmless.
            log.info("association with %s lost; storing %s on a new one", self.peer,
                     meta.sop_instance_uid)
            return self._store_once(source, meta)

    def _store_once(self, source: Path, meta: Part10Meta) -> StoreOutcome:
        assoc = self._shared.for_object(meta.sop_class_uid, meta.transfer_syntax_uid)
        payload = self._payload(assoc, source, meta)
        try:
            status = assoc.send_c_store(payload, msg_id=next(self._message_ids))
        except (RuntimeError, OSError) as exc:
            self._shared.discard()
            raise AssociationFailed(self.peer, f"C-STORE failed: {exc}") from exc
        except (ValueError, AttributeError) as exc:
            raise NotPart10(f"cannot send SOP instance {meta.sop_instance_uid}: {exc}") from exc
        try:
            code = check_status(self.peer, status, "C-STORE")
        except AssociationFailed:
            self._shared.discard()
            raise
        comment = status.get("ErrorComment")
        return StoreOutcome(code, meta.sop_instance_uid, None if comment is None else str(comment))

    def close(self) -> None:
        self._shared.close()

    def _payload(self, assoc: Association, source: Path, meta: Part10Meta) -> Path | Dataset:
        accepted = [cx for cx in assoc.accepted_contexts
                    if cx.abstract_syntax == meta.sop_class_uid and cx.as_scu]
        syntaxes = {str(cx.transfer_syntax[0]) for cx in accepted}
        if meta.transfer_syntax_uid in syntaxes:
            # pynetdicom streams the data set from the file only with this switch on; it
            # affects nothing but C-STOREs given a path, which only this class does.
            pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
            return source
        if meta.transfer_syntax_uid in syntaxes or (
                meta.transfer_syntax_uid in UNCOMPRESSED and syntaxes & set(UNCOMPRESSED)):
            return _dataset(source)
        raise NoAcceptedContext(
            self.peer, f"no accepted context for SOP class {meta.sop_class_uid} in transfer"
                       f" syntax {meta.transfer_syntax_uid} (accepted: {sorted(syntaxes)};"
                       " Radbridge does not transcode)")


def _dataset(source: Path) -> Dataset:
    dataset = dcmread(source)
    if not isinstance(dataset.file_meta, FileMetaDataset):
        raise NotPart10("no file meta")
    return dataset


def judge(peer: str, outcome: StoreOutcome) -> SendResult:
    """Sent for success and warnings; otherwise the error the outbox acts on."""
    status = outcome.status
    text = f"0x{status:04X} ({status_meaning(status)})"
    if outcome.comment:
        text += f": {outcome.comment}"
    if status == 0x0000:
        return SendResult(detail=f"stored {outcome.sop_instance_uid} on {peer}")
    if 0xB000 <= status <= 0xBFFF or status == 0x0001:
        return SendResult(detail=f"stored {outcome.sop_instance_uid} on {peer}"
                                 f" with warning {text}")
    if 0xA700 <= status <= 0xA7FF or status == 0x0210:
        raise TransientDeliveryError(f"{peer} answered C-STORE {text}")
    if (0xA900 <= status <= 0xA9FF or 0xC000 <= status <= 0xCFFF
            or status in (0x0117, 0x0122, 0x0124, 0x0211, 0x0212)):
        raise PermanentDeliveryError(f"{peer} refused SOP instance {outcome.sop_instance_uid}:"
                                     f" C-STORE {text}")
    raise TransientDeliveryError(f"{peer} answered C-STORE with unexpected status {text}")


class DimseStoreDestination:
    """Destination of type 'dimse': one association to the peer, one C-STORE at a time."""

    def __init__(self, config: DimseDestination, context: AdapterContext) -> None:
        self._context = context
        self._store = StoreClient(DicomClient(config.peer, resolve=context.resolve))
        self._lock = asyncio.Lock()

    async def send(self, delivery: OutboundDelivery) -> SendResult:
        source: Path | bytes
        if delivery.blob_sha256 is not None:
            source = self._context.blobs.path(delivery.blob_sha256)
            if not source.exists():
                raise PermanentDeliveryError(
                    f"delivery {delivery.delivery_id}: {BlobNotFound.__name__}"
                    f" {delivery.blob_sha256}")
        else:
            source = delivery.content or b""
        async with self._lock:
            try:
                outcome = await asyncio.to_thread(self._store.store, source)
            except (AssociationFailed, TimeoutError) as exc:
                raise TransientDeliveryError(str(exc)) from exc
            except OSError as exc:
                raise TransientDeliveryError(
                    f"delivery {delivery.delivery_id}: cannot read the instance: {exc}") from exc
            except (NoAcceptedContext, NotPart10) as exc:
                raise PermanentDeliveryError(str(exc)) from exc
            except DimseError as exc:
                raise TransientDeliveryError(str(exc)) from exc
        log.info("delivery %s: C-STORE %s status 0x%04X", delivery.delivery_id,
                 outcome.sop_instance_uid, outcome.status)
        return judge(self._store.peer, outcome)

    async def close(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self._store.close)


@destination_type("dimse")
def _dimse(config: DimseDestination, context: AdapterContext) -> Destination:
    return DimseStoreDestination(config, context)
