"""The demo's channel set: the shipped default channels, on free 127.0.0.1 ports.

The files are written from `radbridge/channels/default` (read as YAML and re-dumped with
the listeners' ports and the quiet period filled in), so that the demo runs exactly the
channels an installation starts from. Where the user names a real peer (`--ris`,
`--ehr`, `--pacs`), the file destination of that output becomes the network destination
the shipped comments describe; its filter and transformers stay as shipped.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from radbridge.channels import DEFAULT_DIR
from radbridge.engine.config_loader import load_channel_files
from radbridge.errors import RadbridgeError

CHANNELS = ("hl7-in", "dicom-in", "study-ready", "inference-done", "ai-results",
            "ris-priority", "ris-oru", "ehr-fhir", "pacs-out")
"""The shipped channels the flow needs (no inbox, drop folder or STOW-RS listener)."""
DICOM_AE = "RADBRIDGE"


class DemoSetupError(RadbridgeError):
    """The demo could not be set up (bad endpoint, invalid channel set, engine not ready)."""


@dataclass(frozen=True)
class Endpoints:
    """Real peers to send to instead of the outbox folders (None: a file destination)."""

    ris: tuple[str, int] | None = None
    ehr: str | None = None
    pacs: tuple[str, str, int] | None = None
    """(AE title, host, port)."""


@dataclass(frozen=True)
class Ports:
    hl7: int
    dicom: int
    api: int

    @classmethod
    def free(cls) -> Ports:
        return cls(free_port(), free_port(), free_port())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def parse_ris(text: str) -> tuple[str, int]:
    """HOST:PORT (DemoSetupError naming what is wrong)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DemoSetupError(f"--ris {text!r}: expected HOST:PORT")
    return host, int(port)


def parse_pacs(text: str) -> tuple[str, str, int]:
    """AE@HOST:PORT (DemoSetupError naming what is wrong)."""
    ae_title, at, address = text.partition("@")
    host, _, port = address.rpartition(":")
    if not at or not ae_title or not host or not port.isdigit():
        raise DemoSetupError(f"--pacs {text!r}: expected AE@HOST:PORT")
    return ae_title, host, int(port)


def parse_ehr(text: str) -> str:
    if not text.startswith(("http://", "https://")) or " " in text:
        raise DemoSetupError(f"--ehr {text!r}: expected the FHIR server's base URL (http[s]://)")
    return text.rstrip("/")


def channel_documents(ports: Ports, endpoints: Endpoints, quiet_period: float
                      ) -> dict[str, dict[str, Any]]:
    """Channel name -> its YAML document, adapted as the module docstring says."""
    documents = {name: yaml.safe_load((DEFAULT_DIR / f"{name}.yaml").read_text())
                 for name in CHANNELS}
    documents["hl7-in"]["source"].update(host="127.0.0.1", port=ports.hl7)
    dicom = documents["dicom-in"]
    dicom["source"].update(ae_title=DICOM_AE, host="127.0.0.1", port=ports.dicom)
    dicom["assembly"]["quiet_period"] = {"default": f"{quiet_period:g}s"}
    if endpoints.ris is not None:
        host, port = endpoints.ris
        for name in ("ris-priority", "ris-oru"):
            _replace_destination(documents[name], {
                "type": "mllp", "host": host, "port": port,
                "queue": {"ordering_key": "accession", "max_attempts": 20,
                          "backoff": {"initial": "0.5s", "multiplier": 2, "max": "10s"}}})
    if endpoints.ehr is not None:
        _replace_destination(documents["ehr-fhir"], {"type": "fhir", "url": endpoints.ehr})
    if endpoints.pacs is not None:
        ae_title, host, port = endpoints.pacs
        _replace_destination(documents["pacs-out"], {
            "type": "dimse", "peer": {"ae_title": ae_title, "host": host, "port": port}})
    return documents


def _replace_destination(document: dict[str, Any], replacement: dict[str, Any]) -> None:
    """The channel's one destination, re-typed; its name and filter are kept."""
    [shipped] = document["destinations"]
    kept = {key: shipped[key] for key in ("name", "filter") if key in shipped}
    document["destinations"] = [{**kept, **replacement}]


def write_channel_set(folder: Path, ports: Ports, endpoints: Endpoints,
                      quiet_period: float = 2.0) -> list[Path]:
    """The channel files in `folder` (old *.yaml there replaced), validated."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.yaml"):
        old.unlink()
    written = []
    for name, document in channel_documents(ports, endpoints, quiet_period).items():
        path = folder / f"{name}.yaml"
        header = f"# Written by `radbridge demo` from radbridge/channels/default/{name}.yaml\n"
        path.write_text(header + yaml.safe_dump(document, sort_keys=False))
        written.append(path)
    try:
        load_channel_files([folder], env={})
    except RadbridgeError as exc:
        raise DemoSetupError(f"the demo's channel set in {folder} is not valid: {exc}") from exc
    return written
