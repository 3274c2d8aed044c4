"""Waiting for a started peer process to answer over HTTP: one loop for every peer."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import httpx


def wait_http_ready(process: subprocess.Popen[bytes] | None, client: httpx.Client, url: str,
                    *, timeout: float, what: str, log_tail: Callable[[], str],
                    error: type[Exception], interval: float = 0.1) -> None:
    """Poll `url` until it answers 200; `error` (with the log's tail) when the process
    exits first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = process.poll() if process is not None else -1
        if code is not None:
            raise error(f"{what} exited with {code}:\n{log_tail()}")
        try:
            if client.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(interval)
    raise error(f"{what} did not answer within {timeout}s:\n{log_tail()}")
