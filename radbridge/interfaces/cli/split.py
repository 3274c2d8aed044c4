"""`radbridge run --split`: the processing half of a node in a supervised child process.

One Python process uses one core for Python code. Split, this process keeps the
sources, the receiver and the API (role "ingest") and a child runs the pipelines and
deliveries (role "process") on the same store, with its own node id (NODE-process) in
leases and the audit ledger. The child is restarted if it dies; at shutdown it gets
SIGTERM and drains like any node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from radbridge.engine.settings import Settings

log = logging.getLogger("radbridge")

RESTART_PAUSE = 1.0
PARENT_PID_VARIABLE = "RADBRIDGE_SPLIT_PARENT_PID"


class ProcessingChild:
    """The child `radbridge run --role process` and its supervision."""

    def __init__(self, settings: Settings, configs: list[Path], drain_timeout: float,
                 log_level: str, log_format: str = "text") -> None:
        self.node_id = f"{settings.node_id}-process"
        self._command = [
            sys.executable, "-m", "radbridge", "run", "--role", "process",
            "--data-dir", str(settings.data_dir), "--database-url", settings.database_url,
            "--node-id", self.node_id, "--drain-timeout", str(drain_timeout),
            "--log-level", log_level, "--log-format", log_format,
            *[part for path in configs for part in ("-c", str(path))],
        ]
        self._drain_timeout = drain_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self._watch: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._process = self._spawn()
        log.info("processing child %s started (pid %d)", self.node_id, self._process.pid)
        self._watch = asyncio.create_task(self._supervise(), name="processing-child")

    async def stop(self) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, self._drain_timeout + 15)
        except subprocess.TimeoutExpired:
            log.warning("processing child did not stop in time; killing it")
            process.kill()

    async def _supervise(self) -> None:
        while not self._stopping:
            await asyncio.sleep(0.5)
            process = self._process
            if process is not None and process.poll() is not None and not self._stopping:
                log.error("processing child exited with %s; restarting it in %gs",
                          process.returncode, RESTART_PAUSE)
                await asyncio.sleep(RESTART_PAUSE)
                if not self._stopping:
                    self._process = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        # The child watches this pid and stops when it is gone (even after a SIGKILL here).
        environment = {**os.environ, PARENT_PID_VARIABLE: str(os.getpid())}
        return subprocess.Popen(self._command, stdin=subprocess.DEVNULL, env=environment)


async def exit_with_parent(stop: asyncio.Event) -> None:
    """In the child: set `stop` once the supervising parent has gone (its pid changed)."""
    expected = os.environ.get(PARENT_PID_VARIABLE)
    if not expected:
        return
    while not stop.is_set():
        if os.getppid() != int(expected):
            log.warning("the supervising process %s is gone; stopping", expected)
            stop.set()
            return
        await asyncio.sleep(0.5)
