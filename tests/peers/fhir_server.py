"""A real FHIR R4 server for the tests: Medplum's FHIR engine on Node, validation on.

No FHIR server is packaged for Debian or PyPI; Medplum's engine (`@medplum/fhir-router`
with its in-memory repository, `@medplum/core`'s validator) is on npm, and
`tests/peers/fhir/server.mjs` puts it behind a small HTTP wrapper. The npm `fhir`
package (FHIR.js) is the second, offline validator (`tests/peers/fhir/validate.mjs`).

    python -m tests.peers.fhir_server install    # idempotent; well under a second when done

The packages go to ~/.cache/radbridge/peers/fhir-node (RADBRIDGE_PEERS_CACHE overrides
the parent), installed with `npm ci` from the pinned package-lock.json beside this
file. Medplum 5 asks for Node >= 22.18; Node 20 runs it with --experimental-websocket.

`FhirServer` starts the wrapper on a free 127.0.0.1 port, waits for /metadata, and
stops it with SIGTERM (then SIGKILL); its log stays in its folder. The wrapper's
test-only control routes (`/__fault`, `/__reset`) are reached through `fault` and
`reset`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tests.peers.waiting import wait_http_ready

PACKAGE = Path(__file__).with_name("fhir")
MANIFESTS = ("package.json", "package-lock.json")
SCRIPTS = ("server.mjs", "validate.mjs")
BASE_PATH = "/fhir/R4"
MIN_NODE = 20
_MARKER = ".radbridge-installed"


class FhirPeerError(RuntimeError):
    """The FHIR peer could not be installed, started, or asked to validate."""


def cache_dir() -> Path:
    peers = Path(os.environ.get("RADBRIDGE_PEERS_CACHE",
                                Path.home() / ".cache" / "radbridge" / "peers"))
    return peers / "fhir-node"


def node_binary() -> str:
    """The `node` on PATH, if it is recent enough; FhirPeerError says why not."""
    node = shutil.which("node")
    if node is None:
        raise FhirPeerError("node is not on PATH (Node.js 20 or later is needed)")
    if _node_major(node) < MIN_NODE:
        raise FhirPeerError(f"{node} is older than Node.js {MIN_NODE}")
    return node


def _node_major(node: str) -> int:
    done = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    try:
        return int(done.stdout.strip().lstrip("v").split(".")[0])
    except ValueError:
        raise FhirPeerError(f"{node} --version said {done.stdout!r}") from None


def node_command(node: str) -> list[str]:
    """node with the flags Medplum 5 needs on this version (WebSocket is built in from 22)."""
    return [node, "--experimental-websocket"] if _node_major(node) < 22 else [node]


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for name in MANIFESTS:
        digest.update((PACKAGE / name).read_bytes())
    return digest.hexdigest()


def installed() -> bool:
    """node_modules matches the pinned manifests (the marker holds their hash)."""
    marker = cache_dir() / _MARKER
    return (marker.is_file() and marker.read_text() == _fingerprint()
            and (cache_dir() / "node_modules" / "@medplum" / "fhir-router").is_dir()
            and (cache_dir() / "node_modules" / "fhir").is_dir())


def install(*, quiet: bool = True) -> Path:
    """`npm ci` the pinned packages into the cache unless they are there; the folder.
    A lock file keeps two test sessions from installing at once."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / "fhir-node.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not installed():
            _install(folder, quiet)
        _sync_scripts(folder)
    return folder


def _install(folder: Path, quiet: bool) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise FhirPeerError("npm is not on PATH")
    node_binary()
    (folder / _MARKER).unlink(missing_ok=True)
    for name in MANIFESTS:
        shutil.copy2(PACKAGE / name, folder / name)
    command = [npm, "ci", "--no-audit", "--no-fund", "--omit=dev",
               *(["--loglevel=error"] if quiet else [])]
    done = subprocess.run(command, cwd=folder, capture_output=quiet, text=True, check=False)
    if done.returncode != 0:
        raise FhirPeerError(f"npm ci in {folder} failed ({done.returncode}):\n"
                            f"{(done.stdout or '')[-2000:]}{(done.stderr or '')[-2000:]}")
    (folder / _MARKER).write_text(_fingerprint())


