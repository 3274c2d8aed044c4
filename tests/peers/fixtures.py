"""Pytest fixtures for the DICOM peers: `orthanc` (session), `dcmtk`, `storescp`;
`triton_server` (session), a real tritonserver for the inference tests; and
`fhir_server` (session), a real FHIR R4 server (Medplum's engine) for the EHR tests.

A missing peer skips the test, except under CI=true where it fails it: tests of real
services must not be skipped silently in CI.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import pytest

from tests.peers import dcmtk as dcmtk_tools
from tests.peers import netns
from tests.peers.dcmtk import Storescp
from tests.peers.fhir_server import FhirPeerError, FhirServer
from tests.peers.fhir_server import install as install_fhir
from tests.peers.orthanc import DICOMWEB_PLUGIN, OrthancPeer, orthanc_binary
from tests.peers.triton import TritonPeerError, TritonServer
from tests.peers.triton import install as install_triton


def peer_unavailable(reason: str, peer: str = "DICOM peer") -> None:
    """Skip (fail under CI) because a peer cannot run here."""
    if os.environ.get("CI"):
        pytest.fail(f"{peer} required in CI: {reason}")
    pytest.skip(f"{peer} not available: {reason}")


def _require_namespaces() -> None:
    reason = netns.available()
    if reason is not None:
        peer_unavailable(reason)
    netns.sweep_stale()


@pytest.fixture(scope="session")
def orthanc() -> Iterator[OrthancPeer]:
    """Orthanc 1.10 + DICOMweb, shared by the session; call `orthanc.clear()` to isolate."""
    _require_namespaces()
    if orthanc_binary() is None:
        peer_unavailable("Orthanc is not installed (scripts/test.sh installs it)")
    if not DICOMWEB_PLUGIN.exists():
        peer_unavailable(f"{DICOMWEB_PLUGIN} missing (Debian package orthanc-dicomweb)")
    with OrthancPeer() as peer:
        yield peer


@pytest.fixture(scope="session")
def dcmtk() -> ModuleType:
    """The `tests.peers.dcmtk` module, once dcmtk's tools are known to be installed."""
    missing = dcmtk_tools.missing_tools()
    if missing:
        peer_unavailable(f"dcmtk tools missing: {', '.join(missing)}")
    _require_namespaces()
    return dcmtk_tools


@pytest.fixture
def storescp(dcmtk: ModuleType, tmp_path: Path) -> Iterator[Storescp]:
    """dcmtk's storescp (AE STORESCP, every transfer syntax) reachable on 127.0.0.1:port,
    writing into tmp_path/"storescp"."""
    with Storescp("STORESCP", tmp_path / "storescp") as scp:
        yield scp


_Peer = TypeVar("_Peer", TritonServer, FhirServer)


def _session_peer(install: Callable[[], object], server: _Peer, errors: tuple[type[Exception], ...],
                  name: str) -> Iterator[_Peer]:
    """Install (if scripts/test.sh did not), start, yield and stop a peer process; a peer
    that cannot run skips the test, or fails it under CI."""
    errors = (*errors, OSError)
    try:
        install()
    except errors as exc:
        peer_unavailable(f"cannot install it: {exc}", name)
    try:
        server.start()
    except errors as exc:
        peer_unavailable(str(exc), name)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """tritonserver (Python backend) on 127.0.0.1, shared by the session, on an empty
    repository: write a model folder under `triton_server.repository`, then
    `triton_server.load(name)`."""
    yield from _session_peer(install_triton,
                             TritonServer(tmp_path_factory.mktemp("triton-repository")),
                             (TritonPeerError,), "Triton peer")


@pytest.fixture(scope="session")
def fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirServer]:
    """A real FHIR R4 server (Medplum's engine, in memory, validation on) on 127.0.0.1,
    shared by the session; call `fhir_server.reset()` to start from an empty server."""
    yield from _session_peer(install_fhir, FhirServer(tmp_path_factory.mktemp("fhir-server")),
                             (FhirPeerError,), "FHIR peer")
