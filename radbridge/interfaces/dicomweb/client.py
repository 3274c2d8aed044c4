"""A thin DICOMweb client (QIDO-RS, WADO-RS, STOW-RS) on dicomweb-client.

dicomweb-client speaks the protocol; this module fixes what Radbridge needs around it:
no hidden retries (the outbox owns retry policy), a timeout on every request, studies
retrieved instance by instance (never a whole study in memory), and errors from
requests translated into our own types::

    DicomWebError
    ├── DicomWebUnavailable   connection refused, timeout, 5xx, 408, 429: try again later
    └── DicomWebRejected      any other 4xx: the request itself was refused
        └── StowRejected      a STOW-RS 409: no instance stored (see `response`)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from radbridge.errors import RadbridgeError
from radbridge.interfaces.dicomweb.stow_response import StowResponse

FRAMES_MEDIA_TYPES = (("application/octet-stream", "1.2.840.10008.1.2.1"),)
"""What WADO-RS frame retrieval asks for: Orthanc answers 400 to the default types."""
TRANSIENT_STATUSES = frozenset({408, 429})
_T = TypeVar("_T")


class DicomWebError(RadbridgeError):
    """A DICOMweb request failed; `url` is the service, `status` the HTTP status if any."""

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class DicomWebUnavailable(DicomWebError):
    """The service did not answer usefully now (network, timeout, 5xx, 408, 429)."""


class DicomWebRejected(DicomWebError):
    """The service refused the request (4xx): sending it again will not help."""


class StowRejected(DicomWebRejected):
    """STOW-RS stored none of the instances (409); `response` says why for each."""

    def __init__(self, message: str, *, url: str, response: StowResponse) -> None:
        super().__init__(message, url=url, status=409)
        self.response = response


class DicomWebClient:
    """One DICOMweb service at `url` (its base, e.g. http://pacs:8042/dicom-web)."""

    def __init__(self, url: str, *, headers: dict[str, str] | None = None,
                 timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self._session = requests.Session()
        self._client = DICOMwebClient(self.url, session=self._session, headers=headers,
                                      timeout=timeout)
        self._client.set_http_retry_params(retry=False)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> DicomWebClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- QIDO-RS -------------------------------------------------------------------

    def search_studies(self, *, limit: int | None = None, offset: int | None = None,
                       fields: Iterable[str] = (), **filters: str) -> list[dict[str, Any]]:
        """Studies matching `filters` (keywords or tags: PatientID="X", StudyDate="2024..")."""
        return self._call("search studies", lambda: self._client.search_for_studies(
            limit=limit, offset=offset, fields=list(fields) or None,
            search_filters=dict(filters) or None))

    def search_series(self, study_uid: str, **filters: str) -> list[dict[str, Any]]:
        return self._call(f"search series of study {study_uid}",
                          lambda: self._client.search_for_series(
                              study_instance_uid=study_uid, search_filters=dict(filters) or None))

    def search_instances(self, study_uid: str, series_uid: str | None = None,
                         **filters: str) -> list[dict[str, Any]]:
        return self._call(f"search instances of study {study_uid}",
                          lambda: self._client.search_for_instances(
                              study_instance_uid=study_uid, series_instance_uid=series_uid,
                              search_filters=dict(filters) or None))

    # --- WADO-RS -------------------------------------------------------------------

    def iter_study(self, study_uid: str) -> Iterator[Dataset]:
        """The study's instances one at a time, as they arrive."""
        what = f"retrieve study {study_uid}"
        instances = self._call(what, lambda: self._client.iter_study(study_uid))
        while True:
            instance = self._call(what, lambda: next(instances, None))
            if instance is None:
                return
            yield instance

    def retrieve_study_to(self, study_uid: str,
                          target: Path | Callable[[Dataset], None]) -> int:
        """Write each instance to folder `target` as SOPInstanceUID.dcm, or hand it to a
        callback; returns how many instances came."""
        count = 0
        for instance in self.iter_study(study_uid):
            if callable(target):
                target(instance)
            else:
                target.mkdir(parents=True, exist_ok=True)
                instance.save_as(target / f"{instance.SOPInstanceUID}.dcm",
                                 enforce_file_format=True)
            count += 1
        return count

    def retrieve_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> Dataset:
        return self._call(f"retrieve instance {sop_uid}", lambda: self._client.retrieve_instance(
            study_uid, series_uid, sop_uid))

    def retrieve_frames(self, study_uid: str, series_uid: str, sop_uid: str,
                        frames: Iterable[int]) -> list[bytes]:
        """Uncompressed frames (Explicit VR Little Endian pixel bytes), 1-based numbers."""
        return self._call(f"retrieve frames of {sop_uid}",
                          lambda: self._client.retrieve_instance_frames(
                              study_uid, series_uid, sop_uid, frame_numbers=list(frames),
                              media_types=FRAMES_MEDIA_TYPES))

    # --- STOW-RS -------------------------------------------------------------------

    def store_instances(self, instances: Iterable[Path | str | Dataset],
                        study_uid: str | None = None) -> StowResponse:
        """Store files (or datasets); a partial failure (202) returns, 409 raises
        StowRejected."""
        datasets = [item if isinstance(item, Dataset) else pydicom.dcmread(item)
                    for item in instances]
        response: Dataset = self._call(
            "store instances", lambda: self._client.store_instances(datasets, study_uid))
        return StowResponse.from_json(response.to_json_dict())

    # --- errors --------------------------------------------------------------------

    def _call(self, what: str, request: Callable[[], _T]) -> _T:
        """Run one request, translating what requests raises into our errors."""
        try:
            return request()
        except requests.HTTPError as exc:
            raise self._http_error(what, exc) from exc
        except requests.Timeout as exc:
            raise DicomWebUnavailable(f"{what}: no answer from {self.url} in time",
                                      url=self.url) from exc
        except requests.RequestException as exc:
            raise DicomWebUnavailable(f"{what}: {self.url} unreachable: {exc}",
                                      url=self.url) from exc

    def _http_error(self, what: str, exc: requests.HTTPError) -> DicomWebError:
        response = exc.response
        status = response.status_code if response is not None else None
        text = response.text[:300] if response is not None else ""
        message = f"{what}: {self.url} answered HTTP {status}: {text}"
        if status is None or status >= 500 or status in TRANSIENT_STATUSES:
            return DicomWebUnavailable(message, url=self.url, status=status)
        if status == 409 and response is not None:
            return StowRejected(message, url=self.url, response=_stow_body(response))
        return DicomWebRejected(message, url=self.url, status=status)


def _stow_body(response: requests.Response) -> StowResponse:
    try:
        body = response.json()
    except ValueError:
        return StowResponse()
    return StowResponse.from_json(body) if isinstance(body, dict) else StowResponse()
