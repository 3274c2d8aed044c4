"""The `fhir` destination against a real FHIR R4 server (Medplum's engine, validation on),
and every Bundle through the npm `fhir` validator (tests/peers/fhir_server.py).

Accepted with validation on; a resend creates nothing (search counts); a Bundle the
server rejects (400 + OperationOutcome) is a permanent failure carrying the issues;
an injected 500, a server that does not answer in time and one that is not there are
transient. `judge` is also checked on answers the server cannot be made to give.
"""

from __future__ import annotations

import asyncio
import copy
import json
import socket
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from radbridge.engine.adapters import AdapterContext, SendResult
from radbridge.engine.blobstore import BlobStore
from radbridge.engine.config import FhirDestination
from radbridge.engine.db import Database
from radbridge.engine.outbox import OutboundDelivery
from radbridge.errors import PermanentDeliveryError, TransientDeliveryError
from radbridge.interfaces.fhir.client import FhirAnswer
from radbridge.interfaces.fhir.destination import FhirSender, judge
from radbridge.mappings.fhir.bundle import bundle_bytes, render_bundle
from radbridge.mappings.results import AiResult
from tests.peers.fhir_server import FhirServer, validate_js
from tests.test_fhir_bundle import rich_result, sample


def results() -> list[AiResult]:
    """Two patients, three results (the rich one under its own result id)."""
    return [sample("ich-positive-demo"), sample("ich-negative"),
            replace(rich_result(), result_id="res-rich-0003")]


@pytest.fixture
def ehr(fhir_server: FhirServer) -> FhirServer:
    fhir_server.reset()
    return fhir_server


def _sender(url: str, tmp_path: Path, timeout: float = 10.0) -> FhirSender:
    config = FhirDestination.model_validate(
        {"name": "ehr", "type": "fhir", "url": url, "timeout": timeout})

    async def no_receive(_inbound: Any) -> Any:
        raise AssertionError("a destination does not receive")

    context = AdapterContext(tmp_path, BlobStore(tmp_path / "blobs"), 1024, no_receive,
                             Database(f"sqlite:///{tmp_path / 'unused.db'}"))
    return FhirSender(config, context)


def _delivery(content: bytes, number: int = 1,
              content_type: str = "application/fhir+json") -> OutboundDelivery:
    now = datetime.now(UTC)
    return OutboundDelivery(
        delivery_id=number, message_id=number, message_uid=f"uid{number}", channel="results",
        destination="ehr", generation=0, attempt=1, idempotency_key=f"k{number}",
        content_type=content_type, content=content, blob_sha256=None, size=len(content),
        created_at=now, received_at=now)


async def _send(sender: FhirSender, bundle: dict[str, Any], number: int = 1) -> SendResult:
    return await sender.send(_delivery(bundle_bytes(bundle), number))


def _count(ehr: FhirServer, kind: str, **params: str) -> int:
    return len(ehr.search(kind, **params))


def _counts(ehr: FhirServer) -> dict[str, int]:
    return {kind: _count(ehr, kind) for kind in (
        "Patient", "Device", "Endpoint", "ServiceRequest", "ImagingStudy", "Observation",
        "DiagnosticReport")}


async def test_bundles_are_accepted_and_a_resend_creates_nothing(
        ehr: FhirServer, tmp_path: Path) -> None:
    sender = _sender(ehr.base_url, tmp_path)
    bundles = [render_bundle(result) for result in results()]
    try:
        for number, bundle in enumerate(bundles, 1):
            sent = await _send(sender, bundle, number)
            size = len(bundle["entry"])
            assert sent.detail.startswith(f"HTTP 200: {size} entries")
            kept = json.loads(sent.response or b"{}")
            assert kept["type"] == "transaction-response"
            assert all("resource" not in entry for entry in kept["entry"])
        first = _counts(ehr)
        assert first == {"Patient": 2, "Device": 2, "Endpoint": 1, "ServiceRequest": 2,
                         "ImagingStudy": 2, "Observation": 7, "DiagnosticReport": 3}
        for number, bundle in enumerate(bundles, 1):
            again = await _send(sender, bundle, number)
            assert again.detail == (f"HTTP 200: {len(bundle['entry'])} entries, "
                                    f"200 x{len(bundle['entry'])}")
    finally:
        await sender.close()
    assert _counts(ehr) == first
    assert _count(ehr, "Patient", identifier="urn:radbridge:issuer:STMARY|MRN004711") == 1
    assert _count(ehr, "Observation",
                  identifier="urn:radbridge:result|res-2024-05-01-0001/finding/1") == 1


async def test_the_server_links_what_the_bundle_linked(ehr: FhirServer,
                                                       tmp_path: Path) -> None:
    sender = _sender(ehr.base_url, tmp_path)
    try:
        await _send(sender, render_bundle(replace(rich_result(), result_id="res-links")))
    finally:
        await sender.close()
    (report,) = ehr.search("DiagnosticReport", identifier="urn:radbridge:result|res-links")
    (study,) = ehr.search("ImagingStudy")
    (device,) = ehr.search("Device")
    assert report["status"] == "preliminary"
    assert report["imagingStudy"] == [{"reference": f"ImagingStudy/{study['id']}"}]
    assert len(report["result"]) == 3
    for reference in report["result"]:
        observation = ehr.client.get(f"{ehr.base_url}/{reference['reference']}").json()
        assert observation["derivedFrom"] == [{"reference": f"ImagingStudy/{study['id']}"}]
        assert observation["device"] == {"reference": f"Device/{device['id']}"}
    (endpoint,) = ehr.search("Endpoint")
    assert study["endpoint"] == [{"reference": f"Endpoint/{endpoint['id']}"}]
    assert len(ehr.search("Observation", subject=report["subject"]["reference"])) == 3


