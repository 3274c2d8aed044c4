"""Receiving: persist first, acknowledge after, and commit many messages at once.

Sources hand an `Inbound` to `GroupCommitter.receive` and acknowledge only when it
returns a `Receipt`: by then the message, its received-stage record and its audit
event are committed. One thread drains everything that arrived while the previous
commit ran into the next transaction (group commit), so durability costs one fsync per
batch rather than per message. A failed commit fails every message of that batch, so
none is acknowledged; the next batch tries again, which is how a source recovers when
the database or the disk comes back.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.exc import IntegrityError

from radbridge.engine import audit, dicom_index, fast_insert, handback, metrics
from radbridge.engine.batching import BatchingThread
from radbridge.engine.blobstore import BlobRef, BlobStore
from radbridge.engine.db import Database, insert_many
from radbridge.engine.fast_insert import insert_rows
from radbridge.engine.handback import Waiter
from radbridge.engine.lifecycle import MessageStatus, StageKind
from radbridge.engine.models import MESSAGES, STAGES, utcnow
from radbridge.errors import StoreError, StoreUnavailable
from radbridge.mappings.dicom.records import CommitmentRequest, InstanceRecord, MppsRecord

DicomRecord = InstanceRecord | MppsRecord | CommitmentRequest

log = logging.getLogger(__name__)

BUSY_LINGER = 0.0003
"""Seconds a commit waits for more messages while several sources are sending at once:
about one loopback round trip, so connections just acknowledged can join (HL7 benchmark,
8 connections: 958 -> 1,159 messages/s). A lone sender is never kept waiting."""

_MESSAGES = MESSAGES
_STAGES = STAGES
_FIND_DEDUP = (
    select(_MESSAGES.c.channel, _MESSAGES.c.dedup_key, _MESSAGES.c.id, _MESSAGES.c.uid,
           _MESSAGES.c.received_at)
    .where(_MESSAGES.c.channel.in_(bindparam("channels", expanding=True)),
           _MESSAGES.c.dedup_key.in_(bindparam("keys", expanding=True)))
)


@dataclass(frozen=True)
class Inbound:
    """A message as a source hands it over: inline bytes, or a blob already stored."""

    channel: str
    content_type: str
    source: str
    content: bytes | None = None
    blob: BlobRef | None = None
    dedup_key: str | None = None
    patient_id: str | None = None
    accession: str | None = None
    study_uid: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    rejected: str | None = None
    """Why the source refused it (it will NAK): stored for inspection, never processed."""
    dedup_window: float | None = None
    """Seconds a dedup key holds (HL7: MSH-10 reuse); None: for as long as the message is kept."""
    dicom: DicomRecord | None = None
    """What the DICOM index learns from this message, written in the same transaction."""

    def __post_init__(self) -> None:
        if (self.content is None) == (self.blob is None):
            raise ValueError("an Inbound carries either content or a blob, exactly one")


@dataclass(frozen=True)
class Receipt:
    """Proof of a commit: the source may acknowledge now."""

    message_id: int
    uid: str
    duplicate: bool


@dataclass
class _Pending:
    inbound: Inbound
    waiter: Waiter[Receipt]


class GroupCommitter:
    """Commits received messages in batches on one thread; see the module docstring."""

    def __init__(
        self,
        database: Database,
        blobs: BlobStore,
        *,
        inline_limit: int,
        max_batch: int = 256,
        on_commit: Callable[[], None] | None = None,
        audit_chain: str = "receiver",
    ) -> None:
        self._audit_chain = audit_chain
        self._database = database
        self._blobs = blobs
        self._inline_limit = inline_limit
        self._on_commit = on_commit
        self._thread = BatchingThread[_Pending]("group-commit", self._commit,
                                                max_batch=max_batch, busy_linger=BUSY_LINGER)
        self._writer = database.held_writer()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Commit what is queued, then stop the thread."""
        self._thread.stop()
        self._writer.close()

    def submit(self, inbound: Inbound) -> Future[Receipt]:
        """Queue for the next commit; large inline content is moved to the blob store first."""
        if not self._thread.running:
            raise StoreUnavailable("the receiver is not running")
        if inbound.content is not None and len(inbound.content) > self._inline_limit:
            ref = self._blobs.put_bytes(inbound.content)
            inbound = _with_blob(inbound, ref)
        waiter: Waiter[Receipt] = Waiter.for_thread()
        self._thread.put(_Pending(inbound, waiter))
        return waiter.thread_future()

    async def receive(self, inbound: Inbound) -> Receipt:
        """Store `inbound` durably; raises StoreUnavailable when it could not be stored.

        The commit thread wakes this loop once for all of a batch's waiters on it
        (`handback`): at 8 MLLP connections a wake-up per message cost about as much
        CPU as the framing."""
        if not self._thread.running:
            raise StoreUnavailable("the receiver is not running")
        if inbound.content is not None and len(inbound.content) > self._inline_limit:
            ref = await asyncio.to_thread(self._blobs.put_bytes, inbound.content)
            inbound = _with_blob(inbound, ref)
        waiter: Waiter[Receipt] = Waiter.for_loop()
        self._thread.put(_Pending(inbound, waiter))
        return await waiter.result()

    def receive_sync(self, inbound: Inbound) -> Receipt:
        return self.submit(inbound).result()

    def _commit(self, batch: list[_Pending]) -> None:
        outcomes: list[tuple[_Pending, Receipt | BaseException]] = []
        try:
            self._commit_into(batch, outcomes)
        finally:
            handback.settle((pending.waiter, outcome) for pending, outcome in outcomes)
        if self._on_commit is not None and any(
                isinstance(outcome, Receipt) for _, outcome in outcomes):
            self._on_commit()

    def _commit_into(self, batch: list[_Pending],
                     outcomes: list[tuple[_Pending, Receipt | BaseException]]) -> None:
        try:
            receipts = self._store(batch)
        except IntegrityError:
            # Another node stored one of these dedup keys since we looked: take them
            # one at a time so each duplicate resolves to the row that won.
            receipts = []
            for pending in batch:
                try:
                    receipts.extend(self._store([pending]))
                except (StoreError, IntegrityError) as exc:
                    outcomes.append((pending, _unavailable(exc)))
                    receipts.append(None)
        except StoreError as exc:
            log.warning("commit of %d received messages failed: %s", len(batch), exc)
            outcomes.extend((pending, exc) for pending in batch)
            return
        except Exception as exc:  # a bug: fail this batch, keep the committer alive
            log.exception("commit of %d received messages failed unexpectedly", len(batch))
            outcomes.extend((pending, _unavailable(exc)) for pending in batch)
            return
        metrics.COMMIT_BATCH_SIZE.observe(len(batch))
        for pending, receipt in zip(batch, receipts, strict=True):
            if receipt is not None:
                outcomes.append((pending, receipt))
                if not receipt.duplicate:
                    metrics.MESSAGES_RECEIVED.labels(pending.inbound.channel).inc()

    def _store(self, batch: Sequence[_Pending]) -> list[Receipt | None]:
        """One transaction for the whole batch: a few multi-row statements, not one per row."""
        with self._writer.transaction() as connection:
            known = _existing_dedup(connection, [p.inbound for p in batch])
            _retire_expired(connection, known, batch)
            first_of: dict[tuple[str, str], int] = {}
            fresh: list[int] = []
            for index, pending in enumerate(batch):
                key = _dedup(pending.inbound)
                if key is not None and (key in known or key in first_of):
                    continue
                if key is not None:
                    first_of[key] = index
                fresh.append(index)
            uids = {index: uuid.uuid4().hex for index in fresh}
            ids = _insert_messages(connection, [(batch[i].inbound, uids[i]) for i in fresh],
                                   self._audit_chain)
            stored = {index: Receipt(ids[n], uids[index], duplicate=False)
                      for n, index in enumerate(fresh)}
            receipts: list[Receipt | None] = []
            for index, pending in enumerate(batch):
                key = _dedup(pending.inbound)
                if index in stored:
                    receipts.append(stored[index])
                elif key in known:
                    found = known[key]
                    receipts.append(Receipt(found.message_id, found.uid, duplicate=True))
                else:
                    first = stored[first_of[key]]  # type: ignore[index]
                    receipts.append(Receipt(first.message_id, first.uid, duplicate=True))
        return receipts


