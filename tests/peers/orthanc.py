"""Orthanc with its DICOMweb plugin, inside its own loopback-only network namespace.

Orthanc cannot bind 127.0.0.1 only, so it runs in a namespace and the host reaches its
DICOM and HTTP ports through `TcpBridge`s on 127.0.0.1. For Orthanc to call back an SCP of
ours (C-STORE, C-MOVE destination), `add_modality` opens a bridge the other way.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tests.peers.bridge import TcpBridge
from tests.peers.netns import NetworkNamespace
from tests.peers.waiting import wait_http_ready

PLUGIN_DIR = Path("/usr/share/orthanc/plugins")
DICOMWEB_PLUGIN = PLUGIN_DIR / "libOrthancDicomWeb.so"
DICOM_PORT = 4242
HTTP_PORT = 8042


class OrthancError(RuntimeError):
    """Orthanc did not start, or answered a REST call with an error."""


def orthanc_binary() -> str | None:
    """Path of the Orthanc executable, or None when it is not installed."""
    return shutil.which("Orthanc") or (
        "/usr/sbin/Orthanc" if os.access("/usr/sbin/Orthanc", os.X_OK) else None)


def orthanc_config(folder: Path, ae_title: str, **overrides: Any) -> dict[str, Any]:
    """The configuration the tests rely on: open DICOM and REST, DICOMweb, nothing kept."""
    config: dict[str, Any] = {
        "Name": "radbridge-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "DicomAet": ae_title,
        "DicomPort": DICOM_PORT,
        "HttpPort": HTTP_PORT,
        "RemoteAccessAllowed": True,
        "AuthenticationEnabled": False,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
        "DicomModalities": {},
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowGet": True,
        "DicomAlwaysAllowMove": True,
        "DicomCheckCalledAet": False,
        "UnknownSopClassAccepted": True,
        "DicomAssociationCloseDelay": 0,
        "StableAge": 2,
        "SaveJobs": False,
        "HttpDescribeErrors": True,
    }
    config.update(overrides)
    return config


class OrthancPeer:
    """A running Orthanc: `dicom_port` and `http_url` are host-side (127.0.0.1) addresses."""

    def __init__(self, ae_title: str = "ORTHANC", *, start_timeout: float = 30.0,
                 **config_overrides: Any) -> None:
        self.ae_title = ae_title
        self.host = "127.0.0.1"
        self.dicom_port = 0
        self.inner_dicom_port = DICOM_PORT
        """The DICOM port inside `namespace` (for clients run there, e.g. benchmarks)."""
        self.inner_http_port = HTTP_PORT
        self.http_url = ""
        self.dicomweb_url = ""
        self.start_timeout = start_timeout
        self._overrides = config_overrides
        self.namespace = NetworkNamespace()
        self.folder = Path(tempfile.mkdtemp(prefix="rb-orthanc-"))
        self.log_path = self.folder / "orthanc.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._bridges: list[TcpBridge] = []
        self._modality_bridges: dict[str, TcpBridge] = {}
        self._http: httpx.Client | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> OrthancPeer:
        binary = orthanc_binary()
        if binary is None:
            raise OrthancError("Orthanc is not installed (Debian package orthanc)")
        config_path = self.folder / "config.json"
        config = orthanc_config(self.folder, self.ae_title, **self._overrides)
        config_path.write_text(json.dumps(config, indent=2))
        self.inner_dicom_port, self.inner_http_port = config["DicomPort"], config["HttpPort"]
        atexit.register(self.stop)  # also when the run is interrupted
        self.namespace.create()
        try:
            self._launch(binary, config_path)
            dicom = TcpBridge(self.inner_dicom_port, connect_ns=self.namespace).start()
            http = TcpBridge(self.inner_http_port, connect_ns=self.namespace).start()
            self._bridges += [dicom, http]
            self.dicom_port = dicom.port
            self.http_url = f"http://{self.host}:{http.port}"
            self.dicomweb_url = f"{self.http_url}/dicom-web"
            self._http = httpx.Client(base_url=self.http_url, timeout=60.0)
            self._wait_ready(self._http)
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, binary: str, config_path: Path) -> None:
        env = {**os.environ, "TCP_NODELAY": "1"}
        with self.log_path.open("wb") as log:
            self._process = self.namespace.popen(
                [binary, str(config_path)], env=env, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.folder)

    def _wait_ready(self, client: httpx.Client) -> None:
        wait_http_ready(self._process, client, "/system", timeout=self.start_timeout,
                        what="Orthanc", log_tail=self.log_tail, error=OrthancError,
                        interval=0.05)

    def log_tail(self, lines: int = 40) -> str:
        """The end of Orthanc's own log (kept in its temporary folder)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop Orthanc, its bridges and namespace, and remove its folder (idempotent)."""
        atexit.unregister(self.stop)
        if self._http is not None:
            self._http.close()
            self._http = None
        for bridge in [*self._bridges, *self._modality_bridges.values()]:
            bridge.stop()
        self._bridges.clear()
        self._modality_bridges.clear()
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()  # its data is thrown away: no need for its 3 s shutdown
            self._process.wait(timeout=10)
            self._process = None
        self.namespace.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> OrthancPeer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- REST --------------------------------------------------------------------------

    @property
    def http(self) -> httpx.Client:
        """An httpx client on `http_url` (for calls this class has no method for)."""
        if self._http is None:
            raise OrthancError("Orthanc is not running")
        return self._http

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """A REST call; its JSON answer (None when empty). Raises OrthancError on 4xx/5xx."""
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise OrthancError(f"{method} {path}: HTTP {response.status_code} {response.text}")
        if not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    def add_modality(self, name: str, ae_title: str, host_port: int) -> int:
        """Let Orthanc reach 127.0.0.1:`host_port` on the host as modality `name`/`ae_title`.

        Returns the port Orthanc dials inside its namespace (a bridge to `host_port`).
        """
        old = self._modality_bridges.pop(name, None)
        if old is not None:
            old.stop()
        bridge = TcpBridge(host_port, listen_ns=self.namespace).start()
        self._modality_bridges[name] = bridge
        self.request("PUT", f"/modalities/{name}",
                     json={"AET": ae_title, "Host": "127.0.0.1", "Port": bridge.port})
        return bridge.port

    def remove_modality(self, name: str) -> None:
        """Forget modality `name` and close its bridge."""
        bridge = self._modality_bridges.pop(name, None)
        if bridge is not None:
            bridge.stop()
        self.request("DELETE", f"/modalities/{name}")

    def studies(self) -> list[str]:
        """Orthanc ids of every stored study."""
        result: list[str] = self.request("GET", "/studies")
        return result

    def instances(self) -> list[str]:
        """Orthanc ids of every stored instance."""
        result: list[str] = self.request("GET", "/instances")
        return result

    def instance_tags(self, orthanc_id: str) -> dict[str, Any]:
        """Tags of one instance, keyed by keyword (``/instances/{id}/simplified-tags``)."""
        result: dict[str, Any] = self.request("GET", f"/instances/{orthanc_id}/simplified-tags")
        return result

    def instance_metadata(self, orthanc_id: str, name: str) -> str:
        """One metadata item of an instance, e.g. ``TransferSyntax`` or ``RemoteAET``."""
        response = self.http.get(f"/instances/{orthanc_id}/metadata/{name}")
        if response.status_code >= 400:
            raise OrthancError(f"metadata {name} of {orthanc_id}: HTTP {response.status_code}")
        return response.text

    def instance_file(self, orthanc_id: str) -> bytes:
        """The stored DICOM file of an instance, byte for byte."""
        response = self.http.get(f"/instances/{orthanc_id}/file")
        if response.status_code >= 400:
            raise OrthancError(f"file of {orthanc_id}: HTTP {response.status_code}")
        return response.content

    def find_instance(self, sop_instance_uid: str) -> str | None:
        """Orthanc id of the instance with this SOP Instance UID, or None."""
        found = self.request("POST", "/tools/lookup", content=sop_instance_uid)
        for item in found or []:
            if item.get("Type") == "Instance":
                return str(item["ID"])
        return None

    def upload(self, path: str | Path) -> str:
        """Store one DICOM file through REST (POST /instances); returns its Orthanc id."""
        result = self.request("POST", "/instances", content=Path(path).read_bytes())
        return str(result["ID"])

    def clear(self) -> None:
        """Delete every patient (hence everything stored) for test isolation."""
        for patient in self.request("GET", "/patients"):
            self.request("DELETE", f"/patients/{patient}")
