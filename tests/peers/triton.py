"""A real NVIDIA Triton server (tritonserver 2.51 from PyPI's nvidia-pytriton) on 127.0.0.1.

nvidia-pytriton pins numpy<2, so it lives in its own virtual environment, made from
Debian's /usr/bin/python3.11: the Python backend's stub links Debian's libpython, and
with another interpreter's stdlib the models fail to load. The wheel carries the Python
backend only (no onnxruntime backend), so ONNX models are served through a Python-backend
model.py wrapping onnxruntime (`radbridge models export-triton --backend python`).

    python -m tests.peers.triton install    # idempotent; a few seconds when done

The cache is ~/.cache/radbridge/peers (RADBRIDGE_PEERS_CACHE overrides it):
`triton-venv/` (the environment) and `triton-backends/python/` (backend + stub, copied
from the wheel as the server expects them). `TritonServer` runs the binary against a
model repository in explicit model control (tests load models as they write them), with
HTTP and gRPC on free 127.0.0.1 ports and metrics off, and stops it with SIGTERM, then
SIGKILL. Its log stays in its temporary folder for failure messages (removed after a
clean exit).
"""

from __future__ import annotations

import atexit
import fcntl
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

import httpx

from tests.peers.waiting import wait_http_ready

PYTHON = Path("/usr/bin/python3.11")
REQUIREMENTS = ("nvidia-pytriton==0.7.0", "onnxruntime>=1.17,<2", "numpy<2")
EXIT_TIMEOUT_S = 5
"""How long tritonserver waits for in-flight requests on SIGTERM."""


class TritonPeerError(RuntimeError):
    """The Triton peer could not be installed, started or asked to load a model."""


def cache_dir() -> Path:
    return Path(os.environ.get("RADBRIDGE_PEERS_CACHE",
                               Path.home() / ".cache" / "radbridge" / "peers"))


def venv_dir() -> Path:
    return cache_dir() / "triton-venv"


def backends_dir() -> Path:
    return cache_dir() / "triton-backends"


def _site_packages() -> Path:
    return venv_dir() / "lib" / f"python{_PY}" / "site-packages"


_PY = "3.11"
_MARKER = ".radbridge-installed"


def tritonserver_binary() -> Path:
    return _site_packages() / "pytriton" / "tritonserver" / "bin" / "tritonserver"


def installed() -> bool:
    """The environment is complete (its marker names the same requirements)."""
    marker = venv_dir() / _MARKER
    return (marker.is_file() and marker.read_text() == "\n".join(REQUIREMENTS)
            and tritonserver_binary().is_file()
            and (backends_dir() / "python" / "triton_python_backend_stub").is_file())


def install(*, quiet: bool = True) -> Path:
    """Make the environment and the backends folder unless they are complete; the venv.
    A lock file keeps two test sessions from installing at once."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / "triton.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not installed():
            _install(quiet)
    return venv_dir()


def _install(quiet: bool) -> None:
    if not PYTHON.is_file():
        raise TritonPeerError(f"{PYTHON} is missing (Debian package python3.11): the "
                              "Python backend's stub needs Debian's own interpreter")
    shutil.rmtree(venv_dir(), ignore_errors=True)
    shutil.rmtree(backends_dir(), ignore_errors=True)
    _run([str(PYTHON), "-m", "venv", str(venv_dir())])
    _run([str(venv_dir() / "bin" / "python"), "-m", "pip", "install",
          "--disable-pip-version-check", *(["--quiet"] if quiet else []), *REQUIREMENTS])
    server = _site_packages() / "pytriton" / "tritonserver"
    stub = server / "python_backend_stubs" / _PY / "triton_python_backend_stub"
    target = backends_dir() / "python"
    target.mkdir(parents=True)
    for item in (server / "backends" / "python").iterdir():
        if item.is_file():
            shutil.copy2(item, target / item.name)
    shutil.copy2(stub, target / stub.name)
    (venv_dir() / _MARKER).write_text("\n".join(REQUIREMENTS))


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise TritonPeerError(f"{' '.join(command[:4])}... failed ({done.returncode}):\n"
                              f"{done.stdout[-2000:]}{done.stderr[-2000:]}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TritonServer:
    """tritonserver on `repository`; `http_url` / `grpc_url` are host:port on 127.0.0.1.

    Models already in the repository load at start; `load(name)` loads (or reloads) one
    written later, so one server can serve a whole test session.
    """

    def __init__(self, repository: Path, *, start_timeout: float = 90.0) -> None:
        self.repository = repository
        self.start_timeout = start_timeout
        self.folder = Path(tempfile.mkdtemp(prefix="rb-triton-"))
        self.log_path = self.folder / "tritonserver.log"
        self.http_port = self.grpc_port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._client: httpx.Client | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> TritonServer:
        if not installed():
            raise TritonPeerError("the Triton peer is not installed "
                                  "(python -m tests.peers.triton install)")
        self.repository.mkdir(parents=True, exist_ok=True)
        self.http_port, self.grpc_port = free_port(), free_port()
        venv = venv_dir()
        env = {**os.environ,
               "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
               "LD_LIBRARY_PATH": str(_site_packages() / "nvidia_pytriton.libs"),
               "VIRTUAL_ENV": str(venv)}
        env.pop("PYTHONPATH", None)
        command = [
            str(tritonserver_binary()), "--model-repository", str(self.repository),
            "--backend-directory", str(backends_dir()), "--model-control-mode", "explicit",
            "--load-model", "*", "--http-address", "127.0.0.1",
            "--http-port", str(self.http_port), "--grpc-address", "127.0.0.1",
            "--grpc-port", str(self.grpc_port), "--allow-metrics", "false",
            "--exit-timeout-secs", str(EXIT_TIMEOUT_S), "--log-verbose", "0"]
        atexit.register(self.stop)
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(command, env=env, stdout=log,
                                             stderr=subprocess.STDOUT, cwd=self.folder,
                                             start_new_session=True)
        self._client = httpx.Client(base_url=f"http://{self.http_url}", timeout=60.0)
        try:
            self._wait_ready(self._client)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, client: httpx.Client) -> None:
        wait_http_ready(self._process, client, "/v2/health/ready", timeout=self.start_timeout,
                        what="tritonserver", log_tail=self.log_tail, error=TritonPeerError)

    def load(self, name: str) -> None:
        """Load (or reload) the model folder `name` of the repository; waits until ready."""
        if self._client is None:
            raise TritonPeerError("tritonserver is not running")
        answer = self._client.post(f"/v2/repository/models/{name}/load")
        if answer.status_code != 200:
            raise TritonPeerError(f"loading {name} failed ({answer.status_code}): "
                                  f"{answer.text}\n{self.log_tail()}")

    def unload(self, name: str) -> None:
        if self._client is not None:
            self._client.post(f"/v2/repository/models/{name}/unload")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the server's own process group (its backend stubs)."""
        if self._client is not None:
            self._client.close()
            self._client = None
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is not None:  # it died: keep the log for whoever looks
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=EXIT_TIMEOUT_S + 10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        if process.returncode == 0:  # a clean exit: its log has nothing to tell
            shutil.rmtree(self.folder, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    if argv != ["install"]:
        print("usage: python -m tests.peers.triton install", file=sys.stderr)
        return 2
    began = time.perf_counter()
    try:
        venv = install()
    except TritonPeerError as exc:
        print(f"installing the Triton peer failed: {exc}", file=sys.stderr)
        return 1
    print(f"Triton peer ready in {venv} ({time.perf_counter() - began:.1f} s)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
