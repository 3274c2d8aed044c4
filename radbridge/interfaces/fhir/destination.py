"""The `fhir` destination: each delivery, a FHIR R4 transaction (or batch) Bundle in
JSON, POSTed to the server's base URL (the EHR).

How the answer is judged (`judge`):

- 2xx: sent. The detail counts the entries' statuses ("HTTP 200: 8 entries, 201 x8");
  the response kept is the transaction-response reduced to statuses and locations.
  A batch-response whose entries failed is judged like the worst of those entries, and
  so is a transaction-response with failed entries (a server that runs a transaction
  entry by entry without rollback, as Medplum does without strict isolation, answers
  200 with the failures inside).
- 408, 409, 425, 429 and 5xx, a timeout, a refused or broken connection: transient,
  the outbox retries with backoff until its policy gives up.
- any other 4xx (400 and 422 with an OperationOutcome above all): permanent, the
  delivery is dead-lettered at once and its error keeps the outcome's issues.

Resending is safe: Radbridge's Bundles create every resource conditionally on its
business identifier (radbridge.mappings.fhir.bundle).
"""

from __future__ import annotations

import asyncio
import ssl

from radbridge.engine.adapters import AdapterContext, Destination, SendResult, destination_type
from radbridge.engine.config import FhirDestination, TlsConfig
from radbridge.engine.outbox import OutboundDelivery
from radbridge.errors import PermanentDeliveryError, TransientDeliveryError
from radbridge.interfaces.fhir.client import FhirAnswer, FhirClient
from radbridge.interfaces.fhir.outcome import (
    entry_statuses,
    failed_entries,
    issues_text,
    minimal_response,
)
from radbridge.interfaces.tls import client_context

TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})
JSON_TYPES = ("application/fhir+json", "application/json")


class FhirSender:
    """Sends deliveries to one FHIR server."""

    def __init__(self, config: FhirDestination, context: AdapterContext) -> None:
        self._context = context
        verify: ssl.SSLContext | bool = True
        if config.ca is not None:
            verify = client_context(TlsConfig(ca=config.ca), context.resolve)
        self._client = FhirClient(config.url, headers=config.headers,
                                  timeout=config.timeout, verify=verify)

    async def send(self, delivery: OutboundDelivery) -> SendResult:
        media = delivery.content_type.split(";", 1)[0].strip().lower()
        if media not in JSON_TYPES:
            raise PermanentDeliveryError(
                f"content type {delivery.content_type!r} is not FHIR JSON: nothing to send "
                "(add the fhir.bundle transformer)")
        answer = await self._client.post_bundle(
            await self._content(delivery),
            headers={"Prefer": "return=minimal",
                     "X-Radbridge-Message-Uid": delivery.message_uid})
        return judge(answer)

    async def _content(self, delivery: OutboundDelivery) -> bytes:
        if delivery.blob_sha256 is None:
            return delivery.content or b""
        return await asyncio.to_thread(
            lambda: b"".join(self._context.content_chunks(delivery)))

    async def close(self) -> None:
        await self._client.close()


def judge(answer: FhirAnswer) -> SendResult:
    """Sent, or the most specific DeliveryError for the server's answer (see module)."""
    status, body = answer.status, answer.body
    if 200 <= status < 300:
        failed = failed_entries(body) if _has_entries(body) else []
        if failed:
            _raise_for_entries(status, failed)
        counts = entry_statuses(body)
        summary = ", ".join(f"{code} x{n}" for code, n in sorted(counts.items()))
        detail = f"HTTP {status}: {sum(counts.values())} entries, {summary}" if counts else (
            f"HTTP {status}")
        return SendResult(response=minimal_response(body), detail=detail)
    issues = issues_text(body) or "no OperationOutcome in the answer"
    if status in TRANSIENT_STATUSES or status >= 500:
        raise TransientDeliveryError(f"FHIR server answered HTTP {status}: {issues}")
    raise PermanentDeliveryError(f"FHIR server rejected the Bundle (HTTP {status}): {issues}")


def _has_entries(body: object) -> bool:
    return isinstance(body, dict) and body.get("type") in ("batch-response",
                                                           "transaction-response")


def _raise_for_entries(status: int, failed: list[tuple[int, str, str]]) -> None:
    text = "; ".join(f"entry {position} HTTP {code}: {issues}"
                     for position, code, issues in failed[:5])
    codes = [int(code) if code.isdigit() else 500 for _, code, _ in failed]
    if any(code in TRANSIENT_STATUSES or code >= 500 for code in codes):
        raise TransientDeliveryError(f"FHIR Bundle HTTP {status}, entries failed: {text}")
    raise PermanentDeliveryError(f"FHIR Bundle HTTP {status}, entries rejected: {text}")


@destination_type("fhir")
def _build(config: FhirDestination, context: AdapterContext) -> Destination:
    return FhirSender(config, context)
