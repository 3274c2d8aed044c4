"""dcmtk's command-line tools as test peers: a modality (storescu, findscu, movescu, getscu)
and a reference receiver (`Storescp`).

Every tool runs with ``TCP_NODELAY=1`` (Debian's dcmtk otherwise waits ~40 ms per message
for a delayed ACK) and a timeout. ``namespace=`` runs a tool inside a `NetworkNamespace`.
dcmtk's listeners (storescp, movescu ``+P``) cannot bind 127.0.0.1, so they only ever run
inside a namespace: `Storescp` makes its own unless given one, and bridges it to the host.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pydicom
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tests.peers.bridge import TcpBridge
from tests.peers.netns import NetworkNamespace, entered

TOOLS = ("echoscu", "storescu", "findscu", "movescu", "getscu", "storescp")
MAX_CONTEXTS = 128
"""An association carries at most 128 presentation contexts (odd ids 1..255)."""

PathLike = str | Path
Keys = Mapping[str, str] | Sequence[str]


class DcmtkError(RuntimeError):
    """A dcmtk tool could not be started or did not become ready."""


def tool_path(name: str) -> str | None:
    """Where dcmtk's `name` is: PATH without this virtualenv's scripts folder, because
    pynetdicom 3 installs its own `storescp`, `storescu`, `findscu` ... there, with
    other options, which an activated virtualenv would put first."""
    scripts = Path(sys.prefix) / "bin"
    folders = [folder for folder in os.environ.get("PATH", os.defpath).split(os.pathsep)
               if folder and Path(folder).resolve() != scripts.resolve()]
    return shutil.which(name, path=os.pathsep.join(folders))


def missing_tools() -> list[str]:
    """The dcmtk tools that are not on PATH (empty when dcmtk is installed)."""
    return [tool for tool in TOOLS if tool_path(tool) is None]


def _resolved(argv: Sequence[str]) -> list[str]:
    return [tool_path(argv[0]) or argv[0], *argv[1:]]


def dcmtk_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a dcmtk tool: ours plus TCP_NODELAY=1."""
    return {**os.environ, "TCP_NODELAY": "1", **(extra or {})}


def run_tool(argv: Sequence[str], *, namespace: NetworkNamespace | None = None,
             timeout: float = 120.0, check: bool = False,
             cwd: PathLike | None = None) -> subprocess.CompletedProcess[str]:
    """Run a dcmtk tool to completion, in `namespace` when given; output captured as text."""
    argv = _resolved(argv)
    command = namespace.argv(argv) if namespace is not None else argv
    return subprocess.run(command, env=dcmtk_env(), capture_output=True, text=True,
                          timeout=timeout, check=check, cwd=cwd)


def _key_args(keys: Keys, level: str | None) -> list[str]:
    """``-k`` options: a mapping gives ``Name=value`` (empty value = return key)."""
    items = [f"{k}={v}" if v else k for k, v in keys.items()] if isinstance(keys, Mapping) \
        else list(keys)
    if level is not None:
        items.insert(0, f"QueryRetrieveLevel={level}")
    return [arg for item in items for arg in ("-k", item)]


def _model_arg(model: str) -> str:
    flags = {"study": "-S", "patient": "-P", "worklist": "-W"}
    if model not in flags:
        raise ValueError(f"unknown information model {model!r}: expected one of {list(flags)}")
    return flags[model]