def _dedup(inbound: Inbound) -> tuple[str, str] | None:
    return None if inbound.dedup_key is None else (inbound.channel, inbound.dedup_key)


def _with_blob(inbound: Inbound, ref: BlobRef) -> Inbound:
    return Inbound(**{**inbound.__dict__, "content": None, "blob": ref})


@functools.lru_cache(maxsize=64)
def _sqlite_find_dedup(channels: int, keys: int) -> str:
    """`_FIND_DEDUP` for SQLite with this many channels and keys, run through sqlite3."""
    def marks(count: int) -> str:
        return ", ".join(["?"] * count)

    return (f"SELECT channel, dedup_key, id, uid, received_at FROM messages"
            f" WHERE channel IN ({marks(channels)}) AND dedup_key IN ({marks(keys)})")


def _sqlite_time(text: str | None) -> datetime | None:
    """A timestamp column as SQLite holds it (naive UTC text), read as `UTCDateTime` would."""
    return None if text is None else datetime.fromisoformat(text).replace(tzinfo=UTC)


@dataclass(frozen=True)
class _Known(Receipt):
    received_at: datetime | None = None


def _existing_dedup(
    connection: Connection, inbounds: Sequence[Inbound]
) -> dict[tuple[str, str] | None, Receipt]:
    keys = {key for key in map(_dedup, inbounds) if key is not None}
    if not keys:
        return {}
    channels = sorted({channel for channel, _ in keys})
    values = [key for _, key in keys]
    # Not the ORM: this runs once per commit on the acknowledgement path.
    rows: Iterable[Any]
    if connection.dialect.name == "sqlite":
        rows = [(c, k, i, u, _sqlite_time(at)) for c, k, i, u, at in fast_insert.run(
            connection, _sqlite_find_dedup(len(channels), len(values)), [*channels, *values])]
    else:
        rows = connection.execute(_FIND_DEDUP, {"channels": channels, "keys": values})
    return {(c, k): _Known(i, u, duplicate=True, received_at=at) for c, k, i, u, at in rows
            if (c, k) in keys}


