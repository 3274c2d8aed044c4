"""HTTP destination: POST or PUT each delivery, with an Idempotency-Key header.

Connection problems, timeouts and the statuses listed in `retry_on_status` are
transient (retry per queue policy); any other non-2xx answer means the peer rejected
the content, which another attempt will not change (dead-letter).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx

from radbridge.engine.adapters import AdapterContext, Destination, SendResult, destination_type
from radbridge.engine.config import HttpDestination
from radbridge.engine.outbox import OutboundDelivery
from radbridge.errors import PermanentDeliveryError, TransientDeliveryError


class HttpSender:
    def __init__(self, config: HttpDestination, context: AdapterContext) -> None:
        self._config = config
        self._context = context
        self._client = httpx.AsyncClient(timeout=config.timeout)

    async def send(self, delivery: OutboundDelivery) -> SendResult:
        headers = {
            **self._config.headers,
            "Content-Type": delivery.content_type,
            "Idempotency-Key": delivery.idempotency_key,
            "X-Radbridge-Message-Uid": delivery.message_uid,
            "X-Radbridge-Attempt": str(delivery.attempt),
        }
        body: bytes | AsyncIterator[bytes] = (
            delivery.content or b"" if delivery.blob_sha256 is None else self._stream(delivery)
        )
        try:
            response = await self._client.request(
                self._config.method, self._config.url, content=body, headers=headers
            )
        except httpx.TimeoutException as exc:
            raise TransientDeliveryError(f"timeout after {self._config.timeout}s") from exc
        except httpx.TransportError as exc:
            raise TransientDeliveryError(f"{type(exc).__name__}: {exc}") from exc
        if response.is_success:
            return SendResult(response=response.content, detail=f"HTTP {response.status_code}")
        reason = f"HTTP {response.status_code}: {response.text[:200]}"
        if response.status_code in self._config.retry_on_status:
            raise TransientDeliveryError(reason)
        raise PermanentDeliveryError(reason)

    async def _stream(self, delivery: OutboundDelivery) -> AsyncIterator[bytes]:
        chunks = self._context.content_chunks(delivery)
        while chunk := await asyncio.to_thread(next, chunks, b""):
            yield chunk

    async def close(self) -> None:
        await self._client.aclose()


@destination_type("http")
def _build(config: HttpDestination, context: AdapterContext) -> Destination:
    return HttpSender(config, context)