def echoscu(host: str, port: int, called_ae: str, calling_ae: str = "ECHOSCU", *,
            namespace: NetworkNamespace | None = None, timeout: float = 30.0,
            extra_args: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """One C-ECHO; returncode 0 when the peer answered Success."""
    argv = ["echoscu", "-aet", calling_ae, "-aec", called_ae, *extra_args, host, str(port)]
    return run_tool(argv, namespace=namespace, timeout=timeout)


# -- storescu -----------------------------------------------------------------------------

def dicom_files(files_or_dirs: Iterable[PathLike]) -> list[Path]:
    """The files given, with folders expanded recursively (sorted for a stable order)."""
    found: list[Path] = []
    for item in map(Path, files_or_dirs):
        if item.is_dir():
            found.extend(sorted(p for p in item.rglob("*") if p.is_file()))
        else:
            found.append(item)
    return found


def _contexts(files: Iterable[Path]) -> list[tuple[str, tuple[str, ...]]]:
    """(SOP class, transfer syntaxes) for each kind of file: the file's own syntax, plus
    the uncompressed ones when it is uncompressed (so the SCP may pick)."""
    seen: dict[tuple[str, str], None] = {}
    for path in files:
        try:
            meta = read_file_meta_info(path)
        except (OSError, pydicom.errors.InvalidDicomError):
            continue
        sop_class, syntax = meta.get("MediaStorageSOPClassUID"), meta.get("TransferSyntaxUID")
        if sop_class and syntax:
            seen[(str(sop_class), str(syntax))] = None
    contexts = []
    for sop_class, syntax in seen:
        syntaxes = [syntax]
        if not UID(syntax).is_compressed and not UID(syntax).is_deflated:
            syntaxes += [s for s in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
                         if s != syntax]
        contexts.append((sop_class, tuple(syntaxes)))
    if len(contexts) > MAX_CONTEXTS:
        raise ValueError(f"{len(contexts)} SOP class/transfer syntax pairs: an association "
                         f"holds at most {MAX_CONTEXTS}; send the files in several calls")
    return contexts


def association_config(contexts: Sequence[tuple[str, Sequence[str]]]) -> str:
    """A dcmtk association config (for ``-xf FILE Send``) proposing exactly `contexts`."""
    groups: dict[tuple[str, ...], str] = {}
    for _, syntaxes in contexts:
        groups.setdefault(tuple(syntaxes), f"TS{len(groups) + 1}")
    lines = ["[[TransferSyntaxes]]"]
    for syntaxes, name in groups.items():
        lines.append(f"[{name}]")
        lines += [f"TransferSyntax{i} = {uid}" for i, uid in enumerate(syntaxes, 1)]
    lines += ["[[PresentationContexts]]", "[Contexts]"]
    lines += [f"PresentationContext{i} = {sop_class}\\{groups[tuple(syntaxes)]}"
              for i, (sop_class, syntaxes) in enumerate(contexts, 1)]
    lines += ["[[Profiles]]", "[Send]", "PresentationContexts = Contexts"]
    return "\n".join(lines) + "\n"


def storescu(host: str, port: int, files_or_dirs: Iterable[PathLike], called_ae: str,
             calling_ae: str = "STORESCU", extra_args: Sequence[str] = (), *,
             own_syntax: bool = True, namespace: NetworkNamespace | None = None,
             timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
    """C-STORE files (folders are scanned recursively) over one association.

    With `own_syntax` (the default) each file is proposed in its own transfer syntax, so a
    JPEG file arrives as JPEG (storescu alone proposes only uncompressed syntaxes and would
    fail or convert); False keeps storescu's defaults (then pass -x options in extra_args).
    """
    inputs = [Path(p) for p in files_or_dirs]
    argv = ["storescu", "-aet", calling_ae, "-aec", called_ae]
    if any(p.is_dir() for p in inputs):
        argv += ["+sd", "+r"]
    with tempfile.TemporaryDirectory(prefix="rb-storescu-") as folder:
        if own_syntax:
            contexts = _contexts(dicom_files(inputs))
            if contexts:
                config = Path(folder) / "storescu.cfg"
                config.write_text(association_config(contexts))
                argv += ["-xf", str(config), "Send"]
        argv += [*extra_args, host, str(port), *map(str, inputs)]
        return run_tool(argv, namespace=namespace, timeout=timeout)


# -- query/retrieve ---------------------------------------------------------------------

def findscu(host: str, port: int, called_ae: str, keys: Keys, *, level: str | None = "STUDY",
            model: str = "study", calling_ae: str = "FINDSCU",
            output_dir: PathLike | None = None, namespace: NetworkNamespace | None = None,
            timeout: float = 60.0,
            extra_args: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """C-FIND; with `output_dir` each response is written there as rsp0001.dcm, ..."""
    argv = ["findscu", "-aet", calling_ae, "-aec", called_ae, _model_arg(model),
            *_key_args(keys, level)]
    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        argv += ["-X", "-od", str(output_dir)]
    argv += [*extra_args, host, str(port)]
    return run_tool(argv, namespace=namespace, timeout=timeout)


def find(host: str, port: int, called_ae: str, keys: Keys,
         **kwargs: Any) -> list[pydicom.Dataset]:
    """C-FIND and return the response identifiers (raises DcmtkError when findscu fails);
    keywords as for `findscu`."""
    with tempfile.TemporaryDirectory(prefix="rb-findscu-") as folder:
        result = findscu(host, port, called_ae, keys, output_dir=folder, **kwargs)
        if result.returncode != 0:
            raise DcmtkError(f"findscu failed ({result.returncode}): {result.stderr}")
        return [pydicom.dcmread(path) for path in sorted(Path(folder).glob("rsp*.dcm"))]


def movescu(host: str, port: int, called_ae: str, keys: Keys, *, destination_ae: str,
            level: str = "STUDY", model: str = "study", calling_ae: str = "MOVESCU",
            receive_port: int | None = None, output_dir: PathLike | None = None,
            namespace: NetworkNamespace | None = None, timeout: float = 300.0,
            extra_args: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """C-MOVE to `destination_ae`. With `receive_port` movescu itself receives (it then
    listens on every interface, so a `namespace` is required), into `output_dir`."""
    argv = ["movescu", "-aet", calling_ae, "-aec", called_ae, "-aem", destination_ae,
            _model_arg(model), *_key_args(keys, level)]
    if receive_port is not None:
        if namespace is None:
            raise ValueError("movescu listens on all interfaces: give it a namespace")
        argv += ["+P", str(receive_port), "+xa"]
        if output_dir is not None:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            argv += ["-od", str(output_dir)]
    argv += [*extra_args, host, str(port)]
    return run_tool(argv, namespace=namespace, timeout=timeout)


def getscu(host: str, port: int, called_ae: str, keys: Keys, *, output_dir: PathLike,
           level: str = "STUDY", model: str = "study", calling_ae: str = "GETSCU",
           namespace: NetworkNamespace | None = None, timeout: float = 300.0,
           extra_args: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """C-GET into `output_dir` (made if missing); instances come on the same association."""
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    argv = ["getscu", "-aet", calling_ae, "-aec", called_ae, _model_arg(model),
            *_key_args(keys, level), "-od", str(output_dir), *extra_args, host, str(port)]
    return run_tool(argv, namespace=namespace, timeout=timeout)


# -- storescp ---------------------------------------------------------------------------

def free_port(namespace: NetworkNamespace | None = None) -> int:
    """A TCP port free on 127.0.0.1 in `namespace` right now (dcmtk cannot take port 0)."""
    with entered(namespace):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _listening(pid: int, port: int) -> bool:
    """Whether process `pid`'s namespace has a TCP listener on `port` (/proc/PID/net)."""
    for table in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            return False
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


class Storescp:
    """dcmtk's storescp as a C-STORE target, writing what it receives to `output_dir`.

    Without `namespace` it runs in a namespace of its own and `port` is a bridge on the
    host's 127.0.0.1; with one it runs there and `port` is its port inside (no bridge,
    as the benchmarks want), unless `bridge=True`. `inner_port` is always the port inside.
    """

    def __init__(self, ae_title: str = "STORESCP", output_dir: PathLike | None = None, *,
                 namespace: NetworkNamespace | None = None, bridge: bool | None = None,
                 accept_all: bool = True, bit_preserving: bool = False,
                 max_pdu: int | None = None, extra_args: Sequence[str] = (),
                 start_timeout: float = 10.0) -> None:
        self.ae_title = ae_title
        self.host = "127.0.0.1"
        self._own_dir = output_dir is None
        self.output_dir = Path(output_dir or tempfile.mkdtemp(prefix="rb-storescp-"))
        self._own_namespace = namespace is None
        self.namespace = namespace or NetworkNamespace()
        self._bridge_wanted = self._own_namespace if bridge is None else bridge
        self._options = [*(["+xa"] if accept_all else []), *(["+B"] if bit_preserving else []),
                         *(["-pdu", str(max_pdu)] if max_pdu else []), *extra_args]
        self.start_timeout = start_timeout
        self._work = Path(tempfile.mkdtemp(prefix="rb-storescp-log-"))
        self.log_path = self._work / "storescp.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._bridge: TcpBridge | None = None
        self.inner_port = 0
        self.port = 0

    def start(self) -> Storescp:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)  # also when the run is interrupted
        if self._own_namespace:
            self.namespace.create()
        try:
            self.inner_port = free_port(self.namespace)
            argv = [tool_path("storescp") or "storescp", "--aetitle", self.ae_title,
                    "--output-directory", str(self.output_dir), "-dhl", *self._options,
                    str(self.inner_port)]
            with self.log_path.open("wb") as log:
                self._process = self.namespace.popen(argv, env=dcmtk_env(), stdout=log,
                                                     stderr=subprocess.STDOUT)
            self._wait_listening(self._process)
            self.port = self.inner_port
            if self._bridge_wanted:
                self._bridge = TcpBridge(self.inner_port, connect_ns=self.namespace).start()
                self.port = self._bridge.port
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_listening(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise DcmtkError(f"storescp exited with {process.returncode}: {self.log()}")
            if _listening(process.pid, self.inner_port):
                return
            time.sleep(0.02)
        raise DcmtkError(f"storescp did not listen within {self.start_timeout}s: {self.log()}")

    def log(self) -> str:
        """What storescp printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def files(self) -> list[Path]:
        """The files received so far, sorted by name."""
        return sorted(p for p in self.output_dir.rglob("*") if p.is_file())

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Path]:
        """Wait until at least `count` files were received; returns them (maybe fewer)."""
        deadline = time.monotonic() + timeout
        files = self.files()
        while len(files) < count and time.monotonic() < deadline:
            time.sleep(0.05)
            files = self.files()
        return files

    def clear(self) -> None:
        """Remove what was received (between tests)."""
        for path in self.files():
            path.unlink()

    def stop(self) -> None:
        """Stop storescp and its bridge/namespace; its own temporary folder goes too."""
        atexit.unregister(self.stop)
        if self._bridge is not None:
            self._bridge.stop()
            self._bridge = None
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait(timeout=10)
            self._process = None
        if self._own_namespace:
            self.namespace.close()
        shutil.rmtree(self._work, ignore_errors=True)
        if self._own_dir:
            shutil.rmtree(self.output_dir, ignore_errors=True)

    def __enter__(self) -> Storescp:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