def test_the_npm_fhir_validator_passes_every_bundle(fhir_server: FhirServer) -> None:
    bundles = [render_bundle(result) for result in results()]
    broken = copy.deepcopy(bundles[0])
    broken["entry"][-1]["resource"]["status"] = "draft"
    broken["entry"][-1]["resource"]["colour"] = "blue"
    *verdicts, refused = validate_js([*bundles, broken])
    for verdict in verdicts:
        errors = [m for m in verdict["messages"] if m["severity"] in ("error", "fatal")]
        assert verdict["valid"] and errors == [], errors
    assert not refused["valid"]
    assert {m["location"] for m in refused["messages"] if m["severity"] == "error"} >= {
        "DiagnosticReport.status", "DiagnosticReport.colour"}


async def test_a_rejected_bundle_is_permanent_with_the_outcome(ehr: FhirServer,
                                                               tmp_path: Path) -> None:
    bundle = render_bundle(sample("ich-negative"))
    bundle["entry"][-2]["resource"]["issued"] = "yesterday"
    sender = _sender(ehr.base_url, tmp_path)
    try:
        with pytest.raises(PermanentDeliveryError) as rejected:
            await _send(sender, bundle)
        with pytest.raises(PermanentDeliveryError, match="not FHIR JSON"):
            await sender.send(_delivery(b"MSH|^~\\&|", content_type="application/hl7-v2"))
    finally:
        await sender.close()
    message = str(rejected.value)
    assert message.startswith("FHIR server rejected the Bundle (HTTP 400): error structure at "
                              "Bundle.entry[4].resource.issued: Invalid instant format")
    assert "MRN" not in message.split(":", 1)[0]
    assert _counts(ehr)["Patient"] == 0, "a rejected transaction writes nothing"


async def test_server_errors_and_silence_are_transient(ehr: FhirServer,
                                                       tmp_path: Path) -> None:
    bundle = render_bundle(sample("ich-positive-demo"))
    sender = _sender(ehr.base_url, tmp_path, timeout=0.5)
    try:
        ehr.fault(500, count=1)
        with pytest.raises(TransientDeliveryError, match=r"HTTP 500: error transient: "):
            await _send(sender, bundle)
        ehr.fault(503, count=1)
        with pytest.raises(TransientDeliveryError, match="HTTP 503"):
            await _send(sender, bundle)
        assert _counts(ehr)["Observation"] == 0
        # Answers only after the client gave up; the late write and the retry must not
        # make two of anything.
        ehr.fault(None, count=1, delay_ms=1500)
        with pytest.raises(TransientDeliveryError, match=r"did not answer in 0\.5s"):
            await _send(sender, bundle)
        retried = await _send(sender, bundle)
        assert retried.detail.startswith("HTTP 200")
        await asyncio.sleep(1.5)
    finally:
        await sender.close()
    assert _counts(ehr) == {"Patient": 1, "Device": 1, "Endpoint": 0, "ServiceRequest": 1,
                            "ImagingStudy": 1, "Observation": 3, "DiagnosticReport": 1}


async def test_an_absent_server_is_transient(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sender = _sender(f"http://127.0.0.1:{port}/fhir/R4", tmp_path)
    try:
        with pytest.raises(TransientDeliveryError, match="unreachable"):
            await _send(sender, render_bundle(sample("ich-negative")))
    finally:
        await sender.close()


OUTCOME = {"resourceType": "OperationOutcome", "issue": [
    {"severity": "warning", "code": "informational", "diagnostics": "just so you know"},
    {"severity": "error", "code": "business-rule", "diagnostics": "unknown patient",
     "expression": ["Bundle.entry[0].resource"]}]}


@pytest.mark.parametrize(("status", "error"), [
    (422, PermanentDeliveryError), (404, PermanentDeliveryError), (401, PermanentDeliveryError),
    (408, TransientDeliveryError), (429, TransientDeliveryError), (502, TransientDeliveryError),
])
def test_judge_statuses(status: int, error: type[Exception]) -> None:
    with pytest.raises(error) as raised:
        judge(FhirAnswer(status, OUTCOME))
    assert f"HTTP {status}" in str(raised.value)
    assert str(raised.value).endswith(
        "error business-rule at Bundle.entry[0].resource: unknown patient; "
        "warning informational: just so you know")


@pytest.mark.parametrize("kind", ["batch-response", "transaction-response"])
def test_judge_batch_responses_by_their_entries(kind: str) -> None:
    # a transaction-response too: a server without strict isolation (Medplum's default)
    # runs a transaction entry by entry and answers 200 with the failures inside
    def batch(*statuses: str) -> FhirAnswer:
        return FhirAnswer(200, {"resourceType": "Bundle", "type": kind, "entry": [
            {"response": {"status": status, "outcome": OUTCOME}} for status in statuses]})

    assert judge(batch("201 Created", "200 OK")).detail == "HTTP 200: 2 entries, 200 x1, 201 x1"
    with pytest.raises(PermanentDeliveryError, match=r"entry 1 HTTP 400: error business"):
        judge(batch("201", "400"))
    with pytest.raises(TransientDeliveryError, match="entry 0 HTTP 503"):
        judge(batch("503", "400"))
    assert judge(FhirAnswer(200, None)).detail == "HTTP 200"
    with pytest.raises(PermanentDeliveryError, match="no OperationOutcome"):
        judge(FhirAnswer(400, None))