def _sync_scripts(folder: Path) -> None:
    # The scripts run from the cache so that Node finds node_modules beside them; copied
    # on every start so that an edit here needs no reinstall.
    for name in SCRIPTS:
        source, target = PACKAGE / name, folder / name
        if not target.is_file() or target.read_bytes() != source.read_bytes():
            shutil.copy2(source, target)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class FhirServer:
    """The wrapper on 127.0.0.1: `base_url` is the FHIR base (…/fhir/R4)."""

    def __init__(self, folder: Path | None = None, *, start_timeout: float = 60.0) -> None:
        self.folder = folder or Path(tempfile.mkdtemp(prefix="rb-fhir-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log_path = self.folder / "fhir-server.log"
        self.start_timeout = start_timeout
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._client: httpx.Client | None = None

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root + BASE_PATH

    def start(self) -> FhirServer:
        folder = install()
        node = node_binary()
        self.port = free_port()
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [*node_command(node), "server.mjs", "--port", str(self.port),
                 "--base-path", BASE_PATH],
                cwd=folder, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        self._client = httpx.Client(timeout=10.0)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        wait_http_ready(self._process, self.client, f"{self.base_url}/metadata",
                        timeout=self.start_timeout, what="the FHIR server",
                        log_tail=self.log_tail, error=FhirPeerError)

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            raise FhirPeerError("the FHIR server is not started")
        return self._client

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self._client is not None:
            self._client.close()
            self._client = None

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    # --- test-only control routes -------------------------------------------------

    def fault(self, status: int | None = 500, *, count: int = 1, delay_ms: int = 0) -> None:
        """The next `count` FHIR requests wait `delay_ms`, then answer `status` (None:
        then handle the request as usual)."""
        self._control("/__fault", {"status": status, "count": count, "delay_ms": delay_ms})

    def reset(self) -> None:
        """Forget every resource and any pending fault."""
        self._control("/__reset", {})

    def _control(self, path: str, body: dict[str, Any]) -> None:
        response = self.client.post(self.root + path, json=body)
        if response.status_code != 200:
            raise FhirPeerError(f"{path}: HTTP {response.status_code} {response.text[:200]}")

    # --- FHIR reads ---------------------------------------------------------------

    def search(self, resource_type: str, **params: str) -> list[dict[str, Any]]:
        """Every resource of a type matching the search parameters."""
        response = self.client.get(f"{self.base_url}/{resource_type}",
                                   params={**params, "_count": "1000"})
        response.raise_for_status()
        return [entry["resource"] for entry in response.json().get("entry", [])]

    def validate_js(self, resource: dict[str, Any]) -> dict[str, Any]:
        """The npm `fhir` validator's verdict on a resource: {valid, messages}."""
        return validate_js([resource])[0]

    def __enter__(self) -> FhirServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()


def validate_js(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run FHIR.js (`errorOnUnexpected`) on each resource: [{valid, messages}, ...]."""
    folder = install()
    with tempfile.TemporaryDirectory(prefix="rb-fhirjs-") as work:
        paths = []
        for index, resource in enumerate(resources):
            path = Path(work) / f"resource-{index}.json"
            path.write_text(json.dumps(resource), encoding="utf-8")
            paths.append(str(path))
        done = subprocess.run([*node_command(node_binary()), "validate.mjs", *paths],
                              cwd=folder, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1):
        raise FhirPeerError(f"validate.mjs failed ({done.returncode}): {done.stderr[-2000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def main(argv: list[str]) -> int:
    if argv != ["install"]:
        print("usage: python -m tests.peers.fhir_server install", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        folder = install(quiet=False)
    except (FhirPeerError, OSError) as exc:
        print(f"cannot install the FHIR peer: {exc}", file=sys.stderr)
        return 1
    print(f"FHIR peer ready in {folder} ({time.monotonic() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
