"""Helpers for end-to-end tests: real `radbridge run` processes against a real HTTP peer.

- `RecordingReceiver`: an HTTP server on 127.0.0.1 (stdlib ThreadingHTTPServer in a
  background thread) standing in for the peer an `http` destination POSTs to. It
  records every complete request (Idempotency-Key, X-Radbridge-Attempt, X-Node, body,
  the status it answered; a request cut short by a killed sender is only counted) and
  can be told to answer an error status or to hold each response for a while, so that
  deliveries stay in flight when a test kills the node.
- `RadbridgeNode`: one `python -m radbridge run` subprocess with its channel file, its
  log file in tmp_path, readiness polling, signals, restarts and CLI calls against the
  same store. Its `client` sends the admin token the node wrote on its first start (or,
  for nodes sharing one store, the one that the first of them wrote). The `spawn`
  fixture kills every node it made at teardown, pass or fail, and prints the tail of
  each log (pytest shows it when the test failed).
- `StoreProbe`: reads delivery and stage rows straight from the store.

Every wait here has a deadline; nothing sleeps and hopes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from radbridge.engine.db import Database
from radbridge.engine.lifecycle import StageKind
from radbridge.engine.models import Delivery, MessageStage
from radbridge.interfaces.auth.bootstrap import ADMIN_TOKEN_FILE
from radbridge.interfaces.auth.client import AdminTokenAuth

READY_TIMEOUT = 20.0
"""Seconds a node gets to answer 200 on /ready after it was started."""
CLI_TIMEOUT = 60.0
LOG_TAIL_LINES = 40

REPORT: list[str] = []
"""Lines printed in pytest's terminal summary (duplicate counts, timings)."""


def report(line: str) -> None:
    """Note a figure worth seeing in the run's summary (and in the captured output)."""
    print(line)
    REPORT.append(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT:
        terminalreporter.section("radbridge e2e figures")
        for line in REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def _quiet_httpx(caplog: pytest.LogCaptureFixture) -> None:
    """The test's own HTTP client logs every request at INFO: too much to read on failure."""
    caplog.set_level(logging.WARNING, logger="httpx")


# --- small utilities ---------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str | Callable[[], str],
    *,
    interval: float = 0.05,
) -> float:
    """Poll until `predicate()` holds; returns the seconds it took, fails at the deadline."""
    started = time.monotonic()
    deadline = started + timeout
    while not predicate():
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {described}")
        time.sleep(interval)
    return time.monotonic() - started


def relay_channel(
    url: str,
    *,
    concurrency: int = 4,
    lease: str = "2s",
    max_attempts: int = 20,
    headers: dict[str, str] | None = None,
    name: str = "relay",
) -> str:
    """A channel YAML: http source -> one http destination `peer` at `url`.

    Backoff is short (0.2 s doubling to 1 s) so that retries happen within a test.
    """
    document = {
        "name": name,
        "description": "e2e: POSTed messages relayed to the recording receiver",
        "source": {"type": "http"},
        "destinations": [{
            "name": "peer",
            "type": "http",
            "url": url,
            "timeout": "10s",
            "headers": headers or {},
            "queue": {
                "concurrency": concurrency,
                "lease": lease,
                "max_attempts": max_attempts,
                "backoff": {"initial": 0.2, "multiplier": 2.0, "max": 1.0, "jitter": 0.1},
            },
        }],
    }
    return yaml.safe_dump(document, sort_keys=False)


