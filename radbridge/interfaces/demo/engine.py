"""The demo's engine: one `python -m radbridge run` child process and its HTTP API.

It is started with a clean environment (no RADBRIDGE_* variables, which could point it
at another store) and its output goes to a log file whose tail is shown when something
fails. Stopping is SIGTERM to that one process, then a wait (SIGKILL only at the end).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from radbridge.interfaces.auth.client import AdminTokenAuth
from radbridge.interfaces.demo.channels import DemoSetupError

READY_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0


class EngineError(DemoSetupError):
    """The engine did not start, died, or its API answered something unexpected."""


class Engine:
    """Start with `with Engine(...) as engine:`; `engine.api` is an httpx client with
    the engine's admin token."""

    def __init__(self, channels: Path, data_dir: Path, log_path: Path, port: int) -> None:
        self.channels, self.data_dir, self.log_path, self.port = (channels, data_dir,
                                                                  log_path, port)
        self.process: subprocess.Popen[bytes] | None = None
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0,
                                auth=AdminTokenAuth.of(data_dir))
        """Sends the admin token the engine writes to its data directory on first start."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "radbridge", "run", "-c", str(self.channels),
                "--data-dir", str(self.data_dir), "--port", str(self.port),
                "--node-id", "demo"]

    def start(self, timeout: float = READY_TIMEOUT) -> float:
        """Start the process; the seconds until /ready answered 200."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RADBRIDGE_")}
        env["PYTHONUNBUFFERED"] = "1"
        began = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"=== radbridge demo: {' '.join(self.command())}\n".encode())
            log.flush()
            self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        while time.monotonic() - began < timeout:
            self.check_alive()
            try:
                if self.api.get("/ready", timeout=1.0).status_code == 200:
                    return time.monotonic() - began
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise EngineError(f"the engine was not ready after {timeout:.0f} s "
                          f"(its log: {self.log_path})")

    def check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise EngineError(f"the engine exited (status {code}); its log: {self.log_path}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM and wait; SIGKILL if it outlives `timeout`. Its exit status."""
        self.api.close()
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)

    def get(self, path: str, params: Mapping[str, str | int] | None = None,
            *, missing_ok: bool = False) -> Any:
        """GET an API path as JSON (None for a 404 when `missing_ok`)."""
        try:
            response = self.api.get(path, params=params)
        except httpx.HTTPError as exc:
            self.check_alive()
            raise EngineError(f"GET {path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code != 200:
            raise EngineError(f"GET {path}: HTTP {response.status_code}: {response.text[:300]}")
        return response.json()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
