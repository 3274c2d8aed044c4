"""A TCP forwarder between the host's loopback and a namespace's loopback (either way).

Why threads and blocking sockets: two pump threads per connection, each moving one
1 MiB chunk at a time with ``recv_into``/``sendall``, carry loopback traffic at several
hundred MB/s while the GIL is released in the system calls; at most one chunk per direction
is ever held, so a slow reader slows the writer instead of filling memory. The kernel's
own buffer autotuning is kept (a fixed SO_RCVBUF would cap it at ``rmem_max``).

A socket belongs to the namespace it was created in, so the listening socket is created
with the listening namespace entered and each outgoing socket with the target's entered.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from types import TracebackType

from tests.peers.netns import NetworkNamespace, entered

CHUNK = 1 << 20
LOOPBACK = "127.0.0.1"


class BridgeError(RuntimeError):
    """The bridge could not listen."""


def _nodelay(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Pair:
    """One forwarded connection: closes both legs once both directions have finished."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self._open_directions = 2
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._pump, args=(src, dst), daemon=True,
                             name="tcp-bridge-pump")
            for src, dst in ((client, upstream), (upstream, client))]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        try:
            while True:
                count = src.recv_into(buffer)
                if count == 0:
                    break
                dst.sendall(view[:count])
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
        except OSError:
            self.abort()
        finally:
            self._finished()

    def _finished(self) -> None:
        with self._lock:
            self._open_directions -= 1
            last = self._open_directions == 0
        if last:
            self.client.close()
            self.upstream.close()

    def abort(self) -> None:
        """Wake both pumps (their recv returns or raises) so the pair winds down."""
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class TcpBridge:
    """Listen on 127.0.0.1:`listen_port` in `listen_ns`, forward to 127.0.0.1:`target_port`
    in `connect_ns` (None = the host's namespace). Port 0 picks a free port (`.port`)."""

    def __init__(self, target_port: int, *, listen_ns: NetworkNamespace | None = None,
                 connect_ns: NetworkNamespace | None = None, listen_port: int = 0,
                 connect_timeout: float = 10.0) -> None:
        self.target_port = target_port
        self.listen_ns = listen_ns
        self.connect_ns = connect_ns
        self.connect_timeout = connect_timeout
        self._requested_port = listen_port
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._pairs: set[_Pair] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.port = 0
        self.accepted = 0

    def start(self) -> TcpBridge:
        with entered(self.listen_ns):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((LOOPBACK, self._requested_port))
            listener.listen(128)
        except OSError as exc:
            listener.close()
            raise BridgeError(f"cannot listen on {LOOPBACK}:{self._requested_port}") from exc
        listener.setblocking(False)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, args=(listener,),
                                        daemon=True, name=f"tcp-bridge-{self.port}")
        self._thread.start()
        return self

    def _accept_loop(self, listener: socket.socket) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in selector.select()}
                if self._wake_r in ready:
                    return
                try:
                    client, _ = listener.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                self._forward(client)

    def _forward(self, client: socket.socket) -> None:
        client.setblocking(True)
        _nodelay(client)
        with entered(self.connect_ns):
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            upstream.settimeout(self.connect_timeout)
            upstream.connect((LOOPBACK, self.target_port))
            upstream.settimeout(None)
        except OSError:
            upstream.close()
            client.close()
            return
        _nodelay(upstream)
        pair = _Pair(client, upstream)
        with self._lock:
            self._pairs = {p for p in self._pairs if p.client.fileno() != -1}
            self._pairs.add(pair)
            self.accepted += 1
        pair.start()

    def stop(self) -> None:
        """Stop accepting and cut every forwarded connection (idempotent)."""
        if self._thread is not None:
            self._wake_w.send(b"x")
            self._thread.join(timeout=5)
            self._thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            pairs, self._pairs = self._pairs, set()
        for pair in pairs:
            pair.abort()
        for pair in pairs:
            for thread in pair.threads:
                thread.join(timeout=5)
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> TcpBridge:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
