"""Loopback-only network namespaces, so peers that bind 0.0.0.0 (Orthanc) stay unreachable.

A namespace is named ``rb-<creator pid>-<random>``: the pid lets `sweep_stale` remove the
namespaces of test runs that were killed before their cleanup ran. Cleanup (kill every
process inside, then ``ip netns del``) runs on ``__exit__``, at interpreter exit and from
`sweep_stale`, whichever comes first.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
PREFIX = "rb-"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int


class NamespaceError(RuntimeError):
    """A namespace could not be made, entered or removed."""


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise NamespaceError(f"setns failed: {os.strerror(errno)}")


def namespace_pids(name: str) -> list[int]:
    """Processes whose network namespace is `name` (as ``ip netns pids`` reports)."""
    result = _ip("netns", "pids", name)
    return [int(token) for token in result.stdout.split() if token.isdigit()]


def remove_namespace(name: str) -> None:
    """SIGTERM then SIGKILL every process in `name`, then delete it; quiet if already gone."""
    if not (NETNS_DIR / name).exists():
        return
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
        pids = namespace_pids(name)
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = namespace_pids(name)
            time.sleep(0.05)
        if not pids:
            break
    result = _ip("netns", "del", name)
    if result.returncode != 0 and (NETNS_DIR / name).exists():
        raise NamespaceError(f"ip netns del {name}: {result.stderr.strip()}")


def sweep_stale() -> list[str]:
    """Remove ``rb-<pid>-*`` namespaces whose creating process no longer runs."""
    removed = []
    for entry in NETNS_DIR.glob(f"{PREFIX}*") if NETNS_DIR.is_dir() else ():
        parts = entry.name.split("-")
        if len(parts) != 3 or not parts[1].isdigit() or Path(f"/proc/{parts[1]}").exists():
            continue
        remove_namespace(entry.name)
        removed.append(entry.name)
    return removed


def available() -> str | None:
    """None when namespaces can be made here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    result = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return f"ip netns does not work: {result.stderr.strip()}"
    return None


class NetworkNamespace:
    """A fresh namespace with only ``lo`` (up); everything in it dies with it."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self._lock = threading.Lock()
        self._created = False

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.name

    def create(self) -> NetworkNamespace:
        result = _ip("netns", "add", self.name)
        if result.returncode != 0:
            raise NamespaceError(f"ip netns add {self.name}: {result.stderr.strip()}")
        self._created = True
        atexit.register(self.close)
        up = _ip("-n", self.name, "link", "set", "lo", "up")
        if up.returncode != 0:
            self.close()
            raise NamespaceError(f"lo up in {self.name}: {up.stderr.strip()}")
        return self

    def close(self) -> None:
        """Kill what runs inside and delete the namespace (idempotent)."""
        with self._lock:
            if not self._created:
                return
            self._created = False
        atexit.unregister(self.close)
        remove_namespace(self.name)

    def __enter__(self) -> NetworkNamespace:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` prefixed so that it runs inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def popen(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
              **kwargs: Any) -> subprocess.Popen[Any]:
        """Start `argv` inside the namespace (`env` replaces the environment when given)."""
        return subprocess.Popen(self.argv(argv), env=dict(env) if env is not None else None,
                                **kwargs)

    def run(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
            **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """Run `argv` inside the namespace to completion (subprocess.run's keywords)."""
        return subprocess.run(self.argv(argv), env=dict(env) if env is not None else None,
                              **kwargs)

    @contextmanager
    def enter(self) -> Iterator[None]:
        """Switch the calling thread into the namespace; sockets made meanwhile live there.

        Only this thread moves, and a socket stays in the namespace it was made in, so
        make sockets here and use them anywhere; never await inside (other coroutines
        would run in the namespace)."""
        with open("/proc/thread-self/ns/net", "rb") as home, open(self.path, "rb") as target:
            _setns(target.fileno())
            try:
                yield
            finally:
                _setns(home.fileno())


@contextmanager
def entered(namespace: NetworkNamespace | None) -> Iterator[None]:
    """`namespace.enter()`, or nothing for the host's namespace (None)."""
    if namespace is None:
        yield
    else:
        with namespace.enter():
            yield
