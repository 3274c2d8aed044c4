"""Child processes for benchmarks: a command, and `radbridge run` on one channel file."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def process(command: list[str], *, ready: str | None = None, log: Path | None = None
            ) -> Iterator[subprocess.Popen[str]]:
    """A child process; with `ready`, wait until it prints a line starting with it."""
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115
    child = subprocess.Popen(command, stdout=subprocess.PIPE if ready else out,
                             stderr=subprocess.STDOUT if ready else out, text=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        if ready:
            assert child.stdout is not None
            line = child.stdout.readline()
            if not line.startswith(ready):
                raise RuntimeError(f"{command[:4]} did not start: {line!r}")
        yield child
    finally:
        child.terminate()
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
        if log:
            out.close()  # type: ignore[union-attr]


@dataclass(frozen=True)
class RunningNode:
    api: int
    """The port of its HTTP API."""
    pid: int
    data_dir: Path

    @property
    def headers(self) -> dict[str, str]:
        """Authorization with the admin token the node wrote on its first start."""
        token = (self.data_dir / "admin-token").read_text().strip()
        return {"Authorization": f"Bearer {token}"}


@contextmanager
def radbridge(channel: dict[str, Any], url: str, data_dir: Path, split: bool
              ) -> Iterator[RunningNode]:
    """`radbridge run` (with --split: two processes) on one channel file, once ready."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "channel.yaml"
    config.write_text(yaml.safe_dump(channel, sort_keys=False))
    api = free_port()
    command = [sys.executable, "-m", "radbridge", "run", "-c", str(config), "--data-dir",
               str(data_dir), "--database-url", url, "--port", str(api), "--node-id", "bench",
               *(["--split"] if split else [])]
    with process(command, log=data_dir / "radbridge.log") as child:
        wait_ready(f"http://127.0.0.1:{api}", data_dir / "radbridge.log", 60)
        yield RunningNode(api, child.pid, data_dir)


def channel_statistics(node: RunningNode, channel: str) -> dict[str, Any]:
    """The channel's counters from the node's API."""
    view = httpx.get(f"http://127.0.0.1:{node.api}/api/channels/{channel}",
                     headers=node.headers, timeout=10).raise_for_status().json()
    return dict(view["statistics"])


def wait_processed(node: RunningNode, channel: str, timeout: float = 120) -> None:
    """Until every message the channel received so far has been processed.

    A benchmark calls this after a warm-up, before its clock starts: with --split the
    processing child is still importing for a second or two after /ready answers,
    and would otherwise start (and compete for the cores) during the measurement."""
    deadline = time.monotonic() + timeout
    while True:
        stats = channel_statistics(node, channel)
        done = sum(stats[key] for key in ("routed", "filtered", "errored", "rejected"))
        if stats["received"] and done >= stats["received"]:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"channel {channel}: {stats} still unprocessed")
        time.sleep(0.05)


def wait_ready(base: str, log: Path, timeout: float) -> None:
    """Until the node at `base` answers /ready; its log's tail in the error otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(log.read_text()[-3000:])
        time.sleep(0.2)