def _retire_expired(
    connection: Connection, known: dict[tuple[str, str] | None, Receipt],
    batch: Sequence[_Pending]
) -> None:
    """Free the dedup keys whose window has passed, so the key names a new message.

    The old message keeps its key with its id appended: still findable, no longer a match.
    """
    now = utcnow()
    for pending in batch:
        key, window = _dedup(pending.inbound), pending.inbound.dedup_window
        found = known.get(key)
        if key is None or window is None or not isinstance(found, _Known) \
                or found.received_at is None:
            continue
        if (now - found.received_at).total_seconds() > window:
            connection.execute(update(_MESSAGES).where(_MESSAGES.c.id == found.message_id)
                               .values(dedup_key=f"{key[1][:230]}~{found.message_id}"))
            del known[key]


def _insert_messages(
    connection: Connection, fresh: Sequence[tuple[Inbound, str]], audit_chain: str
) -> list[int]:
    """Insert messages, their received stages and audit events; returns the new ids."""
    if not fresh:
        return []
    now = utcnow()
    ids = insert_many(connection, _MESSAGES,
                      [_message_row(inbound, uid, now) for inbound, uid in fresh])
    insert_rows(connection, _STAGES, [
        _received_stage_row(message_id, inbound, now)
        for message_id, (inbound, _) in zip(ids, fresh, strict=True)
    ])
    events = [_received_event(message_id, uid, inbound)
              for message_id, (inbound, uid) in zip(ids, fresh, strict=True)]
    indexed = [dicom_index.IndexEntry(message_id, inbound.channel, inbound.dicom, inbound.blob)
               for message_id, (inbound, _) in zip(ids, fresh, strict=True)
               if inbound.dicom is not None and inbound.rejected is None]
    if indexed:
        events += dicom_index.record(connection, indexed, now)
    audit.append_rows(connection, events, audit_chain)
    return ids


def _message_row(inbound: Inbound, uid: str, now: datetime) -> dict[str, Any]:
    return {
        "uid": uid, "channel": inbound.channel,
        "status": MessageStatus.RECEIVED if inbound.rejected is None else MessageStatus.REJECTED,
        "generation": 0, "received_at": now, "updated_at": now,
        "source": inbound.source[:255], "content_type": inbound.content_type[:127],
        "dedup_key": inbound.dedup_key, "patient_id": inbound.patient_id,
        "accession": inbound.accession, "study_uid": inbound.study_uid,
        "metadata": dict(inbound.metadata), "attempts": 0,
    }


def _received_stage_row(message_id: int, inbound: Inbound, now: datetime) -> dict[str, Any]:
    """The stage record that keeps the content exactly as it arrived."""
    row: dict[str, Any] = {
        "message_id": message_id, "generation": 0, "stage": StageKind.RECEIVED, "at": now,
        "content_type": inbound.content_type[:127], "destination": None, "detail": None,
    }
    if inbound.blob is not None:
        row.update(in_blob=True, content=None, content_sha256=inbound.blob.sha256,
                   content_size=inbound.blob.size)
    else:
        content = inbound.content or b""
        row.update(in_blob=False, content=content, content_size=len(content),
                   content_sha256=hashlib.sha256(content).hexdigest())
    return row


def _received_event(message_id: int, uid: str, inbound: Inbound) -> audit.AuditRecord:
    size = inbound.blob.size if inbound.blob else len(inbound.content or b"")
    detail: dict[str, Any] = {"uid": uid, "size": size, "content_type": inbound.content_type[:127]}
    if inbound.rejected is not None:
        detail["reason"] = inbound.rejected[:500]
    return audit.AuditRecord(
        action="message.received" if inbound.rejected is None else "message.rejected",
        actor=f"source:{inbound.source[:100]}", outcome="success" if inbound.rejected is None
        else "failure",
        channel=inbound.channel, message_id=message_id, patient_id=inbound.patient_id,
        accession=inbound.accession, study_uid=inbound.study_uid, detail=detail,
    )


def _unavailable(exc: Exception) -> StoreUnavailable:
    if isinstance(exc, StoreUnavailable):
        return exc
    return StoreUnavailable(f"could not store the message: {exc}")