# --- the recording receiver --------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    """One request the receiver got, and what it answered."""

    key: str
    attempt: int
    body: bytes
    status: int
    node: str
    at: float
    """time.monotonic() when the request had been read."""

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A node killed while its request waits here leaves a broken connection: expected.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class RecordingReceiver:
    """The HTTP peer of an `http` destination; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrivals: list[Arrival] = []
        self._in_flight: Counter[str] = Counter()
        self._status = 200
        self._delay = 0.0
        self._closing = threading.Event()
        self.truncated: list[str] = []
        """Keys of requests whose body ended early (their sender was killed): not recorded."""
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name="recording-receiver", daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}/inbound"

    def set_status(self, status: int) -> None:
        """Answer every request from now on with this status."""
        with self._lock:
            self._status = status

    def set_delay(self, seconds: float) -> None:
        """Hold each response this long after reading the request."""
        with self._lock:
            self._delay = seconds

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # views ---------------------------------------------------------------------------

    def arrivals(self) -> list[Arrival]:
        with self._lock:
            return list(self._arrivals)

    def in_flight(self, node: str | None = None) -> int:
        """Requests read but not yet answered (all, or those from one X-Node)."""
        with self._lock:
            return sum(self._in_flight.values()) if node is None else self._in_flight[node]

    def accepted_bodies(self) -> set[bytes]:
        return {a.body for a in self.arrivals() if a.accepted}

    def missing(self, bodies: Iterable[bytes]) -> set[bytes]:
        return set(bodies) - self.accepted_bodies()

    def accepted_per_key(self) -> Counter[str]:
        """Idempotency-Key -> how many times the receiver answered 2xx to it."""
        return Counter(a.key for a in self.arrivals() if a.accepted)

    def keys_per_body(self) -> dict[bytes, set[str]]:
        keys: dict[bytes, set[str]] = defaultdict(set)
        for arrival in self.arrivals():
            keys[arrival.body].add(arrival.key)
        return dict(keys)

    def attempts_per_key(self) -> dict[str, list[int]]:
        """Idempotency-Key -> X-Radbridge-Attempt values in arrival order."""
        attempts: dict[str, list[int]] = defaultdict(list)
        for arrival in self.arrivals():
            attempts[arrival.key].append(arrival.attempt)
        return dict(attempts)

    def wait_for_bodies(self, bodies: Iterable[bytes], timeout: float) -> float:
        wanted = set(bodies)
        return wait_until(
            lambda: not self.missing(wanted), timeout,
            lambda: f"{len(self.missing(wanted))} of {len(wanted)} bodies to be accepted "
                    f"by the receiver ({len(self.arrivals())} requests so far)",
        )

    # the handler ---------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 5  # idle keep-alive connections end by themselves

            def do_POST(self) -> None:
                receiver._handle(self)

            do_PUT = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        if len(body) < length:
            # The sender died after the headers: a real peer would not act on half a request.
            with self._lock:
                self.truncated.append(handler.headers.get("Idempotency-Key", ""))
            handler.close_connection = True
            return
        node = handler.headers.get("X-Node", "")
        with self._lock:
            status, delay = self._status, self._delay
            self._arrivals.append(Arrival(
                key=handler.headers.get("Idempotency-Key", ""),
                attempt=int(handler.headers.get("X-Radbridge-Attempt") or 0),
                body=body, status=status, node=node, at=time.monotonic(),
            ))
            self._in_flight[node] += 1
        try:
            if delay:
                self._closing.wait(delay)
            answer = b'{"ok": true}' if status < 300 else b'{"error": "told to fail"}'
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(answer)))
            handler.end_headers()
            handler.wfile.write(answer)
        finally:
            with self._lock:
                self._in_flight[node] -= 1


@pytest.fixture
def receiver() -> Iterator[RecordingReceiver]:
    peer = RecordingReceiver()
    yield peer
    peer.close()


# --- radbridge node processes ------------------------------------------------------


class RadbridgeNode:
    """One `python -m radbridge run` process; `start()` again restarts the same command."""

    def __init__(
        self,
        workdir: Path,
        *,
        channel_yaml: str,
        database_url: str,
        name: str = "node",
        node_id: str | None = None,
        port: int | None = None,
        drain_timeout: float = 10.0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.extra_args = extra_args
        self.name = name
        self.node_id = node_id or name
        self.port = port or free_port()
        self.database_url = database_url
        self.data_dir = workdir / f"{name}-data"
        self.config_path = workdir / f"{name}-channel.yaml"
        self.log_path = workdir / f"{name}.log"
        self.drain_timeout = drain_timeout
        self.config_path.write_text(channel_yaml)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.auth = AdminTokenAuth(lambda: [
            self.data_dir / ADMIN_TOKEN_FILE, *sorted(workdir.glob(f"*-data/{ADMIN_TOKEN_FILE}"))])
        """The admin token: this node's own, else that of a node on the same store."""
        self.client = httpx.Client(base_url=self.base_url, timeout=10.0, auth=self.auth)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "radbridge", "run", "-c", str(self.config_path),
            "--data-dir", str(self.data_dir), "--database-url", self.database_url,
            "--port", str(self.port), "--node-id", self.node_id,
            "--drain-timeout", str(self.drain_timeout), *self.extra_args,
        ]

    # life cycle ----------------------------------------------------------------------

    def start(self, *, ready: bool = True) -> RadbridgeNode:
        if self.running:
            raise RuntimeError(f"node {self.name} is already running")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"=== start {self.starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=_child_environment(), start_new_session=True,
            )
        if ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> float:
        def answered() -> bool:
            if self.process is None or self.process.poll() is not None:
                raise AssertionError(f"node {self.name} exited while starting "
                                     f"(rc {self.returncode}):\n{self.log_tail()}")
            try:
                return self.client.get("/ready", timeout=1.0).status_code == 200
            except httpx.TransportError:
                return False

        return wait_until(answered, timeout, lambda: f"node {self.name} to be ready:\n"
                                                     f"{self.log_tail()}", interval=0.1)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send `sig` to this node's process (only to it, by its pid)."""
        if self.process is None:
            raise RuntimeError(f"node {self.name} was never started")
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """The exit status; fails the test when the process is still running at the deadline."""
        if self.process is None:
            raise RuntimeError(f"node {self.name} was never started")
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"node {self.name} still running after {timeout}s:\n"
                                 f"{self.log_tail()}") from None

    def stop_gracefully(self, timeout: float = 20.0) -> int:
        self.kill(signal.SIGTERM)
        return self.wait(timeout)

    def close(self) -> None:
        """Teardown: SIGKILL the process if it still runs, and reap it."""
        if self.running and self.process is not None:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        self.client.close()

    # talking to it -------------------------------------------------------------------

    def auth_headers(self) -> dict[str, str]:
        """The Authorization header for HTTP clients other than `client`."""
        token = self.auth.token()
        return {} if token is None else {"Authorization": f"Bearer {token}"}

    def post(
        self, body: bytes, *, key: str | None = None, channel: str = "relay"
    ) -> httpx.Response:
        headers = {"Content-Type": "text/plain"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.client.post(f"/api/channels/{channel}/messages", content=body,
                                headers=headers)

    def cli(self, *args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """`python -m radbridge ARGS --data-dir D --database-url U` against this node's store."""
        command = [sys.executable, "-m", "radbridge", *args, "--data-dir", str(self.data_dir),
                   "--database-url", self.database_url]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env=_child_environment(), stdin=subprocess.DEVNULL, check=False)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def _child_environment() -> dict[str, str]:
    """This environment without RADBRIDGE_* settings, which would override nothing we
    pass but could add what we did not mean (a shared data dir or database)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADBRIDGE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


Spawn = Callable[..., RadbridgeNode]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Make `RadbridgeNode`s in tmp_path (not started); all are killed at teardown."""
    made: list[RadbridgeNode] = []

    def make(**kwargs: Any) -> RadbridgeNode:
        node = RadbridgeNode(tmp_path, **kwargs)
        made.append(node)
        return node

    yield make
    for node in made:
        node.close()
    for node in made:
        print(f"--- {node.name} ({node.log_path}), last lines:\n{node.log_tail()}")


# --- the store ---------------------------------------------------------------------


def _sent_message_ids(session: Session) -> set[int]:
    return set(session.execute(
        select(Delivery.message_id).where(Delivery.status == "sent")).scalars())


class StoreProbe:
    """Counts read directly from a node's store (what `messages list` summarises)."""

    def __init__(self, url: str) -> None:
        self.database = Database(url, pool_size=1)

    def delivery_statuses(self) -> Counter[str]:
        with self.database.read() as session:
            rows = session.execute(
                select(Delivery.status, func.count()).group_by(Delivery.status)).all()
        return Counter({status: count for status, count in rows})

    def sent_message_ids(self) -> set[int]:
        with self.database.read() as session:
            return _sent_message_ids(session)

    def wait_all_sent(self, count: int, timeout: float = 15.0) -> float:
        """Until exactly `count` deliveries exist and all are `sent`."""
        return wait_until(
            lambda: self.delivery_statuses() == Counter({"sent": count}), timeout,
            lambda: f"{count} deliveries all sent; the store has {dict(self.delivery_statuses())}",
            interval=0.2,
        )

    def assert_each_sent_once(self, message_ids: Iterable[int]) -> None:
        """Each message has one delivery, `sent`, with one sent stage record."""
        ids = set(message_ids)
        # One snapshot: a delivery the node is still sending may otherwise be counted
        # sent in one read and have no sent stage in another (they commit together).
        with self.database.read() as session:
            if self.database.is_postgres:
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            per_message = Counter(session.execute(select(Delivery.message_id)).scalars())
            stages = Counter(session.execute(
                select(MessageStage.message_id).where(MessageStage.stage == StageKind.SENT)
            ).scalars())
            sent = _sent_message_ids(session)
        assert ids <= sent, f"acknowledged but not sent in the store: {sorted(ids - sent)[:10]}"
        assert all(per_message[i] == 1 for i in ids), "a message has more than one delivery"
        twice = {i: n for i, n in stages.items() if n != 1}
        assert not twice, f"messages with other than one sent stage: {twice}"
        assert set(stages) == sent, "sent deliveries and sent stage records disagree"

    def close(self) -> None:
        self.database.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite store file for tests that run on SQLite only (the node migrates it)."""
    return f"sqlite:///{tmp_path / 'store.db'}"


def assert_audit_verifies(node: RadbridgeNode) -> None:
    verified = node.cli("audit", "verify")
    assert verified.returncode == 0, (
        f"radbridge audit verify exited {verified.returncode}:\n{verified.stdout}{verified.stderr}")


def duplicates(receiver: RecordingReceiver) -> dict[str, int]:
    """Idempotency-Key -> times accepted, for the keys accepted more than once."""
    return {key: n for key, n in receiver.accepted_per_key().items() if n > 1}
