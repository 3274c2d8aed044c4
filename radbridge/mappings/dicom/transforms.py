"""Channel transformers on DICOM instances.

`dicom.deidentify` is what a channel puts before a destination outside the hospital
(an AI vendor's service, a research archive): the PS3.15 basic profile
(`deid.deidentify`) with UIDs replaced consistently under the channel's secret, so a
study's instances keep their hierarchy and references. Give the secret through the
environment, never in the file itself:

    transformers:
      - name: dicom.deidentify
        options: {secret: "${RADBRIDGE_DEID_SECRET}", keep: [PatientAge, PatientSex]}

The payload's patient_id and accession are cleared and study_uid becomes the
pseudonymous one, so nothing downstream (ordering keys, file names) carries the
originals; the message itself keeps them in the store for the audit trail.
"""

from __future__ import annotations

from io import BytesIO

import pydicom
from pydicom.errors import InvalidDicomError

from radbridge.mappings.dicom.deid import DeidOptions, deidentify
from radbridge.mappings.dicom.errors import DicomContentError
from radbridge.mappings.dicom.records import CONTENT_TYPE
from radbridge.mappings.payload import Payload
from radbridge.mappings.registry import mapping

MIN_SECRET_BYTES = 16


@mapping("dicom.deidentify")
def deidentify_instance(
    payload: Payload,
    *,
    secret: str,
    retain_patient_characteristics: bool = False,
    retain_device_identity: bool = False,
    retain_longitudinal_dates: bool = False,
    keep: list[str] | None = None,
    allow_burned_in_annotation: bool = False,
) -> Payload:
    """The instance de-identified (PS3.15 E.1 basic profile, with the options named)."""
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"option 'secret': expected at least {MIN_SECRET_BYTES} bytes "
                         "(set it from the environment, e.g. ${RADBRIDGE_DEID_SECRET})")
    try:
        dataset = pydicom.dcmread(BytesIO(payload.content))
    except (InvalidDicomError, EOFError, ValueError) as exc:
        raise DicomContentError("file", f"is not a readable DICOM instance: {exc}") from exc
    options = DeidOptions(
        retain_patient_characteristics=retain_patient_characteristics,
        retain_device_identity=retain_device_identity,
        retain_longitudinal_dates=retain_longitudinal_dates,
        keep=frozenset(keep or ()), allow_burned_in_annotation=allow_burned_in_annotation)
    clean = deidentify(dataset, secret=secret.encode(), options=options)
    out = BytesIO()
    clean.save_as(out, enforce_file_format=True)
    return payload.evolve(
        content=out.getvalue(), content_type=CONTENT_TYPE, patient_id=None, accession=None,
        study_uid=str(clean.get("StudyInstanceUID", "")) or None,
        metadata={"deidentified": "PS3.15 E.1 basic"})
