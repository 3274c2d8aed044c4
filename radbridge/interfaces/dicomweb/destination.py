"""The `stow-rs` destination: each delivery's DICOM instance POSTed to {url}/studies.

The instance is streamed from the blob store into a one-part multipart/related body
with a Content-Length, so it is never held whole. Success means the instance is in the
response's ReferencedSOPSequence. Storing the same instance again is harmless: a PACS
keeps one copy per SOP Instance UID and answers a repeat as stored. Failures:

- no answer, a timeout, 5xx, 408, 429, or Out of Resources (A7xx) for the instance:
  TransientDeliveryError (the outbox retries);
- any other 4xx, or a failure reason for the instance: PermanentDeliveryError naming
  the status and the failure reason.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx

from radbridge.engine.adapters import AdapterContext, Destination, SendResult, destination_type
from radbridge.engine.config import StowRsDestination
from radbridge.engine.outbox import OutboundDelivery
from radbridge.errors import PermanentDeliveryError, TransientDeliveryError
from radbridge.interfaces.dicomweb.multipart import media_type
from radbridge.interfaces.dicomweb.stow_response import FailureReason, StowResponse
from radbridge.mappings.dicom.records import CONTENT_TYPE

TRANSIENT_STATUSES = frozenset({408, 429})
RESPONSE_KEPT = 4096
"""Bytes of the peer's response kept in the sent stage record."""


class StowRsSender:
    """Sends deliveries to one DICOMweb service on one reused HTTP client."""

    def __init__(self, config: StowRsDestination, context: AdapterContext) -> None:
        self._url = config.url.rstrip("/") + "/studies"
        self._timeout = config.timeout
        self._context = context
        self._client = httpx.AsyncClient(timeout=config.timeout, headers=config.headers)

    async def send(self, delivery: OutboundDelivery) -> SendResult:
        if media_type(delivery.content_type)[0] != CONTENT_TYPE:
            raise PermanentDeliveryError(
                f"content type {delivery.content_type!r} is not {CONTENT_TYPE}: nothing to "
                "send by STOW-RS")
        boundary = uuid.uuid4().hex
        head = (f"--{boundary}\r\nContent-Type: {CONTENT_TYPE}\r\n\r\n").encode("ascii")
        tail = f"\r\n--{boundary}--\r\n".encode("ascii")
        headers = {
            "Content-Type": f'multipart/related; type="{CONTENT_TYPE}"; boundary={boundary}',
            "Content-Length": str(len(head) + delivery.size + len(tail)),
            "Accept": "application/dicom+json",
        }
        try:
            response = await self._client.post(
                self._url, content=self._body(delivery, head, tail), headers=headers)
        except httpx.TimeoutException as exc:
            raise TransientDeliveryError(
                f"STOW-RS to {self._url}: no answer in {self._timeout}s") from exc
        except httpx.TransportError as exc:
            raise TransientDeliveryError(
                f"STOW-RS to {self._url}: {type(exc).__name__}: {exc}") from exc
        return _judge(response, delivery.metadata.get("sop_instance_uid"), self._url)

    async def _body(self, delivery: OutboundDelivery, head: bytes,
                    tail: bytes) -> AsyncIterator[bytes]:
        yield head
        chunks = self._context.content_chunks(delivery)
        while chunk := await asyncio.to_thread(next, chunks, b""):
            yield chunk
        yield tail

    async def close(self) -> None:
        await self._client.aclose()


def _judge(response: httpx.Response, sop_uid: str | None, url: str) -> SendResult:
    """Success, or the delivery error the response means for this instance."""
    status = response.status_code
    where = f"STOW-RS to {url}: HTTP {status}"
    if status >= 500 or status in TRANSIENT_STATUSES:
        raise TransientDeliveryError(f"{where}: {response.text[:200]}")
    result = _parse(response)
    if status in (200, 202) and _stored(result, sop_uid):
        return SendResult(response=response.content[:RESPONSE_KEPT],
                          detail=f"HTTP {status}: stored {sop_uid or 'the instance'}")
    if result is None:
        raise PermanentDeliveryError(f"{where}: {response.text[:200]}")
    reason = _failure(result, sop_uid)
    if reason is None and status == 409:
        raise TransientDeliveryError(f"{where}: no instance stored and no failure reason")
    if reason is not None and reason >> 8 == 0xA7:
        raise TransientDeliveryError(f"{where}: failure reason {_name(reason)}")
    raise PermanentDeliveryError(
        f"{where}: " + (f"failure reason {_name(reason)}" if reason is not None
                        else "the instance is not in the ReferencedSOPSequence"))


def _parse(response: httpx.Response) -> StowResponse | None:
    if not response.content:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return StowResponse.from_json(body) if isinstance(body, dict) else None


def _stored(result: StowResponse | None, sop_uid: str | None) -> bool:
    if result is None:
        return False
    if sop_uid is None:
        return bool(result.stored) and not result.failed
    return sop_uid in result.stored_uids()


def _failure(result: StowResponse, sop_uid: str | None) -> int | None:
    if sop_uid is not None and (reason := result.failure_for(sop_uid)) is not None:
        return reason
    return result.failed[0].reason if len(result.failed) == 1 else None


def _name(reason: int) -> str:
    try:
        return f"0x{reason:04X} ({FailureReason(reason).name.lower().replace('_', ' ')})"
    except ValueError:
        return f"0x{reason:04X}"


@destination_type("stow-rs")
def _build(config: StowRsDestination, context: AdapterContext) -> Destination:
    return StowRsSender(config, context)
