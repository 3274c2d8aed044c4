"""The channel transformer `fhir.bundle`: an AI result payload as a FHIR R4 transaction.

It takes a payload whose content is the result JSON (`results.result_to_json`) and
returns `application/fhir+json` content, the Bundle of `bundle.render_bundle`, with the
payload's patient_id, accession and study_uid set for the audit ledger and metadata
`result_id`, `emergent` and `demonstration` ("true"/"false") and `fhir_entries` (how
many entries the Bundle has). Send it with a destination of type `fhir`:

    transformers:
      - name: fhir.bundle
        options: {pacs_endpoint: "https://pacs.example.org/dicom-web"}
    destinations:
      - {name: ehr, type: fhir, url: "https://ehr.example.org/fhir/R4"}
"""

from __future__ import annotations

from radbridge.mappings.fhir.bundle import bundle_bytes, render_bundle
from radbridge.mappings.hl7.transforms import read_result
from radbridge.mappings.payload import Payload
from radbridge.mappings.registry import mapping

CONTENT_TYPE = "application/fhir+json"


@mapping("fhir.bundle")
def fhir_bundle(payload: Payload, *, pacs_endpoint: str | None = None) -> Payload:
    """The result as a transaction Bundle (see `bundle.render_bundle`)."""
    if pacs_endpoint is not None and not isinstance(pacs_endpoint, str):
        raise ValueError(
            f"option pacs_endpoint must be a string, got {type(pacs_endpoint).__name__}")
    result = read_result(payload)
    bundle = render_bundle(result, pacs_endpoint=pacs_endpoint)
    return payload.evolve(
        content=bundle_bytes(bundle), content_type=CONTENT_TYPE,
        patient_id=result.patient.identifier, accession=result.order.accession,
        study_uid=result.study_uid,
        metadata={
            "result_id": result.result_id,
            "emergent": _flag(bool(result.emergent_findings)),
            "demonstration": _flag(result.model.demonstration),
            "fhir_entries": str(len(bundle["entry"])),
        },
    )


def _flag(value: bool) -> str:
    return "true" if value else "false"
