"""What the DIMSE SCU tests share: peers as configs, comparisons of files as stored."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pynetdicom.dsutils import split_dataset

import radbridge.interfaces.adapters  # noqa: F401  (registers the dimse source)
from radbridge.engine.config import ChannelConfig, DicomPeerConfig
from radbridge.engine.runtime import Node
from radbridge.engine.settings import Settings
from radbridge.interfaces.dimse.scp import DimseScp
from radbridge.interfaces.dimse.scu import DicomClient
from tests.peers.dcmtk import Storescp
from tests.peers.orthanc import OrthancPeer


def peer_config(ae_title: str, port: int, **options: object) -> DicomPeerConfig:
    return DicomPeerConfig.model_validate(
        {"ae_title": ae_title, "host": "127.0.0.1", "port": port, **options})


def client_for(peer: OrthancPeer | Storescp, **options: object) -> DicomClient:
    port = peer.dicom_port if isinstance(peer, OrthancPeer) else peer.port
    return DicomClient(peer_config(peer.ae_title, port, **options))


def data_set_bytes(path: Path) -> tuple[str, bytes]:
    """The transfer syntax and the encoded data set after the file meta, as stored."""
    meta, offset = split_dataset(path)
    with path.open("rb") as file:
        file.seek(offset)
        return str(meta.TransferSyntaxUID), file.read()


def sop_uid_of(path: Path) -> str:
    meta, _ = split_dataset(path)
    return str(meta.MediaStorageSOPInstanceUID)


def closed_port() -> int:
    """A port on 127.0.0.1 with nobody listening (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def make_pki(folder: Path) -> Path:
    """A CA and a server certificate for localhost/127.0.0.1, made by openssl."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=Radbridge Test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    (folder / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext")
    return folder


@asynccontextmanager
async def our_scp(tmp_path: Path, url: str, *, ae_title: str = "RADBRIDGE",
                  **source: Any) -> AsyncIterator[tuple[Node, int]]:
    """A node whose channel "images" has Radbridge's own C-STORE SCP; yields it and its port."""
    config = ChannelConfig.model_validate({
        "name": "images", "source": {"type": "dimse", "port": 0, "ae_title": ae_title,
                                     **source},
        "destinations": [{"name": "out", "type": "null"}]})
    settings = Settings.resolve(data_dir=str(tmp_path / "data"), database_url=url,
                                node_id="test-node", api_port=0, environ={})
    node = Node(settings, [config], poll_interval=0.1)
    await node.start()
    try:
        scp = next(s for s in node.sources if isinstance(s, DimseScp))
        yield node, scp.port
    finally:
        await node.stop()
