"""A small FHIR REST client: POST a Bundle to a server's base URL and read the answer.

The network sits behind `FhirClient.post_bundle`; what the library below raises is
translated here. A timeout or a connection that fails is TransientDeliveryError (the
outbox retries); any answer, whatever its status, comes back as a `FhirAnswer` for
`destination.judge` to classify.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import httpx

from radbridge.errors import TransientDeliveryError
from radbridge.interfaces.fhir.outcome import parse_json

FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True)
class FhirAnswer:
    """The server's status and its body as JSON (None when the body is not JSON)."""

    status: int
    body: Any


class FhirClient:
    """One reused HTTP connection pool to one FHIR server."""

    def __init__(self, base_url: str, *, headers: dict[str, str] | None = None,
                 timeout: float = 30.0, verify: ssl.SSLContext | bool = True) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._client = httpx.AsyncClient(
            timeout=timeout, verify=verify,
            headers={"Accept": FHIR_JSON, **(headers or {})})

    async def post_bundle(self, body: bytes, *, headers: dict[str, str] | None = None
                          ) -> FhirAnswer:
        """POST a transaction or batch Bundle (JSON bytes) to the base URL."""
        try:
            response = await self._client.post(
                self.base_url, content=body,
                headers={"Content-Type": f"{FHIR_JSON}; charset=utf-8", **(headers or {})})
        except httpx.TimeoutException as exc:
            raise TransientDeliveryError(
                f"FHIR server did not answer in {self.timeout}s ({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            raise TransientDeliveryError(
                f"FHIR server unreachable ({type(exc).__name__}): {exc}") from exc
        return FhirAnswer(response.status_code, parse_json(response.content))

    async def close(self) -> None:
        await self._client.aclose()
